"""Records: what every reader's output becomes, and the types on the way there.

`IQARecord` is one scored image, its MOS mapped linearly to [1, 5] whatever the dataset's scale
(`map_mos`). `load_records` (specs.py) returns records in a `LoadResult`, with one `LoadSummary`
per spec listing the `BadRecord`s skipped; `LoadOptions` are its checks and split settings.
`DataError` is bad input data: the message names the file and the line (or entry) at fault.
`_Row` and `_Reader` are what a reader yields before validation (finalize.py turns them into
records); `assign_splits` is the seeded split by content group. `load_image` opens a record's
image; `write_json` writes records in the format `json:` reads back.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..fsio import atomic_write_text
from .imagecheck import DEFAULT_MAX_PIXELS

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad input data: the message names the file and the line (or entry) at fault."""


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class IQARecord:
    """One scored image. `mos` is on [1, 5] (higher is better) whatever the dataset's scale."""

    id: str
    image: str  # absolute path
    mos: float  # mapped linearly to [1, 5]
    mos_raw: float  # as the dataset gives it
    mos_range: Tuple[float, float]  # the dataset's raw range (lo, hi)
    dataset: str
    split: str = "train"  # train | val | test
    std: Optional[float] = None  # rater std, on the [1, 5] scale
    image_deg: Optional[str] = None  # degraded partner (perception loss), absolute path
    ref: Optional[str] = None  # content group (reference image / scene): never split apart
    source: str = ""  # "file:line" it was read from

    def to_json(self, relative_to: Optional[Path] = None) -> dict:
        """The paper's JSON format plus our extra fields (readable back by `json:`)."""

        def rel(p: Optional[str]) -> Optional[str]:
            if p is None or relative_to is None:
                return p
            try:
                return os.path.relpath(p, relative_to)
            except ValueError:  # different drive on Windows
                return p

        d = {"id": self.id, "images": [rel(self.image)], "gt_score": round(self.mos, 6)}
        if self.std is not None:
            d["std"] = round(self.std, 6)
        if self.image_deg is not None:
            d["image_deg"] = rel(self.image_deg)
        d["split"] = self.split
        if self.ref is not None:
            d["ref"] = self.ref
        d["dataset"] = self.dataset
        d["mos_raw"] = self.mos_raw
        d["mos_range"] = list(self.mos_range)
        return d


@dataclass(frozen=True)
class BadRecord:
    file: str
    line: Union[int, str]  # line number, or "entry N" for formats without lines
    reason: str
    kind: str  # short category, for the summary counts

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class LoadSummary:
    dataset: str
    file: str
    n_read: int = 0
    n_kept: int = 0
    bad: List[BadRecord] = field(default_factory=list)
    splits: Counter = field(default_factory=Counter)
    mos_range: Tuple[float, float] = (1.0, 5.0)
    notes: List[str] = field(default_factory=list)  # which file, column and scale were used

    def format(self, max_bad: int = 5) -> str:
        kinds = Counter(b.kind for b in self.bad)
        s = f"{self.dataset}: {self.n_read} read, {self.n_kept} kept"
        if self.bad:
            s += f", {len(self.bad)} skipped (" + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) + ")"
        s += "; raw MOS range %g-%g" % self.mos_range
        s += "; split " + " / ".join(f"{k} {self.splits.get(k, 0)}" for k in SPLITS)
        for n in self.notes:
            s += f"\n  {n}"
        for b in self.bad[:max_bad]:
            s += f"\n  bad record {b}"
        if len(self.bad) > max_bad:
            s += f"\n  ... and {len(self.bad) - max_bad} more"
        return s


@dataclass
class LoadResult:
    records: List[IQARecord]
    summaries: List[LoadSummary]

    @property
    def bad(self) -> List[BadRecord]:
        return [b for s in self.summaries for b in s.bad]

    def split(self, name: str) -> List[IQARecord]:
        """Records of one split; "all" gives every record."""
        if name == "all":
            return list(self.records)
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}: expected one of {SPLITS + ('all',)}")
        return [r for r in self.records if r.split == name]

    def format(self) -> str:
        return "\n".join(s.format() for s in self.summaries)


