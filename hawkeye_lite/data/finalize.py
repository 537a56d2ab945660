"""Raw rows -> records: the one step every reader's output goes through (`_finalize`).

Why the data package has this shape: every reader (formats.py, layouts.py) only knows its layout
and yields raw rows (file, line, image path, raw MOS, ...). One shared `_finalize` does the rest
the same way for all formats: MOS parsing and range check (scale.py), image checks
(imagecheck.py), linear mapping to [1, 5], the split by reference content, and the bad-record
policy. So a new format is a small function, and a bad record is reported identically whichever
reader found it.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

from .imagecheck import check_image
from .records import (
    BadRecord,
    DataError,
    IQARecord,
    LoadOptions,
    LoadSummary,
    _norm_split,
    _parse_float,
    _Reader,
    _Row,
    assign_splits,
    map_mos,
)
from .scale import _check_std_scale, _infer_range


def _finalize(
    rd: _Reader,
    opts: LoadOptions,
    *,
    forced_split: Optional[str],
    range_override: Optional[Tuple[float, float]],
    name: Optional[str],
) -> Tuple[List[IQARecord], LoadSummary]:
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
            reject(
                row, "bad std", f"std {std:g} is more than half the scale {std_lo:g}-{std_hi:g}: not a rater std on it"
            )
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
            id=row.id,
            image=row.image,
            mos=float(map_mos(mos, lo, hi, rd.lower_better)),
            mos_raw=float(mos),
            mos_range=(float(lo), float(hi)),
            dataset=name,
            split=split,
            std=std,
            image_deg=row.image_deg,
            ref=row.ref,
            source=f"{row.file}:{row.line}",
        )
        records.append(rec)
        summary.splits[split] += 1
    summary.n_kept = len(records)
    return records, summary
