"""IQA dataset readers: every supported format becomes a list of `IQARecord`.

A data spec string picks a reader and its directory or file:

    json:FILE                      JSON lists as the peers ship them (the paper's {"id", "images", "gt_score"},
                                   DeQA-Score, Q-Align, VisualQuality-R1 jsonl), or JSONL
    csv:FILE?path=COL&mos=COL&root=DIR&range=LO,HI   any CSV with an image and a MOS column
    txt:FILE?cols=name,score,std&root=DIR            header-less label lists (space, tab or comma)
    pyiqa:FILE                     pyiqa's meta_info_<Name>Dataset.csv/.txt, with that dataset's scale
    koniq:DIR  kadid:DIR  spaq:DIR  livec:DIR  pipal:DIR  csiq:DIR  agiqa:DIR   native releases
    suite:cross?root=DIR           the cross-dataset protocol (KonIQ train/test + six test sets)

Several specs can be combined: "koniq:/d/koniq,spaq:/d/spaq" (comma or semicolon before the
next `kind:`), or a list of strings. Every spec takes the common query options

    split=train|val|test     put every record of this spec in that split (cross-dataset testing)
    seed=N  test_frac=F  val_frac=F   the seeded split, used when the dataset has no split column
    range=LO,HI              the raw MOS range (overrides the reader's default; `observed`: min-max)
    std_range=LO,HI          the std's scale when it is not the MOS's
    encoding=NAME            text encoding (default UTF-8; a non-UTF-8 file fails naming its line)
    name=NAME                the dataset name used in summaries and eval tables

Generic files (json/csv/txt) are on 1-5 unless their values cannot be; then a standard range is
inferred and said in the summary, or the load stops naming the observed range (`_infer_range`).

Why the shape of this module: every reader only knows its layout and yields raw rows
(file, line, image path, raw MOS, ...). One shared `_finalize` does the rest the same way for
all formats: MOS parsing and range check, image checks, linear mapping to [1, 5], the split by
reference content, and the bad-record policy. So a new format is a small function, and a bad
record is reported identically whichever reader found it.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qsl

import numpy as np

SPLITS = ("train", "val", "test")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
# 8192 x 8192: bigger than any IQA benchmark image (SPAQ's largest is ~4000 x 4000) and far
# below what a decompression bomb asks for. PIL's own limit (~179 MP) still applies above it.
DEFAULT_MAX_PIXELS = 8192 * 8192


class DataError(ValueError):
    """Bad input data: the message names the file and the line (or entry) at fault."""


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class IQARecord:
    """One scored image. `mos` is on [1, 5] (higher is better) whatever the dataset's scale."""

    id: str
    image: str                          # absolute path
    mos: float                          # mapped linearly to [1, 5]
    mos_raw: float                      # as the dataset gives it
    mos_range: Tuple[float, float]      # the dataset's raw range (lo, hi)
    dataset: str
    split: str = "train"                # train | val | test
    std: Optional[float] = None         # rater std, on the [1, 5] scale
    image_deg: Optional[str] = None     # degraded partner (perception loss), absolute path
    ref: Optional[str] = None           # content group (reference image / scene): never split apart
    source: str = ""                    # "file:line" it was read from

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
    line: Union[int, str]               # line number, or "entry N" for formats without lines
    reason: str
    kind: str                           # short category, for the summary counts

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
    notes: List[str] = field(default_factory=list)   # which file, column and scale were used

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
    on_bad: str = "skip"                # skip | fail
    check_images: str = "full"          # full (decode) | header (open only) | none
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
            raise ValueError(f"test_frac ({self.test_frac}) and val_frac ({self.val_frac}) must be in [0, 1) and sum below 1")


# ----------------------------------------------------------------------------- raw rows


@dataclass
class _Row:
    """What a reader knows about one entry before validation."""

    file: str
    line: Union[int, str]
    id: str
    image: Optional[str]                # absolute path, or None if the entry names no image
    mos: object                         # raw value: str / number / None, parsed in _finalize
    std: object = None
    image_deg: Optional[str] = None
    split: Optional[str] = None         # the dataset's own split value, if it has one
    ref: Optional[str] = None


@dataclass
class _Reader:
    """The output of one reader: rows plus the facts `_finalize` needs about the dataset."""

    name: str
    file: str                           # the annotation file (for the summary)
    rows: List[_Row]
    mos_range: Optional[Tuple[float, float]]   # None: take the observed min/max (PIPAL's Elo)
    lower_better: bool = False          # DMOS-style scales are flipped when mapped to [1, 5]
    std_is_variance: bool = False
    std_range: Optional[Tuple[float, float]] = None   # the std's scale when it is not the MOS's
    infer_range: bool = False           # generic files: 1-5 unless the values say otherwise
    notes: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- checks


def check_image(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, mode: str = "full") -> Optional[Tuple[str, str]]:
    """Return (kind, reason) if the image cannot be used, else None.

    `header` opens the file (format, size); `full` also decodes it, which is what catches a
    truncated file. JPEGs decode in draft mode at 1/8 scale: libjpeg still reads the whole
    entropy-coded stream, so truncation is found at a fraction of the cost.
    """
    from PIL import Image

    if mode == "none":
        return None
    if _is_url(path):
        return "image is a URL", f"image is a URL, not a local file (download the images first): {path}"
    if os.path.isdir(path):
        return "image is a folder", f"image path is a folder, not an image file: {path}"
    if not os.path.isfile(path):
        return "missing image", f"image file not found: {path}"
    if os.path.getsize(path) == 0:
        return "empty image", f"image file is empty (0 bytes): {path}"
    try:
        with warnings.catch_warnings():
            # PIL warns (and only warns) between its limit and twice it: make that an error too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w <= 0 or h <= 0:
                    return "zero-sized image", f"image has zero size ({w}x{h}): {path}"
                if w * h > max_pixels:
                    return ("oversized image",
                            f"image is {w}x{h} = {w * h} pixels, above max_pixels {max_pixels} "
                            f"(possible decompression bomb): {path}")
                if mode == "full":
                    if im.format == "JPEG":
                        im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                    im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return "oversized image", f"image rejected as a decompression bomb ({e}): {path}"
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        size = _png_size(path)  # PIL refuses 0-pixel PNGs before telling us their size
        if size is not None and 0 in size:
            return "zero-sized image", f"image has zero size ({size[0]}x{size[1]}): {path}"
        what = "truncated" if "truncated" in str(e).lower() else "unreadable"
        return f"{what} image", f"{what} image ({type(e).__name__}: {e}): {path}"
    return None


def _png_size(path: str) -> Optional[Tuple[int, int]]:
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) == 24 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return None


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
    table = {"train": "train", "training": "train", "trn": "train",
             "val": "val", "valid": "val", "validation": "val", "dev": "val",
             "test": "test", "testing": "test", "tst": "test"}
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


def _finalize(rd: _Reader, opts: LoadOptions, *, forced_split: Optional[str],
              range_override: Optional[Tuple[float, float]], name: Optional[str]) -> Tuple[List[IQARecord], LoadSummary]:
    name = name or rd.name
    summary = LoadSummary(dataset=name, file=rd.file, n_read=len(rd.rows))
    bad: List[BadRecord] = summary.bad

    def reject(row: _Row, kind: str, reason: str) -> None:
        b = BadRecord(row.file, row.line, reason, kind)
        if opts.on_bad == "fail":
            raise DataError(f"{b}  (set on_bad=skip to skip bad records)")
        bad.append(b)

    # The range must be known before any row is judged (PIPAL's comes from the data), so the
    # MOS values are parsed in a first pass; the checks then run row by row in file order, so
    # on_bad=fail stops at the first bad line and the report lists lines in order.
    if range_override is not None:
        lo, hi = range_override
    elif rd.infer_range:
        lo, hi = _infer_range(rd, summary.notes)
    elif rd.mos_range is not None:
        lo, hi = rd.mos_range
    else:  # open scale (Elo): the observed min/max of the parseable values
        vals = [v for v in (_parse_float(r.mos) for r in rd.rows) if v is not None]
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
    summary.mos_range = (float(lo), float(hi))
    summary.notes[:0] = rd.notes
    tol = 1e-6 * (hi - lo)
    std_lo, std_hi = rd.std_range or (lo, hi)
    std_max = _check_std_scale(rd, lo, hi, std_lo, std_hi, summary.notes)

    good: List[Tuple[_Row, float, Optional[float], Optional[str]]] = []
    seen_ids: Dict[str, str] = {}
    for row in rd.rows:
        if row.image is None:
            reject(row, "no image", "entry names no image")
            continue
        mos = _parse_float(row.mos)
        if mos is None:
            reject(row, "non-numeric MOS", f"MOS is missing or not a finite number: {row.mos!r}")
            continue
        if not (lo - tol <= mos <= hi + tol):
            reject(row, "out-of-range MOS", f"MOS {mos:g} outside the dataset range [{lo:g}, {hi:g}]")
            continue
        std = _parse_float(row.std)
        if row.std not in (None, "") and (std is None or std < 0):
            reject(row, "non-numeric MOS", f"std is not a finite non-negative number: {row.std!r}")
            continue
        if std is not None and (math.sqrt(std) if rd.std_is_variance else std) > std_max:
            reject(row, "bad std", f"std {std:g} is more than half the scale {std_lo:g}-{std_hi:g}: not a rater std on it")
            continue
        try:
            split = _norm_split(row.split)
        except ValueError as e:
            reject(row, "bad split", str(e))
            continue
        problem = check_image(row.image, max_pixels=opts.max_pixels, mode=opts.check_images)
        if problem is not None:
            reject(row, *problem)
            continue
        if row.image_deg is not None:
            problem = check_image(row.image_deg, max_pixels=opts.max_pixels, mode=opts.check_images)
            if problem is not None:
                reject(row, problem[0] + " (image_deg)", "degraded partner: " + problem[1])
                continue
        if row.id in seen_ids:
            reject(row, "duplicate", f"duplicate entry {row.id!r} (first at {seen_ids[row.id]})")
            continue
        seen_ids[row.id] = f"{row.file}:{row.line}"
        good.append((row, mos, std, split))

    # 4. splits: forced > the dataset's own column > seeded split by content group
    need_seeded = [row.ref or row.id for row, _, _, split in good if split is None]
    seeded = assign_splits(need_seeded, seed=opts.seed, test_frac=opts.test_frac, val_frac=opts.val_frac)

    records: List[IQARecord] = []
    std_scale = 4.0 / (std_hi - std_lo)
    for row, mos, std, split in good:
        if forced_split is not None:
            split = forced_split
        elif split is None:
            split = seeded[row.ref or row.id]
        if std is not None:
            std = (math.sqrt(std) if rd.std_is_variance else std) * std_scale
        rec = IQARecord(
            id=row.id, image=row.image, mos=float(map_mos(mos, lo, hi, rd.lower_better)), mos_raw=float(mos),
            mos_range=(float(lo), float(hi)), dataset=name, split=split, std=std,
            image_deg=row.image_deg, ref=row.ref, source=f"{row.file}:{row.line}",
        )
        records.append(rec)
        summary.splits[split] += 1
    summary.n_kept = len(records)
    return records, summary


