"""Training-curve and scatter PNGs (matplotlib): what is drawn is checked on the figure's data,
not only that a file exists; `hawkeye-lite plot` exit codes."""

import json
import math
import random

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import hawkeye_lite.plot as plot_module
from hawkeye_lite.cli import app
from hawkeye_lite.data import IQARecord
from hawkeye_lite.evaluate import evaluate
from hawkeye_lite.metrics import fit_logistic


def write_log(run, seed, steps=12):
    rng = random.Random(seed)
    lines = []
    for s in range(1, steps + 1):
        lines.append(
            {
                "event": "step",
                "step": s,
                "reward": rng.random(),
                "reward_accuracy": rng.random(),
                "ref_kl": rng.random() * 1e-3,
                "perception_kl": rng.random(),
                "entropy": rng.random(),
                "uncertainty": rng.random(),
                "weight": rng.random(),
                "lr": 1e-4 * s / steps,
                "parse_rate": 1.0,
                "format_rate": float("nan"),
            }
        )
    lines.append({"event": "eval", "step": steps, "srcc": 0.5, "plcc": 0.6, "datasets": {}})
    lines.append({"event": "sft", "step": 1, "loss": 9.0})
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + '\n{"event": "st')  # + a cut line
    return lines


def test_plot_run_png_and_its_series(tmp_path, monkeypatch):
    seed = random.randrange(2**31)
    print("seed", seed)
    lines = write_log(tmp_path / "run", seed)
    drawn = {}
    real = plot_module._pyplot

    def spy():
        plt = real()
        orig = plt.subplots

        def subplots(*a, **k):
            fig, axes = orig(*a, **k)
            drawn["fig"] = fig
            return fig, axes

        monkeypatch.setattr(plt, "subplots", subplots)
        return plt

    monkeypatch.setattr(plot_module, "_pyplot", spy)
    msg = plot_module.plot_run(tmp_path / "run")
    path = tmp_path / "run" / "plot.png"
    assert msg == f"plot: wrote {path}"
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 500 and im.height > 500
    lines_by_label = {l.get_label(): l for ax in drawn["fig"].axes for l in ax.get_lines()}
    steps = [l for l in lines if l["event"] == "step"]
    x, y = lines_by_label["reward"].get_data()
    assert list(x) == [s["step"] for s in steps] and list(y) == pytest.approx([s["reward"] for s in steps])
    assert list(lines_by_label["SRCC"].get_data()[1]) == [0.5] and list(lines_by_label["PLCC"].get_data()[0]) == [12]
    assert "loss" not in lines_by_label  # sft records are not RL curves
    assert "format_rate" not in lines_by_label  # all NaN: left out
    titles = [ax.get_title() for ax in drawn["fig"].axes if ax.get_visible()]
    assert "reference KL" in titles and "learning rate" in titles and "uncertainty and weight" in titles


def test_plot_command(tmp_path):
    write_log(tmp_path / "run", 0)
    res = CliRunner().invoke(app, ["plot", str(tmp_path / "run"), "--out", str(tmp_path / "x" / "curves.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "x" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    res = CliRunner().invoke(app, ["plot", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no metrics log" in res.output
    assert not list(tmp_path.rglob("*.svg"))


def test_scatter_draws_points_and_the_fitted_logistic(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    recs = [
        IQARecord(
            id=str(i),
            image=f"/x/{i}.png",
            mos=float(m),
            mos_raw=0.0,
            mos_range=(1.0, 5.0),
            dataset="set A",
            split="test",
        )
        for i, m in enumerate(rng.uniform(1, 5, 40))
    ]
    pred = {
        r.image: (float("nan") if r.id == "0" else 1 + 4 / (1 + math.exp(-(r.mos - 3) * 2)) + rng.normal(0, 0.1))
        for r in recs
    }
    report = evaluate(recs, lambda paths: [pred[p] for p in paths])
    figs = []
    real = plot_module._pyplot

    def spy():
        plt = real()
        orig = plt.subplots

        def subplots(*a, **k):
            fig, ax = orig(*a, **k)
            figs.append(fig)
            return fig, ax

        monkeypatch.setattr(plt, "subplots", subplots)
        return plt

    monkeypatch.setattr(plot_module, "_pyplot", spy)
    paths = plot_module.plot_scatter(report, tmp_path / "plots", title="m")
    assert [p.name for p in paths] == ["scatter_set_A.png"]  # one dataset: no combined figure
    ax = figs[0].axes[0]
    points = ax.collections[0].get_offsets()
    assert len(points) == 39 and "1 unparsed" in ax.get_title()
    curve = ax.get_lines()[0]
    gx, gy = curve.get_data()
    x = np.array([pred[r.image] for r in recs[1:]])
    y = np.array([r.mos for r in recs[1:]])
    fit = fit_logistic(x, y)  # the same fit metrics.py reports PLCC-fit after
    assert fit.ok and np.allclose(gy, fit(gx))
    assert f"SRCC {report.datasets[0].metrics.srcc:.3f}" in ax.get_title()
