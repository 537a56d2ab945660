"""The learning-signal diagnostics logged every step (trainer.reward_spread), against numpy."""

import os

import numpy as np
import torch

from hawkeye_lite.rewards import Rewards
from hawkeye_lite.trainer import reward_spread


def test_reward_spread_matches_numpy():
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    B, G = 7, 5
    acc = rng.random((B, G))
    fmt = rng.choice([0.0, 0.8], (B, G))
    rep = np.zeros((B, G))
    acc[0] = 0.3; fmt[0] = 0.8  # a group with no spread at all
    fmt[1] = 0.8                # spread from accuracy only
    cols = {"accuracy": acc, "format": fmt, "repetition": rep}
    r = Rewards({k: torch.tensor(v.reshape(-1), dtype=torch.float32) for k, v in cols.items()},
                torch.tensor((acc + fmt + rep).reshape(-1), dtype=torch.float32))
    out = reward_spread(r, G)
    total = (acc + fmt + rep).astype(np.float32).astype(np.float64)
    dev = total - total.mean(1, keepdims=True)
    for name, v in cols.items():
        v = v.astype(np.float32).astype(np.float64)
        share = ((v - v.mean(1, keepdims=True)) * dev).sum() / (dev ** 2).sum()
        assert abs(out[f"spread_{name}"] - share) < 1e-9
    assert abs(sum(out[f"spread_{k}"] for k in cols) - 1.0) < 1e-6
    assert out["spread_repetition"] == 0.0
    assert abs(out["zero_spread"] - 1 / B) < 1e-12


def test_reward_spread_all_equal():
    r = Rewards({"accuracy": torch.full((12,), 0.5)}, torch.full((12,), 0.5))
    out = reward_spread(r, 4)
    assert out["zero_spread"] == 1.0 and np.isnan(out["spread_accuracy"])
