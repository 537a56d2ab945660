"""`eval --report DIR` / `--suite FILE` / `--plot DIR`: the paper-style tables (markdown, CSV,
JSON) against metrics recomputed with scipy, the mean row, suite files, and the command."""

import csv
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from typer.testing import CliRunner

from hawkeye_lite.cli import app
from hawkeye_lite.data import IQARecord
from hawkeye_lite.evaluate import evaluate
from hawkeye_lite.report import SuiteError, dataset_rows, load_suite, mean_row, write_report

REPO = Path(__file__).resolve().parents[1]


def make_records(seed, sizes=(("KonIQ", 30), ("SPAQ", 25), ("CSIQ", 20))):
    rng = np.random.default_rng(seed)
    recs = []
    for name, n in sizes:
        for i in range(n):
            recs.append(
                IQARecord(
                    id=f"{name}-{i}",
                    image=f"/x/{name}/{i}.png",
                    mos=float(rng.uniform(1, 5)),
                    mos_raw=0.0,
                    mos_range=(1.0, 5.0),
                    dataset=name,
                    split="test",
                )
            )
    return recs, rng


def noisy_scores(recs, rng, noise=(0.3, 0.8, 1.5), unparsed=()):
    level = {name: noise[i] for i, name in enumerate(dict.fromkeys(r.dataset for r in recs))}
    truth = {r.image: (float("nan") if r.id in unparsed else r.mos + rng.normal(0, level[r.dataset])) for r in recs}
    return (lambda paths: [truth[p] for p in paths]), truth


