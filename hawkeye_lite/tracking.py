"""Experiment tracking: `logging.report_to: [tensorboard, wandb]` (TRL's `report_to`).

Each tracker receives every record the run writes to metrics.jsonl and logs its numbers under
the record's namespace: `train/` (RL steps), `eval/` (held-out metrics, overall and per
dataset), `sft/` (warm start). Non-numeric and non-finite values are left out (a NaN point
breaks TensorBoard's smoothing and W&B's charts alike; metrics.jsonl keeps them).

- tensorboard: event files under RUN/tensorboard (`tensorboard --logdir RUN/tensorboard`),
  written with torch's SummaryWriter; needs the `tensorboard` extra.
- wandb: a W&B run whose files live under RUN/wandb; project from WANDB_PROJECT (default
  hawkeye-lite), WANDB_MODE=offline works without an account (`wandb sync` uploads later).
  The run id is kept in RUN/wandb/run_id, so `--resume` continues the same W&B run.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from .config import ConfigError

TRACKERS = ("tensorboard", "wandb")
NAMESPACES = {"step": "train", "eval": "eval", "sft": "sft"}


def flatten(record: dict) -> Dict[str, float]:
    """The finite numbers of a metrics.jsonl record, as `namespace/key` (nested dicts, such as
    eval's per-dataset metrics, become `namespace/dataset/key`). Unknown events give {}."""
    ns = NAMESPACES.get(record.get("event"))
    if ns is None:
        return {}
    out: Dict[str, float] = {}

    def walk(prefix: str, d: dict) -> None:
        for key, value in d.items():
            if key == "event":
                continue
            if isinstance(value, dict):
                walk(f"{prefix}/{key}", value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"{prefix}/{key}"] = float(value)

    walk(ns, record)
    return out


class Tracker:
    def log(self, record: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path, config: Optional[dict] = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "logging.report_to: tensorboard needs the tensorboard package (pip install 'hawkeye-lite[tensorboard]')"
            ) from None
        self.log_dir = self.path = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        if config:
            import yaml

            # The resolved config as text, so the run's settings sit next to its curves.
            self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log(self, record: dict) -> None:
        values = flatten(record)
        if not values:
            return
        step = int(record.get("step", 0))
        for tag, value in values.items():
            if not tag.endswith("/step"):
                self.writer.add_scalar(tag, value, global_step=step)
        # One flush per record: a crash or Ctrl-C never loses logged steps, and a record every
        # few seconds makes this cheap.
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, run_dir: Path, config: Optional[dict] = None):
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                "logging.report_to: wandb needs the wandb package (pip install 'hawkeye-lite[wandb]')"
            ) from None
        self.wandb = wandb
        root = self.path = Path(run_dir) / "wandb"
        root.mkdir(parents=True, exist_ok=True)
        id_file = root / "run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "hawkeye-lite"),
            name=Path(run_dir).name,
            dir=str(run_dir),
            config=config or {},
            id=run_id,
            resume="allow",
            reinit="create_new",
        )
        # SFT, RL and eval records each count their own steps: give every namespace its own x axis
        # (W&B's global step must only grow, and the warm start's steps restart at 1).
        for ns in NAMESPACES.values():
            self.run.define_metric(f"{ns}/step")
            self.run.define_metric(f"{ns}/*", step_metric=f"{ns}/step")

    def log(self, record: dict) -> None:
        values = flatten(record)
        if values:
            self.run.log(values)

    def close(self) -> None:
        self.run.finish()


def check_trackers(names: Iterable[str]) -> None:
    """Fail before any work when a tracker is unknown or its package is missing (writes nothing:
    the trackers themselves are made at the first record, once the run owns its folder)."""
    import importlib

    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"logging.report_to: unknown tracker {name!r} (choose from {', '.join(TRACKERS)})")
        module = "tensorboard" if name == "tensorboard" else "wandb"
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"logging.report_to: {name} needs the {module} package (pip install 'hawkeye-lite[{name}]')"
            ) from None


def make_trackers(
    names: Iterable[str], run_dir: Path, *, config: Optional[dict] = None, resume: bool = False
) -> List[Tracker]:
    """One tracker per name of `logging.report_to`; a missing package is a ConfigError naming it."""
    made: List[Tracker] = []
    for name in names:
        if name == "tensorboard":
            made.append(TensorBoardTracker(run_dir, config))
        elif name == "wandb":
            made.append(WandbTracker(run_dir, config))
        else:
            raise ConfigError(f"logging.report_to: unknown tracker {name!r} (choose from {', '.join(TRACKERS)})")
    return made
