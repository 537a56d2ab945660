"""Shared tiny-model helpers for the model / rollout / scorer tests.

The tiny Qwen2.5-VL is built once per test session (whichever test module asks first) and
reused from the same folder; each module wraps `tiny_model_dir` in its own session fixture.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

# The suite runs on CPU in float32. On a GPU machine, HAWKEYE_TEST_DEVICE=cuda runs the same
# tests there (HAWKEYE_TEST_DTYPE=bfloat16 too, though bf16 may flip near-tied greedy tokens).
DEVICE = os.environ.get("HAWKEYE_TEST_DEVICE", "cpu")
DTYPE = os.environ.get("HAWKEYE_TEST_DTYPE", "float32")

_BUILT = {}


def model_config(path, **kwargs):
    from hawkeye_lite.config import ModelConfig

    return ModelConfig(name_or_path=str(path), **{"device": DEVICE, "dtype": DTYPE, **kwargs})


def tiny_model_dir(tmp_path_factory):
    key = str(tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        from hawkeye_lite.tiny_model import build_tiny_model

        _BUILT[key] = build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2.5-vl"), seed=0)
    return _BUILT[key]


def images(n: int, seed: int = 0):
    """n random RGB images of different sizes (different token counts -> left padding)."""
    rng = np.random.RandomState(seed)
    return [Image.fromarray(rng.randint(0, 256, (56 + 28 * (i % 4), 84, 3), dtype=np.uint8)) for i in range(n)]


def perturb_lora(policy, std: float = 0.5, seed: int = 0) -> None:
    """A fresh LoRA adapter is a no-op (B = 0); give it weights (A and B, deterministic for a
    seed) so it changes the model."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def adapter_run(tiny, tmp_path_factory, name: str = "run"):
    """A training-run-like folder: a perturbed LoRA adapter (r=4) on the tiny model, saved by
    Policy.save_pretrained in final/ with the no_think prompt (what the Scorer tests load)."""
    from hawkeye_lite.config import LoRAConfig
    from hawkeye_lite.model import load_policy

    policy = load_policy(model_config(tiny, quantization="none", lora=LoRAConfig(r=4, alpha=8)))
    perturb_lora(policy, std=0.2)
    run = tmp_path_factory.mktemp(name)
    policy.save_pretrained(run / "final", prompt="no_think")
    return run
