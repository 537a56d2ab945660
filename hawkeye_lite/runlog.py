"""What a run tells its user: `metrics.jsonl` (every record), a console line every few steps,
and a progress line with ETA on a terminal. The trainer only calls `write`, `info` and `step`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

METRICS = "metrics.jsonl"


class Logger:
    """metrics.jsonl (every record), a console line every `every` steps, a progress line with ETA."""

    def __init__(self, run_dir: Path, *, every: int = 1, progress: bool = True, stream=None):
        self.path = run_dir / METRICS
        self.every = max(1, every)
        self.stream = stream or sys.stderr
        # A \r-redrawn bar only makes sense on a terminal; in a log file it is noise.
        self.progress = progress and getattr(self.stream, "isatty", lambda: False)()
        self.t0 = time.time()

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")

    def info(self, msg: str) -> None:
        if self.progress:
            msg = "\r" + " " * 72 + "\r" + msg  # over the progress bar, which is redrawn after
        print(msg, file=self.stream, flush=True)

    def step(self, rec: dict, total: int, started_step: int) -> None:
        self.write(rec)
        step = rec["step"]
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
        if self.progress:
            bar = "#" * int(30 * step / total)
            self.stream.write(f"\r[{bar:<30}] {step}/{total} {elapsed:5.0f}s elapsed, ETA {eta:5.0f}s ")
            self.stream.write("\n" if step == total else "")
            self.stream.flush()
