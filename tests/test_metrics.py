import math

import numpy as np
import pytest
from scipy import stats

from hawkeye_lite.metrics import compute_metrics, fit_logistic, krcc, logistic4, plcc, srcc


def _data(seed, n=200):
    rng = np.random.default_rng(seed)
    mos = rng.uniform(1, 5, n)
    pred = mos + rng.normal(0, 0.8, n)
    return pred, mos


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_match_scipy(seed):
    pred, mos = _data(seed)
    assert srcc(pred, mos) == pytest.approx(stats.spearmanr(pred, mos)[0], abs=1e-12)
    assert krcc(pred, mos) == pytest.approx(stats.kendalltau(pred, mos)[0], abs=1e-12)
    assert plcc(pred, mos) == pytest.approx(stats.pearsonr(pred, mos)[0], abs=1e-12)
    m = compute_metrics(pred, mos)
    assert m.srcc == pytest.approx(stats.spearmanr(pred, mos)[0], abs=1e-12)
    assert m.krcc == pytest.approx(stats.kendalltau(pred, mos)[0], abs=1e-12)
    assert m.plcc == pytest.approx(stats.pearsonr(pred, mos)[0], abs=1e-12)
    assert m.rmse == pytest.approx(float(np.sqrt(np.mean((pred - mos) ** 2))), rel=1e-12)
    assert m.n == m.n_total == len(mos) and m.n_unparsed == 0 and m.parse_rate == 1.0
    assert m.fit_ok and m.plcc_fit >= m.plcc - 1e-9  # a monotone fit can only help linearity


def test_logistic_fit_recovers_known_parameters():
    rng = np.random.default_rng(0)
    true = (4.6, 1.3, 0.2, 0.7)
    x = rng.uniform(-3, 3, 400)
    y = logistic4(x, *true) + rng.normal(0, 0.02, x.size)
    fit = fit_logistic(x, y)
    assert fit.ok, fit.message
    b1, b2, b3, b4 = fit.params
    assert b1 == pytest.approx(true[0], abs=0.05)
    assert b2 == pytest.approx(true[1], abs=0.05)
    assert b3 == pytest.approx(true[2], abs=0.05)
    assert abs(b4) == pytest.approx(true[3], abs=0.05)
    # the fitted PLCC sees the logistic as linear: close to 1, well above the raw PLCC
    m = compute_metrics(x, y)
    assert m.plcc_fit > 0.999 and m.plcc_fit > m.plcc + 0.01
    assert m.rmse_fit < 0.05


def test_logistic_fit_anticorrelated_and_degenerate():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, 100)
    y = logistic4(x, 1.0, 5.0, 0.5, 0.1) + rng.normal(0, 0.05, 100)  # decreasing
    m = compute_metrics(x, y)
    # the fitted PLCC keeps the direction: a reversed ranking is not reported as a good model
    assert m.fit_ok and m.plcc_fit < -0.95
    assert any("decreasing" in n for n in m.notes)
    few = fit_logistic([1, 2, 3], [1, 2, 3])
    assert not few.ok and ">= 5" in few.message
    flat = fit_logistic([2.0] * 10, np.linspace(1, 5, 10))
    assert not flat.ok and "equal" in flat.message


def test_nan_predictions_are_counted_and_excluded():
    pred, mos = _data(5, 50)
    pred = pred.astype(object)
    pred[[3, 7, 11]] = [float("nan"), None, float("inf")]
    m = compute_metrics(list(pred), mos)
    keep = np.array([i not in (3, 7, 11) for i in range(50)])
    clean = np.array([p for i, p in enumerate(pred) if keep[i]], dtype=float)
    assert m.n_unparsed == 3 and m.n == 47 and m.n_total == 50
    assert m.parse_rate == pytest.approx(47 / 50)
    assert m.srcc == pytest.approx(stats.spearmanr(clean, mos[keep])[0], abs=1e-12)
    assert any("did not parse" in n for n in m.notes)


def test_degenerate_inputs_never_crash():
    m = compute_metrics([float("nan")] * 10, np.linspace(1, 5, 10))
    assert m.n == 0 and m.n_unparsed == 10 and math.isnan(m.srcc) and math.isnan(m.plcc_fit)
    m = compute_metrics([], [])
    assert m.n_total == 0 and math.isnan(m.parse_rate)
    # constant predictions: correlations undefined, the fit falls back to raw and says so
    m = compute_metrics([3.0] * 20, np.linspace(1, 5, 20))
    assert math.isnan(m.srcc) and math.isnan(m.plcc) and not m.fit_ok
    assert any("equal" in n for n in m.notes)
    with pytest.raises(ValueError, match="differ in length"):
        compute_metrics([1, 2, 3], [1, 2])
