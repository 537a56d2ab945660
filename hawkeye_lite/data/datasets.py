"""IQA dataset readers: every supported format becomes a list of `IQARecord`.

A data spec string picks a reader and its directory or file:

    json:FILE                      the paper's JSON ({"id", "images": [path], "gt_score"}),
                                   DeQA-Score meta JSON ({"image", "gt_score", "std", ...}), or JSONL
    csv:FILE?path=COL&mos=COL&root=DIR&range=LO,HI   any CSV with an image and a MOS column
    koniq:DIR  kadid:DIR  spaq:DIR  livec:DIR  pipal:DIR  csiq:DIR  agiqa:DIR   native releases

Several specs can be combined: "koniq:/d/koniq,spaq:/d/spaq" (comma or semicolon before the
next `kind:`), or a list of strings. Every spec takes the common query options

    split=train|val|test     put every record of this spec in that split (cross-dataset testing)
    seed=N  test_frac=F  val_frac=F   the seeded split, used when the dataset has no split column
    range=LO,HI              the raw MOS range (overrides the reader's default)
    name=NAME                the dataset name used in summaries and eval tables

Why the shape of this module: every reader only knows its layout and yields raw rows
(file, line, image path, raw MOS, ...). One shared `_finalize` does the rest the same way for
all formats: MOS parsing and range check, image checks, linear mapping to [1, 5], the split by
reference content, and the bad-record policy. So a new format is a small function, and a bad
record is reported identically whichever reader found it.
"""

from __future__ import annotations

import csv
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

    def format(self, max_bad: int = 5) -> str:
        kinds = Counter(b.kind for b in self.bad)
        s = f"{self.dataset}: {self.n_read} read, {self.n_kept} kept"
        if self.bad:
            s += f", {len(self.bad)} skipped (" + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) + ")"
        s += "; raw MOS range %g-%g" % self.mos_range
        s += "; split " + " / ".join(f"{k} {self.splits.get(k, 0)}" for k in SPLITS)
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
    elif rd.mos_range is not None:
        lo, hi = rd.mos_range
    else:  # open scale (Elo): the observed min/max of the parseable values
        vals = [v for v in (_parse_float(r.mos) for r in rd.rows) if v is not None]
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
    summary.mos_range = (float(lo), float(hi))
    tol = 1e-6 * (hi - lo)

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
    scale = 4.0 / (hi - lo)
    for row, mos, std, split in good:
        if forced_split is not None:
            split = forced_split
        elif split is None:
            split = seeded[row.ref or row.id]
        if std is not None:
            std = (math.sqrt(std) if rd.std_is_variance else std) * scale
        rec = IQARecord(
            id=row.id, image=row.image, mos=float(map_mos(mos, lo, hi, rd.lower_better)), mos_raw=float(mos),
            mos_range=(float(lo), float(hi)), dataset=name, split=split, std=std,
            image_deg=row.image_deg, ref=row.ref, source=f"{row.file}:{row.line}",
        )
        records.append(rec)
        summary.splits[split] += 1
    summary.n_kept = len(records)
    return records, summary


# ----------------------------------------------------------------------------- file helpers


def _resolve(p: str, root: Path) -> str:
    q = Path(os.path.expanduser(p))
    return str((q if q.is_absolute() else root / q).resolve())


def _read_csv(path: Path, delimiter: Optional[str] = None) -> Tuple[List[str], Iterator[Tuple[int, Dict[str, str]]]]:
    """Header and (line number, row dict) pairs. Line numbers are the file's, header = line 1."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if delimiter is None:
        first = text.splitlines()[0] if text else ""
        delimiter = max([",", ";", "\t"], key=first.count)
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path}:1: empty CSV file") from None

    def rows() -> Iterator[Tuple[int, Dict[str, str]]]:
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue
            yield reader.line_num, {h: (values[i].strip() if i < len(values) else "") for i, h in enumerate(header)}

    return header, rows()


def _pick_column(header: Sequence[str], wanted: Optional[str], candidates: Sequence[str], what: str, path: Path) -> Optional[str]:
    if wanted:
        if wanted not in header:
            raise DataError(f"{path}:1: no column {wanted!r} for the {what} (columns: {', '.join(header)})")
        return wanted
    lower = {h.lower(): h for h in header}
    for c in candidates:
        if c.lower() in lower:
            return lower[c.lower()]
    return None


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    return path


def _first_existing(base: Path, candidates: Sequence[str], what: str) -> Path:
    for c in candidates:
        p = base / c
        if p.exists():
            return p
    raise DataError(f"{base}: {what} not found (looked for {', '.join(candidates)})")


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


def _name_score_lines(path: Path) -> Iterator[Tuple[int, str, str]]:
    """`name score` or `name,score` lines -> (line, name, score-string). Blank/comment lines skipped."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for i, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            parts = [p.strip() for p in (s.split(",") if "," in s else s.split())]
            yield i, parts[0], (parts[1] if len(parts) > 1 else "")


