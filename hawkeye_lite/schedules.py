"""The two schedules of a run, as pure functions of where the run is (so a resume needs no
scheduler object): the learning rate of a step and γ(t) of the perception term (SPEC §1.4)."""

from __future__ import annotations

import math


def lr_at(step: int, total: int, *, lr: float, warmup: int, schedule: str, min_ratio: float) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine/linear/constant."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return lr * (min_ratio + (1.0 - min_ratio) * shape)


def gamma_at(epoch: float, gamma0: float, zero_epoch: float) -> float:
    """SPEC §1.4: cosine from gamma0 at epoch 0 down to 0 at `zero_epoch`, then 0."""
    if epoch >= zero_epoch:
        return 0.0
    return 0.5 * gamma0 * (1.0 + math.cos(math.pi * epoch / zero_epoch))


def set_lr(optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