# The scales a generic file (json:, csv:, txt:) is checked against, in order. 1-100 is never
# inferred: a smallest value of 1 or more cannot tell it from 0-100 (LIVE-C's lowest MOS is 3.42
# on 0-100), so a 1-100 file needs ?range=1,100 (the mapping differs by at most 0.04 on 1-5).
STANDARD_RANGES = ((0.0, 1.0), (0.0, 5.0), (0.0, 100.0))
_MAX_OUTLIERS = 0.02   # at most this share outside 1-5: typos (bad records), not another scale
_MIN_COVER = 0.25      # an inferred range must be used: the values span at least this share of it


def _infer_range(rd: _Reader, notes: List[str]) -> Tuple[float, float]:
    """The raw range of a file that does not say: 1-5 (the default) when the values can be on it;
    else the first of STANDARD_RANGES that holds them all and that they span at least a quarter
    of (said in the summary); else a DataError naming the observed range and `?range=LO,HI`."""
    vals = [(v, r) for v, r in ((_parse_float(r.mos), r) for r in rd.rows) if v is not None]
    if not vals:
        return 1.0, 5.0
    vmin, vmax = min(v for v, _ in vals), max(v for v, _ in vals)
    out = [(v, r) for v, r in vals if not (1.0 - 1e-6 <= v <= 5.0 + 1e-6)]
    if not out:
        return 1.0, 5.0
    if len(out) <= _MAX_OUTLIERS * len(vals):
        notes.append(f"MOS range 1-5 (default): {len(out)} of {len(vals)} values outside it are skipped as "
                     f"out-of-range; pass ?range=LO,HI if the file is on another scale")
        return 1.0, 5.0
    for lo, hi in STANDARD_RANGES:
        if lo - 1e-6 <= vmin and vmax <= hi + 1e-6:
            if vmax - vmin >= _MIN_COVER * (hi - lo):
                notes.append(f"MOS range {lo:g}-{hi:g} inferred: the values span {vmin:g}-{vmax:g}, not the "
                             f"default 1-5; pass ?range=LO,HI if the scale is another"
                             + ("" if hi != 100 else " (e.g. ?range=1,100)"))
                return lo, hi
            break
    first = out[0][1]
    raise DataError(f"{rd.file}: MOS values span {vmin:g}-{vmax:g} ({len(out)} of {len(vals)} outside the default "
                    f"range 1-5, first at line {first.line}), which fits no standard range it could be inferred as "
                    f"(0-1, 0-5, 0-100); pass ?range=LO,HI with the file's scale "
                    f"(e.g. ?range=1,5 to skip the values outside 1-5 as out-of-range records), or "
                    f"?range=observed for an open scale such as PIPAL's Elo")


def _check_std_scale(rd: _Reader, lo: float, hi: float, std_lo: float, std_hi: float, notes: List[str]) -> float:
    """The largest std a record may have (half its scale: the most a std of ratings on a bounded
    scale can be). When most of a file's stds are above it they are on another scale than the
    MOS (VisualQuality-R1's SPAQ list: 1-5 scores, 0-100 stds): stop, naming `std_range=`."""
    half = (std_hi - std_lo) / 2 * (1 + 1e-6)
    stds = [v for v in (_parse_float(r.std) for r in rd.rows) if v is not None and v >= 0]
    stds = [math.sqrt(v) for v in stds] if rd.std_is_variance else stds
    if rd.std_range is None and stds and sum(v > half for v in stds) > len(stds) / 2:
        raise DataError(f"{rd.file}: std values span {min(stds):g}-{max(stds):g}, too large for rater stds on the "
                        f"MOS scale {lo:g}-{hi:g} (at most {half:g}); they are on another scale: pass "
                        f"?std_range=LO,HI with that scale (e.g. ?std_range=0,100), or leave the std column out")
    if rd.std_range is None and stds and std_hi - std_lo > 10 and max(stds) < 0.02 * (std_hi - std_lo):
        # the other way round cannot be proven (VisualQuality-R1's AGIQA list: 0-100 scores, 0-5 stds)
        notes.append(f"warning: every std is below 2% of the MOS scale {std_lo:g}-{std_hi:g} (at most {max(stds):g}): "
                     f"if they are on another scale, pass ?std_range=LO,HI (e.g. ?std_range=0,5)")
    return half


# ----------------------------------------------------------------------------- file helpers


_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _is_url(p: str) -> bool:
    return bool(_URL_RE.match(p.strip()))


def _url_message(where: str, url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    how = {"hf": "e.g. `huggingface-cli download`", "s3": "e.g. `aws s3 cp`"}.get(scheme, "e.g. with curl or wget")
    return (f"{where}: {url} is a {scheme}:// URL; data specs read local files only. "
            f"Download it first ({how}) and pass the local path")


def _resolve(p: str, root: Path) -> str:
    if _is_url(p):  # kept as written: check_image reports it as a URL, not as a missing file
        return p.strip()
    q = os.path.expanduser(p)
    if not os.path.isabs(q):
        q = os.path.join(_resolved_root(str(root)), q)
    # normpath, not Path.resolve: resolving symlinks costs a syscall per path component, which is
    # most of the load time of a 20k-line label file; the root itself is resolved once
    return os.path.normpath(q)


@functools.lru_cache(maxsize=64)
def _resolved_root(root: str) -> str:
    return str(Path(root).expanduser().resolve())


def _read_text(path: Path, encoding: Optional[str] = None) -> str:
    """A text file's content. UTF-8 (with or without BOM) unless `encoding` says otherwise; UTF-16
    with a BOM is recognised. Anything else fails with the line and the byte at fault rather than
    decoding to replacement characters, which would surface later as "caf\ufffd.png not found"."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        raise DataError(f"{path}: is gzip-compressed, not a text file; decompress it first (gunzip)")
    if data[:4] == b"PK\x03\x04":
        raise DataError(f"{path}: is a zip archive (an .xlsx workbook is one), not a text file; unpack it, "
                        f"or export the sheet to CSV")
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or data[:6] in (b"MATLAB",):
        raise DataError(f"{path}: is an image or MATLAB file, not a label file")
    if encoding:
        try:
            text = data.decode(encoding)
        except LookupError:
            raise DataError(f"{path}: unknown encoding {encoding!r} (try utf-8, latin-1, cp1252, utf-16)") from None
        except UnicodeDecodeError as e:
            raise DataError(_decode_error(path, data, e, encoding)) from None
        return text.lstrip("\ufeff")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16").lstrip("\ufeff")
        except UnicodeDecodeError as e:
            raise DataError(_decode_error(path, data, e, "utf-16")) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(_decode_error(path, data, e, "utf-8")) from None


def _decode_error(path: Path, data: bytes, e: UnicodeDecodeError, encoding: str) -> str:
    line = data.count(b"\n", 0, e.start) + 1
    start = data.rfind(b"\n", 0, e.start) + 1
    end = data.find(b"\n", e.start)
    snippet = data[start: end if end >= 0 else len(data)].rstrip(b"\r")[:80]
    hint = ("if the file is Latin-1 or Windows-1252, add ?encoding=latin-1 (or ?encoding=cp1252) to the spec"
            if encoding == "utf-8" else "set ?encoding= to the file's encoding")
    return (f"{path}:{line}: not valid {encoding} text (byte 0x{data[e.start]:02x} at column {e.start - start + 1}, "
            f"in {snippet!r}); {hint}")


def _read_csv(path: Path, delimiter: Optional[str] = None, encoding: Optional[str] = None
              ) -> Tuple[List[str], Iterator[Tuple[int, Dict[str, str]]]]:
    """Header and (line number, row dict) pairs. Line numbers are the file's, header = line 1."""
    text = _read_text(path, encoding)
    lines = text.splitlines()   # CRLF and a missing final newline both end up the same
    if delimiter is None:
        first = lines[0] if lines else ""
        delimiter = max([",", ";", "\t"], key=first.count)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path}:1: empty CSV file") from None

    def rows() -> Iterator[Tuple[int, Dict[str, str]]]:
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue
            row: Dict[str, str] = {}
            for i, h in enumerate(header):
                row.setdefault(h, values[i].strip() if i < len(values) else "")  # a repeated name keeps its first column
            yield reader.line_num, row

    return header, rows()