# ----------------------------------------------------------------------------- readers


def read_json(file: str, params: Dict[str, str]) -> _Reader:
    """The paper's JSON list, DeQA-Score meta JSON, or JSONL. Relative image paths are resolved
    against `root=` if given, else the JSON file's folder. Default MOS range 1-5."""
    path = _require_file(Path(file).expanduser(), "JSON file")
    root = Path(params.get("root") or path.parent).expanduser()
    text = path.read_text(encoding="utf-8-sig")
    entries: List[Tuple[int, object]] = []
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
        else:  # JSONL
            for i, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    entries.append((i, json.loads(line)))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None

    rows = []
    for line, obj in entries:
        if not isinstance(obj, dict):
            rows.append(_Row(str(path), line, f"entry@{line}", None, None))
            continue
        img = obj.get("images", obj.get("image", obj.get("image_path", obj.get("path"))))
        if isinstance(img, list):
            img = img[0] if img else None
        deg = obj.get("image_deg")
        if isinstance(deg, list):
            deg = deg[0] if deg else None
        mos = obj.get("gt_score", obj.get("mos", obj.get("score")))
        image = _resolve(str(img), root) if img else None
        rid = str(obj.get("id") or (Path(str(img)).stem if img else f"entry@{line}"))
        rows.append(_Row(str(path), line, rid, image, mos, obj.get("std"),
                         _resolve(str(deg), root) if deg else None, obj.get("split"),
                         obj.get("ref") or obj.get("ref_img") or obj.get("group_id")))
    # a file we wrote carries its dataset name; otherwise the file name stands for it
    names = {obj.get("dataset") for _, obj in entries if isinstance(obj, dict)}
    name = params.get("name") or (names.pop() if len(names) == 1 and None not in names else path.stem)
    return _Reader(str(name), str(path), rows, (1.0, 5.0))


def read_csv(file: str, params: Dict[str, str]) -> _Reader:
    """Generic CSV. Options: path=COL mos=COL std=COL split_col=COL group=COL root=DIR
    lower_better=1 delimiter=CHAR. Columns are auto-detected when not given."""
    path = _require_file(Path(file).expanduser(), "CSV file")
    root = Path(params.get("root") or path.parent).expanduser()
    header, it = _read_csv(path, params.get("delimiter"))
    pcol = _pick_column(header, params.get("path"), ["image", "image_name", "images", "path", "filename", "file", "name", "img"], "image path", path)
    mcol = _pick_column(header, params.get("mos"), ["mos", "gt_score", "score", "dmos", "mos_quality"], "MOS", path)
    if pcol is None or mcol is None:
        raise DataError(f"{path}:1: cannot tell which columns hold the image path and the MOS "
                        f"(columns: {', '.join(header)}); pass ?path=COL&mos=COL")
    scol = _pick_column(header, params.get("std"), ["std", "sd", "mos_std"] if not params.get("std") else [], "std", path)
    tcol = _pick_column(header, params.get("split_col"), ["split", "set"], "split", path)
    gcol = _pick_column(header, params.get("group"), ["ref", "ref_img", "reference"], "group", path)
    rows = []
    for line, r in it:
        p = r.get(pcol, "")
        rows.append(_Row(str(path), line, p or f"line{line}", _resolve(p, root) if p else None, r.get(mcol),
                         r.get(scol) if scol else None, None, r.get(tcol) if tcol else None,
                         r.get(gcol) if gcol else None))
    return _Reader(params.get("name") or path.stem, str(path), rows, (1.0, 5.0),
                   lower_better=params.get("lower_better", "0").lower() in ("1", "true", "yes"))


