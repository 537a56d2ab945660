"""What a run tells its user: `metrics.jsonl` (every record), a console line every few steps,
progress, and the same records to TensorBoard / W&B (tracking.py) when `logging.report_to`
names them. The trainer only calls `write`, `info`, `step` and `close`.

Progress is tqdm's: on a terminal a live bar with rate and ETA that log lines print above; in a
log file (stderr not a terminal) no bar at all, only plain lines, because a redrawn bar is noise
there. `Progress` is the same for every other long loop (warm start, vision pretraining, eval,
score, degrade).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .fsio import writing

METRICS = "metrics.jsonl"


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # no fileno (StringIO), not a terminal
        return 0


def _fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """A counted loop: a tqdm bar on a terminal; otherwise, when `lines` > 0, a plain line
    ("desc 40/96 | 12s, ETA 17s") about `lines` times over the loop and at its end.

    `enabled=False` shows nothing (the count is still kept)."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        stream=None,
        enabled: bool = True,
        lines: int = 10,
        unit: str = "it",
        initial: int = 0,
    ):
        self.total, self.desc, self.n, self.unit = int(total), desc, int(initial), unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.every = max(1, math.ceil(max(self.total - self.n, 1) / lines)) if lines > 0 else 0
        self.t0 = time.time()
        self.start_n = self.n
        self._next = (self.n // self.every + 1) * self.every if self.every else 0  # next plain line at
        self.bar = None
        if enabled and _isatty(self.stream):
            from tqdm.auto import tqdm

            # A terminal that reports no width (a bare pty, some CI runners) would get an empty bar.
            wide = _columns(self.stream) > 0
            self.bar = tqdm(
                total=self.total,
                initial=self.n,
                desc=desc,
                unit=unit,
                file=self.stream,
                dynamic_ncols=wide,
                ncols=None if wide else 100,
                leave=True,
                smoothing=0.1,
            )

    @property
    def eta(self) -> float:
        done = self.n - self.start_n
        return (time.time() - self.t0) / done * (self.total - self.n) if done > 0 else float("nan")

    def update(self, n: int = 1, postfix: Optional[str] = None) -> None:
        self.n += n
        if self.bar is not None:
            if postfix is not None:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(n)
        elif self.enabled and self.every and (self.n >= self._next or self.n >= self.total):
            self._next = (self.n // self.every + 1) * self.every
            eta = self.eta
            tail = f", ETA {_fmt_seconds(eta)}" if self.n < self.total and math.isfinite(eta) else ""
            extra = f" | {postfix}" if postfix else ""
            spent = time.time() - self.t0
            done = self.n - self.start_n
            # (a bar made by its first update, as progress_callback's, has no time to divide by)
            rate = f" | {done / spent:.2f} {self.unit}/s" if self.unit == "img" and done and spent >= 0.5 else ""
            print(
                f"{self.desc} {self.n}/{self.total}{extra}{rate} | {_fmt_seconds(spent)}{tail}",
                file=self.stream,
                flush=True,
            )

    def write(self, msg: str) -> None:
        """A line that does not break the bar (printed above it)."""
        if self.bar is not None:
            self.bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_callback(desc: str, *, stream=None, enabled: bool = True, lines: int = 10, unit: str = "img"):
    """A `(done, total) -> None` callback (the shape evaluate() and degrade_records() take)
    driving one Progress, made on the first call, closed when done == total."""
    state: dict = {}

    def cb(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = Progress(total, desc, stream=stream, enabled=enabled, lines=lines, unit=unit)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return cb


class Logger:
    """metrics.jsonl (every record), a console line every `every` steps, a tqdm bar over the
    warm start and the RL steps on a terminal, and the records forwarded to the trackers of
    `report_to`. `config`: the run's resolved config as a dict (the trackers store it; the
    warm start's bar reads its length from it). `silent`: write and show nothing (the ranks
    other than 0 of a torchrun job: one writer, one console)."""

    def __init__(
        self,
        run_dir: Path,
        *,
        every: int = 1,
        progress: bool = True,
        stream=None,
        report_to: Sequence[str] = (),
        config: Optional[dict] = None,
        resume: bool = False,
        silent: bool = False,
    ):
        self.silent = silent
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS
        self.every = max(1, every)
        self.stream = stream if stream is not None else sys.stderr
        self.progress = progress
        self.t0 = time.time()
        self.bar: Optional[Progress] = None
        # The warm start writes one "sft" record per step; its length comes from the config.
        self.sft_steps = int(((config or {}).get("sft") or {}).get("steps") or 0)
        self.trackers = []
        self._pending = (tuple(report_to), config or {}, resume) if report_to else None
        self._ready = False
        if report_to:
            from .tracking import check_trackers

            check_trackers(report_to)  # a missing package fails now; the trackers start at the first record

    def write(self, record: dict) -> None:
        if self.silent:
            return
        if not self._ready:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._ready = True
        with writing(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        if self._pending is not None:
            from .tracking import make_trackers

            names, config, resume = self._pending
            self._pending = None
            with writing(self.run_dir):
                self.trackers = make_trackers(names, self.run_dir, config=config, resume=resume)
        for t in self.trackers:
            with writing(getattr(t, "path", self.run_dir)):
                t.log(record)
        if record.get("event") == "sft" and self.progress and self.sft_steps:
            self._sft_progress(int(record["step"]), record.get("loss"))

    def _sft_progress(self, step: int, loss) -> None:
        # lines=0: off a terminal the trainer's own "sft N/T" lines are the progress.
        if self.bar is None:
            self.bar = Progress(
                self.sft_steps, "warm start", stream=self.stream, lines=0, unit="step", initial=step - 1
            )
        self.bar.update(step - self.bar.n, postfix=f"loss {loss:.4f}" if isinstance(loss, float) else None)
        if step >= self.sft_steps:
            self.close_bar()

    def info(self, msg: str) -> None:
        if self.silent:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, file=self.stream, flush=True)

    def step(self, rec: dict, total: int, started_step: int) -> None:
        if self.silent:
            return
        self.write(rec)
        step = rec["step"]
        if self.bar is not None and self.bar.desc != "RL":
            self.close_bar()
        if self.bar is None and self.progress:
            # The bar starts at the first step of this process (a resumed run starts mid-way).
            # lines=0: off a terminal the step lines below are the progress.
            self.bar = Progress(total, "RL", stream=self.stream, lines=0, unit="step", initial=step - 1)
            self.bar.t0 = self.t0
            self.bar.start_n = started_step
        elapsed = time.time() - self.t0
        eta = elapsed / max(step - started_step, 1) * (total - step)
        if step % self.every == 0 or step == total:
            self.info(
                f"step {step:>4}/{total} | reward {rec['reward']:.3f} (acc {rec.get('reward_accuracy', float('nan')):.3f}) "
                f"fmt {rec['format_rate']:.2f} parse {rec['parse_rate']:.2f} | u {rec['uncertainty']:.3f} "
                f"w {rec['weight']:.3f} | loss {rec['loss']:+.4f} clip {rec.get('clip_frac', 0):.3f} "
                f"refKL {rec.get('ref_kl', float('nan')):.4f} pKL {rec.get('perception_kl', float('nan')):.3f} "
                f"H {rec.get('entropy', float('nan')):.3f} γ {rec['gamma']:.2e} | lr {rec['lr']:.2e} "
                f"gn {rec['grad_norm']:.3f} | {rec['rollout_tok_s']:.0f}+{rec['train_tok_s']:.0f} tok/s "
                f"{rec['peak_mem_mb']:.0f}MB | {elapsed:.0f}s, ETA {eta:.0f}s"
            )
        if self.bar is not None:
            self.bar.update(step - self.bar.n, postfix=f"reward {rec['reward']:.3f}")
            if step >= total:
                self.close_bar()

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        """End of the run (or of this process's part of it): the bar and the trackers."""
        self.close_bar()
        for t in self.trackers:
            t.close()
        self.trackers = []


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    except ImportError:  # pragma: no cover - Windows
        return float("nan")


def step_record(
    step: int, *, epoch: float, lr: float, gamma: float, exps, upd, sample_time: float, device, dist
) -> dict:
    """The metrics.jsonl record of an RL step: the means of its micro-batches' experience stats
    (experience.py) and of the fused loss's metrics (update.py), throughput and memory. Under
    torchrun the numbers are means over ranks (peak memory: the largest)."""
    rec = {"event": "step", "step": step, "epoch": round(epoch, 4), "lr": lr, "gamma": gamma}
    for key in exps[0].stats:
        rec[key] = sum(e.stats[key] for e in exps) / len(exps)
    rec["loss"] = sum(upd.losses) / len(upd.losses) if upd.losses else float("nan")
    for key in sorted({k for m in upd.metrics for k in m}):
        vals = [m[key] for m in upd.metrics if key in m]
        rec[key] = sum(vals) / len(vals)
    finite_norms = [g for g in upd.grad_norms if math.isfinite(g)]
    rec["grad_norm"] = sum(finite_norms) / len(finite_norms) if finite_norms else float("nan")
    rec["skipped_updates"] = upd.skipped
    rollout_time = sum(e.stats["rollout_time"] for e in exps)
    rec["rollout_tok_s"] = sum(e.stats["rollout_tokens"] for e in exps) / max(rollout_time, 1e-9)
    rec["train_tok_s"] = upd.tokens / max(upd.seconds, 1e-9)
    rec["sample_time"] = sample_time
    rec["train_time"] = upd.seconds
    rec["peak_mem_mb"] = peak_memory_mb(device)
    if exps[0].images:
        rec["images"] = {k: [v for e in exps for v in e.images[k]] for k in exps[0].images}
    if dist.enabled:
        keys = [k for k, v in rec.items() if isinstance(v, (int, float)) and k not in ("step", "epoch", "lr", "gamma")]
        vals = dist.sum([rec[k] for k in keys])
        peak = max(dist.gather(rec["peak_mem_mb"]))
        rec.update({k: v / dist.world for k, v in zip(keys, vals)})
        rec["peak_mem_mb"], rec["skipped_updates"] = peak, upd.skipped
    return rec
