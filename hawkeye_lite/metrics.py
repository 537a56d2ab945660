"""Correlation metrics for image quality assessment, computed the way the field reports them.

- SRCC (Spearman) and KRCC (Kendall tau-b) measure monotonicity: a model that ranks images
  right scores 1 regardless of its scale.
- PLCC (Pearson) measures linearity. Papers report it after the standard 4-parameter
  logistic mapping of the predictions onto the MOS (VQEG, "Final report ... phase II", 2003):
      f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2
  because a model's scale need not be linear in MOS. We report it both raw and fitted.
- RMSE between prediction and MOS (both on the 1-5 scale), raw and after the fit.

Everything is NaN-safe: a prediction that did not parse (NaN/inf) is counted and excluded,
and a degenerate input (fewer than 3 valid pairs, constant predictions) yields NaN metrics
with a note instead of an exception, because an evaluation at the end of a long run must
never crash on the model's output.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

NAN = float("nan")


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The VQEG 4-parameter logistic: b1 = upper asymptote, b2 = lower, b3 = midpoint, |b4| = slope scale."""
    z = -(np.asarray(x, dtype=np.float64) - b3) / (abs(b4) + 1e-12)
    # clip the exponent so extreme predictions saturate instead of overflowing to inf
    return (b1 - b2) / (1.0 + np.exp(np.clip(z, -700.0, 700.0))) + b2


@dataclass
class LogisticFit:
    params: Tuple[float, float, float, float]
    ok: bool
    message: str = ""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.ok:
            return np.asarray(x, dtype=np.float64)  # fallback: identity (raw predictions)
        return logistic4(x, *self.params)


def fit_logistic(pred: Sequence[float], mos: Sequence[float], *, maxfev: int = 20000) -> LogisticFit:
    """Fit logistic4 mapping pred -> mos with scipy's curve_fit.

    A failed fit (too few points, constant predictions, no convergence, non-finite result)
    returns ok=False and a message; callers then fall back to the raw predictions.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    if x.size < 5:
        return LogisticFit((NAN,) * 4, False, f"logistic fit needs >= 5 points, got {x.size}")
    if np.ptp(x) == 0:
        return LogisticFit((NAN,) * 4, False, "logistic fit impossible: all predictions are equal")
    # Standard initialisation: asymptotes at the MOS extremes, midpoint at the mean prediction,
    # slope scale from the prediction spread. Orient the slope with the sign of the correlation
    # so anti-correlated models still fit (b1 < b2 then).
    sign = 1.0 if np.corrcoef(x, y)[0, 1] >= 0 else -1.0
    b1, b2 = (y.max(), y.min()) if sign > 0 else (y.min(), y.max())
    p0 = [b1, b2, float(np.mean(x)), float(np.std(x)) / 2 + 1e-6]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # "covariance not estimated" is not a failure
            params, _ = curve_fit(logistic4, x, y, p0=p0, maxfev=maxfev)
    except (RuntimeError, ValueError, FloatingPointError) as e:
        return LogisticFit((NAN,) * 4, False, f"logistic fit failed ({e}); reporting raw PLCC")
    if not np.all(np.isfinite(params)) or not np.all(np.isfinite(logistic4(x, *params))):
        return LogisticFit((NAN,) * 4, False, "logistic fit gave non-finite parameters; reporting raw PLCC")
    return LogisticFit(tuple(float(p) for p in params), True, "")


@dataclass
class IQAMetrics:
    srcc: float
    krcc: float
    plcc: float  # raw predictions
    plcc_fit: float  # after the 4-parameter logistic (raw PLCC if the fit failed); negative
    # when the fitted logistic is decreasing (the model ranks in reverse)
    rmse: float  # raw
    rmse_fit: float  # after the fit
    n: int  # pairs used
    n_total: int  # pairs given
    n_unparsed: int  # predictions that were NaN/inf, excluded
    fit_ok: bool
    notes: List[str] = field(default_factory=list)

    @property
    def parse_rate(self) -> float:
        return (self.n_total - self.n_unparsed) / self.n_total if self.n_total else NAN

    def to_dict(self) -> dict:
        d = asdict(self)
        d["parse_rate"] = self.parse_rate
        return d


def _safe(fn, *args) -> float:
    """Run a scipy correlation; constant inputs or other degenerate cases give NaN, not a crash."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            v = fn(*args)
        except (ValueError, FloatingPointError):
            return NAN
    v = float(v[0] if isinstance(v, tuple) else getattr(v, "statistic", v))
    return v if math.isfinite(v) else NAN


def srcc(pred: Sequence[float], mos: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    x, y = _valid(pred, mos)
    return _safe(spearmanr, x, y) if x.size >= 2 else NAN


def krcc(pred: Sequence[float], mos: Sequence[float]) -> float:
    from scipy.stats import kendalltau

    x, y = _valid(pred, mos)
    return _safe(kendalltau, x, y) if x.size >= 2 else NAN


def plcc(pred: Sequence[float], mos: Sequence[float]) -> float:
    from scipy.stats import pearsonr

    x, y = _valid(pred, mos)
    return _safe(pearsonr, x, y) if x.size >= 2 else NAN


def _valid(pred: Sequence[float], mos: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    x = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(mos, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"predictions ({x.size}) and MOS ({y.size}) differ in length")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def compute_metrics(pred: Sequence[Optional[float]], mos: Sequence[float]) -> IQAMetrics:
    """All metrics at once. `pred` may hold None/NaN for unparsed predictions."""
    from scipy.stats import kendalltau, pearsonr, spearmanr

    x_all = np.array([NAN if p is None else p for p in pred], dtype=np.float64).reshape(-1)
    y_all = np.asarray(mos, dtype=np.float64).reshape(-1)
    if x_all.shape != y_all.shape:
        raise ValueError(f"predictions ({x_all.size}) and MOS ({y_all.size}) differ in length")
    n_total = int(x_all.size)
    n_unparsed = int((~np.isfinite(x_all)).sum())
    keep = np.isfinite(x_all) & np.isfinite(y_all)
    x, y = x_all[keep], y_all[keep]
    notes: List[str] = []
    if n_unparsed:
        notes.append(f"{n_unparsed}/{n_total} predictions did not parse and were excluded")
    if x.size < 3:
        notes.append(f"only {x.size} valid pairs: correlations undefined")
        return IQAMetrics(NAN, NAN, NAN, NAN, NAN, NAN, int(x.size), n_total, n_unparsed, False, notes)
    if np.ptp(x) == 0:
        notes.append("all predictions are equal: correlations undefined")

    s, k, p = _safe(spearmanr, x, y), _safe(kendalltau, x, y), _safe(pearsonr, x, y)
    rmse = float(np.sqrt(np.mean((x - y) ** 2)))
    fit = fit_logistic(x, y)
    if fit.ok:
        xf = fit(x)
        p_fit = _safe(pearsonr, xf, y)
        if fit.params[0] < fit.params[1]:
            # A decreasing logistic flips the sign of the correlation; keep the model's direction so
            # a model that ranks in reverse is not reported as a good one.
            p_fit = -p_fit
            notes.append("the fitted logistic is decreasing: predictions rank in reverse of the MOS")
        rmse_fit = float(np.sqrt(np.mean((xf - y) ** 2)))
    else:
        notes.append(fit.message)
        p_fit, rmse_fit = p, rmse
    return IQAMetrics(s, k, p, p_fit, rmse, rmse_fit, int(x.size), n_total, n_unparsed, fit.ok, notes)
