"""The tiny model's stand-in vision pretraining: it learns low-level statistics, touches only
the vision tower, and is deterministic."""

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from hawkeye_lite.model import build_tiny_model
from hawkeye_lite.tiny_vision import low_level_stats, pretrain_tiny_vision


def test_low_level_stats_follow_the_image():
    rng = np.random.default_rng(0)
    flat = Image.fromarray(np.full((56, 56, 3), 128, np.uint8))
    noisy = Image.fromarray(np.clip(128 + rng.normal(0, 40, (56, 56, 3)), 0, 255).astype(np.uint8))
    dark = Image.fromarray(np.full((56, 56, 3), 30, np.uint8))
    a, b, c = low_level_stats(flat), low_level_stats(noisy), low_level_stats(dark)
    assert a.shape == (7,) and np.isfinite(b).all()
    assert c[0] < a[0]  # brightness
    assert b[2] > a[2] and b[3] > a[3]  # gradient and high-frequency energy grow with noise


def test_pretraining_changes_only_the_vision_tower_and_is_deterministic(tmp_path):
    outs = []
    for name in ("a", "b"):
        d = build_tiny_model(tmp_path / name, seed=0)
        before = load_file(str(d / "model.safetensors"))
        first = pretrain_tiny_vision(d, steps=1, n_scenes=8, batch_size=8)
        after = load_file(str(d / "model.safetensors"))
        outs.append((before, after, first))
    before, after, _ = outs[0]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("visual" in k for k in changed)
    assert all(torch.equal(outs[0][1][k], outs[1][1][k]) for k in after)  # same seed, same weights


def test_pretraining_lowers_the_regression_loss(tmp_path):
    d = build_tiny_model(tmp_path / "m", seed=0)
    first = pretrain_tiny_vision(build_tiny_model(tmp_path / "m1", seed=0), steps=1, n_scenes=16, batch_size=16)
    later = pretrain_tiny_vision(d, steps=60, n_scenes=16, batch_size=16)
    assert later < 0.7 * first
