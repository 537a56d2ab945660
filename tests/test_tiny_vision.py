"""The tiny model's stand-in vision pretraining: it learns low-level statistics, touches only
the vision tower, and is deterministic."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hawkeye_lite.tiny_model import build_tiny_model
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


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])  # 14- and 16-pixel patches
def test_pretraining_lowers_the_regression_loss(tmp_path, arch):
    d = build_tiny_model(tmp_path / "m", seed=0, arch=arch)
    first = pretrain_tiny_vision(
        build_tiny_model(tmp_path / "m1", seed=0, arch=arch), steps=1, n_scenes=16, batch_size=16
    )
    later = pretrain_tiny_vision(d, steps=60, n_scenes=16, batch_size=16)
    assert later < 0.7 * first


def test_local_stats_are_the_image_stats_of_each_token_block():
    from hawkeye_lite.tiny_vision import CELL, local_stats

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (2 * CELL, 3 * CELL, 3), dtype=np.uint8))
    cells = local_stats(img)
    assert cells.shape == (6, 7) and np.isfinite(cells).all()
    # Raster order over a 2 x 3 grid of blocks: row 5 is block (1, 2), row 1 is block (0, 1).
    a = np.asarray(img, dtype=np.float32) / 255.0
    y = a @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.isclose(cells[5, 0], y[CELL:, 2 * CELL :].mean(), atol=1e-5)
    assert np.isclose(cells[1, 1], y[:CELL, CELL : 2 * CELL].std(), atol=1e-5)
    # A one-block image: the per-block brightness, contrast and colourfulness are the image's.
    one = Image.fromarray(rng.integers(0, 256, (CELL, CELL, 3), dtype=np.uint8))
    np.testing.assert_allclose(local_stats(one)[0, [0, 1, 6]], low_level_stats(one)[[0, 1, 6]], rtol=1e-4)
    with pytest.raises(ValueError, match="multiple"):
        local_stats(Image.new("RGB", (CELL + 1, CELL)))


def test_local_stats_follow_the_vision_token_order(tmp_path):
    # One row per merged visual token: the processor's patch grid says how many.
    from hawkeye_lite.config import ModelConfig
    from hawkeye_lite.model import load_policy
    from hawkeye_lite.tiny_vision import local_stats

    d = build_tiny_model(tmp_path / "m", seed=0)
    policy = load_policy(
        ModelConfig(name_or_path=str(d), quantization="none", dtype="float32", lora=None, device="cpu"), trainable=False
    )
    img = Image.new("RGB", (84, 56), (90, 120, 200))
    batch = policy.encode([img])
    tokens = int(batch.image_grid_thw.prod()) // 4
    assert local_stats(img).shape[0] == tokens == int((batch.input_ids == policy.processor.image_token_id).sum())
