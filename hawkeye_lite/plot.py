"""Figures, drawn with matplotlib (Agg, no display needed), written as PNG.

- `plot_run(RUN)`: `hawkeye-lite plot RUN` and the end of every run: the training curves of
  RUN/metrics.jsonl, one panel per group of related columns.
- `plot_scatter(report, DIR)`: `eval --plot DIR`: prediction vs MOS per dataset, with the
  4-parameter logistic that PLCC-fit is computed after (metrics.fit_logistic).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .fsio import writing

# (panel title, series keys); a panel with none of its keys logged is left out. Keys of eval
# records carry an "eval/" prefix (both kinds of record have a parse_rate).
PANELS = (
    ("reward", ("reward", "reward_accuracy", "reward_format", "reward_repetition")),
    ("held-out SRCC / PLCC", ("eval/srcc", "eval/plcc")),
    ("reference KL", ("ref_kl",)),
    ("perception KL (orig. vs degraded)", ("perception_kl", "eval/pkl", "eval/pkl_all")),
    ("held-out sensitivity: score(orig.) - score(degraded)", ("eval/sens",)),
    ("entropy", ("entropy", "entropy_deg")),
    ("uncertainty and weight", ("uncertainty", "weight")),
    ("parse / format rate", ("parse_rate", "format_rate", "eval/parse_rate")),
    ("learning rate", ("lr",)),
)


PLOT_FILE = "plot.png"  # RUN/plot.png, written at the end of a run


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, works without a display
    import matplotlib.pyplot as plt

    return plt


def read_series(run_dir: Path) -> Dict[str, List[Tuple[float, float]]]:
    """key -> [(step, value)] over the run's RL step records and eval records ("eval/<key>"),
    finite numbers only."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics log (is {run_dir} a training run folder?)")
    series: Dict[str, List[Tuple[float, float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if rec.get("event") not in ("step", "eval") or not isinstance(rec.get("step"), (int, float)):
            continue
        prefix = "eval/" if rec["event"] == "eval" else ""
        for key, value in rec.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                series.setdefault(prefix + key, []).append((float(rec["step"]), float(value)))
    return series


def plot_run(run_dir, out=None) -> str:
    """Draw the run's curves into RUN/plot.png (or `out`); returns a one-line message."""
    plt = _pyplot()
    run_dir = Path(run_dir)
    series = read_series(run_dir)
    panels = [(title, [k for k in keys if series.get(k)]) for title, keys in PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    if not panels:
        raise FileNotFoundError(f"{run_dir / 'metrics.jsonl'}: no RL step or eval records to plot yet")
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 2.9 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            x, y = zip(*series[key])
            label = {
                "eval/srcc": "SRCC",
                "eval/plcc": "PLCC",
                "eval/parse_rate": "parse_rate (held-out)",
                "eval/pkl": "pkl (held-out, rating tokens)",
                "eval/pkl_all": "pkl_all (held-out)",
                "eval/sens": "sens",
            }.get(key, key)
            ax.plot(x, y, marker="o" if len(x) < 8 else None, markersize=3, linewidth=1.3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if keys == ["lr"]:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"{run_dir.resolve().name}: training curves", fontsize=11)
    fig.tight_layout()
    path = Path(out) if out else run_dir / PLOT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path):
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: wrote {path}"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "dataset"


def plot_scatter(report, out_dir, *, title: Optional[str] = None) -> List[Path]:
    """One PNG per dataset of an EvalReport (its rows: record, Prediction) in `out_dir`
    (scatter_<dataset>.png), plus scatter.png with every dataset side by side when there are
    several. Unparsed predictions are left out and counted in the panel's title."""
    import numpy as np

    from .metrics import fit_logistic

    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_ds: Dict[str, Tuple[list, list]] = {d.dataset: ([], []) for d in report.datasets}
    for rec, pred in report.rows:
        xs, ys = by_ds.setdefault(rec.dataset, ([], []))
        xs.append(pred.score)
        ys.append(rec.mos)
    metrics = {d.dataset: d.metrics for d in report.datasets}

    def draw(ax, name: str) -> None:
        x = np.asarray(by_ds[name][0], dtype=np.float64)
        y = np.asarray(by_ds[name][1], dtype=np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        ax.scatter(x[keep], y[keep], s=12, alpha=0.6, edgecolors="none", label="images")
        fit = fit_logistic(x[keep], y[keep])
        if fit.ok:
            grid = np.linspace(x[keep].min(), x[keep].max(), 200)
            ax.plot(grid, fit(grid), color="#d62728", linewidth=1.6, label="4-parameter logistic")
        m = metrics.get(name)
        stats = ""
        if m is not None:
            f = lambda v: f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else "n/a"
            stats = f"\nSRCC {f(m.srcc)}  PLCC (fit) {f(m.plcc_fit)}"
        dropped = int((~keep).sum())
        ax.set_title(
            f"{name} (n={int(keep.sum())}" + (f", {dropped} unparsed" if dropped else "") + ")" + stats, fontsize=9
        )
        ax.set_xlabel("prediction", fontsize=8)
        ax.set_ylabel("MOS", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")

    written: List[Path] = []
    for name in by_ds:
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
        draw(ax, name)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path = out_dir / f"scatter_{_safe_name(name)}.png"
        with writing(path):
            fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if len(by_ds) > 1:
        cols = min(4, len(by_ds))
        rows = math.ceil(len(by_ds) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.7 * rows), squeeze=False)
        for ax, name in zip(axes.flat, by_ds):
            draw(ax, name)
        for ax in list(axes.flat)[len(by_ds) :]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        path = out_dir / "scatter.png"
        with writing(path):
            fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
