"""What the studies built on bench/ablation.py share (bench/noisy_labels.py, bench/shortcut.py):
loading ablation.py, one ablation command per cell, running the cells in order, and the paired
row of a table (mean ± std over seeds, the paired difference to GRPO with its bootstrap interval)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def load_ablation():
    """bench/ablation.py as a module (its statistics, run states and eval readers)."""
    spec = importlib.util.spec_from_file_location("hawkeye_bench_ablation", ROOT / "bench" / "ablation.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def label(x: float) -> str:
    return f"{x:g}"


def ablation_command(args, out: Path, variants: Sequence[str], sets: Sequence[str]) -> List[str]:
    """bench/ablation.py for one cell: `variants` x args.seeds runs under `out`, no γ sweep,
    `sets` then the user's --set values on top of args.config."""
    cmd = [sys.executable, str(ROOT / "bench" / "ablation.py"), "--config", args.config, "--out", str(out)]
    cmd += ["--seeds", str(args.seeds), "--jobs", str(args.jobs), "--gammas", "none", "--variants", *variants]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    for s in [*sets, *args.sets]:
        cmd += ["--set", s]
    return cmd


def run_cells(commands: Sequence[List[str]], *, dry_run: bool) -> int:
    """Each command in turn (printed first); the first failure's exit code stops the rest."""
    for cmd in commands:
        print(" ".join(cmd), flush=True)
        if dry_run:
            continue
        res = subprocess.run(cmd, cwd=ROOT)
        if res.returncode != 0:
            print(f"exit {res.returncode}: {' '.join(cmd)}", flush=True)
            return res.returncode
    return 0


def paired_cells(ab, rows: Sequence[dict], baseline: Dict[int, float], variant: str) -> tuple:
    """(n, 'mean ± std' of SRCC, of PLCC, the paired SRCC difference to `baseline` with its 95%
    bootstrap interval or '—') for the rows of one variant."""
    n, ms, ss = ab.mean_std([r["srcc"] for r in rows])
    _, mp, sp = ab.mean_std([r["plcc"] for r in rows])
    delta = "—"
    if variant != "grpo":
        d = ab.paired_differences({r["seed"]: r["srcc"] for r in rows}, baseline)
        if len(d) >= 2:
            lo, hi = ab.bootstrap_ci(list(d.values()))
            delta = f"{np.mean(list(d.values())):+.3f} [{lo:+.3f}, {hi:+.3f}] (n={len(d)})"
    return n, f"{ms:.3f} ± {ss:.3f}", f"{mp:.3f} ± {sp:.3f}", delta


def parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The options every study takes (its own are added by the caller)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml", help="training config (default configs/demo.yaml)")
    ap.add_argument("--out", type=Path, default=Path(out), help=f"output folder (default {out})")
    ap.add_argument("--data", default="data/demo", help="the demo dataset's folder (made on first use)")
    ap.add_argument("--seeds", type=int, default=5, help="RL seeds 0..N-1 per variant (default 5)")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default 2)")
    ap.add_argument("--steps", type=int, default=None, help="RL steps per run (default the config's)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--report-only", action="store_true", help="tables from the finished runs; run nothing")
    ap.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    return ap


def write_report(out: Path, stem: str, title: str, body: str, rows: Sequence[dict]) -> str:
    """OUT/STEM.md (title, the command, body) and OUT/STEM.json (the rows); returns the text."""
    text = f"# {title}: {len(rows)} finished runs under {out}\n\n`python {' '.join(sys.argv)}`\n\n{body}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text, encoding="utf-8")
    (out / f"{stem}.json").write_text(json.dumps(list(rows), indent=1) + "\n", encoding="utf-8")
    return text


def finished_runs(ab, cell: dict, seeds: int):
    """(variant, seed, run folder) of each finished run of one cell (bench/ablation.py's layout)."""
    for variant in cell["variants"]:
        for seed in range(seeds):
            run = cell["out"] / "runs" / f"{ab.VARIANTS[variant][0]}-seed{seed}"
            if ab.finished(run):
                yield variant, seed, run


def scored(metrics: dict) -> dict:
    """An evaluation's metrics with a run that answered nothing parsable counted as ranking
    nothing (SRCC = PLCC = 0, `failed` = 1) rather than dropped: dropping it would leave only the
    survivors in a variant's mean. (ablation.eval_metrics already does this for constant answers.)"""
    out = dict(metrics)
    out["failed"] = 0.0
    if out.get("srcc") is None and out.get("parse_rate") is not None and out["parse_rate"] == 0.0:
        out.update(srcc=0.0, plcc=0.0, failed=1.0)
    return out
