"""The learning-signal diagnostics logged every step (trainer.reward_spread), against numpy."""

import json
import os

import numpy as np
import torch

from hawkeye_lite.experience import reward_spread
from hawkeye_lite.rewards import Rewards


def test_reward_spread_matches_numpy():
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    B, G = 7, 5
    acc = rng.random((B, G))
    fmt = rng.choice([0.0, 0.8], (B, G))
    rep = np.zeros((B, G))
    acc[0] = 0.3
    fmt[0] = 0.8  # a group with no spread at all
    fmt[1] = 0.8  # spread from accuracy only
    cols = {"accuracy": acc, "format": fmt, "repetition": rep}
    r = Rewards(
        {k: torch.tensor(v.reshape(-1), dtype=torch.float32) for k, v in cols.items()},
        torch.tensor((acc + fmt + rep).reshape(-1), dtype=torch.float32),
    )
    out = reward_spread(r, G)
    total = (acc + fmt + rep).astype(np.float32).astype(np.float64)
    dev = total - total.mean(1, keepdims=True)
    for name, v in cols.items():
        v = v.astype(np.float32).astype(np.float64)
        share = ((v - v.mean(1, keepdims=True)) * dev).sum() / (dev**2).sum()
        assert abs(out[f"spread_{name}"] - share) < 1e-9
    assert abs(sum(out[f"spread_{k}"] for k in cols) - 1.0) < 1e-6
    assert out["spread_repetition"] == 0.0
    assert abs(out["zero_spread"] - 1 / B) < 1e-12


def test_reward_spread_all_equal():
    r = Rewards({"accuracy": torch.full((12,), 0.5)}, torch.full((12,), 0.5))
    out = reward_spread(r, 4)
    assert out["zero_spread"] == 1.0 and np.isnan(out["spread_accuracy"])


# ----------------------------------------------------------------------------- collapse warning


def test_collapse_warning_window_and_threshold():
    from hawkeye_lite.runloop import collapse_warning

    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    low = [{"step": i + 1, "zero_spread": float(v)} for i, v in enumerate(rng.uniform(0.0, 0.3, 30))]
    assert collapse_warning(low) is None
    # exactly the window's mean decides: 10 records at mean 0.5 warn, at a hair below do not
    at = [{"step": 40 + i, "zero_spread": v} for i, v in enumerate([0.0, 1.0] * 5)]
    assert collapse_warning(low + at) is not None and "step 49" in collapse_warning(low + at)
    below = at[:-1] + [{"step": 49, "zero_spread": 1.0 - 1e-6}]
    assert collapse_warning(low + below) is None
    assert collapse_warning(at[:9]) is None  # fewer records than the window: no verdict yet
    assert collapse_warning(at, window=4, threshold=0.5) is not None
    nan = at[:-1] + [{"step": 49, "zero_spread": float("nan")}]
    assert collapse_warning(nan) is None
    assert collapse_warning([{"step": 1}] * 10) is None  # records without the field (older runs)


def test_trainer_warns_once_when_every_group_has_one_reward(tiny, demo_dir, tmp_path):
    """The tiny random model never writes the answer format within 6 tokens, so with only the
    format reward every group's rewards are all 0: zero_spread 1 at every step."""
    import io

    from hawkeye_lite.config_loader import load_train_config
    from hawkeye_lite.trainer import Trainer

    cfg = load_train_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            f"model.name_or_path={tiny}",
            "tiny_model.build=false",
            f"data.train=[demo:{demo_dir}]",
            "eval.before=false",
            "eval.after=false",
            "optim.batch_size=2",
            "rollout.num_generations=3",
            "rollout.max_new_tokens=6",
            "optim.max_steps=12",
            "checkpoint.every=0",
            "logging.progress=false",
            "logging.plot=false",
            "sft.steps=0",
            "reward.functions=[format]",
            "objective.perception.enabled=false",
            "objective.beta=0",
        ],
    )
    out = io.StringIO()
    Trainer(cfg, log_stream=out).run()
    text = out.getvalue()
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["zero_spread"] == 1.0 for r in recs if r.get("event") == "step")
    assert text.count("RL has collapsed") == 1, text[-2000:]
    assert "step 10: RL has collapsed: in 100% of the groups" in text
