"""The demo's tiny random Qwen2.5-VL (`tiny_model.*`): built once at model.name_or_path when that
folder does not exist, with its vision stand-in pretrained (tiny_vision.py), and reused only when
it was built with the same settings (recorded in it)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable, Optional

from .config import ConfigError, TrainConfig


def tiny_settings(cfg: TrainConfig) -> dict:
    """What the tiny model is a function of (recorded in it, checked before reuse)."""
    from dataclasses import asdict

    return {"tiny_model": {k: v for k, v in asdict(cfg.tiny_model).items() if k != "build"}}


def looks_like_hub_id(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None and not name.startswith(
        ("runs/", "./", "../"))


def build_demo_model(path: Path, cfg: TrainConfig, log: Optional[Callable[[str], None]] = None) -> Path:
    """The tiny random Qwen2.5-VL the demo trains (written once, at model.name_or_path)."""
    from .model import build_tiny_model
    from .runfolder import write_settings

    t = cfg.tiny_model
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")  # removed at start if a kill leaves it
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(tmp, seed=t.seed, hidden_size=t.hidden_size, num_layers=t.num_layers, num_heads=t.num_heads,
                     intermediate_size=t.intermediate_size, vision_depth=t.vision_depth,
                     vision_hidden_size=t.vision_hidden_size, min_pixels=t.min_pixels, max_pixels=t.max_pixels)
    if t.vision_pretrain_steps > 0:  # a random tower sees no quality cues: give it low-level features
        from .tiny_vision import pretrain_tiny_vision

        pretrain_tiny_vision(tmp, steps=t.vision_pretrain_steps, log=log)
    write_settings(tmp, tiny_settings(cfg))
    try:
        os.replace(tmp, path)
    except OSError:  # built by another process meanwhile: theirs is identical (same settings)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def ensure_demo_model(cfg: TrainConfig, run_dir: Path, log) -> None:
    """Build the tiny model when the config asks for it and it is missing; rebuild one inside
    this run's folder that was built with other settings; refuse to touch one outside it."""
    from .runfolder import describe, differences, read_settings

    path = Path(cfg.model.name_or_path)
    if path.is_dir() and cfg.tiny_model.build and read_settings(path) is not None:
        diffs = differences(read_settings(path), tiny_settings(cfg))
        if diffs:
            inside = path.resolve().is_relative_to(run_dir.resolve())
            if not inside:  # may be another run's base: never rebuild it behind its back
                raise ConfigError(f"model.name_or_path: {path} is a tiny model built with other settings "
                                  f"({describe(diffs)}); delete it or point model.name_or_path elsewhere")
            log.info(f"rebuilding the tiny demo model at {path}: {describe(diffs)}")
            shutil.rmtree(path)
    if not path.exists() and cfg.tiny_model.build and not looks_like_hub_id(cfg.model.name_or_path):
        log.info(f"building the tiny demo model at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        build_demo_model(path, cfg, log=log.info)
