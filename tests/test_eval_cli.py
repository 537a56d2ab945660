"""The eval core on its own (records + a scoring callable), the `eval` command's plumbing with a
stand-in Scorer, and `demo-data` then `eval` end to end with the real tiny model + Scorer."""

import csv
import json
import math
import sys
import types
from dataclasses import dataclass, field
from typing import List

import numpy as np
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from hawkeye_lite.cli import app
from hawkeye_lite.data.demo import DemoConfig, demo_records
from hawkeye_lite.evaluate import Prediction, as_prediction, evaluate, scorer_fn


@dataclass
class FakeResult:
    """Shaped like hawkeye_lite.scorer.ScoreResult."""

    score: float
    std: float
    samples: List[float] = field(default_factory=list)
    texts: List[str] = field(default_factory=list)
    n_parsed: int = 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_records(tmp_path_factory.mktemp("demo"), DemoConfig(n_scenes=8, per_scene=4, seed=0))


def oracle(records, noise=0.3, seed=0, unparsed=()):
    """A scoring function that knows the MOS (plus noise), by image path."""
    rng = np.random.default_rng(seed)
    truth = {r.image: r.mos + rng.normal(0, noise) for r in records}

    def fn(paths):
        return [float("nan") if p in unparsed else truth[p] for p in paths]

    return fn, truth


def test_evaluate_core_metrics_per_dataset(demo, tmp_path):
    from dataclasses import replace

    recs = [replace(r, dataset="A") if i % 2 else r for i, r in enumerate(demo)]
    bad = {recs[0].image, recs[2].image}
    fn, truth = oracle(recs, unparsed=bad)
    seen = []
    report = evaluate(recs, fn, batch_size=5, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(recs), len(recs))
    assert [d.dataset for d in report.datasets] == ["demo", "A"]
    d0 = next(d for d in report.datasets if d.dataset == "demo")
    mine = [r for r in recs if r.dataset == "demo" and r.image not in bad]
    expected = spearmanr([truth[r.image] for r in mine], [r.mos for r in mine])[0]
    assert d0.metrics.srcc == pytest.approx(expected, abs=1e-12)
    assert d0.metrics.n_unparsed == 2 and d0.n_images == sum(r.dataset == "demo" for r in recs)
    assert d0.sample_parse_rate == pytest.approx(1 - 2 / d0.n_images)
    assert d0.metrics.srcc > 0.8 and d0.images_per_s > 0
    table = report.table()
    assert "SRCC" in table and "PLCC-fit" in table and "demo" in table and "did not parse" in table
    out = report.write_csv(tmp_path / "p.csv")
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == len(recs) and {r["pred"] for r in rows if r["image"] in bad} == {""}
    js = report.to_dict()
    assert {"srcc", "plcc", "plcc_fit", "krcc", "rmse", "parse_rate", "images_per_s"} <= set(js["datasets"][0])


def test_evaluate_rejects_wrong_result_count_and_accepts_scorer_results(demo):
    with pytest.raises(RuntimeError, match="returned 1 results for 3"):
        evaluate(demo[:3], lambda paths: [3.0], batch_size=3)
    # Scorer-shaped results: K = 4 samples, some unparsed -> the sample parse rate
    res = FakeResult(score=3.0, std=0.5, samples=[2.5, 3.5], texts=["a", "b", "c", "d"], n_parsed=2)
    p = as_prediction(res)
    assert (p.score, p.std, p.n_parsed, p.n_samples, p.text) == (3.0, 0.5, 2, 4, "a")
    none = as_prediction(FakeResult(score=float("nan"), std=float("nan"), texts=["x", "y"]))
    assert math.isnan(none.score) and none.n_parsed == 0 and none.n_samples == 2
    assert as_prediction(None).n_parsed == 0 and math.isnan(as_prediction(None).score)
    two = as_prediction(2.5)
    assert isinstance(two, Prediction) and (two.score, two.n_parsed, two.n_samples) == (2.5, 1, 1)
    report = evaluate(demo[:6], lambda paths: [res] * len(paths), batch_size=4)
    assert report.datasets[0].sample_parse_rate == pytest.approx(0.5)
    assert math.isnan(report.datasets[0].metrics.srcc)  # constant predictions: undefined, no crash


