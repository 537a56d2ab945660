"""Data: IQA dataset readers (datasets), degraded partners (degrade), the generated demo set (demo)."""

from .datasets import (
    DataError, IQARecord, LoadResult, LoadSummary, BadRecord, SUITES, check_image, load_image, load_records,
    parse_spec, split_specs, write_json,
)
from .degrade import DegradeRecipe, Degrader, StageParams, degrade, degrade_records
from .demo import DemoConfig, demo_mos, demo_records, generate_demo, write_demo

__all__ = [
    "BadRecord", "DataError", "DegradeRecipe", "Degrader", "DemoConfig", "IQARecord", "LoadResult", "LoadSummary",
    "StageParams", "check_image", "degrade", "degrade_records", "demo_mos", "demo_records", "generate_demo",
    "load_image", "load_records", "parse_spec", "SUITES", "split_specs", "write_demo", "write_json",
]