@dataclass
class LoadOptions:
    on_bad: str = "skip"  # skip | fail
    check_images: str = "full"  # full (decode) | header (open only) | none
    max_pixels: int = DEFAULT_MAX_PIXELS
    seed: int = 0
    test_frac: float = 0.2
    val_frac: float = 0.0

    def __post_init__(self) -> None:
        if self.on_bad not in ("skip", "fail"):
            raise ValueError(f"on_bad must be 'skip' or 'fail', got {self.on_bad!r}")
        if self.check_images not in ("full", "header", "none"):
            raise ValueError(f"check_images must be 'full', 'header' or 'none', got {self.check_images!r}")
        if not (0 <= self.test_frac < 1 and 0 <= self.val_frac < 1 and self.test_frac + self.val_frac < 1):
            raise ValueError(
                f"test_frac ({self.test_frac}) and val_frac ({self.val_frac}) must be in [0, 1) and sum below 1"
            )


# ----------------------------------------------------------------------------- raw rows


@dataclass
class _Row:
    """What a reader knows about one entry before validation."""

    file: str
    line: Union[int, str]
    id: str
    image: Optional[str]  # absolute path, or None if the entry names no image
    mos: object  # raw value: str / number / None, parsed in _finalize
    std: object = None
    image_deg: Optional[str] = None
    split: Optional[str] = None  # the dataset's own split value, if it has one
    ref: Optional[str] = None


@dataclass
class _Reader:
    """The output of one reader: rows plus the facts `_finalize` needs about the dataset."""

    name: str
    file: str  # the annotation file (for the summary)
    rows: List[_Row]
    mos_range: Optional[Tuple[float, float]]  # None: take the observed min/max (PIPAL's Elo)
    lower_better: bool = False  # DMOS-style scales are flipped when mapped to [1, 5]
    std_is_variance: bool = False
    std_range: Optional[Tuple[float, float]] = None  # the std's scale when it is not the MOS's
    infer_range: bool = False  # generic files: 1-5 unless the values say otherwise
    notes: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- values and splits


def _parse_float(v: object) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
        f = float(v)
    else:
        s = str(v).strip()
        if not s:
            return None
        try:
            f = float(s)
        except ValueError:
            return None
    return f if math.isfinite(f) else None


def _norm_split(v: Optional[str]) -> Optional[str]:
    """Dataset split spellings -> train/val/test; '' -> None; unknown -> ValueError."""
    if v is None:
        return None
    s = str(v).strip().lower()
    if not s:
        return None
    table = {
        "train": "train",
        "training": "train",
        "trn": "train",
        "val": "val",
        "valid": "val",
        "validation": "val",
        "dev": "val",
        "test": "test",
        "testing": "test",
        "tst": "test",
    }
    if s not in table:
        raise ValueError(f"unknown split value {v!r} (expected train/training, val/validation or test)")
    return table[s]


def map_mos(raw: float, lo: float, hi: float, lower_better: bool = False) -> float:
    """Linear map of a raw score on [lo, hi] to [1, 5]; DMOS-like scales (lower is better) are flipped."""
    t = (raw - lo) / (hi - lo)
    return 5.0 - 4.0 * t if lower_better else 1.0 + 4.0 * t


def assign_splits(groups: Sequence[str], *, seed: int, test_frac: float, val_frac: float = 0.0) -> Dict[str, str]:
    """Seeded split of content groups (reference images, scenes, prompts): group -> split.

    Whole groups move together, so a reference never appears in two splits. Sorting the
    unique groups first makes the result independent of the order rows were read in.
    """
    uniq = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(uniq))
    n = len(uniq)
    n_test = int(round(n * test_frac)) if n > 1 else 0
    n_val = int(round(n * val_frac)) if n > 2 else 0
    if test_frac > 0 and n > 1:
        n_test = max(1, n_test)
    n_test = min(n_test, n - 1) if n > 1 else 0
    n_val = min(n_val, n - n_test - 1) if n_val else 0
    out = {}
    for rank, i in enumerate(order):
        out[uniq[i]] = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")
    return out


# ----------------------------------------------------------------------------- writing and opening


def load_image(path_or_record: Union[str, IQARecord], *, degraded: bool = False):
    """Open an image as an upright RGB PIL image (EXIF orientation applied; the partner with
    degraded=True). Raises ImageReadError naming the file and, for a record, where it was listed."""
    from ..images import open_rgb

    if isinstance(path_or_record, IQARecord):
        path = path_or_record.image_deg if degraded else path_or_record.image
        if path is None:
            raise DataError(f"{path_or_record.source}: record {path_or_record.id!r} has no degraded partner")
        where = f"{path} (listed at {path_or_record.source})" if path_or_record.source else path
        return open_rgb(path, where)
    return open_rgb(path_or_record)


def write_json(records: Iterable[IQARecord], path: Union[str, Path], *, relative: bool = True) -> Path:
    """Write records in the JSON format `json:` reads back (paths relative to the file's folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve() if relative else None
    data = [r.to_json(base) for r in records]
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path
