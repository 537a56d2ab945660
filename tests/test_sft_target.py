"""sft.target: the supervised warm start (MOS in every target) and the label-free one (a random
rating, independent of the image, so only the answer format is taught before RL)."""

import numpy as np
import pytest
from scipy import stats

from hawkeye_lite.config import ConfigError, load_train_config
from hawkeye_lite.trainer import Trainer, sft_format_ratings, sft_settings, sft_target


def cfg_for(tiny, demo_dir, run_dir, *extra):
    return load_train_config(None, [
        f"output_dir={run_dir}", f"model.name_or_path={tiny}", "tiny_model.build=false",
        f"data.train=[demo:{demo_dir}]", "eval.before=false", "eval.after=false", "sft.steps=3",
        "sft.batch_size=4", "optim.max_steps=1", "logging.progress=false", "logging.plot=false", *extra,
    ])


def test_target_is_validated():
    with pytest.raises(ConfigError, match="^sft.target:"):
        load_train_config(None, ["sft.target=labels"])
    assert load_train_config(None, []).sft.target == "mos"


def test_format_ratings_are_uniform_seeded_and_in_range():
    cfg = load_train_config(None, ["sft.target=format", "reward.score_min=0", "reward.score_max=10"])
    draws = np.concatenate([sft_format_ratings(cfg, step, 16) for step in range(400)])
    assert draws.min() >= 0.0 and draws.max() <= 10.0
    # uniform on [0, 10]: a KS test that fails for any other shape at this sample size
    p = stats.kstest(draws, stats.uniform(loc=0, scale=10).cdf).pvalue
    print(f"KS p-value {p:.3g}")
    assert p > 1e-4
    assert sft_format_ratings(cfg, 7, 16) == sft_format_ratings(cfg, 7, 16)  # a rebuilt warm start is identical
    assert sft_format_ratings(cfg, 7, 16) != sft_format_ratings(cfg, 8, 16)
    other = load_train_config(None, ["sft.target=format", "seed=1", "reward.score_min=0", "reward.score_max=10"])
    assert sft_format_ratings(other, 7, 16) != sft_format_ratings(cfg, 7, 16)


def test_sft_target_text():
    assert sft_target(4.5, think=True) == "<think> great </think><answer>4.50</answer>"
    assert sft_target(1.0, think=False) == "<answer>1.00</answer>"
    assert sft_target(2.999, think=True) == "<think> fair </think><answer>3.00</answer>"


def test_target_is_part_of_the_warm_start_settings():
    mos = sft_settings(load_train_config(None, ["sft.steps=10"]))
    fmt = sft_settings(load_train_config(None, ["sft.steps=10", "sft.target=format"]))
    assert mos["sft"]["target"] == "mos" and fmt["sft"]["target"] == "format"
    assert "reward" in fmt and "reward" not in mos  # the random ratings depend on the score range


@pytest.mark.parametrize("target", ["mos", "format"])
def test_warm_start_targets(tiny, demo_dir, tmp_path, monkeypatch, target):
    """What the warm start actually trains on: the MOS of each image, or the seeded random
    ratings (which are not the images' MOS)."""
    import hawkeye_lite.trainer as trainer_mod

    seen = []
    real = trainer_mod.sft_target
    monkeypatch.setattr(trainer_mod, "sft_target", lambda y, think: seen.append(y) or real(y, think=think))
    cfg = cfg_for(tiny, demo_dir, tmp_path / "run", f"sft.target={target}")
    t = Trainer(cfg)
    t.prepare()
    base = t.warm_start()
    assert (tmp_path / "run" / "sft-base" / "config.json").is_file() and base
    assert len(seen) == 3 * 4
    from hawkeye_lite.trainer import batch_indices

    mos = [t.data.train[i].mos for s in range(3)
           for i in batch_indices(len(t.data.train), s, 0, batch_size=4, grad_accum=1, seed=cfg.seed + 7)]
    if target == "mos":
        assert seen == mos
    else:
        expect = [y for s in range(3) for y in sft_format_ratings(cfg, s, 4)]
        assert seen == expect
        assert all(abs(a - b) > 1e-9 for a, b in zip(seen, mos))