def read_koniq(directory: str, params: Dict[str, str]) -> _Reader:
    """KonIQ-10k as released: `koniq10k_distributions_sets.csv` (image_name, c1..c5, c_total, MOS, SD,
    set: training/validation/test; from the authors' metadata repo; MOS on 1-100) or
    `koniq10k_scores_and_distributions.csv` (... MOS, SD, MOS_zscore; MOS on 1-5; no split column:
    seeded split). Images in `1024x768/` (or koniq10k_1024x768/1024x768, 512x384)."""
    d = Path(directory).expanduser()
    ann = Path(params["file"]) if params.get("file") else _first_existing(
        d, ["koniq10k_distributions_sets.csv", "metadata/koniq10k_distributions_sets.csv",
            "koniq10k_scores_and_distributions.csv", "koniq10k_scores_and_distributions/koniq10k_scores_and_distributions.csv"],
        "KonIQ-10k score CSV")
    imgdir = d / params["images"] if params.get("images") else _first_existing(
        d, ["1024x768", "koniq10k_1024x768/1024x768", "512x384", "koniq10k_512x384/512x384", "images"], "KonIQ-10k image folder")
    header, it = _read_csv(ann)
    for col in ("image_name", "MOS"):
        if col not in header:
            raise DataError(f"{ann}:1: KonIQ-10k CSV has no {col!r} column (columns: {', '.join(header)})")
    rows = [_Row(str(ann), line, r["image_name"], str(imgdir / r["image_name"]) if r["image_name"] else None,
                 r["MOS"], r.get("SD"), None, r.get("set")) for line, r in it]
    # The two official files disagree on the scale of their "MOS" column: the scores file has the
    # 1-5 MOS (and MOS_zscore on 1-100), the sets file (image_name, c1..c5, c_total, MOS, SD, set)
    # carries the 1-100 rescaled MOS under that name. The values tell them apart unambiguously.
    vals = [v for v in (_parse_float(r.mos) for r in rows) if v is not None]
    scale = (1.0, 100.0) if vals and max(vals) > 5.0 else (1.0, 5.0)
    return _Reader(params.get("name") or "koniq", str(ann), rows, scale)


def read_kadid(directory: str, params: Dict[str, str]) -> _Reader:
    """KADID-10k as released (kadid10k.zip): `dmos.csv` (dist_img, ref_img, dmos, var) and `images/`
    holding both references and distorted images. DMOS is a 1-5 degradation category rating where
    higher is better. No official split: seeded split by reference image, never leaking one."""
    d = Path(directory).expanduser()
    base = d if (d / "dmos.csv").is_file() or not (d / "kadid10k" / "dmos.csv").is_file() else d / "kadid10k"
    ann = _require_file(base / "dmos.csv", "KADID-10k dmos.csv")
    imgdir = base / params.get("images", "images")
    header, it = _read_csv(ann)
    for col in ("dist_img", "ref_img", "dmos"):
        if col not in header:
            raise DataError(f"{ann}:1: KADID-10k dmos.csv has no {col!r} column (columns: {', '.join(header)})")
    rows = [_Row(str(ann), line, r["dist_img"], str(imgdir / r["dist_img"]) if r["dist_img"] else None,
                 r["dmos"], r.get("var"), None, None, r["ref_img"] or None) for line, r in it]
    return _Reader(params.get("name") or "kadid", str(ann), rows, (1.0, 5.0), std_is_variance=True)


def read_spaq(directory: str, params: Dict[str, str]) -> _Reader:
    """SPAQ: the release's `Annotations/MOS and Image attribute scores.xlsx` exported to CSV (same
    name, .csv; columns "Image name", "MOS", ...) and images in `TestImage/`. MOS range 0-100."""
    d = Path(directory).expanduser()
    if params.get("file"):
        ann = _require_file(Path(params["file"]).expanduser(), "SPAQ annotation CSV")
    else:
        cands = [d / "Annotations" / "MOS and Image attribute scores.csv", d / "MOS and Image attribute scores.csv",
                 d / "Annotations" / "MOS_and_Image_attribute_scores.csv"]
        found = [c for c in cands if c.is_file()]
        if not found:
            xlsx = list(d.glob("**/MOS and Image attribute scores.xlsx"))
            hint = (f" Found {xlsx[0]}: export its first sheet to CSV next to it (same name, .csv)."
                    if xlsx else "")
            raise DataError(f"{d}: SPAQ annotation CSV not found (looked for {cands[0]}).{hint} "
                            "Or pass spaq:DIR?file=CSV.")
        ann = found[0]
    imgdir = d / params.get("images", "TestImage")
    header, it = _read_csv(ann)
    ncol = _pick_column(header, None, ["Image name", "image_name", "Image_name", "name"], "image name", ann)
    mcol = _pick_column(header, None, ["MOS", "mos"], "MOS", ann)
    if ncol is None or mcol is None:
        raise DataError(f"{ann}:1: SPAQ CSV needs 'Image name' and 'MOS' columns (columns: {', '.join(header)})")
    rows = [_Row(str(ann), line, r[ncol], str(imgdir / r[ncol]) if r[ncol] else None, r[mcol]) for line, r in it]
    return _Reader(params.get("name") or "spaq", str(ann), rows, (0.0, 100.0))