def test_scorer_fn_passes_options_and_one_seed():
    # Per-image streams live in the Scorer: every batch gets the same seed, and unreadable images
    # are skipped (counted), not fatal.
    calls = []

    class S:
        def score(self, images, **kw):
            calls.append(kw)
            return [FakeResult(3.0, 0.0)] * len(images)

    fn = scorer_fn(S(), samples=3, temperature=0.7, max_new_tokens=64, seed=10)
    fn(["a", "b"])
    fn(["c"])
    assert calls[0] == {
        "seed": 10,
        "batch_size": 2,
        "on_error": "skip",
        "samples": 3,
        "temperature": 0.7,
        "max_new_tokens": 64,
    }
    assert calls[1]["seed"] == 10 and calls[1]["batch_size"] == 1


def test_eval_command_with_stand_in_scorer(demo, tmp_path, monkeypatch):
    """The command's plumbing (spec loading, split, table/JSON/CSV) with a Scorer that knows the MOS."""
    truth = {r.image: r.mos for r in demo}

    class StandIn:
        loaded = []

        @classmethod
        def from_pretrained(cls, path, *, device=None, quantization=None):
            cls.loaded.append((path, device))
            return cls()

        def score(
            self, images, *, samples=8, temperature=1.0, seed=0, batch_size=8, max_new_tokens=None, on_error="raise"
        ):
            return [FakeResult(truth[p], 0.0, [truth[p]] * samples, ["t"] * samples, samples) for p in images]

    monkeypatch.setitem(sys.modules, "hawkeye_lite.scorer", types.SimpleNamespace(Scorer=StandIn))
    spec = f"json:{demo[0].image.rsplit('/images/', 1)[0]}/demo.json"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(tmp_path),
            "--data",
            spec,
            "--samples",
            "2",
            "--json",
            "--csv",
            str(tmp_path / "preds.csv"),
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    js = json.loads(res.stdout)
    d = js["datasets"][0]
    n_test = sum(r.split == "test" for r in demo)
    assert d["n_images"] == n_test and d["srcc"] == pytest.approx(1.0) and d["sample_parse_rate"] == 1.0
    assert StandIn.loaded == [(str(tmp_path), "cpu")]
    assert len(list(csv.DictReader(open(tmp_path / "preds.csv")))) == n_test
    res = runner.invoke(app, ["eval", "--model", str(tmp_path), "--data", spec, "--split", "all"])
    assert res.exit_code == 0 and "SRCC" in res.stdout and f"{len(demo):>6}" in res.stdout
    # a bad spec exits with a message naming it, before any model is loaded
    res = runner.invoke(app, ["eval", "--model", str(tmp_path), "--data", f"koniq:{tmp_path}/nope"])
    assert res.exit_code == 2 and "KonIQ-10k score CSV not found" in res.output


def test_demo_data_then_eval_end_to_end_with_tiny_model(tmp_path):
    """`hawkeye-lite demo-data` then `hawkeye-lite eval` with a real (random, tiny) model."""
    from hawkeye_lite.tiny_model import build_tiny_model

    runner = CliRunner()
    res = runner.invoke(app, ["demo-data", "--out", str(tmp_path / "demo"), "--scenes", "3", "--per-scene", "1"])
    assert res.exit_code == 0, res.output
    model_dir = build_tiny_model(tmp_path / "tiny", seed=0)
    res = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(model_dir),
            "--data",
            f"json:{tmp_path / 'demo' / 'demo.json'}",
            "--split",
            "all",
            "--samples",
            "2",
            "--max-new-tokens",
            "24",
            "--json",
            "--csv",
            str(tmp_path / "preds.csv"),
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)["datasets"][0]
    assert d["dataset"] == "demo" and d["n_images"] == 6 and d["n_total"] == 6
    assert 0.0 <= d["sample_parse_rate"] <= 1.0 and d["images_per_s"] > 0
    # strict JSON: an undefined metric (a random model parses nothing) is null, never NaN
    assert all(d[k] is None or math.isfinite(d[k]) for k in ("srcc", "plcc", "plcc_fit", "krcc", "rmse"))
    rows = list(csv.DictReader(open(tmp_path / "preds.csv")))
    assert len(rows) == 6 and all(r["n_samples"] == "2" for r in rows)