def _pick_column(header: Sequence[str], wanted: Optional[str], candidates: Sequence[str], what: str, path: Path) -> Optional[str]:
    if wanted:
        if wanted not in header:
            raise DataError(f"{path}:1: no column {wanted!r} for the {what} (columns: {', '.join(header)})")
        return wanted
    lower = {h.lower(): h for h in reversed(header)}
    for c in candidates:
        if c.lower() in lower:
            return lower[c.lower()]
    return None


def _require_file(path: Path, what: str) -> Path:
    s = str(path)
    if re.match(r"^(https?|hf|s3|gs):/", s, re.I):   # Path() has already folded '://' into ':/'
        raise DataError(_url_message(what, s.replace(":/", "://", 1)))
    if path.is_dir():
        raise DataError(f"{path}: is a folder, but a {what} is expected here (a file). "
                        f"For a dataset folder use its kind (koniq:DIR, kadid:DIR, ...); for a label file in it "
                        f"give the file's path")
    if not path.is_file():
        missing = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
        why = "" if missing == path.parent else f" (its folder {path.parent} does not exist either)"
        raise DataError(f"{path}: {what} not found{why}")
    return path


def _require_dir(path: Path, kind: str, what: str) -> Path:
    """A native reader's DIR argument: a file here is a different mistake from a missing folder."""
    if path.is_file():
        raise DataError(f"{path}: is a file, but {kind}: expects the {what} folder. For an annotation file "
                        f"on its own use csv:FILE, txt:FILE, json:FILE or pyiqa:FILE")
    return path


def _first_existing(base: Path, candidates: Sequence[str], what: str) -> Path:
    for c in candidates:
        p = base / c
        if p.exists():
            return p
    why = "" if base.is_dir() else f"; the folder {base} does not exist"
    raise DataError(f"{base}: {what} not found (looked for {', '.join(candidates)}{why})")


def _index_images(root: Path) -> Dict[str, str]:
    """Lower-case file name -> path for every image under root. Used by layouts whose label
    files give bare names while the images sit in per-distortion subfolders (CSIQ, PIPAL)."""
    index: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            if os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                index.setdefault(f.lower(), os.path.join(dirpath, f))
    return index


class _Locator:
    """Image name in a label file -> path. `root/name` when it exists; else the name with an image
    extension added (pyiqa's LIVE lists `jp2k/img2`); else the one file under root whose path ends
    with the name (label files that give bare names while the release nests images in subfolders).
    A name that matches several files (LIVE's img1.bmp is in five folders) is never guessed: it stays
    `root/name` and is reported missing. The index is built on the first miss only, so a layout
    that matches costs no directory walk."""

    def __init__(self, root: Path):
        self.root = root
        self._index: Optional[Dict[str, List[str]]] = None

    def _build(self) -> Dict[str, List[str]]:
        index: Dict[str, List[str]] = {}
        if self.root.is_dir():
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames.sort()
                for f in sorted(filenames):
                    if os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                        index.setdefault(f.lower(), []).append(os.path.join(dirpath, f))
        return index

    def __call__(self, name: str) -> Optional[str]:
        if not name:
            return None
        if _is_url(name):
            return name.strip()
        direct = _resolve(name, self.root)
        if os.path.isfile(direct):
            return direct
        has_ext = os.path.splitext(name)[1].lower() in IMAGE_EXTS
        if not has_ext:
            for ext in (".bmp", ".png", ".jpg", ".JPG", ".BMP", ".PNG", ".jpeg", ".tif"):
                if os.path.isfile(direct + ext):
                    return direct + ext
        if self._index is None:
            self._index = self._build()
        rel = "/" + re.sub(r"^(\./)+|^/+", "", name.replace("\\", "/")).lower()
        for suffix in ([""] if has_ext else ["", ".png", ".bmp", ".jpg"]):
            cands = [p for p in self._index.get(os.path.basename(rel) + suffix, [])
                     if p.replace(os.sep, "/").lower().endswith(rel + suffix)]
            if len(cands) == 1:
                return cands[0]
            if cands:
                break
        return direct