def test_report_numbers_match_scipy_and_the_mean_is_unweighted(tmp_path):
    seed = int(np.random.SeedSequence().entropy % 2**31)
    print("seed", seed)
    recs, rng = make_records(seed)
    fn, truth = noisy_scores(recs, rng, unparsed={"SPAQ-3"})
    report = evaluate(recs, fn, batch_size=7)
    paths = write_report(report, tmp_path / "rep", model="runs/x/final", suite="test-suite", samples=4)
    assert [p.name for p in paths] == ["report.md", "report.csv", "report.json"]
    js = json.loads((tmp_path / "rep" / "report.json").read_text())
    expected = {}
    for name in ("KonIQ", "SPAQ", "CSIQ"):
        pairs = [(truth[r.image], r.mos) for r in recs if r.dataset == name and math.isfinite(truth[r.image])]
        x, y = map(np.array, zip(*pairs))
        expected[name] = (spearmanr(x, y)[0], pearsonr(x, y)[0])
    got = {d["dataset"]: d for d in js["datasets"]}
    assert list(got) == ["KonIQ", "SPAQ", "CSIQ"]  # the record order = the suite's order
    for name, (s, p) in expected.items():
        assert got[name]["srcc"] == pytest.approx(s, abs=1e-9) and got[name]["plcc"] == pytest.approx(p, abs=1e-9)
    assert js["mean"]["srcc"] == pytest.approx(np.mean([s for s, _ in expected.values()]), abs=1e-9)
    assert js["mean"]["plcc"] == pytest.approx(np.mean([p for _, p in expected.values()]), abs=1e-9)
    assert js["mean"]["n"] == len(recs) and js["mean"]["n_unparsed"] == 1 and got["SPAQ"]["n_unparsed"] == 1
    assert js["suite"] == "test-suite" and js["samples"] == 4
    # CSV: the same numbers, one row per dataset then the mean
    rows = list(csv.DictReader(open(tmp_path / "rep" / "report.csv")))
    assert [r["dataset"] for r in rows] == ["KonIQ", "SPAQ", "CSIQ", "mean"]
    assert float(rows[1]["srcc"]) == pytest.approx(expected["SPAQ"][0], abs=1e-6)
    # Markdown: the cross-dataset row, SRCC / PLCC per dataset and the mean last
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| model | KonIQ | SPAQ | CSIQ | mean |" in md
    row = next(l for l in md.splitlines() if l.startswith("| final |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert cells[1] == f"{expected['SPAQ'][0]:.3f} / {expected['SPAQ'][1]:.3f}"
    assert cells[-1] == f"{js['mean']['srcc']:.3f} / {js['mean']['plcc']:.3f}"
    assert "1/25 predictions did not parse" in md


def test_mean_skips_undefined_datasets_with_a_note():
    rows = [
        {
            "dataset": "a",
            "n": 5,
            "n_unparsed": 0,
            "srcc": 0.5,
            "plcc": 0.4,
            "plcc_fit": 0.4,
            "krcc": 0.3,
            "rmse": 1.0,
            "rmse_fit": 0.9,
            "parse_rate": 1.0,
            "sample_parse_rate": 1.0,
        },
        {
            "dataset": "b",
            "n": 2,
            "n_unparsed": 2,
            "srcc": float("nan"),
            "plcc": float("nan"),
            "plcc_fit": float("nan"),
            "krcc": float("nan"),
            "rmse": float("nan"),
            "rmse_fit": float("nan"),
            "parse_rate": 0.0,
            "sample_parse_rate": 0.0,
        },
    ]
    mean, notes = mean_row(rows)
    assert mean["srcc"] == 0.5 and mean["parse_rate"] == 0.5
    assert any("mean SRCC is over 1 of 2 datasets (b: undefined)" in n for n in notes)


def test_suite_files(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_ROOT", "/data/iqa")
    name, specs = load_suite(REPO / "configs" / "suites" / "koniq-cross.yaml")
    assert name == "koniq-cross-dataset" and len(specs) == 7
    assert specs[0] == "koniq:/data/iqa/koniq10k?name=KonIQ" and all("split=test" in s for s in specs[1:])
    monkeypatch.delenv("IQA_ROOT")
    with pytest.raises(SuiteError, match=r"data\[0\]: environment variable IQA_ROOT is not set"):
        load_suite(REPO / "configs" / "suites" / "koniq-cross.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndatasets: [a]\n")
    with pytest.raises(SuiteError, match="bad.yaml: data: expected a non-empty list"):
        load_suite(bad)
    bad.write_text("data: [json:a.json]\nsplits: test\n")
    with pytest.raises(SuiteError, match="bad.yaml: splits: unknown key"):
        load_suite(bad)


def test_eval_command_report_plot_and_suite(tmp_path, monkeypatch):
    """The command with a stand-in Scorer that knows the MOS (plus noise): --suite, --report, --plot."""
    from hawkeye_lite.data.demo import DemoConfig, demo_records

    demo = demo_records(tmp_path / "demo", DemoConfig(n_scenes=8, per_scene=4, seed=0))
    rng = np.random.default_rng(0)
    truth = {r.image: r.mos + rng.normal(0, 0.4) for r in demo}

    class StandIn:
        @classmethod
        def from_pretrained(cls, path, *, device=None):
            return cls()

        def score(self, images, *, samples=8, seed=0, batch_size=8, **kw):
            return [
                types.SimpleNamespace(score=truth[p], std=0.0, samples=[truth[p]], texts=["t"], n_parsed=1)
                for p in images
            ]

    monkeypatch.setitem(sys.modules, "hawkeye_lite.scorer", types.SimpleNamespace(Scorer=StandIn))
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: demo-suite\ndata:\n  - json:${DEMO}/demo.json?name=demo-a\n"
        "  - json:${DEMO}/demo.json?split=test&name=demo-all\n"
    )
    monkeypatch.setenv("DEMO", str(tmp_path / "demo"))
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(tmp_path / "m"),
            "--suite",
            str(suite),
            "--split",
            "test",
            "--report",
            str(tmp_path / "rep"),
            "--plot",
            str(tmp_path / "plots"),
        ],
    )
    assert res.exit_code == 0, res.output
    js = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [d["dataset"] for d in js["datasets"]] == ["demo-a", "demo-all"] and js["suite"] == "demo-suite"
    n_test = sum(r.split == "test" for r in demo)
    assert js["datasets"][0]["n"] == n_test and js["datasets"][1]["n"] == len(demo)
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["scatter.png", "scatter_demo-a.png", "scatter_demo-all.png"]
    for p in pngs:
        assert (tmp_path / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Neither --data nor --suite: one line, exit 2
    res = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "m")])
    assert res.exit_code == 2 and "give --data SPEC (repeatable) or --suite FILE" in res.output
    res = CliRunner().invoke(app, ["eval", "--model", "m", "--suite", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "nope.yaml: suite file not found" in res.output


def test_dataset_rows_shape():
    recs, rng = make_records(3, sizes=(("a", 6),))
    fn, _ = noisy_scores(recs, rng)
    rows = dataset_rows(evaluate(recs, fn))
    assert rows[0]["dataset"] == "a" and rows[0]["n"] == 6 and set(rows[0]) >= {"srcc", "plcc", "plcc_fit", "krcc"}
