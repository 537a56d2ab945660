"""The paper's ablation at toy scale: plain GRPO vs + uncertainty weighting vs + perception loss
vs both, and a sweep of the perception weight γ0, several RL seeds each, all from ONE warm start.

    python bench/ablation.py --config configs/demo-rl.yaml --seeds 5 --jobs 2
    python bench/ablation.py --variants grpo both --seeds 3 --steps 40 --gammas none --set optim.lr=2e-4
    python bench/ablation.py ... --dry-run          # the plan: which runs, their state, their commands

What it runs, all under --out (default runs/ablation):
  OUT/warm/sft-base        the warm start of --config (`sft.steps` of it), made once; every run
                           below starts from it as a fixed base, which is then also the reference
                           policy of the KL term (as after a warm start inside one run)
  OUT/runs/NAME-seedS      one RL run per variant and seed S (0..N-1), `hawkeye-lite train` with
                           model.name_or_path=OUT/warm/sft-base, tiny_model.build=false,
                           sft.steps=0, seed=S: only the RL seed differs between seeds
  OUT/logs/NAME-seedS.log  its console output (.json: the wall time of each attempt)
  OUT/ablation.md, .json   the tables below and the raw numbers of every run

Variants: grpo (use_uncertainty false, perception off), +unc (true, off), +perc (false, on),
both (true, on). The γ sweep runs `both` with objective.perception.gamma0 set to each --gammas
value; a sweep run whose config equals a variant run (γ0 equal to the config's) is that run.

Resumable: rerunning the same command skips finished runs (RUN/final and the "after" eval in
RUN/metrics.jsonl), resumes a half-done run from its newest checkpoint with the trainer's exact
`--resume` (the same numbers as an uninterrupted run; only the steps since that checkpoint are
redone), and restarts with --overwrite a run that stopped before its first checkpoint. A run
folder whose config.yaml differs from the planned run (other than logging / checkpoint keys) is
refused, never silently reused or replaced: use another --out. Ctrl-C lets every run finish its
step and checkpoint (how much a kill -9 costs depends on the config's checkpoint.every). A new
warm start under runs made on an earlier one is refused too: one ablation, one base. With
sft.steps: 0 in --config there is no warm start and every run starts from its model.name_or_path.

Statistics, per variant (and γ0) over seeds, of the "after" held-out evaluation: mean ± std
(ddof=1) of SRCC, PLCC and, when the eval events carry them, sens, pkl, pkl_all, score_std,
srcc_std ("—" when absent); and the PAIRED difference to grpo (same seeds) with a 95% percentile
bootstrap interval over seeds (10,000 resamples, numpy Generator seeded by --bootstrap-seed). With
5 seeds a percentile interval is narrow (it under-covers at small n): a guide, not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

# Run as a script, this file's folder is sys.path[0]: drop it so that `import kernels` (Hugging
# Face's package, which transformers and bitsandbytes probe for) can never find bench/kernels.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

DEFAULT_CONFIG = "configs/demo-rl.yaml"
DEFAULT_OUT = "runs/ablation"
DEFAULT_GAMMAS = "0,1e-4,1e-2,1"
N_RESAMPLES = 10_000
LEVEL = 0.95

# name in the tables -> (folder name, overrides). Each variant sets both switches, so a --set of
# the user cannot leave a variant half-defined.
VARIANTS = {
    "grpo": ("grpo", ["objective.use_uncertainty=false", "objective.perception.enabled=false"]),
    "+unc": ("unc", ["objective.use_uncertainty=true", "objective.perception.enabled=false"]),
    "+perc": ("perc", ["objective.use_uncertainty=false", "objective.perception.enabled=true"]),
    "both": ("both", ["objective.use_uncertainty=true", "objective.perception.enabled=true"]),
}
BASELINE = "grpo"  # every paired difference is against it
SWEPT = "both"  # the variant the γ sweep runs
# Read from the eval events; any of them may be absent (older runs, other trainers): "—".
METRICS = ("srcc", "plcc", "sens", "pkl", "pkl_all", "score_std", "srcc_std", "collapsed")
DELTA_COLUMNS = ("srcc", "plcc")  # paired differences shown in the tables (ablation.json has all)
# Keys that cannot change a run's numbers: a run made with other values of these is still this run.
NEUTRAL = ("output_dir", "logging.", "checkpoint.", "distributed.")
MISSING = "—"


# ============================================================================ statistics


def finite(values: Iterable) -> np.ndarray:
    """The values that are real finite numbers (None, NaN, strings and bools are missing)."""
    keep = [
        float(v)
        for v in values
        if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
    ]
    return np.asarray(keep, dtype=np.float64)


def mean_std(values: Iterable) -> Tuple[int, float, float]:
    """(n, mean, sample std with ddof=1) of the finite values; NaN where undefined (n < 1, n < 2)."""
    x = finite(values)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n >= 2 else math.nan
    return n, mean, std


def paired_differences(values: Dict[int, object], baseline: Dict[int, object]) -> Dict[int, float]:
    """seed -> values[seed] - baseline[seed], for the seeds where both are finite numbers. Pairing by
    seed removes what the seed does to both runs alike (data order, rollout draws)."""
    out = {}
    for seed in sorted(set(values) & set(baseline)):
        a, b = finite([values[seed]]), finite([baseline[seed]])
        if len(a) and len(b):
            out[seed] = float(a[0] - b[0])
    return out


def bootstrap_ci(
    diffs: Sequence[float], *, n_resamples: int = N_RESAMPLES, level: float = LEVEL, seed: int = 0
) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean of `diffs`: resample the seeds with replacement
    `n_resamples` times, take the (1-level)/2 and (1+level)/2 quantiles of the resampled means
    (numpy's default linear interpolation, as scipy.stats.bootstrap(method='percentile')). A fresh
    Generator(seed) per call, so an interval does not depend on which others were computed first.
    Fewer than 2 values: (NaN, NaN), since one seed says nothing about the spread."""
    x = finite(diffs)
    if len(x) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def summarise(
    rows: Dict[str, Dict[int, Dict[str, object]]],
    baseline: Optional[Dict[int, Dict[str, object]]],
    *,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> Dict[str, dict]:
    """rows: row label -> seed -> metric -> value. Per row: the seeds, and per metric its n, mean
    and std over seeds, and (when `baseline`, seed -> metric -> value, is given) the paired
    difference to it: n, mean, the bootstrap interval."""
    out = {}
    for label, by_seed in rows.items():
        row = {"seeds": sorted(by_seed), "metrics": {}, "delta": {}}
        for m in METRICS:
            n, mean, std = mean_std(by_seed[s].get(m) for s in by_seed)
            row["metrics"][m] = {"n": n, "mean": mean, "std": std}
            if baseline is not None and baseline is not by_seed:
                d = paired_differences(
                    {s: by_seed[s].get(m) for s in by_seed}, {s: baseline[s].get(m) for s in baseline}
                )
                lo, hi = bootstrap_ci(list(d.values()), seed=seed, n_resamples=n_resamples)
                row["delta"][m] = {
                    "n": len(d),
                    "mean": float(np.mean(list(d.values()))) if d else math.nan,
                    "lo": lo,
                    "hi": hi,
                    "seeds": sorted(d),
                }
        out[label] = row
    return out


# ============================================================================ tables


def fmt(v, signed: bool = False, like=None) -> str:
    """4 decimals; numbers under 1e-3 (a KL) in 3 significant digits; "—" if missing. `like`: use
    the style that number gets (a std is written like its mean, so float noise of 1e-16 on a
    constant shows as 0.0000)."""
    if len(finite([v])) == 0:
        return MISSING
    v = float(v)
    ref = abs(float(like)) if like is not None and len(finite([like])) else abs(v)
    sign = "+" if signed else ""
    return f"{v:{sign}.4f}" if ref == 0 or ref >= 1e-3 else f"{v:{sign}.2e}"


def fmt_stat(stat: Optional[dict], n_row: int) -> str:
    if not stat or stat["n"] == 0:
        return MISSING
    text = fmt(stat["mean"]) if stat["n"] == 1 else f"{fmt(stat['mean'])} ± {fmt(stat['std'], like=stat['mean'])}"
    return text + (f" (n={stat['n']})" if stat["n"] != n_row else "")


def fmt_delta(d: Optional[dict]) -> str:
    if not d or d["n"] == 0:
        return MISSING
    if d["n"] == 1:
        return f"{fmt(d['mean'], signed=True)} (1 seed)"
    m = d["mean"]
    return f"{fmt(m, signed=True)} [{fmt(d['lo'], signed=True, like=m)}, {fmt(d['hi'], signed=True, like=m)}]"


def markdown_table(
    summary: Dict[str, dict], first: str, *, before: Optional[dict] = None, baseline_name: str = BASELINE
) -> str:
    """One row per entry of `summary` (and a first row for the warm start's `before` summary):
    seeds, mean ± std of every metric, the paired differences of DELTA_COLUMNS to the baseline."""
    names = {"srcc": "SRCC", "plcc": "PLCC"}
    head = [first, "seeds"] + [names.get(m, m) for m in METRICS[:2]]
    head += [f"Δ{names.get(m, m)} vs {baseline_name} [{LEVEL:.0%} CI]" for m in DELTA_COLUMNS]
    head += [names.get(m, m) for m in METRICS[2:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    entries = ([("warm start (before RL; all runs)", before, True)] if before else []) + [
        (k, v, False) for k, v in summary.items()
    ]
    for label, row, is_before in entries:
        n_row = len(row["seeds"])  # finished runs; a metric measured in fewer of them says (n=k)
        cells = [label, str(n_row)] + [fmt_stat(row["metrics"].get(m), n_row) for m in METRICS[:2]]
        cells += [
            MISSING
            if is_before
            else (
                fmt_delta(row["delta"].get(m)) if row["delta"] else ("baseline" if label == baseline_name else MISSING)
            )
            for m in DELTA_COLUMNS
        ]
        cells += [fmt_stat(row["metrics"].get(m), n_row) for m in METRICS[2:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ============================================================================ reading runs


def read_evals(run_dir: Path) -> Tuple[Optional[dict], Optional[dict]]:
    """The last "before" and "after" eval events of RUN/metrics.jsonl (tags "before RL", "after
    RL"); a line cut short by a kill is skipped."""
    from hawkeye_lite.runlog import METRICS as METRICS_FILE

    before = after = None
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None, None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or rec.get("event") != "eval":
            continue
        tag = str(rec.get("tag", ""))
        if tag.startswith("before"):
            before = rec
        elif tag.startswith("after"):
            after = rec
    return before, after


def eval_metrics(event: Optional[dict]) -> Dict[str, Optional[float]]:
    """METRICS (and parse_rate) of one eval event: the top-level value, else the mean over its
    datasets when every dataset has it, else None."""
    out: Dict[str, Optional[float]] = {}
    for m in METRICS + ("parse_rate",):
        v = None
        if event:
            v = event.get(m)
            per = [d.get(m) for d in (event.get("datasets") or {}).values() if isinstance(d, dict)]
            if v is None and per and len(finite(per)) == len(per):
                v = float(np.mean(finite(per)))
        x = finite([v])
        out[m] = float(x[0]) if len(x) else None
    # A run that collapsed onto one answer parses but gives every image the same score: SRCC and
    # PLCC are undefined (NaN). Dropping such runs would leave only the survivors in a variant's
    # mean, so they count as 0 (a constant ranks nothing) and `collapsed` (1/0) says which they were.
    if event:
        constant = out["srcc"] is None and (out["parse_rate"] or 0.0) > 0.0
        out["collapsed"] = 1.0 if constant else 0.0
        if constant:
            out["srcc"] = 0.0
            out["plcc"] = 0.0 if out["plcc"] is None else out["plcc"]
    return out


def finished(run_dir: Path) -> bool:
    """RUN/final exists (written last, atomically) and the "after" eval is logged."""
    from hawkeye_lite.checkpoint import FINAL

    return (Path(run_dir) / FINAL).is_dir() and read_evals(run_dir)[1] is not None


# ============================================================================ the plan


@dataclass
class Run:
    name: str  # folder under OUT/runs
    seed: int
    overrides: List[str]  # --set values after --config
    config: dict  # the resolved config (TrainConfig.to_dict())
    rows: List[Tuple[str, str]] = field(default_factory=list)  # (table, row label) this run counts for
    dir: Path = Path()


def config_key(config: dict) -> str:
    """Equal keys = the same run: the resolved config without the keys that cannot change numbers."""
    from hawkeye_lite.runfolder import flatten

    return json.dumps(
        {k: v for k, v in flatten(config).items() if not k.startswith(NEUTRAL)}, sort_keys=True, default=str
    )


def parse_gammas(text: str) -> List[float]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        gammas = [float(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise ValueError(
            f"--gammas {text!r}: expected numbers separated by commas, e.g. 0,1e-4,1e-2,1 (or none)"
        ) from None
    if any(not math.isfinite(g) or g < 0 for g in gammas) or len(set(gammas)) != len(gammas):
        raise ValueError(f"--gammas {text!r}: each γ0 once, finite and >= 0")
    return gammas


def gamma_label(g: float) -> str:
    return f"{g:g}"


def plan_runs(
    config: Optional[str],
    out: Path,
    *,
    base: Optional[str],
    seeds: Sequence[int],
    variants: Sequence[str],
    gammas: Sequence[float],
    steps: Optional[int] = None,
    sets: Sequence[str] = (),
) -> List[Run]:
    """Every run the tables need, each config validated now (a bad --set fails before any work).
    `base`: the warm-started folder every run starts from (None: the config's model itself).
    Seed-major order, so an ablation stopped early holds whole seeds of every variant."""
    from hawkeye_lite.config_loader import load_train_config

    fixed = ["sft.steps=0", "logging.progress=false"]
    if base is not None:
        fixed = [f"model.name_or_path={base}", "tiny_model.build=false"] + fixed
    wanted = [("variants", v, VARIANTS[v][0], VARIANTS[v][1]) for v in variants]
    wanted += [
        (
            "gamma",
            gamma_label(g),
            f"{VARIANTS[SWEPT][0]}-g{gamma_label(g)}",
            VARIANTS[SWEPT][1] + [f"objective.perception.gamma0={g!r}"],
        )
        for g in gammas
    ]
    runs: List[Run] = []
    by_key: Dict[str, Run] = {}
    for seed in seeds:
        for table, label, slug, extra in wanted:
            name = f"{slug}-seed{seed}"
            run_dir = out / "runs" / name
            # User overrides first: the variant switches, the shared base and the RL seed win.
            overrides = (
                list(sets)
                + ([f"optim.max_steps={steps}"] if steps else [])
                + extra
                + fixed
                + [f"seed={seed}", f"output_dir={run_dir}"]
            )
            cfg = load_train_config(config, overrides).to_dict()
            key = config_key(cfg)
            if key in by_key:  # e.g. `both` at γ0 = the config's gamma0: the same run, not a rerun
                by_key[key].rows.append((table, label))
                continue
            run = Run(name, seed, overrides, cfg, [(table, label)], run_dir)
            by_key[key] = run
            runs.append(run)
    return runs


def run_state(run: Run) -> Tuple[str, str]:
    """(state, why): new | done | resume | restart | changed."""
    import yaml

    from hawkeye_lite.checkpoint import CONFIG_FILE, latest_checkpoint
    from hawkeye_lite.runfolder import describe, differences, holds_run

    d = run.dir
    if not d.is_dir() or not holds_run(d):
        return "new", ""
    saved = d / CONFIG_FILE
    if not saved.is_file():
        return "restart", f"no {CONFIG_FILE}"
    try:
        old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return "restart", f"unreadable {CONFIG_FILE}"
    diffs = [x for x in differences(old, run.config) if not x[0].startswith(NEUTRAL)]
    if diffs:
        return "changed", describe(diffs)
    if finished(d):
        return "done", ""
    if latest_checkpoint(d) is not None:
        return "resume", ""
    return "restart", "stopped before its first checkpoint"


def train_command(run: Run, state: str, config: Optional[str]) -> List[str]:
    # The console script (not `python -m`, which puts the working folder on sys.path, where the
    # repository's top-level kernels/ shadows Hugging Face's `kernels` package).
    script = Path(sys.executable).with_name("hawkeye-lite")
    exe = [str(script)] if script.is_file() else [sys.executable, "-m", "hawkeye_lite"]
    if state == "resume":  # the run's own config.yaml, exactly (it matched the plan)
        return exe + ["train", "--resume", str(run.dir)]
    cmd = exe + ["train"] + (["--config", str(config)] if config else [])
    for o in run.overrides:
        cmd += ["--set", o]
    return cmd + (["--overwrite"] if state == "restart" else [])


def child_env() -> Dict[str, str]:
    """One thread per run: J runs share J cores without oversubscription, and a run's numbers do
    not depend on how many ran beside it (torch reads OMP_NUM_THREADS for its intra-op pool)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return env


# ============================================================================ the warm start


def warm_config(config: Optional[str], out: Path, sets: Sequence[str]):
    from hawkeye_lite.config_loader import load_train_config

    return load_train_config(
        config,
        list(sets)
        + [
            f"output_dir={out / 'warm'}",
            "logging.progress=false",
            "logging.plot=false",
            "eval.before=false",
            "eval.after=false",
        ],
    )


def warm_base(out: Path) -> str:
    from hawkeye_lite.warmstart import SFT_BASE

    return str((out / "warm" / SFT_BASE).resolve())


def ensure_warm_start(cfg, out: Path, *, threads: int, dry_run: bool = False) -> Tuple[Optional[str], str]:
    """(base folder or None, what happened). Reuses OUT/warm/sft-base while its settings match the
    config; builds it otherwise, unless runs already trained on the old one (their numbers would
    come from another base: refused). sft.steps: 0 -> no warm start; the base is the config's model."""
    import torch

    from hawkeye_lite.runfolder import RunFolderError, claim, holds_run
    from hawkeye_lite.trainer import Trainer
    from hawkeye_lite.warmstart import SFT_BASE

    warm = Trainer(cfg)
    if cfg.sft.steps == 0:
        if not dry_run:
            warm.prepare()  # builds the tiny demo model once, before J runs would race to build it
        return None, f"no warm start (sft.steps: 0): every run starts from {cfg.model.name_or_path}"
    base = warm_base(out)
    reusable, why = warm.sft_reusable()
    if reusable:
        return base, f"warm start: reusing {base}"
    runs = [d for d in sorted((out / "runs").glob("*")) if d.is_dir() and holds_run(d)]
    if runs:  # even a rebuild with the same settings may differ in the last bits (thread count)
        raise RunFolderError(
            f"{out / 'warm' / SFT_BASE}: {why or 'missing'}, but {len(runs)} run(s) in {out / 'runs'} "
            "were trained on the warm start made there; use another --out (or delete that folder) "
            "for a new one"
        )
    if dry_run:
        return base, f"warm start: would {'rebuild' if why else 'build'} {base} ({cfg.sft.steps} SFT steps)"
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)  # it runs alone: the cores the J runs will use
    t0 = time.time()
    try:
        # The warm folder belongs to the ablation: a stale or half-made warm start is replaced.
        with claim(out / "warm", resume=False, overwrite=True, log=print):
            warm.prepare()
            warm.warm_start()
    finally:
        torch.set_num_threads(saved)
    return base, f"warm start: built {base} in {time.time() - t0:.0f}s ({threads} thread(s))"


# ============================================================================ running


class Launcher:
    """Starts `hawkeye-lite train` subprocesses (from worker threads) and stops them on Ctrl-C.
    Children get their own session, so a Ctrl-C at the terminal reaches only this process, which
    forwards exactly one SIGINT: each run finishes its step and checkpoints (a second SIGINT would
    stop a run at once)."""

    def __init__(self):
        self.live: Dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stopping = False
        self.env = child_env()

    def __call__(self, name: str, cmd: List[str], log_path: Path) -> Tuple[Optional[int], float]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\n$ {shlex.join(cmd)}\n")
            log.flush()
            t0 = time.time()
            with self.lock:
                if self.stopping:
                    return None, 0.0
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
                self.live[name] = proc
            rc = proc.wait()
            with self.lock:
                self.live.pop(name, None)
        return rc, time.time() - t0

    def interrupt(self) -> None:
        with self.lock:
            self.stopping = True
            for proc in self.live.values():
                proc.send_signal(signal.SIGINT)


def attempts(out: Path, name: str) -> List[dict]:
    try:
        return json.loads((out / "logs" / f"{name}.json").read_text(encoding="utf-8"))["attempts"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return []


def record_attempt(out: Path, name: str, attempt: dict) -> None:
    path = out / "logs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"attempts": attempts(out, name) + [attempt]}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def machine() -> dict:
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpus": os.cpu_count(),
        "usable_cpus": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _clean(obj):
    """NaN / inf -> None, so ablation.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def collect(runs: Sequence[Run], states: Dict[str, str], out: Path) -> List[dict]:
    rows = []
    for run in runs:
        before, after = read_evals(run.dir)
        tries = attempts(out, run.name)
        rows.append(
            {
                "name": run.name,
                "seed": run.seed,
                "dir": str(run.dir),
                "rows": [list(r) for r in run.rows],
                "state": states.get(run.name),
                "finished": finished(run.dir),
                "seconds": round(sum(a.get("seconds") or 0.0 for a in tries), 1) if tries else None,
                "attempts": tries,
                "before": eval_metrics(before),
                "after": eval_metrics(after),
                "overrides": run.overrides,
            }
        )
    return rows


def tables(
    results: List[dict], order: Dict[str, Sequence[str]], *, seed: int, n_resamples: int = N_RESAMPLES
) -> Dict[str, dict]:
    """{"variants": {...}, "gamma": {...}}, each {"summary": per row (in `order`: table -> row
    labels), "before": the warm start's row}."""
    out = {}
    per_table: Dict[str, Dict[str, Dict[int, dict]]] = {
        t: {label: {} for label in labels} for t, labels in order.items()
    }
    befores: Dict[str, Dict[str, dict]] = {t: {} for t in order}
    for r in results:
        for table, label in r["rows"]:
            if r["finished"]:
                per_table[table].setdefault(label, {})[r["seed"]] = r["after"]
            if any(v is not None for v in r["before"].values()):
                befores[table][r["name"]] = r["before"]
    base = per_table["variants"].get(BASELINE)
    for table, rows in per_table.items():
        if not rows:
            continue
        # The warm start's row: the "before" evals of the runs (the same base and eval seed, so
        # they should agree; a spread here would mean the runs did not share one base).
        before = (
            summarise({"before": dict(enumerate(befores[table].values()))}, None)["before"] if befores[table] else None
        )
        out[table] = {"summary": summarise(rows, base, seed=seed, n_resamples=n_resamples), "before": before}
    return out


def report(
    args_line: str,
    mach: dict,
    results: List[dict],
    tabs: Dict[str, dict],
    *,
    seed: int,
    n_resamples: int,
    notes: Sequence[str],
) -> str:
    lines = [
        "# Ablation",
        "",
        f"Command: `{args_line}`",
        "",
        f"Machine: {mach['cpus']} CPUs ({mach['usable_cpus']} usable), {mach['platform']}, python {mach['python']}, "
        f"torch {mach['torch']}, load {mach['load_1min']} at start",
        "",
        f"Held-out evaluation after RL; mean ± std (ddof=1) over seeds; Δ = paired difference to {BASELINE} "
        f"(same seeds) with a {LEVEL:.0%} percentile bootstrap interval over seeds ({n_resamples} resamples, "
        f"numpy Generator seed {seed}). {MISSING} = not measured.",
        "",
    ]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    if "variants" in tabs:
        lines += [
            "## Variants",
            "",
            markdown_table(tabs["variants"]["summary"], "variant", before=tabs["variants"]["before"]),
            "",
        ]
    if "gamma" in tabs:
        lines += [
            f"## γ0 sweep ({SWEPT})",
            "",
            markdown_table(tabs["gamma"]["summary"], "γ0", before=tabs["gamma"]["before"]),
            "",
        ]
    lines += [
        "## Runs",
        "",
        "| run | seed | counts for | state | wall | SRCC before | SRCC after | PLCC after |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        rows = ", ".join(label if table == "variants" else f"γ0={label}" for table, label in r["rows"])
        wall = MISSING if r["seconds"] is None else f"{r['seconds']:.0f} s"
        state = "finished" if r["finished"] else (r["state"] or MISSING)
        lines.append(
            f"| {r['name']} | {r['seed']} | {rows} | {state} | {wall} | {fmt(r['before']['srcc'])} | "
            f"{fmt(r['after']['srcc'])} | {fmt(r['after']['plcc'])} |"
        )
    return "\n".join(lines) + "\n"


def execute(
    todo: Sequence[Run], commands: Dict[str, List[str]], states: Dict[str, str], out: Path, *, jobs: int
) -> Tuple[bool, List[str]]:
    """Run `todo`, `jobs` at a time; a line per run as it ends. Returns (interrupted, failed names)."""
    launcher = Launcher()
    interrupted, failed = False, []
    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = {pool.submit(launcher, r.name, commands[r.name], out / "logs" / f"{r.name}.log"): r for r in todo}
    previous_term = None
    if threading.current_thread() is threading.main_thread():

        def on_term(signum, frame):  # a SIGTERM is a Ctrl-C: the runs checkpoint, then stop
            raise KeyboardInterrupt

        previous_term = signal.signal(signal.SIGTERM, on_term)

    def done_one(fut, i):
        run = futures[fut]
        rc, seconds = fut.result()
        if rc is None:  # never started (stopping)
            return
        record_attempt(
            out,
            run.name,
            {
                "state": states[run.name],
                "rc": rc,
                "seconds": round(seconds, 1),
                "ended": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
        )
        _, after = read_evals(run.dir)
        m = eval_metrics(after)
        if rc != 0 and not launcher.stopping:
            failed.append(run.name)
        what = {0: "finished", 130: "interrupted"}.get(rc, f"FAILED (exit {rc}, see {out / 'logs' / run.name}.log)")
        print(
            f"[{i}/{len(todo)}] {run.name}: {what} in {seconds:.0f}s ({states[run.name]}); after RL SRCC {fmt(m['srcc'])} "
            f"PLCC {fmt(m['plcc'])}",
            flush=True,
        )

    handled = set()

    def drain(pending) -> None:
        for fut in pending:
            if fut not in handled and not fut.cancelled():
                handled.add(fut)
                done_one(fut, len(handled))

    try:
        drain(as_completed(futures))
    except KeyboardInterrupt:
        interrupted = True
        print(
            "\ninterrupted: each running run finishes its step and writes a checkpoint; rerun the same command "
            "to resume",
            flush=True,
        )
        launcher.interrupt()
        pool.shutdown(wait=False, cancel_futures=True)
        drain(as_completed([f for f in futures if not f.cancelled()]))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    return interrupted, failed


# ============================================================================ main


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_CONFIG, help=f"training config (default {DEFAULT_CONFIG})")
    ap.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--seeds", type=int, default=5, help="RL seeds 0..N-1 per variant (default 5)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument(
        "--gammas",
        default=DEFAULT_GAMMAS,
        help=f"γ0 values of the sweep of `{SWEPT}` (default {DEFAULT_GAMMAS}; none: no sweep)",
    )
    ap.add_argument("--steps", type=int, default=None, help="RL steps per run (optim.max_steps; default the config's)")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for the warm start and every run (repeatable)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel, one thread each (default 1)")
    ap.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap's Generator (default 0)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the commands; run nothing")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1 or (args.steps is not None and args.steps < 1):
        ap.error("--seeds, --jobs and --steps must be >= 1")
    try:
        gammas = parse_gammas(args.gammas)
    except ValueError as e:
        ap.error(str(e))

    from hawkeye_lite.config import ConfigError
    from hawkeye_lite.runfolder import RunFolderError

    args_line = shlex.join(
        [sys.argv[0] if argv is None else "bench/ablation.py"] + list(sys.argv[1:] if argv is None else argv)
    )
    mach = machine()
    print(f"command: {args_line}")
    print(
        f"machine: {mach['cpus']} CPUs ({mach['usable_cpus']} usable), {mach['platform']}, "
        f"python {mach['python']}, torch {mach['torch']}, load {mach['load_1min']}",
        flush=True,
    )
    out: Path = args.out
    seeds = list(range(args.seeds))
    t_start = time.time()
    try:
        warm_cfg = warm_config(args.config, out, args.sets)
        base = warm_base(out) if warm_cfg.sft.steps > 0 else None
        runs = plan_runs(
            args.config,
            out,
            base=base,
            seeds=seeds,
            variants=args.variants,
            gammas=gammas,
            steps=args.steps,
            sets=args.sets,
        )
        states, whys = {}, {}
        for run in runs:
            states[run.name], whys[run.name] = run_state(run)
        changed = [r for r in runs if states[r.name] == "changed"]
        if changed:
            raise RunFolderError(
                "; ".join(f"{r.dir} holds a run with other settings ({whys[r.name]})" for r in changed[:3])
                + (f" (and {len(changed) - 3} more)" if len(changed) > 3 else "")
                + ": use another --out for a different ablation"
            )
        _, warm_note = ensure_warm_start(
            warm_cfg, out, threads=min(args.jobs, mach["usable_cpus"] or 1), dry_run=args.dry_run
        )
    except (ConfigError, RunFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted during the warm start (nothing half-made is kept); rerun to start it again", file=sys.stderr
        )
        return 130
    print(warm_note, flush=True)

    shared = sum(len(r.rows) - 1 for r in runs)
    counts = {s: sum(1 for r in runs if states[r.name] == s) for s in ("done", "resume", "restart", "new")}
    print(
        f"plan: {len(runs)} runs (({len(args.variants)} variants + {len(gammas)} γ0 values) x {len(seeds)} seeds"
        f"{f', {shared} shared between the tables' if shared else ''}): {counts['done']} done, "
        f"{counts['resume']} to resume, {counts['restart']} to restart, {counts['new']} to start; {args.jobs} at a time",
        flush=True,
    )
    todo = [r for r in runs if states[r.name] != "done"]
    commands = {r.name: train_command(r, states[r.name], args.config) for r in todo}
    if args.dry_run:
        for r in runs:
            why = whys[r.name]
            print(
                f"  {r.name:<22} {states[r.name]:<8}{f' ({why})' if why else ''}"
                + (f"\n    {shlex.join(commands[r.name])}" if r.name in commands else "")
            )
        return 0

    interrupted, failed = execute(todo, commands, states, out, jobs=args.jobs)

    results = collect(runs, states, out)
    tabs = tables(
        results, {"variants": args.variants, "gamma": [gamma_label(g) for g in gammas]}, seed=args.bootstrap_seed
    )
    notes = [warm_note]
    befores = finite(r["before"]["srcc"] for r in results)
    if len(befores) > 1 and befores.max() - befores.min() > 1e-9:
        notes.append(
            f"the runs' before-RL SRCC differ ({befores.min():.4f}..{befores.max():.4f}): not one shared base?"
        )
    md = report(args_line, mach, results, tabs, seed=args.bootstrap_seed, n_resamples=N_RESAMPLES, notes=notes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(md, encoding="utf-8")
    payload = {
        "command": args_line,
        "machine": mach,
        "config": args.config,
        "seeds": seeds,
        "variants": args.variants,
        "gammas": gammas,
        "steps": args.steps,
        "sets": args.sets,
        "jobs": args.jobs,
        "bootstrap": {"seed": args.bootstrap_seed, "resamples": N_RESAMPLES, "level": LEVEL, "method": "percentile"},
        "warm_start": warm_note,
        "runs": results,
        "tables": tabs,
        "seconds": round(time.time() - t_start, 1),
    }
    (out / "ablation.json").write_text(
        json.dumps(_clean(payload), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print()
    print(md)
    print(
        f"{len(runs)} runs, this invocation {(time.time() - t_start) / 60:.1f} min; wrote {out / 'ablation.md'} and "
        f"{out / 'ablation.json'}"
    )
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
