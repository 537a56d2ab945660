"""Checkpoint I/O: folders written atomically, RNG state, finding the latest checkpoint.

A checkpoint is RUN/checkpoints/step-NNNNNN: the adapter (PEFT safetensors) + processor +
hawkeye.json + config.yaml, and training_state/ (state.json, optimizer.pt, rng.safetensors).
Nothing is ever unpickled: the optimizer state loads with weights_only=True.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

CHECKPOINTS = "checkpoints"
STATE_DIR = "training_state"


def atomic_dir(final: Path, write: Callable[[Path], None]) -> Path:
    """Write a folder under a temporary name, then rename it into place: a crash never leaves a
    half-written checkpoint under the real name."""
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def rng_state() -> Dict[str, torch.Tensor]:
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda_{i}"] = s
    return state


def set_rng_state(state: Dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    cuda = [state[k] for k in sorted(k for k in state if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    ckpts = sorted((run_dir / CHECKPOINTS).glob("step-*"))
    ckpts = [c for c in ckpts if (c / STATE_DIR / "state.json").is_file()]
    return ckpts[-1] if ckpts else None
