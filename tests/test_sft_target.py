"""sft.target: the supervised warm start (MOS in every target) and the label-free one (a random
rating, independent of the image, so only the answer format is taught before RL)."""

import numpy as np
import pytest
from scipy import stats

from hawkeye_lite.config import ConfigError
from hawkeye_lite.config_loader import load_train_config
from hawkeye_lite.trainer import Trainer
from hawkeye_lite.warmstart import sft_format_ratings, sft_settings, sft_target


def cfg_for(tiny, demo_dir, run_dir, *extra):
    return load_train_config(
        None,
        [
            f"output_dir={run_dir}",
            f"model.name_or_path={tiny}",
            "tiny_model.build=false",
            f"data.train=[demo:{demo_dir}]",
            "eval.before=false",
            "eval.after=false",
            "sft.steps=3",
            "sft.batch_size=4",
            "optim.max_steps=1",
            "logging.progress=false",
            "logging.plot=false",
            *extra,
        ],
    )


def test_target_is_validated():
    with pytest.raises(ConfigError, match="^sft.target:"):
        load_train_config(None, ["sft.target=labels"])
    assert load_train_config(None, []).sft.target == "format"  # the demo's label-free warm start


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
    mos = sft_settings(load_train_config(None, ["sft.steps=10", "sft.target=mos"]))
    fmt = sft_settings(load_train_config(None, ["sft.steps=10", "sft.target=format"]))
    assert mos["sft"]["target"] == "mos" and fmt["sft"]["target"] == "format"
    assert "reward" in fmt and "reward" not in mos  # the random ratings depend on the score range


@pytest.mark.parametrize("target", ["mos", "format"])
def test_warm_start_targets(tiny, demo_dir, tmp_path, monkeypatch, target):
    """What the warm start actually trains on: the MOS of each image, or the seeded random
    ratings (which are not the images' MOS)."""
    import hawkeye_lite.warmstart as warmstart_mod

    seen = []
    real = warmstart_mod.sft_target
    monkeypatch.setattr(
        warmstart_mod,
        "sft_target",
        lambda y, think, description=None: seen.append(y) or real(y, think=think, description=description),
    )
    cfg = cfg_for(tiny, demo_dir, tmp_path / "run", f"sft.target={target}")
    t = Trainer(cfg)
    t.prepare()
    base = t.warm_start()
    assert (tmp_path / "run" / "sft-base" / "config.json").is_file() and base
    assert len(seen) == 3 * 4
    from hawkeye_lite.trainset import batch_indices

    mos = [
        t.data.train[i].mos
        for s in range(3)
        for i in batch_indices(len(t.data.train), s, 0, batch_size=4, grad_accum=1, seed=cfg.seed + 7)
    ]
    if target == "mos":
        assert seen == mos
    else:
        expect = [y for s in range(3) for y in sft_format_ratings(cfg, s, 4)]
        assert seen == expect
        assert all(abs(a - b) > 1e-9 for a, b in zip(seen, mos))


# ----------------------------------------------------------------------------- describe


def _images(n, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = rng.integers(0, 256, (56, 84, 3)).astype(np.float32) * rng.uniform(0.2, 1.0)
        out.append(Image.fromarray(a.clip(0, 255).astype(np.uint8), "RGB"))
    return out


def test_describer_deciles_match_numpy():
    """Each decile is the fraction of reference images whose statistic is <= the image's
    (1 - that for `dark`), times 10, floored and kept in 0..9: recomputed here with numpy."""
    from hawkeye_lite.describe import FIELDS, Describer
    from hawkeye_lite.tiny_vision import low_level_stats

    seed = int.from_bytes(__import__("os").urandom(4), "little")
    print(f"seed {seed}")
    ref, probe = _images(30, seed), _images(5, seed + 1)
    d = Describer(ref)
    stats = np.stack([low_level_stats(im) for im in ref])
    for im in probe + ref[:3]:
        s = low_level_stats(im)
        want = []
        for _, col, up in FIELDS:
            q = float((stats[:, col] <= s[col]).mean())
            want.append(min(9, int((q if up else 1 - q) * 10)))
        assert d.deciles(im) == want
        text = d(im)
        assert text == " ".join(f"{w} {v}" for (w, _, _), v in zip(FIELDS, want))
    # the darkest reference image is the darkest decile-wise: dark 9 or close; the brightest 0
    lum = stats[:, 0]
    assert d.deciles(ref[int(lum.argmin())])[2] >= 9 - 1 and d.deciles(ref[int(lum.argmax())])[2] == 0


def test_describe_needs_the_think_prompt():
    with pytest.raises(ConfigError, match="^sft.target:"):
        load_train_config(
            None, ["sft.steps=5", "sft.target=describe", "rollout.prompt=no_think", "reward.require_think=false"]
        )


def test_warm_start_describe(tiny, demo_dir, tmp_path, monkeypatch):
    """The <think> of every target is the image's description (relative to the training split),
    the rating is the seeded random one: nothing of the MOS."""
    import hawkeye_lite.warmstart as warmstart_mod
    from hawkeye_lite.describe import Describer

    seen = []
    real = warmstart_mod.sft_target
    monkeypatch.setattr(
        warmstart_mod,
        "sft_target",
        lambda y, think, description=None: (
            seen.append((y, description)) or real(y, think=think, description=description)
        ),
    )
    cfg = cfg_for(
        tiny,
        demo_dir,
        tmp_path / "run",
        "sft.target=describe",
        "sft.steps=2",
        "rollout.prompt=think",
        "reward.require_think=true",
    )
    t = Trainer(cfg)
    t.prepare()
    t.warm_start()
    from hawkeye_lite.trainset import batch_indices

    _, images = t.images.load(t.data.train)
    d = Describer(images)
    idx = [
        i
        for s in range(2)
        for i in batch_indices(len(t.data.train), s, 0, batch_size=4, grad_accum=1, seed=cfg.seed + 7)
    ]
    assert [desc for _, desc in seen] == [d(images[i]) for i in idx]
    assert [y for y, _ in seen] == [y for s in range(2) for y in sft_format_ratings(cfg, s, 4)]
    assert (
        sft_target(3.0, think=True, description="sharp 1 noisy 2 dark 3 blocky 4")
        == "<think> sharp 1 noisy 2 dark 3 blocky 4 </think><answer>3.00</answer>"
    )