def _name_score_lines(path: Path, encoding: Optional[str] = None) -> Iterator[Tuple[int, str, str]]:
    """`name score` or `name,score` lines -> (line, name, score-string). Blank/comment lines skipped."""
    for i, line in enumerate(_read_text(path, encoding).splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = [p.strip() for p in (s.split(",") if "," in s else s.split())]
        yield i, parts[0], (parts[1] if len(parts) > 1 else "")


def _truthy(v: Optional[str]) -> bool:
    return str(v or "0").strip().lower() in ("1", "true", "yes", "on")


def _is_num(s: str) -> bool:
    return _parse_float(s) is not None


# ----------------------------------------------------------------------------- readers


_JSON_IMAGE_KEYS = ("images", "image", "img_path", "image_path", "path", "img", "file_name", "filename")
_JSON_SCORE_KEYS = ("gt_score", "mos", "score", "MOS", "gt")


def _json_entries(path: Path, text: str) -> List[Tuple[Union[int, str], object]]:
    entries: List[Tuple[Union[int, str], object]] = []
    dec = json.JSONDecoder()

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            # walk the top-level array element by element so every entry keeps its line number
            pos = text.index("[") + 1
            while True:
                while pos < len(text) and text[pos] in " \t\r\n,":
                    pos += 1
                if pos >= len(text):
                    raise DataError(f"{path}:{line_of(pos)}: unterminated JSON list")
                if text[pos] == "]":
                    break
                obj, end = dec.raw_decode(text, pos)
                entries.append((line_of(pos), obj))
                pos = end
        elif stripped.startswith("{") and _single_object(text) is not None:
            # one object; a wrapper like {"annotations": [...]} holds the list under one key
            obj = _single_object(text)
            lists = [v for v in obj.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
            entries = [(1, x) for x in lists[0]] if len(lists) == 1 else [(1, obj)]
        else:  # JSONL
            for i, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    entries.append((i, json.loads(line)))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if len({ln for ln, _ in entries}) < len(entries):
        # a list on one line (Q-Align's files): "x.json:1" would name every entry; count them instead
        return [(f"entry {i}", obj) for i, (_, obj) in enumerate(entries, 1)]  # type: ignore[misc]
    return entries


def _single_object(text: str) -> Optional[dict]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None   # JSONL (several objects), or invalid: the line-by-line pass reports where
    return obj if isinstance(obj, dict) else None


def read_json(file: str, params: Dict[str, str]) -> _Reader:
    """JSON lists as the peers ship them, or JSONL. Per entry: the image under `images` (a list:
    the first is used) / `image` / `img_path` / `image_path` / `path`; the score under `gt_score`
    (a number or a numeric string) / `mos` / `score` (or `score=KEY`); else Q-Align's `id` of the
    form `name->score`; else a numeric answer in `conversations` (VisualQuality-R1's RL layout).
    `std` (or `std=KEY`, `std=none`), DeQA-Score's `gt_score_norm` with `std_norm` via
    `score=gt_score_norm`. Relative image paths resolve against `root=` or the JSON file's folder.
    Scale: 1-5 unless the values cannot be on it; then a standard range is inferred (or the load
    stops naming the observed range): see `_infer_range`."""
    path = _require_file(Path(file).expanduser(), "JSON file")
    root = Path(params.get("root") or path.parent).expanduser()
    entries = _json_entries(path, _read_text(path, params.get("encoding")))
    score_key = params.get("score")
    std_key = params.get("std") or ("std_norm" if score_key == "gt_score_norm" else "std")
    sources: Counter = Counter()

    rows = []
    for line, obj in entries:
        if not isinstance(obj, dict):
            rows.append(_Row(str(path), line, f"{path.name}:{line}", None, None))
            continue
        img = next((obj[k] for k in _JSON_IMAGE_KEYS if obj.get(k) not in (None, "", [])), None)
        if isinstance(img, list):
            img = img[0] if img else None
        deg = obj.get("image_deg")
        if isinstance(deg, list):
            deg = deg[0] if deg else None
        rid = obj.get("id")
        id_score = None
        if isinstance(rid, str) and "->" in rid:   # Q-Align: "10007357496.jpg->68.7285714286"
            rid, _, id_score = rid.rpartition("->")
        if score_key:
            mos, src = obj.get(score_key), score_key
        else:
            k = next((k for k in _JSON_SCORE_KEYS if k in obj and obj[k] not in (None, "")), None)
            mos, src = (obj[k], k) if k else (None, None)
        if mos is None and id_score is not None:
            mos, src = id_score, "id (name->score)"
        if mos is None and isinstance(obj.get("conversations"), list):
            answers = [c.get("value") for c in obj["conversations"] if isinstance(c, dict)
                       and c.get("from") in ("gpt", "assistant")]
            if answers and _is_num(str(answers[-1])):
                mos, src = answers[-1], "the answer in conversations"
        if src:
            sources[src] += 1
        image = _resolve(str(img), root) if img else None
        rid = str(rid) if rid not in (None, "") else (str(img) if img else f"{path.name}:{line}")  # as written: unique
        std = None if std_key == "none" else obj.get(std_key)
        rows.append(_Row(str(path), line, rid, image, mos, std,
                         _resolve(str(deg), root) if deg else None, obj.get("split"),
                         obj.get("ref") or obj.get("ref_img") or obj.get("group_id")))
    # a file we wrote carries its dataset name; otherwise the file name stands for it
    names = {obj.get("dataset") for _, obj in entries if isinstance(obj, dict)}
    name = params.get("name") or (names.pop() if len(names) == 1 and None not in names else path.stem)
    notes = []
    if sources and set(sources) != {"gt_score"}:
        notes.append("score from " + ", ".join(f"{k} ({n})" for k, n in sources.most_common()))
    return _Reader(str(name), str(path), rows, None, infer_range=True,
                   lower_better=_truthy(params.get("lower_better")), notes=notes)


def read_csv(file: str, params: Dict[str, str]) -> _Reader:
    """Generic CSV. Options: path=COL mos=COL std=COL split_col=COL group=COL root=DIR
    lower_better=1 delimiter=CHAR. Columns are auto-detected when not given. A pyiqa meta_info
    CSV (recognised by its name or header) is read as `pyiqa:` reads it, with the dataset's scale."""
    path = _require_file(Path(file).expanduser(), "CSV file")
    header, it = _read_csv(path, params.get("delimiter"), params.get("encoding"))
    pyiqa_key = _pyiqa_key(path, header)
    if not any(params.get(k) for k in ("path", "mos", "std", "delimiter")) and pyiqa_key is not None:
        return read_pyiqa(file, params)
    root = Path(params.get("root") or path.parent).expanduser()
    pcol = _pick_column(header, params.get("path"), ["image", "image_name", "images", "img_path", "path", "filename",
                                                      "file", "name", "img", "img_name", "dist_name", "Image name"],
                        "image path", path)
    mcol = _pick_column(header, params.get("mos"), ["mos", "gt_score", "score", "dmos", "mos_quality"], "MOS", path)
    if pcol is None or mcol is None:
        raise DataError(f"{path}:1: cannot tell which columns hold the image path and the MOS "
                        f"(columns: {', '.join(header)}); pass ?path=COL&mos=COL")
    scol = _pick_column(header, params.get("std"), ["std", "sd", "mos_std"] if not params.get("std") else [], "std", path)
    tcol = _pick_column(header, params.get("split_col"), ["split", "set"], "split", path)
    gcol = _pick_column(header, params.get("group"), ["ref", "ref_img", "reference", "ref_name"], "group", path)
    locate = _Locator(root)
    rows = []
    for line, r in it:
        p = r.get(pcol, "")
        rows.append(_Row(str(path), line, p or f"line{line}", locate(p) if p else None, r.get(mcol),
                         r.get(scol) if scol else None, None, r.get(tcol) if tcol else None,
                         r.get(gcol) if gcol else None))
    notes = [f"{path.name}: columns {pcol}, {mcol}" + (f", std {scol}" if scol else "") + (f", split {tcol}" if tcol else "")]
    if pyiqa_key:   # the user chose the columns of a file whose scale we know: say how to get it
        notes.append(f"this is pyiqa's {PYIQA_FACTS[pyiqa_key].name} meta file: pyiqa:{path} (or csv: without "
                     f"path=/mos=/std=) reads it with that dataset's scale")
    return _Reader(params.get("name") or path.stem, str(path), rows, None, infer_range=True,
                   lower_better=_truthy(params.get("lower_better")), notes=notes)


_TXT_ROLES = {"name": "name", "image": "name", "dist": "name", "path": "name", "img": "name",
              "ref": "ref", "score": "score", "mos": "score", "dmos": "score", "std": "std", "sd": "std",
              "split": "split", "group": "ref", "_": None, "skip": None, "-": None}
_SPLIT_WORDS = {"train", "training", "val", "valid", "validation", "test", "testing", "dev"}


def _txt_lines(path: Path, sep: Optional[str], encoding: Optional[str]) -> Tuple[str, List[Tuple[int, List[str]]]]:
    """Header-less label lines -> (separator used, [(line, fields)]). Separator: tab if the first
    line has one (pyiqa's tab-padded files, LIQE), else comma (MANIQA's `name, score`), else runs
    of spaces (VisualQuality-R1, TID); `sep=` overrides (tab, comma, space, or a character)."""
    text = _read_text(path, encoding)
    lines = [(i, s) for i, s in enumerate(text.splitlines(), 1) if s.strip() and not s.lstrip().startswith("#")]
    if sep is None or sep == "auto":
        first = lines[0][1] if lines else ""
        sep = "\t" if "\t" in first else ("," if "," in first else " ")
    else:
        sep = {"tab": "\t", "\\t": "\t", "comma": ",", "space": " ", "semicolon": ";"}.get(sep, sep)
    out = []
    for i, s in lines:
        fields = s.split() if sep == " " else [f.strip() for f in s.split(sep)]
        out.append((i, fields))
    return {"\t": "tab", ",": "comma", " ": "space"}.get(sep, repr(sep)), out


def _txt_columns(path: Path, lines: List[Tuple[int, List[str]]], cols: Optional[str]) -> Tuple[List[Optional[str]], bool, str]:
    """The role of each column: from `cols=` or positional defaults (`name score [std]`, or
    `ref dist score [std]` when the first two fields are both names; a trailing train/val/test
    field is the split). Returns (roles, first line is a header, description)."""
    if cols:
        roles = []
        for c in cols.split(","):
            c = c.strip().lower()
            if c not in _TXT_ROLES:
                raise DataError(f"{path}: cols={cols!r}: unknown column {c!r} (use name, ref, score, std, split, _)")
            roles.append(_TXT_ROLES[c])
        if "name" not in roles or "score" not in roles:
            raise DataError(f"{path}: cols={cols!r} must name a 'name' and a 'score' column")
        si = roles.index("score")
        header = bool(lines) and len(lines[0][1]) > si and not _is_num(lines[0][1][si])
        return roles, header, "cols=" + ",".join(r or "_" for r in roles)
    if not lines:
        return ["name", "score"], False, "name score"
    header = not any(_is_num(f) for f in lines[0][1])
    fields = lines[1][1] if header and len(lines) > 1 else lines[0][1]
    lead = 0
    while lead < len(fields) and not _is_num(fields[lead]):
        lead += 1
    if lead == 0 or lead > 2 or lead == len(fields):
        raise DataError(f"{path}:{lines[0][0]}: cannot tell the columns of {' '.join(fields)!r} "
                        "(expected `name score [std]` or `ref dist score [std]`); pass ?cols=name,score,std")
    roles: List[Optional[str]] = ["name"] if lead == 1 else ["ref", "name"]
    nums = 0
    for f in fields[lead:]:
        if _is_num(f) and nums < 2:
            roles.append("score" if nums == 0 else "std")
            nums += 1
        elif f.lower() in _SPLIT_WORDS and "split" not in roles:
            roles.append("split")
        else:
            roles.append(None)
    desc = " ".join(r or "_" for r in roles)
    return roles, header, desc


def _txt_rows(path: Path, params: Dict[str, str], root: Path) -> Tuple[List[_Row], List[str]]:
    sep, lines = _txt_lines(path, params.get("sep"), params.get("encoding"))
    roles, header, desc = _txt_columns(path, lines, params.get("cols"))
    notes = [f"{path.name}: columns {desc} ({sep}-separated)" + ("; line 1 read as a header" if header else "")]
    if header:
        lines = lines[1:]
    idx = {r: i for i, r in reversed(list(enumerate(roles))) if r}
    locate = _Locator(root)
    rows = []

    def get(fields: List[str], role: str) -> Optional[str]:
        i = idx.get(role)
        return fields[i] if i is not None and i < len(fields) else None

    for line, fields in lines:
        name = get(fields, "name") or ""
        rows.append(_Row(str(path), line, name or f"line{line}", locate(name) if name else None, get(fields, "score"),
                         get(fields, "std"), None, get(fields, "split"), get(fields, "ref")))
    return rows, notes


def read_txt(file: str, params: Dict[str, str]) -> _Reader:
    """Header-less label lists (`name score [std]`, full-reference `ref dist score [std]`), space-,
    tab- or comma(+space)-separated, as VisualQuality-R1, LIQE, MANIQA and pyiqa's old .txt files
    are. `cols=` names the columns (name, ref, score, std, split, _ to skip); `root=` is the image
    folder (default: the file's folder; bare names are also found in its subfolders); `sep=`,
    `lower_better=1`, `range=`, `std_range=` as for the other readers. Scale: as `json:`."""
    path = _require_file(Path(file).expanduser(), "label file")
    root = Path(params.get("root") or path.parent).expanduser()
    rows, notes = _txt_rows(path, params, root)
    return _Reader(params.get("name") or path.stem, str(path), rows, None, infer_range=True,
                   lower_better=_truthy(params.get("lower_better")), notes=notes)


# pyiqa's meta_info files, by the dataset name in `meta_info_<Name>Dataset.csv`: the scale of the
# score column as the dataset defines it. LIVE's "mos" column holds the realigned DMOS (the
# reference images are 0 in Q-Align's live.json, the same values), so it is lower-is-better.
@dataclass(frozen=True)
class _PyiqaFacts:
    name: str
    range: Optional[Tuple[float, float]]          # None: observed min/max (Elo)
    lower_better: bool = False
    std_is_variance: bool = False
    std_range: Optional[Tuple[float, float]] = None
    note: str = ""


PYIQA_FACTS: Dict[str, _PyiqaFacts] = {
    "koniq10k": _PyiqaFacts("koniq", (1.0, 5.0), note="MOS = sum k*c_k of c1..c5 (1-5); std as given (1-5)"),
    "koniq10k++": _PyiqaFacts("koniq++", (1.0, 5.0)),
    "kadid10k": _PyiqaFacts("kadid", (1.0, 5.0), std_is_variance=True,
                            note="its 'std' column holds the official variance: std = sqrt"),
    "livechallenge": _PyiqaFacts("livec", (0.0, 100.0)),
    "spaq": _PyiqaFacts("spaq", (0.0, 100.0)),
    "csiq": _PyiqaFacts("csiq", (0.0, 1.0), lower_better=True, note="DMOS 0-1, lower is better: flipped"),
    "pipal": _PyiqaFacts("pipal", None, note="Elo: range = observed min-max"),
    "tid2008": _PyiqaFacts("tid2008", (0.0, 9.0)),
    "tid2013": _PyiqaFacts("tid2013", (0.0, 9.0)),
    "liveiqa": _PyiqaFacts("live", (0.0, 100.0), lower_better=True, note="realigned DMOS 0-100, lower is better: flipped"),
    "livemd": _PyiqaFacts("livemd", (0.0, 100.0), lower_better=True, note="DMOS 0-100, lower is better: flipped"),
}
_PYIQA_NAME_RE = re.compile(r"^meta_info_(.+?)(?:Dataset)?\.(?:csv|txt)$", re.I)
_PYIQA_HEADERS = ({"img_name", "mos", "std", "split"}, {"ref_name", "dist_name"}, {"hq_name", "dist_name", "elo_score"})


def _pyiqa_key(path: Path, header: Optional[Sequence[str]] = None) -> Optional[str]:
    """The PYIQA_FACTS key of a pyiqa meta file ('' for an unknown dataset in that layout), else None."""
    m = _PYIQA_NAME_RE.match(path.name)
    if m:
        return m.group(1).lower() if m.group(1).lower() in PYIQA_FACTS else ""
    if header is not None:
        h = {x.lower() for x in header}
        if any(need <= h for need in _PYIQA_HEADERS):
            return ""
    return None


def _split_value(v: Optional[str]) -> Optional[str]:
    """pyiqa's split columns: 0/1/2 (train/val/test) or the words."""
    if v is None:
        return None
    s = str(v).strip()
    return {"0": "train", "1": "val", "2": "test", "0.0": "train", "1.0": "val", "2.0": "test"}.get(s, s)


def read_pyiqa(file: str, params: Dict[str, str]) -> _Reader:
    """pyiqa's meta_info files: `meta_info_<Name>Dataset.csv` (header; first the image name, or
    ref_name + dist_name, then the score; split columns `split` with 0/1/2 or any column whose name
    contains `split` with train/val/test, `split_col=` picks one) or the older header-less `.txt`.
    The scale comes from the dataset named in the file name (PYIQA_FACTS); an unknown one is
    inferred as for `json:`. Images: `root=` (default the file's folder), found by name below it."""
    path = _require_file(Path(file).expanduser(), "pyiqa meta_info file")
    root = Path(params.get("root") or path.parent).expanduser()
    key = _pyiqa_key(path)
    facts = PYIQA_FACTS.get(key or "")
    notes: List[str] = []
    text_head = _read_text(path, params.get("encoding")).splitlines()[:1]
    has_header = bool(text_head) and path.suffix.lower() == ".csv" and "," in text_head[0] \
        and not any(_is_num(f) for f in text_head[0].split(","))
    rows: List[_Row] = []
    koniq_dist = False
    if has_header:
        header, it = _read_csv(path, ",", params.get("encoding"))
        lower = [h.lower() for h in header]
        ref_col = next((header[i] for i, h in enumerate(lower) if h in ("ref_name", "hq_name", "ref_img")), None)
        name_col = next((header[i] for i, h in enumerate(lower)
                         if h in ("dist_name", "img_name", "image name", "filename", "image_name", "dis_name")), None)
        if name_col is None:
            raise DataError(f"{path}:1: no image-name column (dist_name, img_name, ...; columns: {', '.join(header)})")
        std_col = next((header[i] for i, h in enumerate(lower) if h in ("std", "sd", "mos_std")), None)
        split_cols = [h for h in header if "split" in h.lower()]
        if params.get("split_col"):
            if params["split_col"] not in header:
                raise DataError(f"{path}:1: no split column {params['split_col']!r} (columns: {', '.join(header)})")
            split_col = params["split_col"]
        else:
            split_col = next((c for c in ("official_split", "split") if c in split_cols), split_cols[0] if split_cols else None)
        if len(split_cols) > 1:
            notes.append(f"split from column {split_col!r} (others: {', '.join(c for c in split_cols if c != split_col)}; split_col= picks)")
        koniq_dist = key == "koniq10k" and all(f"c{k}" in header for k in range(1, 6))
        if params.get("mos"):
            score_col = _pick_column(header, params["mos"], [], "MOS", path)
        else:
            # the first numeric-named score column after the names
            start = header.index(name_col) + 1
            score_col = next((h for h in header[start:] if h.lower() in ("mos", "dmos", "elo_score", "qmos", "score", "mos_quality")),
                             None)
            if score_col is None:
                raise DataError(f"{path}:1: no score column (mos, dmos, elo_score, ...; columns: {', '.join(header)}); pass ?mos=COL")
        for line, r in it:
            name = r.get(name_col, "")
            mos: object = r.get(score_col)
            if koniq_dist:
                mos = _koniq_mos(r)
            rows.append(_Row(str(path), line, name or f"line{line}", None, mos, r.get(std_col) if std_col else None,
                             None, _split_value(r.get(split_col)) if split_col else None,
                             (r.get(ref_col) or None) if ref_col else None))
        what = f"columns {name_col}, {'c1..c5' if koniq_dist else score_col}" + (f", {std_col}" if std_col else "") + (f", split column {split_col}" if split_col else "")
    else:
        rows, txt_notes = _txt_rows(path, params, root)
        what = txt_notes[0].split(": ", 1)[1]
        for r in rows:
            r.split = _split_value(r.split)
    locate = _Locator(root)
    for r in rows:
        if r.image is None and r.id and not r.id.startswith("line"):
            r.image = locate(r.id)
    std_range = None
    if facts is not None and facts.name == "koniq" and not koniq_dist:
        # the .txt (no rating distribution): the MOS column is the 0-100 z-score MOS, std is on 1-5
        facts = _PyiqaFacts("koniq", (0.0, 100.0))
        std_range = (1.0, 5.0)
        notes.append("no c1..c5 columns: MOS is the 0-100 (z-score) MOS mapped from 0-100; std as given (1-5)")
    if facts is not None and facts.name == "livec" and not _truthy(params.get("practice")):
        practice = {f"t{i}.bmp" for i in range(1, 8)}
        n0 = len(rows)
        rows = [r for r in rows if r.id.lower() not in practice]
        if n0 != len(rows):
            notes.append(f"{n0 - len(rows)} practice images t1-t7 dropped (practice=1 keeps them)")
    label = f"pyiqa {path.name}" + (f" ({facts.name})" if facts else " (dataset not known: scale inferred)")
    notes.insert(0, f"{label}: {what}" + (f"; {facts.note}" if facts and facts.note else ""))
    if facts is None:
        return _Reader(params.get("name") or path.stem, str(path), rows, None, infer_range=True,
                       lower_better=_truthy(params.get("lower_better")), notes=notes)
    return _Reader(params.get("name") or facts.name, str(path), rows, facts.range, lower_better=facts.lower_better,
                   std_is_variance=facts.std_is_variance, std_range=std_range or facts.std_range, notes=notes)


def _koniq_mos(r: Dict[str, str]) -> Optional[float]:
    """KonIQ's 1-5 MOS from its rating distribution: sum k * c_k / sum c_k (c_k are fractions in
    the sets file and pyiqa's CSV, counts in the scores file; dividing by the sum covers both)."""
    cs = [_parse_float(r.get(f"c{k}")) for k in range(1, 6)]
    if any(c is None or c < 0 for c in cs) or sum(cs) <= 0:  # type: ignore[operator]
        return None
    return sum(k * c for k, c in zip(range(1, 6), cs)) / sum(cs)  # type: ignore[misc]


def _pyiqa_in(d: Path, name: str) -> Optional[Path]:
    """pyiqa's meta file for a dataset, if the user keeps it in the dataset folder."""
    for c in (d / f"meta_info_{name}Dataset.csv", d / f"meta_info_{name}Dataset.txt"):
        if c.is_file():
            return c
    return None


def _via_pyiqa(meta: Path, root: Path, params: Dict[str, str], kind: str) -> _Reader:
    p = {k: v for k, v in params.items() if k in ("name", "encoding", "practice", "split_col")}
    p["root"] = str(root)
    rd = read_pyiqa(str(meta), p)
    rd.name = params.get("name") or kind
    rd.notes.insert(0, f"{kind}: no official annotation file in the folder; read pyiqa's {meta.name}")
    return rd


def read_koniq(directory: str, params: Dict[str, str]) -> _Reader:
    """KonIQ-10k as released. Either file gives the 1-5 MOS and SD the papers report:
    - `koniq10k_distributions_sets.csv` (the authors' metadata repo: image_name, c1..c5 as
      fractions, c_total, MOS, SD, set). Its `MOS` column is the 0-100 z-score MOS, so the 1-5
      MOS is computed from the rating distribution, sum k*c_k; SD is already 1-5. Official split
      (set: training/validation/test).
    - `koniq10k_scores_and_distributions.csv` (the website file: ..., MOS, SD, MOS_zscore): MOS
      and SD on 1-5 as given; no split column: seeded split.
    - pyiqa's `meta_info_KonIQ10kDataset.csv` in the folder (as pyiqa: reads it; official split).
    Images in `1024x768/` (or koniq10k_1024x768/1024x768, 512x384, images)."""
    d = _require_dir(Path(directory).expanduser(), "koniq", "KonIQ-10k")
    imgdir_of = lambda: d / params["images"] if params.get("images") else _first_existing(  # noqa: E731
        d, ["1024x768", "koniq10k_1024x768/1024x768", "512x384", "koniq10k_512x384/512x384", "images"], "KonIQ-10k image folder")
    names = ["koniq10k_distributions_sets.csv", "metadata/koniq10k_distributions_sets.csv",
             "koniq10k_scores_and_distributions.csv", "koniq10k_scores_and_distributions/koniq10k_scores_and_distributions.csv"]
    if params.get("file") and _pyiqa_key(Path(params["file"])) == "koniq10k":
        return _via_pyiqa(_require_file(Path(params["file"]).expanduser(), "pyiqa meta_info file"), imgdir_of(), params, "koniq")
    if params.get("file"):
        ann = _require_file(Path(params["file"]).expanduser(), "KonIQ-10k score CSV")
    elif not any((d / n).is_file() for n in names) and _pyiqa_in(d, "KonIQ10k") is not None:
        return _via_pyiqa(_pyiqa_in(d, "KonIQ10k"), imgdir_of(), params, "koniq")  # type: ignore[arg-type]
    else:
        ann = _first_existing(d, names, "KonIQ-10k score CSV")
    imgdir = imgdir_of()
    header, it = _read_csv(ann, None, params.get("encoding"))
    for col in ("image_name", "MOS"):
        if col not in header:
            raise DataError(f"{ann}:1: KonIQ-10k CSV has no {col!r} column (columns: {', '.join(header)})")
    sets_file = "set" in header or "MOS_zscore" not in header
    if sets_file:
        for col in ("c1", "c2", "c3", "c4", "c5"):
            if col not in header:
                raise DataError(f"{ann}:1: KonIQ-10k sets file has no {col!r} column, which the 1-5 MOS is computed "
                                f"from (columns: {', '.join(header)})")
    rows = []
    for line, r in it:
        n = r["image_name"]
        mos = _koniq_mos(r) if sets_file else r["MOS"]
        if sets_file and mos is None:
            mos = f"c1..c5 = {[r.get(f'c{k}') for k in range(1, 6)]}"   # unparseable: reported as a bad MOS
        rows.append(_Row(str(ann), line, n, str(imgdir / n) if n else None, mos, r.get("SD"), None, r.get("set")))
    note = (f"{ann.name}: MOS = sum k*c_k of c1..c5 (1-5; its MOS column is the 0-100 z-score MOS); SD as given (1-5)"
            if sets_file else f"{ann.name}: MOS and SD as given (1-5)")
    return _Reader(params.get("name") or "koniq", str(ann), rows, (1.0, 5.0), notes=[note])


def read_kadid(directory: str, params: Dict[str, str]) -> _Reader:
    """KADID-10k as released (kadid10k.zip): `dmos.csv` (dist_img, ref_img, dmos, var) and `images/`
    holding both references and distorted images (or pyiqa's meta_info_KADID10kDataset.csv in its
    place). DMOS is a 1-5 degradation category rating where higher is better. No official split:
    seeded split by reference image, never leaking one."""
    d = _require_dir(Path(directory).expanduser(), "kadid", "KADID-10k")
    base = d if (d / "dmos.csv").is_file() or not (d / "kadid10k").is_dir() else d / "kadid10k"
    imgdir = base / params.get("images", "images")
    if not (base / "dmos.csv").is_file() and _pyiqa_in(base, "KADID10k") is not None:
        return _via_pyiqa(_pyiqa_in(base, "KADID10k"), imgdir, params, "kadid")  # type: ignore[arg-type]
    ann = _require_file(base / "dmos.csv", "KADID-10k dmos.csv")
    header, it = _read_csv(ann, None, params.get("encoding"))
    for col in ("dist_img", "ref_img", "dmos"):
        if col not in header:
            raise DataError(f"{ann}:1: KADID-10k dmos.csv has no {col!r} column (columns: {', '.join(header)})")
    rows = [_Row(str(ann), line, r["dist_img"], str(imgdir / r["dist_img"]) if r["dist_img"] else None,
                 r["dmos"], r.get("var"), None, None, r["ref_img"] or None) for line, r in it]
    return _Reader(params.get("name") or "kadid", str(ann), rows, (1.0, 5.0), std_is_variance=True)


def read_spaq(directory: str, params: Dict[str, str]) -> _Reader:
    """SPAQ: the release's `Annotations/MOS and Image attribute scores.xlsx` exported to CSV (same
    name, .csv; columns "Image name", "MOS", ...) or pyiqa's meta_info_SPAQDataset.csv (the same
    columns), and images in `TestImage/`. MOS range 0-100."""
    d = _require_dir(Path(directory).expanduser(), "spaq", "SPAQ")
    if params.get("file"):
        ann = _require_file(Path(params["file"]).expanduser(), "SPAQ annotation CSV")
    else:
        cands = [d / "Annotations" / "MOS and Image attribute scores.csv", d / "MOS and Image attribute scores.csv",
                 d / "Annotations" / "MOS_and_Image_attribute_scores.csv", d / "meta_info_SPAQDataset.csv",
                 d / "Annotations" / "meta_info_SPAQDataset.csv"]
        found = [c for c in cands if c.is_file()]
        if not found:
            xlsx = list(d.glob("**/MOS and Image attribute scores.xlsx")) if d.is_dir() else []
            hint = (f" Found {xlsx[0]}: export its first sheet to CSV next to it (same name, .csv)."
                    if xlsx else "" if d.is_dir() else f" The folder {d} does not exist.")
            raise DataError(f"{d}: SPAQ annotation CSV not found (looked for {cands[0]}).{hint} "
                            "Or pass spaq:DIR?file=CSV.")
        ann = found[0]
    imgdir = d / params.get("images", "TestImage")
    header, it = _read_csv(ann, None, params.get("encoding"))
    ncol = _pick_column(header, None, ["Image name", "image_name", "Image_name", "name"], "image name", ann)
    mcol = _pick_column(header, None, ["MOS", "mos"], "MOS", ann)
    if ncol is None or mcol is None:
        raise DataError(f"{ann}:1: SPAQ CSV needs 'Image name' and 'MOS' columns (columns: {', '.join(header)})")
    rows = [_Row(str(ann), line, r[ncol], str(imgdir / r[ncol]) if r[ncol] else None, r[mcol]) for line, r in it]
    return _Reader(params.get("name") or "spaq", str(ann), rows, (0.0, 100.0), notes=[f"{ann.name}: MOS 0-100"])


def read_livec(directory: str, params: Dict[str, str]) -> _Reader:
    """LIVE In the Wild Challenge as released: `Data/AllImages_release.mat`, `Data/AllMOS_release.mat`,
    `Data/AllStdDev_release.mat` (aligned vectors) and `Images/` (or pyiqa's
    meta_info_LIVEChallengeDataset.csv in DIR). The first 7 of the 1169 entries are the observers'
    practice images (in Images/trainingImages) and are dropped, as everyone does. MOS range 0-100.
    Entries are reported as `entry N` (1-based) of AllImages_release.mat."""
    import scipy.io

    d = _require_dir(Path(directory).expanduser(), "livec", "LIVE Challenge (ChallengeDB_release)")
    data = d / "Data"
    imgdir = d / params.get("images", "Images")
    if not (data / "AllImages_release.mat").is_file() and _pyiqa_in(d, "LIVEChallenge") is not None:
        return _via_pyiqa(_pyiqa_in(d, "LIVEChallenge"), imgdir, params, "livec")  # type: ignore[arg-type]
    names_f = _require_file(data / "AllImages_release.mat", "LIVE-C AllImages_release.mat")
    mos_f = _require_file(data / "AllMOS_release.mat", "LIVE-C AllMOS_release.mat")
    std_f = data / "AllStdDev_release.mat"

    def vec(path: Path, key: str) -> np.ndarray:
        try:
            m = scipy.io.loadmat(str(path))
        except Exception as e:  # scipy raises several types for a corrupt .mat
            raise DataError(f"{path}: cannot read .mat file ({type(e).__name__}: {e})") from None
        if key not in m:
            keys = [k for k in m if not k.startswith("__")]
            if len(keys) != 1:
                raise DataError(f"{path}: no variable {key!r} (variables: {', '.join(keys)})")
            key = keys[0]
        return np.asarray(m[key]).reshape(-1)

    names = vec(names_f, "AllImages_release")
    mos = vec(mos_f, "AllMOS_release")
    std = vec(std_f, "AllStdDev_release") if std_f.is_file() else None
    if len(mos) != len(names) or (std is not None and len(std) != len(names)):
        raise DataError(f"{data}: AllImages_release ({len(names)}), AllMOS_release ({len(mos)})"
                        f"{'' if std is None else f', AllStdDev_release ({len(std)})'} differ in length")
    start = 7 if len(names) == 1169 and not _truthy(params.get("practice")) else 0
    rows = []
    for i in range(start, len(names)):
        n = names[i]
        while isinstance(n, np.ndarray):  # MATLAB cell arrays nest: array([array(['x.bmp'])])
            n = n.reshape(-1)[0] if n.size else ""
        n = str(n).strip()
        rows.append(_Row(str(names_f), f"entry {i + 1}", n or f"entry{i + 1}", str(imgdir / n) if n else None,
                         mos[i], None if std is None else std[i]))
    notes = [f"{names_f.parent.name}/*.mat: MOS and std 0-100" + ("; practice images t1-t7 dropped" if start else "")]
    return _Reader(params.get("name") or "livec", str(names_f), rows, (0.0, 100.0), notes=notes)


def read_pipal(directory: str, params: Dict[str, str]) -> _Reader:
    """PIPAL (NTIRE 2021/2022 training release): `Train_Label/A0001.txt ...` with lines
    `A0001_00_00.bmp,1556.05` (name, Elo score), or pyiqa's meta_info_PIPALDataset.csv in DIR;
    distorted images anywhere under DIR (the release ships them as Distortion_1..4 or Train_Dis);
    references A0001.bmp in Train_Ref. Elo has no fixed range: by default the observed min/max of
    the labels read is the range (pass range=LO,HI to fix it). Seeded split by reference (`A0001`)."""
    d = _require_dir(Path(directory).expanduser(), "pipal", "PIPAL")
    label_dir = d / params.get("labels", "Train_Label")
    if not label_dir.is_dir() and _pyiqa_in(d, "PIPAL") is not None:
        return _via_pyiqa(_pyiqa_in(d, "PIPAL"), d, params, "pipal")  # type: ignore[arg-type]
    if not label_dir.is_dir():
        raise DataError(f"{label_dir}: PIPAL label folder not found" + ("" if d.is_dir() else f" (the folder {d} does not exist)"))
    files = sorted(label_dir.glob("*.txt"))
    if not files:
        raise DataError(f"{label_dir}: no PIPAL label .txt files")
    index = _index_images(d)
    rows = []
    for f in files:
        for line, name, score in _name_score_lines(f, params.get("encoding")):
            img = index.get(name.lower())
            rows.append(_Row(str(f), line, name, img if img else str(d / name), score,
                             ref=name.split("_")[0]))
    return _Reader(params.get("name") or "pipal", str(label_dir), rows, None,
                   notes=[f"{label_dir.name}/*.txt ({len(files)} files): Elo, range = observed min-max"])


def read_csiq(directory: str, params: Dict[str, str]) -> _Reader:
    """CSIQ: a name-score text file (default `csiq_label.txt`, lines `1600.AWGN.1.png 0.062`; the
    release's csiq.DMOS.xlsx re-exported this way is how CSIQ is commonly distributed for NR-IQA)
    or pyiqa's meta_info_CSIQDataset.csv in DIR; images found by name anywhere under DIR (release:
    dst_imgs/<type>/1600.AWGN.1.png). DMOS range 0-1, lower is better: flipped when mapped to
    [1, 5]. Seeded split by reference (the `1600` prefix)."""
    d = _require_dir(Path(directory).expanduser(), "csiq", "CSIQ")
    if not params.get("file") and not (d / "csiq_label.txt").is_file() and _pyiqa_in(d, "CSIQ") is not None:
        return _via_pyiqa(_pyiqa_in(d, "CSIQ"), d, params, "csiq")  # type: ignore[arg-type]
    ann = _require_file(Path(params["file"]).expanduser() if params.get("file") else d / "csiq_label.txt",
                        "CSIQ label file")
    index = _index_images(d)
    rows = []
    for line, name, score in _name_score_lines(ann, params.get("encoding")):
        img = index.get(name.lower()) or index.get(name.lower() + ".png")
        rows.append(_Row(str(ann), line, name, img if img else str(d / name), score, ref=name.split(".")[0]))
    return _Reader(params.get("name") or "csiq", str(ann), rows, (0.0, 1.0), lower_better=True,
                   notes=[f"{ann.name}: DMOS 0-1, lower is better: flipped"])


def read_agiqa(directory: str, params: Dict[str, str]) -> _Reader:
    """AGIQA-3K as released: `data.csv` (name, prompt, adj1, adj2, style, mos_quality, std_quality,
    mos_align, std_align) and the images (folder `AGIQA-3K/`, `images/` or DIR itself). Perceptual
    quality MOS (mos_quality), range 0-5. Seeded split by prompt: the same prompt rendered by
    different generators is the same content."""
    d = _require_dir(Path(directory).expanduser(), "agiqa", "AGIQA-3K")
    ann = _require_file(Path(params["file"]).expanduser() if params.get("file") else d / "data.csv", "AGIQA-3K data.csv")
    header, it = _read_csv(ann, None, params.get("encoding"))
    for col in ("name", "mos_quality"):
        if col not in header:
            raise DataError(f"{ann}:1: AGIQA-3K data.csv has no {col!r} column (columns: {', '.join(header)})")
    if params.get("images"):
        imgdir = d / params["images"]
    else:
        imgdir = next((d / c for c in ("AGIQA-3K", "AGIQA-3k", "images", "image") if (d / c).is_dir()), d)
    rows = [_Row(str(ann), line, r["name"], str(imgdir / r["name"]) if r["name"] else None, r["mos_quality"],
                 r.get("std_quality"), None, None, r.get("prompt") or None) for line, r in it]
    return _Reader(params.get("name") or "agiqa", str(ann), rows, (0.0, 5.0),
                   notes=[f"{ann.name}: mos_quality and std_quality 0-5"])


READERS: Dict[str, Callable[[str, Dict[str, str]], _Reader]] = {
    "json": read_json, "csv": read_csv, "txt": read_txt, "pyiqa": read_pyiqa,
    "koniq": read_koniq, "kadid": read_kadid, "spaq": read_spaq,
    "livec": read_livec, "pipal": read_pipal, "csiq": read_csiq, "agiqa": read_agiqa,
}
COMMON_PARAMS = {"split", "seed", "test_frac", "val_frac", "range", "name", "encoding", "std_range"}
_SCALE_PARAMS = {"root", "lower_better"}
READER_PARAMS = {
    "json": _SCALE_PARAMS | {"score", "std"},
    "csv": _SCALE_PARAMS | {"path", "mos", "std", "split_col", "group", "delimiter", "practice"},
    "txt": _SCALE_PARAMS | {"cols", "sep"},
    "pyiqa": {"root", "split_col", "mos", "practice", "cols", "sep", "lower_better"},
    "koniq": {"file", "images"}, "kadid": {"images"}, "spaq": {"file", "images"},
    "livec": {"images", "practice"}, "pipal": {"labels"}, "csiq": {"file"}, "agiqa": {"file", "images"},
}


# ----------------------------------------------------------------------------- suites

# The cross-dataset protocol of the IQA papers (Q-Align, DeQA-Score, Q-Insight, VisualQuality-R1,
# Q-Hawkeye): train on KonIQ-10k's official training set, report KonIQ's official test set and every
# image of the other datasets. `suite:cross?root=DIR` expands to these specs, one folder per dataset
# under DIR (each overridable: `&spaq=/elsewhere/SPAQ`).
SUITES: Dict[str, Tuple[Tuple[str, str, str], ...]] = {
    "cross": (
        ("koniq", "koniq10k", ""),
        ("spaq", "SPAQ", "split=test"),
        ("kadid", "kadid10k", "split=test"),
        ("pipal", "PIPAL", "split=test"),
        ("livec", "ChallengeDB_release", "split=test"),
        ("agiqa", "AGIQA-3K", "split=test"),
        ("csiq", "CSIQ", "split=test"),
    ),
}
_SUITE_PARAMS = {"root", "skip_missing", "seed"}


def _expand_suite(spec: "DataSpec", text: str) -> List[Tuple[str, bool]]:
    """suite:NAME (built-in, SUITES) or suite:FILE (one spec per line, `#` comments, `{root}`
    replaced by the root= option) -> [(spec, optional)]. skip_missing=1 makes a dataset whose
    folder is absent a note in the summary instead of an error."""
    o = spec.options
    root = o.get("root")
    optional = _truthy(o.get("skip_missing"))
    extra = f"seed={o['seed']}" if "seed" in o else ""
    out: List[Tuple[str, bool]] = []
    if root is not None and not Path(root).expanduser().is_dir():
        what = "is a file" if Path(root).expanduser().is_file() else "does not exist"
        raise DataError(f"data spec {text!r}: root {root} {what}; it must be the folder that holds the datasets")
    if spec.path in SUITES:
        entries = SUITES[spec.path]
        known = {k for k, _, _ in entries}
        for k in o:
            if k not in _SUITE_PARAMS | known:
                raise DataError(f"data spec {text!r}: unknown option {k!r} for suite:{spec.path} "
                                f"(allowed: {', '.join(sorted(_SUITE_PARAMS | known))})")
        if root is None and not all(k in o for k in known):
            raise DataError(f"data spec {text!r}: suite:{spec.path} needs root=DIR (the folder holding "
                            f"{', '.join(sub for _, sub, _ in entries)}) or a path per dataset ({', '.join(sorted(known))}=DIR)")
        for kind, sub, q in entries:
            path = o.get(kind) or str(Path(root).expanduser() / sub)  # type: ignore[arg-type]
            query = "&".join(x for x in (q, extra) if x)
            out.append((f"{kind}:{path}" + (f"?{query}" if query else ""), optional))
        return out
    f = Path(spec.path).expanduser()
    if not f.is_file():
        raise DataError(f"data spec {text!r}: no built-in suite {spec.path!r} (built-in: {', '.join(SUITES)}) "
                        f"and no suite file {f}")
    for k in o:
        if k not in _SUITE_PARAMS:
            raise DataError(f"data spec {text!r}: unknown option {k!r} for a suite file (allowed: {', '.join(sorted(_SUITE_PARAMS))})")
    for i, line in enumerate(_read_text(f).splitlines(), 1):
        s = line.split("#", 1)[0].strip() if not line.strip().startswith("#") else ""
        if not s:
            continue
        if "{root}" in s:
            if root is None:
                raise DataError(f"{f}:{i}: uses {{root}}: pass suite:{spec.path}?root=DIR")
            s = s.replace("{root}", str(Path(root).expanduser()))
        if parse_spec(s).kind == "suite":
            raise DataError(f"{f}:{i}: a suite file cannot include another suite")
        out.append((s, optional))
    if not out:
        raise DataError(f"{f}: suite file lists no data specs")
    return out


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: str
    params: Tuple[Tuple[str, str], ...] = ()

    @property
    def options(self) -> Dict[str, str]:
        return dict(self.params)


KINDS = tuple(READERS) + ("suite",)
# split before any `word:` of two or more letters, not only known kinds: "koniq:/a,cvs:/b.csv" must
# say "unknown data kind 'cvs'", not look for a folder named "/a,cvs:/b.csv" (1 letter: a drive)
_SPLIT_RE = re.compile(r"[;,]\s*(?=[A-Za-z][A-Za-z0-9_+.-]+:)")
_KIND_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]*):(.*)$", re.S)


