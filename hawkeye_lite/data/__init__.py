"""Data: IQA dataset readers, degraded partners (degrade), the generated demo set (demo).

The readers, one concern per module (each module's docstring says what it owns):

    specs       data spec strings, the READERS registry, suites, load_records (the entry point)
    formats     the generic files: json, csv, txt, pyiqa meta files
    layouts     the datasets' own releases, one reader each: koniq, kadid, spaq, livec, pipal, csiq, agiqa
    finalize    raw rows -> records, the same for every reader: MOS, std and image checks, the
                mapping to [1, 5], splits, the bad-record policy
    scale       MOS range inference and std-scale checks
    records     IQARecord, LoadResult, LoadSummary, BadRecord, DataError, the seeded split,
                load_image, write_json
    files       the readers' shared file helpers: text/CSV reading, columns, paths, image search, URLs
    imagecheck  check_image: whether a listed image file can be used
"""

from .degrade import Degrader, DegradeRecipe, StageParams, degrade, degrade_records
from .demo import DemoConfig, demo_mos, demo_records, generate_demo, write_demo
from .imagecheck import check_image
from .records import (
    BadRecord,
    DataError,
    IQARecord,
    LoadResult,
    LoadSummary,
    assign_splits,
    load_image,
    map_mos,
    write_json,
)
from .specs import SUITES, load_records, parse_spec, split_specs

__all__ = [
    "BadRecord",
    "DataError",
    "DegradeRecipe",
    "Degrader",
    "DemoConfig",
    "IQARecord",
    "LoadResult",
    "LoadSummary",
    "StageParams",
    "assign_splits",
    "check_image",
    "degrade",
    "degrade_records",
    "demo_mos",
    "demo_records",
    "generate_demo",
    "load_image",
    "load_records",
    "map_mos",
    "parse_spec",
    "SUITES",
    "split_specs",
    "write_demo",
    "write_json",
]
