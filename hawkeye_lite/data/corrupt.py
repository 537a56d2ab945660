"""Controlled label noise for studies of uncertainty weighting (issue #28).

`corrupt_labels(records, rho, seed)` replaces the MOS of a fixed, seeded fraction `rho` of the
*training* records by a draw independent of the image (uniform on the record's MOS range, 1-5
after normalisation); validation and test records are never touched. Which records are corrupted
is a pure function of (the training records' ids, rho, seed): `corrupted_ids` recomputes it for
an analysis, whatever order the records come in. A data spec asks for it with the query options
`corrupt=RHO` and `corrupt_seed=N` (default 0), e.g. `demo:data/demo?corrupt=0.4`.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np

LO, HI = 1.0, 5.0  # records carry MOS on the 1-5 scale after normalisation (finalize.py)


def corrupted_ids(records: Sequence, rho: float, seed: int = 0) -> Set[str]:
    """The ids of the training records whose labels `corrupt_labels` replaces: round(rho * n) of
    the n training records, chosen by a seeded permutation of their sorted ids."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"corrupt: the fraction must be in [0, 1], got {rho}")
    ids = sorted(r.id for r in records if r.split == "train")
    k = int(round(rho * len(ids)))
    order = np.random.default_rng([int(seed), 29]).permutation(len(ids))
    return {ids[i] for i in order[:k]}


def corrupt_labels(records: Sequence, rho: float, seed: int = 0) -> Tuple[List, Set[str]]:
    """(records with the chosen training labels replaced, the chosen ids). The replacement MOS of
    a record is uniform on [1, 5], drawn from a stream keyed by (seed, its id): the same record
    gets the same wrong label in every run. Its std is kept (it is not used by the rewards)."""
    chosen = corrupted_ids(records, rho, seed)
    out = []
    for r in records:
        if r.id in chosen:
            key = zlib.crc32(r.id.encode("utf-8"))
            mos = float(np.random.default_rng([int(seed), 31, key]).uniform(LO, HI))
            lo, hi = r.mos_range
            r = dataclasses.replace(r, mos=mos, mos_raw=lo + (mos - LO) / (HI - LO) * (hi - lo))
        out.append(r)
    return out, chosen


def corrupt_from_options(records: Sequence, options: dict, spec: str) -> Tuple[List, Optional[Tuple[float, int, int]]]:
    """A data spec's `corrupt` / `corrupt_seed` options applied to its records: (records,
    (rho, seed, number of labels replaced)), or (records unchanged, None) without `corrupt`.
    ValueError naming the spec for values that are not a fraction / an integer."""
    if "corrupt" not in options:
        return list(records), None
    try:
        rho = float(options["corrupt"])
        seed = int(options.get("corrupt_seed", 0))
    except ValueError as e:
        raise ValueError(f"data spec {spec!r}: corrupt / corrupt_seed: {e}") from None
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"data spec {spec!r}: corrupt must be a fraction in [0, 1], got {rho}")
    out, chosen = corrupt_labels(records, rho, seed)
    return out, (rho, seed, len(chosen))