def _unknown_kind(spec: str, kind: str) -> DataError:
    import difflib

    close = difflib.get_close_matches(kind.lower(), KINDS, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}:'?" if close else ""
    return DataError(f"data spec {spec!r}: unknown data kind {kind!r} (known: {', '.join(KINDS)}){hint}")


def parse_spec(spec: str) -> DataSpec:
    """'kind:PATH[?k=v&k=v]' -> DataSpec. A bare .json/.jsonl/.csv/.txt path is accepted as json:/csv:/txt:."""
    s = spec.strip()
    if _is_url(s):
        raise DataError(_url_message(f"data spec {spec!r}", s))
    m = _KIND_RE.match(s)
    if m and m.group(1).lower() in KINDS:
        kind, rest = m.group(1).lower(), m.group(2)
    elif m and len(m.group(1)) > 1:   # a single letter is a Windows drive (C:\data\x.csv)
        raise _unknown_kind(spec, m.group(1))
    else:
        low = s.lower().split("?", 1)[0]
        if low.endswith((".json", ".jsonl")):
            kind, rest = "json", s
        elif low.endswith(".csv"):
            kind, rest = "csv", s
        elif low.endswith(".txt"):
            kind, rest = "txt", s
        else:
            raise DataError(f"data spec {spec!r}: expected KIND:PATH with KIND one of {', '.join(KINDS)}")
    path, _, query = rest.partition("?")
    if not path:
        raise DataError(f"data spec {spec!r}: no file or directory after '{kind}:'")
    if _is_url(path):
        raise DataError(_url_message(f"data spec {spec!r}", path))
    params = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else ()
    if kind != "suite":   # a suite's options are checked when it is expanded (they depend on the suite)
        allowed = COMMON_PARAMS | READER_PARAMS[kind]
        for k, _ in params:
            if k not in allowed:
                raise DataError(f"data spec {spec!r}: unknown option {k!r} for {kind} (allowed: {', '.join(sorted(allowed))})")
    return DataSpec(kind, path, params)


