"""The paper's ablation at toy scale, on the CPU demo: plain GRPO vs + uncertainty weighting vs
+ perception loss vs both, several seeds each, all from ONE warm start.

    python bench/ablation.py                       # 3 seeds, demo config, writes runs/ablation/
    python bench/ablation.py --seeds 0 1 --steps 20 --set optim.lr=3e-4

Prints held-out SRCC / PLCC (mean ± std over seeds) per variant and writes results.json. The
held-out evaluation of the warm start (before RL) is the same for every variant and is shown
as its own row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

VARIANTS = {
    "GRPO": ["objective.use_uncertainty=false", "objective.perception.enabled=false"],
    "+ uncertainty": ["objective.use_uncertainty=true", "objective.perception.enabled=false"],
    "+ perception": ["objective.use_uncertainty=false", "objective.perception.enabled=true"],
    "both (Q-Hawkeye)": ["objective.use_uncertainty=true", "objective.perception.enabled=true"],
}


def _fmt(values):
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="base config (default: the demo)")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="RL steps per run (default: the config's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra key=value for every run")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args(argv)

    from hawkeye_lite.config import load_train_config
    from hawkeye_lite.trainer import Trainer

    out = Path(args.out)
    t0 = time.time()
    base = list(args.overrides) + ([f"optim.max_steps={args.steps}"] if args.steps else [])
    quiet = ["logging.progress=false", "logging.plot=false", "logging.every=10", "checkpoint.every=0"]

    # One warm start shared by every run: the variants differ only in the RL objective.
    warm_cfg = load_train_config(args.config, base + quiet + [f"output_dir={out / 'warm'}"])
    warm = Trainer(warm_cfg)
    warm.prepare()
    sft_base = warm.warm_start() if warm_cfg.sft.steps > 0 else warm_cfg.model.name_or_path
    warm.policy = warm.load_policy(sft_base)
    before = warm.evaluate("warm start")
    del warm

    results = {"warm_start": before, "runs": {}}
    for name in args.variants:
        for seed in args.seeds:
            run_dir = out / f"{name.replace(' ', '').replace('+', 'plus_').replace('(', '').replace(')', '')}-seed{seed}"
            cfg = load_train_config(args.config, base + quiet + VARIANTS[name] + [
                f"output_dir={run_dir}", f"model.name_or_path={sft_base}", "tiny_model.build=false", "sft.steps=0",
                f"seed={seed}", "eval.before=false",
            ])
            t = time.time()
            res = Trainer(cfg).run()
            ev = res.eval_after or {}
            results["runs"].setdefault(name, []).append({"seed": seed, "srcc": ev.get("srcc"), "plcc": ev.get("plcc"),
                                                         "parse_rate": ev.get("parse_rate"), "seconds": time.time() - t})
            print(f"{name:<18} seed {seed}: SRCC {ev.get('srcc', float('nan')):.4f} PLCC {ev.get('plcc', float('nan')):.4f} "
                  f"({time.time() - t:.0f}s)", file=sys.stderr, flush=True)

    lines = [f"{'variant':<20}{'SRCC':>20}{'PLCC':>20}", "-" * 60,
             f"{'warm start (no RL)':<20}{before.get('srcc', float('nan')):>20.4f}{before.get('plcc', float('nan')):>20.4f}"]
    for name, runs in results["runs"].items():
        srcc = [r["srcc"] for r in runs if r["srcc"] is not None]
        plcc = [r["plcc"] for r in runs if r["plcc"] is not None]
        lines.append(f"{name:<20}{_fmt(srcc):>20}{_fmt(plcc):>20}")
    table = "\n".join(lines)
    results["table"] = table
    results["seconds"] = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(table)
    print(f"\n{len(args.seeds)} seeds x {len(args.variants)} variants in {results['seconds'] / 60:.1f} min; "
          f"results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
