"""`hawkeye-lite plot RUN`: reward, held-out SRCC and the KL terms over steps.

matplotlib is not a dependency: when it is importable a PNG is drawn with it, otherwise a small
hand-written SVG (polylines, no library) is written, which any browser opens.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Tuple

PANELS = (
    ("reward", ("reward", "reward_accuracy", "reward_format")),
    ("held-out SRCC / PLCC", ("srcc", "plcc")),
    ("KL terms", ("ref_kl", "perception_kl")),
    ("entropy", ("entropy", "entropy_deg")),
)
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def read_series(run_dir: Path) -> Dict[str, List[Tuple[float, float]]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics log (is {run_dir} a training run folder?)")
    series: Dict[str, List[Tuple[float, float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if rec.get("event") not in ("step", "eval"):
            continue
        for key, value in rec.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                series.setdefault(key, []).append((float(rec["step"]), float(value)))
    return series


def _svg(series, out: Path) -> Path:
    w, h, pad = 420, 220, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{2 * h}" font-family="sans-serif" font-size="11">',
             '<rect width="100%" height="100%" fill="white"/>']
    for p, (title, keys) in enumerate(PANELS):
        ox, oy = (p % 2) * w, (p // 2) * h
        parts.append(f'<text x="{ox + w / 2}" y="{oy + 16}" text-anchor="middle" font-weight="bold">{title}</text>')
        lines = [(k, series[k]) for k in keys if series.get(k)]
        if not lines:
            parts.append(f'<text x="{ox + w / 2}" y="{oy + h / 2}" text-anchor="middle" fill="#888">no data</text>')
            continue
        xs = [x for _, pts in lines for x, _ in pts]
        ys = [y for _, pts in lines for _, y in pts]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

        def sx(x):
            return ox + pad + (x - x0) / (x1 - x0) * (w - 2 * pad)

        def sy(y):
            return oy + h - pad + (y - y0) / (y1 - y0) * -(h - 2 * pad - 10)

        parts.append(f'<rect x="{ox + pad}" y="{oy + pad - 10}" width="{w - 2 * pad}" height="{h - 2 * pad + 10}" fill="none" stroke="#ccc"/>')
        parts.append(f'<text x="{ox + pad - 4}" y="{sy(y1) + 4}" text-anchor="end">{y1:.3g}</text>')
        parts.append(f'<text x="{ox + pad - 4}" y="{sy(y0) + 4}" text-anchor="end">{y0:.3g}</text>')
        parts.append(f'<text x="{ox + w - pad}" y="{oy + h - pad + 14}" text-anchor="end">step {x1:.0f}</text>')
        for i, (key, pts) in enumerate(lines):
            color = COLORS[i % len(COLORS)]
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>')
            if len(pts) == 1:
                parts.append(f'<circle cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="3" fill="{color}"/>')
            parts.append(f'<text x="{ox + pad + 6}" y="{oy + pad + 4 + 12 * i}" fill="{color}">{key}</text>')
    parts.append("</svg>")
    out.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return out


def plot_run(run_dir, out=None) -> str:
    """Draw the run's curves; returns a one-line message saying what was written."""
    run_dir = Path(run_dir)
    series = read_series(run_dir)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path = _svg(series, Path(out) if out else run_dir / "plot.svg")
        return f"plot: matplotlib is not installed, wrote an SVG instead: {path}"
    fig, axes = plt.subplots(2, 2, figsize=(10, 6))
    for ax, (title, keys) in zip(axes.flat, PANELS):
        for key in keys:
            if series.get(key):
                x, y = zip(*series[key])
                ax.plot(x, y, marker="o" if len(x) < 5 else None, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:  # a panel with no data yet (e.g. SRCC before any eval)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out) if out else run_dir / "plot.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot: wrote {path}"