def _expand(specs: Union[str, Sequence[str]]) -> List[Tuple[str, bool]]:
    items = [specs] if isinstance(specs, str) else list(specs)
    out: List[Tuple[str, bool]] = []
    for it in items:
        for p in _SPLIT_RE.split(it):
            p = p.strip()
            if not p:
                continue
            spec = parse_spec(p)
            out.extend(_expand_suite(spec, p) if spec.kind == "suite" else [(p, False)])
    return out


def split_specs(specs: Union[str, Sequence[str]]) -> List[str]:
    """'a:X,b:Y' or ['a:X', 'b:Y;c:Z'] -> ['a:X', 'b:Y', 'c:Z']; a suite: spec becomes its specs."""
    return [s for s, _ in _expand(specs)]


def _float_pair(spec: str, v: str, key: str = "range") -> Tuple[float, float]:
    try:
        lo, hi = (float(x) for x in v.split(","))
    except ValueError:
        raise DataError(f"data spec {spec!r}: {key} must be LO,HI (two numbers), got {v!r}") from None
    if not hi > lo:
        raise DataError(f"data spec {spec!r}: {key} {v!r} must have HI > LO")
    return lo, hi


def load_records(specs: Union[str, Sequence[str]], *, on_bad: str = "skip", check_images: str = "full",
                 max_pixels: int = DEFAULT_MAX_PIXELS, seed: int = 0, test_frac: float = 0.2,
                 val_frac: float = 0.0) -> LoadResult:
    """Read one or several data specs into records (see the module docstring).

    on_bad="skip" drops bad records and lists them in the summaries; "fail" raises DataError on
    the first one. Options in a spec's query (seed, test_frac, ...) override the arguments.
    """
    records: List[IQARecord] = []
    summaries: List[LoadSummary] = []
    for text, optional in _expand(specs):
        spec = parse_spec(text)
        o = spec.options
        try:
            opts = LoadOptions(on_bad=on_bad, check_images=check_images, max_pixels=max_pixels,
                               seed=int(o.get("seed", seed)), test_frac=float(o.get("test_frac", test_frac)),
                               val_frac=float(o.get("val_frac", val_frac)))
        except ValueError as e:
            raise DataError(f"data spec {text!r}: {e}") from None
        forced = o.get("split")
        if forced is not None and forced not in SPLITS:
            raise DataError(f"data spec {text!r}: split must be one of {', '.join(SPLITS)}, got {forced!r}")
        observed = o.get("range") == "observed"
        rng = _float_pair(text, o["range"]) if "range" in o and not observed else None
        std_rng = _float_pair(text, o["std_range"], "std_range") if "std_range" in o else None
        if optional and not Path(spec.path).expanduser().exists():
            s = LoadSummary(dataset=o.get("name") or spec.kind, file=spec.path)
            s.notes.append(f"skipped: {spec.path} does not exist (suite skip_missing=1)")
            summaries.append(s)
            continue
        rd = READERS[spec.kind](spec.path, o)
        if std_rng is not None:
            rd.std_range = std_rng
            rd.notes.append(f"std on {std_rng[0]:g}-{std_rng[1]:g} (std_range=), mapped to the 1-5 scale")
        if observed:   # an open scale: the observed min-max, as PIPAL's reader does
            rd.mos_range, rd.infer_range = None, False
        recs, summary = _finalize(rd, opts, forced_split=forced, range_override=rng, name=o.get("name"))
        records.extend(recs)
        summaries.append(summary)
    return LoadResult(records, summaries)


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
