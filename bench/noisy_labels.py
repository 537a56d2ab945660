"""Uncertainty weighting under noisy labels (issue #28): does exp(-alpha u) protect RL from
training images whose MOS is wrong?

    python bench/noisy_labels.py --seeds 5 --jobs 2                 # run every cell, then report
    python bench/noisy_labels.py --report-only                      # tables from what is there
    python bench/noisy_labels.py --rhos 0.4 --alphas 0.2 --seeds 2 --dry-run

For each corruption fraction rho (--rhos), the training labels of a fixed, seeded fraction rho of
the demo's training images are replaced by uniform draws (`demo:DIR?corrupt=rho`, data/corrupt.py;
held-out labels untouched), and bench/ablation.py runs, from one label-free warm start per cell:
  OUT/rho{rho}/a{alpha0}   GRPO and GRPO + uncertainty weighting at the first --alphas value
  OUT/rho{rho}/a{alpha}    GRPO + uncertainty weighting at every further --alphas value
with the perception loss off in both (the variants `grpo` and `+unc`: only the weighting differs),
the config's RL otherwise (default configs/demo.yaml), logging.per_image on, evaluations before and
after RL only. The same seed S in every folder is the same data order and rollout seeds.

The report (OUT/noisy_labels.md, .json): per rho and variant, held-out SRCC / PLCC after RL (mean
± std over seeds), the paired difference to GRPO with a 95% percentile bootstrap interval over
seeds, and the mechanism, from each run's per-image step records:
  AUROC(u)     does the group uncertainty u separate corrupted from clean training images? (the
               probability that a corrupted image's u exceeds a clean one's, over all steps; 0.5:
               no separation) — early (first quarter of the steps) and late (last quarter);
  corr. share  the corrupted images' share of the policy-gradient signal (sum of their groups'
               |advantage| after weighting) against their share of the images (rho).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

# bench/studies.py by path: neither bench/ (bench/kernels.py) nor the root (kernels/) may go on
# sys.path, where they would shadow Hugging Face's `kernels` package.
_spec = importlib.util.spec_from_file_location("hawkeye_bench_studies", Path(__file__).resolve().parent / "studies.py")
studies = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(studies)

DEFAULT_CONFIG = "configs/demo.yaml"


def cells(rhos: Sequence[float], alphas: Sequence[float], out: Path) -> List[dict]:
    """One bench/ablation.py invocation per (rho, alpha): its folder, variants and overrides."""
    plan = []
    for rho in rhos:
        for i, alpha in enumerate(alphas):
            plan.append(
                {
                    "rho": rho,
                    "alpha": alpha,
                    "variants": ["grpo", "+unc"] if i == 0 else ["+unc"],
                    "out": out / f"rho{studies.label(rho)}" / f"a{studies.label(alpha)}",
                }
            )
    return plan


def ablation_command(cell: dict, args) -> List[str]:
    data = f"demo:{args.data}?corrupt={studies.label(cell['rho'])}&corrupt_seed={args.corrupt_seed}"
    sets = [f"data.train=[{data}]", f"objective.alpha={cell['alpha']}", "logging.per_image=true", "eval.every=0"]
    return studies.ablation_command(args, cell["out"], cell["variants"], sets)


# ============================================================================ the mechanism


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(a positive's value > a negative's) + 0.5 P(tie): the Mann-Whitney AUROC. NaN when a
    side is empty."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return math.nan
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(pos, neg, alternative="two-sided").statistic / (len(pos) * len(neg)))


def mechanism(run_dir: Path, corrupted: set) -> Dict[str, Optional[float]]:
    """AUROC of u (corrupted vs clean), early and late, and the corrupted share of |advantage|."""
    steps = []
    path = Path(run_dir) / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("event") == "step" and "images" in rec:
                steps.append(rec)
    if not steps:
        return {}
    steps.sort(key=lambda r: r["step"])
    q = max(1, len(steps) // 4)
    out: Dict[str, Optional[float]] = {}
    for name, part in (("all", steps), ("early", steps[:q]), ("late", steps[-q:])):
        pos, neg, adv_c, adv_all, n_c, n_all = [], [], 0.0, 0.0, 0, 0
        for rec in part:
            im = rec["images"]
            for i, u, a in zip(im["id"], im["u"], im["adv_abs"]):
                bad = i in corrupted
                (pos if bad else neg).append(u)
                adv_c += a if bad else 0.0
                adv_all += a
                n_c += bad
                n_all += 1
        out[f"auroc_{name}"] = auroc(pos, neg)
        out[f"share_{name}"] = adv_c / adv_all if adv_all > 0 else None
        out[f"img_share_{name}"] = n_c / n_all if n_all else None
    return out


# ============================================================================ the report


def collect(plan: List[dict], args, ab) -> List[dict]:
    """One row per finished run: rho, alpha, variant, seed, after-RL metrics, mechanism."""
    from hawkeye_lite.data.corrupt import corrupted_ids
    from hawkeye_lite.data.demo import demo_records

    records = demo_records(args.data)
    rows = []
    for cell in plan:
        chosen = corrupted_ids(records, cell["rho"], args.corrupt_seed)
        for variant, seed, run in studies.finished_runs(ab, cell, args.seeds):
            m = studies.scored(ab.eval_metrics(ab.read_evals(run)[1]))
            rows.append(
                {
                    "rho": cell["rho"],
                    "alpha": cell["alpha"] if variant == "+unc" else None,
                    "variant": "grpo" if variant == "grpo" else f"+unc a={studies.label(cell['alpha'])}",
                    "seed": seed,
                    "srcc": m.get("srcc"),
                    "plcc": m.get("plcc"),
                    "sens": m.get("sens"),
                    "failed": m.get("failed"),
                    **mechanism(run, chosen),
                }
            )
    return rows


def tables(rows: List[dict], ab, rhos: Sequence[float]) -> str:
    lines = []
    for rho in rhos:
        sub = [r for r in rows if r["rho"] == rho]
        if not sub:
            continue
        grpo = {r["seed"]: r["srcc"] for r in sub if r["variant"] == "grpo"}
        lines += [
            f"### rho = {studies.label(rho)} (corrupted training labels)",
            "",
            "| variant | n | SRCC after | PLCC after | SRCC − GRPO, paired [95% CI] | AUROC(u) early / late | corrupted share of \\|adv\\| (of images) |",
            "|---|---|---|---|---|---|---|",
        ]
        for variant in sorted({r["variant"] for r in sub}, key=lambda v: (v != "grpo", v)):
            rs = [r for r in sub if r["variant"] == variant]
            n, srcc, plcc, delta = studies.paired_cells(ab, rs, grpo, variant)
            ae = ab.mean_std([r.get("auroc_early") for r in rs])[1]
            al = ab.mean_std([r.get("auroc_late") for r in rs])[1]
            sh = ab.mean_std([r.get("share_all") for r in rs])[1]
            ish = ab.mean_std([r.get("img_share_all") for r in rs])[1]
            f3 = lambda x: "—" if x is None or not math.isfinite(x) else f"{x:.3f}"
            lines.append(
                f"| {variant} | {n} | {srcc} | {plcc} | {delta} | {f3(ae)} / {f3(al)} | {f3(sh)} ({f3(ish)}) |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(rows: List[dict], rhos: Sequence[float], path: Path) -> None:
    """Held-out SRCC after RL against rho, one line per variant (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for variant in sorted({r["variant"] for r in rows}, key=lambda v: (v != "grpo", v)):
        xs, ms, ss = [], [], []
        for rho in rhos:
            vals = [r["srcc"] for r in rows if r["variant"] == variant and r["rho"] == rho and r["srcc"] is not None]
            if vals:
                xs.append(rho)
                ms.append(float(np.mean(vals)))
                ss.append(float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)
        ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=variant)
    ax.set_xlabel("fraction of training labels corrupted (rho)")
    ax.set_ylabel("held-out SRCC after RL")
    ax.set_title("uncertainty weighting under noisy labels")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = studies.parser(__doc__, "runs/noisy")
    ap.add_argument("--rhos", default="0,0.2,0.4", help="corrupted fractions (default 0,0.2,0.4)")
    ap.add_argument("--alphas", default="0.2,5", help="alpha values; the first is also run with GRPO (default 0.2,5)")
    ap.add_argument("--corrupt-seed", type=int, default=0)
    args = ap.parse_args(argv)
    rhos = [float(x) for x in args.rhos.split(",")]
    alphas = [float(x) for x in args.alphas.split(",")]
    plan = cells(rhos, alphas, args.out)
    if not args.report_only:
        code = studies.run_cells([ablation_command(cell, args) for cell in plan], dry_run=args.dry_run)
        if code or args.dry_run:
            return code
    ab = studies.load_ablation()
    rows = collect(plan, args, ab)
    text = studies.write_report(args.out, "noisy_labels", "Noisy labels", tables(rows, ab, rhos), rows)
    if rows:
        plot(rows, rhos, args.out / "srcc_vs_rho.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