def read_livec(directory: str, params: Dict[str, str]) -> _Reader:
    """LIVE In the Wild Challenge as released: `Data/AllImages_release.mat`, `Data/AllMOS_release.mat`,
    `Data/AllStdDev_release.mat` (aligned vectors) and `Images/`. The first 7 of the 1169 entries are
    the observers' practice images (in Images/trainingImages) and are dropped, as everyone does.
    MOS range 0-100. Entries are reported as `entry N` (1-based) of AllImages_release.mat."""
    import scipy.io

    d = Path(directory).expanduser()
    data = d / "Data"
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
    start = 7 if len(names) == 1169 and params.get("practice", "0") not in ("1", "true") else 0
    imgdir = d / params.get("images", "Images")
    rows = []
    for i in range(start, len(names)):
        n = names[i]
        while isinstance(n, np.ndarray):  # MATLAB cell arrays nest: array([array(['x.bmp'])])
            n = n.reshape(-1)[0] if n.size else ""
        n = str(n).strip()
        rows.append(_Row(str(names_f), f"entry {i + 1}", n or f"entry{i + 1}", str(imgdir / n) if n else None,
                         mos[i], None if std is None else std[i]))
    return _Reader(params.get("name") or "livec", str(names_f), rows, (0.0, 100.0))


def read_pipal(directory: str, params: Dict[str, str]) -> _Reader:
    """PIPAL (NTIRE 2021/2022 training release): `Train_Label/A0001.txt ...` with lines
    `A0001_00_00.bmp,1556.05` (name, Elo score); distorted images anywhere under DIR (the release
    ships them as Distortion_1..4 or Train_Dis); references A0001.bmp in Train_Ref. Elo has no fixed
    range: by default the observed min/max of the labels read is the range (pass range=LO,HI to fix it).
    Seeded split by reference (the `A0001` prefix)."""
    d = Path(directory).expanduser()
    label_dir = d / params.get("labels", "Train_Label")
    if not label_dir.is_dir():
        raise DataError(f"{label_dir}: PIPAL label folder not found")
    files = sorted(label_dir.glob("*.txt"))
    if not files:
        raise DataError(f"{label_dir}: no PIPAL label .txt files")
    index = _index_images(d)
    rows = []
    for f in files:
        for line, name, score in _name_score_lines(f):
            img = index.get(name.lower())
            rows.append(_Row(str(f), line, name, img if img else str(d / name), score,
                             ref=name.split("_")[0]))
    return _Reader(params.get("name") or "pipal", str(label_dir), rows, None)


def read_csiq(directory: str, params: Dict[str, str]) -> _Reader:
    """CSIQ: a name-score text file (default `csiq_label.txt`, lines `1600.AWGN.1.png 0.062`; the
    release's csiq.DMOS.xlsx re-exported this way is how CSIQ is commonly distributed for NR-IQA),
    images found by name anywhere under DIR (release: dst_imgs/<type>/1600.AWGN.1.png). DMOS range
    0-1, lower is better: flipped when mapped to [1, 5]. Seeded split by reference (the `1600` prefix)."""
    d = Path(directory).expanduser()
    ann = _require_file(Path(params["file"]).expanduser() if params.get("file") else d / "csiq_label.txt",
                        "CSIQ label file")
    index = _index_images(d)
    rows = []
    for line, name, score in _name_score_lines(ann):
        img = index.get(name.lower()) or index.get(name.lower() + ".png")
        rows.append(_Row(str(ann), line, name, img if img else str(d / name), score, ref=name.split(".")[0]))
    return _Reader(params.get("name") or "csiq", str(ann), rows, (0.0, 1.0), lower_better=True)


