"""MOS scales: which raw range a generic label file is on, and whether its stds are on the same one.

Generic files (json/csv/txt, and pyiqa meta files of a dataset not in PYIQA_FACTS) are on 1-5
unless their values cannot be; then a standard range is inferred and said in the summary, or the
load stops naming the observed range (`_infer_range`). Stds that cannot be rater stds on the MOS
scale stop the load naming `std_range=` (`_check_std_scale`). finalize.py calls both.
"""

from __future__ import annotations

import math
from typing import List, Tuple

from .records import DataError, _parse_float, _Reader

# The scales a generic file (json:, csv:, txt:) is checked against, in order. 1-100 is never
# inferred: a smallest value of 1 or more cannot tell it from 0-100 (LIVE-C's lowest MOS is 3.42
# on 0-100), so a 1-100 file needs ?range=1,100 (the mapping differs by at most 0.04 on 1-5).
STANDARD_RANGES = ((0.0, 1.0), (0.0, 5.0), (0.0, 100.0))
_MAX_OUTLIERS = 0.02  # at most this share outside 1-5: typos (bad records), not another scale
_MIN_COVER = 0.25  # an inferred range must be used: the values span at least this share of it


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
        notes.append(
            f"MOS range 1-5 (default): {len(out)} of {len(vals)} values outside it are skipped as "
            f"out-of-range; pass ?range=LO,HI if the file is on another scale"
        )
        return 1.0, 5.0
    for lo, hi in STANDARD_RANGES:
        if lo - 1e-6 <= vmin and vmax <= hi + 1e-6:
            if vmax - vmin >= _MIN_COVER * (hi - lo):
                notes.append(
                    f"MOS range {lo:g}-{hi:g} inferred: the values span {vmin:g}-{vmax:g}, not the "
                    f"default 1-5; pass ?range=LO,HI if the scale is another"
                    + ("" if hi != 100 else " (e.g. ?range=1,100)")
                )
                return lo, hi
            break
    first = out[0][1]
    raise DataError(
        f"{rd.file}: MOS values span {vmin:g}-{vmax:g} ({len(out)} of {len(vals)} outside the default "
        f"range 1-5, first at line {first.line}), which fits no standard range it could be inferred as "
        f"(0-1, 0-5, 0-100); pass ?range=LO,HI with the file's scale "
        f"(e.g. ?range=1,5 to skip the values outside 1-5 as out-of-range records), or "
        f"?range=observed for an open scale such as PIPAL's Elo"
    )


def _check_std_scale(rd: _Reader, lo: float, hi: float, std_lo: float, std_hi: float, notes: List[str]) -> float:
    """The largest std a record may have (half its scale: the most a std of ratings on a bounded
    scale can be). When most of a file's stds are above it they are on another scale than the
    MOS (VisualQuality-R1's SPAQ list: 1-5 scores, 0-100 stds): stop, naming `std_range=`."""
    half = (std_hi - std_lo) / 2 * (1 + 1e-6)
    stds = [v for v in (_parse_float(r.std) for r in rd.rows) if v is not None and v >= 0]
    stds = [math.sqrt(v) for v in stds] if rd.std_is_variance else stds
    if rd.std_range is None and stds and sum(v > half for v in stds) > len(stds) / 2:
        raise DataError(
            f"{rd.file}: std values span {min(stds):g}-{max(stds):g}, too large for rater stds on the "
            f"MOS scale {lo:g}-{hi:g} (at most {half:g}); they are on another scale: pass "
            f"?std_range=LO,HI with that scale (e.g. ?std_range=0,100), or leave the std column out"
        )
    if rd.std_range is None and stds and std_hi - std_lo > 10 and max(stds) < 0.02 * (std_hi - std_lo):
        # the other way round cannot be proven (VisualQuality-R1's AGIQA list: 0-100 scores, 0-5 stds)
        notes.append(
            f"warning: every std is below 2% of the MOS scale {std_lo:g}-{std_hi:g} (at most {max(stds):g}): "
            f"if they are on another scale, pass ?std_range=LO,HI (e.g. ?std_range=0,5)"
        )
    return half
