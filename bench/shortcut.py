"""The perception loss against a shortcut (issue #28): when a cue that is not quality predicts
the training labels, does the perception term keep the policy's judgement on the image?

    python bench/shortcut.py --seeds 5 --jobs 2                     # build the data, run, report
    python bench/shortcut.py --report-only
    python bench/shortcut.py --gammas 1e-4 --seeds 2 --dry-run

The data: the demo with a coloured frame whose colour follows the MOS in the training split and
is random in the held-out split (hawkeye_lite/data/shortcut.py; written once to OUT/data). From
one label-free warm start per γ0 cell, bench/ablation.py runs:
  OUT/g{gamma0}   GRPO and GRPO + the perception loss at the first --gammas value (the paper's
                  1e-4), then GRPO + perception at every further value,
with the uncertainty weighting off in both (variants `grpo` and `+perc`), the config's RL
otherwise (default configs/demo.yaml), evaluations before and after RL only.

The report (OUT/shortcut.md, .json): per variant, held-out SRCC / PLCC after RL on the
decorrelated split (mean ± std over seeds), the paired difference to GRPO with a 95% bootstrap
interval, `sens` (how far the mean answer moves when the image is replaced by its degraded
partner, held-out) and `pkl`, and the perception term's share of the loss over the steps where
γ > 0: mean γ·KL(orig‖degraded) against the mean |loss|.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

# bench/studies.py by path: neither bench/ (bench/kernels.py) nor the root (kernels/) may go on
# sys.path, where they would shadow Hugging Face's `kernels` package.
_spec = importlib.util.spec_from_file_location("hawkeye_bench_studies", Path(__file__).resolve().parent / "studies.py")
studies = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(studies)

DEFAULT_CONFIG = "configs/demo.yaml"


def cells(gammas: Sequence[float], out: Path) -> List[dict]:
    return [
        {"gamma0": g, "variants": ["grpo", "+perc"] if i == 0 else ["+perc"], "out": out / f"g{studies.label(g)}"}
        for i, g in enumerate(gammas)
    ]


def ablation_command(cell: dict, args, data_json: Path) -> List[str]:
    sets = [f"data.train=[json:{data_json}]", f"objective.perception.gamma0={cell['gamma0']}", "eval.every=0"]
    return studies.ablation_command(args, cell["out"], cell["variants"], sets)


def loss_share(run_dir: Path) -> Optional[float]:
    """mean γ·perception_kl / mean |loss| over the steps with γ > 0 (None without such steps)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    terms, losses = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("event") == "step" and rec.get("gamma", 0) > 0:
            if "perception_kl" in rec and "loss" in rec:
                terms.append(rec["gamma"] * rec["perception_kl"])
                losses.append(abs(rec["loss"]))
    if not terms or np.mean(losses) == 0:
        return None
    return float(np.mean(terms) / np.mean(losses))


def collect(plan: List[dict], args, ab) -> List[dict]:
    rows = []
    for cell in plan:
        for variant, seed, run in studies.finished_runs(ab, cell, args.seeds):
            before, after = ab.read_evals(run)
            m, m0 = studies.scored(ab.eval_metrics(after)), ab.eval_metrics(before)
            rows.append(
                {
                    "variant": "grpo" if variant == "grpo" else f"+perc g0={studies.label(cell['gamma0'])}",
                    "seed": seed,
                    **{k: m.get(k) for k in ("srcc", "plcc", "sens", "pkl", "failed", "collapsed")},
                    "srcc_before": m0.get("srcc"),
                    "loss_share": loss_share(run) if variant != "grpo" else None,
                }
            )
    return rows


def table(rows: List[dict], ab) -> str:
    lines = [
        "| variant | n | SRCC after (held-out, decorrelated) | PLCC after | SRCC − GRPO, paired [95% CI] | sens | pkl | perception share of the loss | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    grpo = {r["seed"]: r["srcc"] for r in rows if r["variant"] == "grpo"}
    for variant in sorted({r["variant"] for r in rows}, key=lambda v: (v != "grpo", v)):
        rs = [r for r in rows if r["variant"] == variant]
        n, srcc, plcc, delta = studies.paired_cells(ab, rs, grpo, variant)
        sens = ab.mean_std([r["sens"] for r in rs])[1]
        pkl = ab.mean_std([r["pkl"] for r in rs])[1]
        share = ab.mean_std([r["loss_share"] for r in rs])[1]
        failed = sum(1 for r in rs if r.get("failed") or r.get("collapsed"))
        lines.append(
            f"| {variant} | {n} | {srcc} | {plcc} | {delta} | {sens:.3f} | {pkl:.3g} | "
            + ("—" if variant == "grpo" else f"{share:.3g}")
            + f" | {failed} of {n} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = studies.parser(__doc__, "runs/shortcut")
    ap.add_argument("--gammas", default="1e-4,1e-2,1", help="γ0 values; the first is also run with GRPO")
    args = ap.parse_args(argv)
    plan = cells([float(g) for g in args.gammas.split(",")], args.out)
    data_json = (args.out / "data" / "demo.json").resolve()
    if not args.report_only:
        if not data_json.is_file() and not args.dry_run:
            from hawkeye_lite.data.shortcut import write_shortcut_demo

            write_shortcut_demo(args.data, args.out / "data")
        code = studies.run_cells([ablation_command(cell, args, data_json) for cell in plan], dry_run=args.dry_run)
        if code or args.dry_run:
            return code
    ab = studies.load_ablation()
    rows = collect(plan, args, ab)
    text = studies.write_report(args.out, "shortcut", "Shortcut study", table(rows, ab), rows)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