def read_agiqa(directory: str, params: Dict[str, str]) -> _Reader:
    """AGIQA-3K as released: `data.csv` (name, prompt, adj1, adj2, style, mos_quality, std_quality,
    mos_align, std_align) and the images (folder `AGIQA-3K/`, `images/` or DIR itself). Perceptual
    quality MOS (mos_quality), range 0-5. Seeded split by prompt: the same prompt rendered by
    different generators is the same content."""
    d = Path(directory).expanduser()
    ann = _require_file(Path(params["file"]).expanduser() if params.get("file") else d / "data.csv", "AGIQA-3K data.csv")
    header, it = _read_csv(ann)
    for col in ("name", "mos_quality"):
        if col not in header:
            raise DataError(f"{ann}:1: AGIQA-3K data.csv has no {col!r} column (columns: {', '.join(header)})")
    if params.get("images"):
        imgdir = d / params["images"]
    else:
        imgdir = next((d / c for c in ("AGIQA-3K", "AGIQA-3k", "images", "image") if (d / c).is_dir()), d)
    rows = [_Row(str(ann), line, r["name"], str(imgdir / r["name"]) if r["name"] else None, r["mos_quality"],
                 r.get("std_quality"), None, None, r.get("prompt") or None) for line, r in it]
    return _Reader(params.get("name") or "agiqa", str(ann), rows, (0.0, 5.0))


READERS: Dict[str, Callable[[str, Dict[str, str]], _Reader]] = {
    "json": read_json, "csv": read_csv, "koniq": read_koniq, "kadid": read_kadid, "spaq": read_spaq,
    "livec": read_livec, "pipal": read_pipal, "csiq": read_csiq, "agiqa": read_agiqa,
}
COMMON_PARAMS = {"split", "seed", "test_frac", "val_frac", "range", "name"}
READER_PARAMS = {
    "json": {"root"},
    "csv": {"root", "path", "mos", "std", "split_col", "group", "lower_better", "delimiter"},
    "koniq": {"file", "images"}, "kadid": {"images"}, "spaq": {"file", "images"},
    "livec": {"images", "practice"}, "pipal": {"labels"}, "csiq": {"file"}, "agiqa": {"file", "images"},
}


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: str
    params: Tuple[Tuple[str, str], ...] = ()

    @property
    def options(self) -> Dict[str, str]:
        return dict(self.params)


_SPLIT_RE = re.compile(r"[;,]\s*(?=(?:%s):)" % "|".join(READERS))


def parse_spec(spec: str) -> DataSpec:
    """'kind:PATH[?k=v&k=v]' -> DataSpec. A bare .json/.csv path is accepted as json:/csv:."""
    s = spec.strip()
    m = re.match(r"^([a-z]+):(.*)$", s)
    if m and m.group(1) in READERS:
        kind, rest = m.group(1), m.group(2)
    elif s.lower().endswith((".json", ".jsonl")) or ".json?" in s.lower():
        kind, rest = "json", s
    elif s.lower().endswith(".csv") or ".csv?" in s.lower():
        kind, rest = "csv", s
    else:
        raise DataError(f"data spec {spec!r}: expected KIND:PATH with KIND one of {', '.join(READERS)}")
    path, _, query = rest.partition("?")
    if not path:
        raise DataError(f"data spec {spec!r}: no file or directory after '{kind}:'")
    params = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else ()
    allowed = COMMON_PARAMS | READER_PARAMS[kind]
    for k, _ in params:
        if k not in allowed:
            raise DataError(f"data spec {spec!r}: unknown option {k!r} for {kind} (allowed: {', '.join(sorted(allowed))})")
    return DataSpec(kind, path, params)


def split_specs(specs: Union[str, Sequence[str]]) -> List[str]:
    """'a:X,b:Y' or ['a:X', 'b:Y;c:Z'] -> ['a:X', 'b:Y', 'c:Z']."""
    items = [specs] if isinstance(specs, str) else list(specs)
    out: List[str] = []
    for it in items:
        out.extend(p.strip() for p in _SPLIT_RE.split(it) if p.strip())
    return out


def _float_pair(spec: str, v: str) -> Tuple[float, float]:
    try:
        lo, hi = (float(x) for x in v.split(","))
    except ValueError:
        raise DataError(f"data spec {spec!r}: range must be LO,HI (two numbers), got {v!r}") from None
    if not hi > lo:
        raise DataError(f"data spec {spec!r}: range {v!r} must have HI > LO")
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
    for text in split_specs(specs):
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
        rng = _float_pair(text, o["range"]) if "range" in o else None
        rd = READERS[spec.kind](spec.path, o)
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
