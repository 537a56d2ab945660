"""Scorer presets for published checkpoints: each preset's chat text against a hand-written
reference of the upstream message layout, its parser against the upstream rules, NaN (never a
guess) for unreadable answers, picking a preset from a hub id or folder name, and scoring on the
tiny model with each preset's prompt."""

import math
import random

import pytest
from _tiny import DEVICE, DTYPE, images, model_config, tiny_model_dir

from hawkeye_lite.presets import (
    PRESETS,
    Q_HAWKEYE,
    Q_INSIGHT,
    VISUALQUALITY_R1,
    get_preset,
    parse_q_hawkeye,
    parse_q_insight,
    parse_visualquality_r1,
    preset_for,
)
from hawkeye_lite.prompts import chat_text
from hawkeye_lite.scorer import Scorer, aggregate

IMG = "<|vision_start|><|image_pad|><|vision_end|>"


# ----------------------------------------------------------------------------- prompts


def test_visualquality_r1_chat_text_matches_its_readme_layout():
    # No system message -> Qwen2.5-VL's default one; image first, labelled by add_vision_id=True.
    question = (
        "You are doing the image quality assessment task. Here is the question: What is your overall rating "
        "on the quality of this picture? The rating should be a float between 1 and 5, rounded to two decimal "
        "places, with 1 representing very poor quality and 5 representing excellent quality. First output the "
        "thinking process in <think> </think> tags and then output the final answer with only one score in "
        "<answer> </answer> tags."
    )
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\nPicture 1: {IMG}{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat_text(VISUALQUALITY_R1.prompt) == expected


def test_q_hawkeye_and_q_insight_put_the_question_before_the_image():
    for preset in (Q_HAWKEYE, Q_INSIGHT):
        text = chat_text(preset.prompt)
        user = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
        assert user == preset.prompt.question + IMG, preset.name
        assert text.startswith(f"<|im_start|>system\n{preset.prompt.system}<|im_end|>\n")
    # Q-Hawkeye's system turn carries the format rules, one per line, and ends with a newline.
    assert "<answer>\n[Only the numerical score here]\n</answer>\n" in Q_HAWKEYE.prompt.system
    assert Q_HAWKEYE.prompt.system.endswith("no other text\n")
    assert Q_HAWKEYE.prompt.question.endswith("final_score : The score.")
    assert Q_INSIGHT.prompt.question.endswith('"rating": The score.')


# ----------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>sharp</think><answer>3.42</answer>", 3.42),
        ("<answer>2</answer> then <answer>4.5 points</answer>", 4.5),  # the last answer counts
        ("no tags, but the score is 3.75 overall", 3.75),  # no answer tag: the whole text
        ("<answer>score: 4.1/5</answer>", 4.1),  # first number inside
        ("<answer>excellent</answer>", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_visualquality_r1(text, expected):
    assert parse_visualquality_r1(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('<think>ok</think><answer>{"rating": 3.45}</answer>', 3.45),
        ('<answer>{"rating":4}</answer>', 4.0),
        ('<answer>{"score": 3.45}</answer>', None),  # other key: not this model's format
        ("<answer>3.45</answer>", None),
        ('{"rating": 3.4.5}', None),  # not a number
    ],
)
def test_parse_q_insight(text, expected):
    assert parse_q_insight(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>\nfine\n</think>\n<answer>\n3.75\n</answer>", 3.75),
        ("<ANSWER>2.5</ANSWER>", 2.5),
        ("<answer>score 3.75</answer>", None),  # ONLY the number, per its prompt
        ("<answer>3.75</answer><answer>1.0</answer>", 3.75),  # the first, as its reward reads it
        ("final_score: 3.75", None),
    ],
)
def test_parse_q_hawkeye(text, expected):
    assert parse_q_hawkeye(text) == expected


def test_unparsed_answers_are_nan_and_counted_never_random():
    seed = random.randrange(2**31)
    print("seed", seed)
    random.seed(seed)
    garbage = ["".join(random.choice("abc <>/") for _ in range(20)) for _ in range(6)]
    for preset in (VISUALQUALITY_R1, Q_INSIGHT, Q_HAWKEYE):
        mean, std, values = aggregate(garbage, parse=preset.parse)
        assert math.isnan(mean) and math.isnan(std) and values == [], preset.name
    mean, _, values = aggregate(["<answer>\n4.0\n</answer>", "nothing", "<answer>2.0</answer>"], parse=parse_q_hawkeye)
    assert values == [4.0, 2.0] and mean == 3.0
    # Out-of-range ratings are clamped to [1, 5] like the package's own.
    assert aggregate(['"rating": 7'], parse=parse_q_insight)[2] == [5.0]


# ----------------------------------------------------------------------------- choosing a preset


@pytest.mark.parametrize(
    "name, expected",
    [
        ("TianheWu/VisualQuality-R1-7B", "visualquality_r1"),
        ("tianhewu/visualquality-r1-7b-preview", "visualquality_r1"),
        ("/models/VisualQuality-R1-7B", "visualquality_r1"),
        ("ByteDance/Q-Insight", "q_insight"),
        ("AMAP-ML/Q-Hawkeye-7B", "q_hawkeye"),
        ("/ckpt/q_hawkeye_final", "q_hawkeye"),
        ("Qwen/Qwen2.5-VL-7B-Instruct", None),
        ("runs/demo/final", None),
    ],
)
def test_preset_for(name, expected):
    got = preset_for(name)
    assert (got.name if got else None) == expected


def test_get_preset():
    assert get_preset("Q-Hawkeye") is Q_HAWKEYE and get_preset(Q_INSIGHT) is Q_INSIGHT
    with pytest.raises(ValueError, match="unknown preset 'nope'.*visualquality_r1"):
        get_preset("nope")


# ----------------------------------------------------------------------------- on the tiny model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.mark.parametrize("name", ["visualquality_r1", "q_insight", "q_hawkeye"])
def test_scorer_uses_the_presets_prompt_and_parser(tiny_dir, name, monkeypatch):
    from hawkeye_lite.model import load_policy

    preset = PRESETS[name]
    policy = load_policy(model_config(tiny_dir, quantization="none", lora=None), trainable=False)
    scorer = Scorer(policy, preset=name, max_new_tokens=4)
    assert scorer.prompt is preset.prompt and scorer.parse is preset.parse
    # The encoded prompt is the preset's chat text (the tokenizer round-trips it).
    batch = policy.encode(images(1), scorer.prompt)
    decoded = policy.tokenizer.decode(batch.input_ids[0][batch.attention_mask[0].bool()])
    assert preset.prompt.question in decoded and preset.prompt.system.strip() in decoded
    assert decoded.index(preset.prompt.question) < decoded.index("<|vision_start|>") or preset.prompt.image_first
    # The random model's answers do not parse: NaN and counted, never a made-up score.
    res = scorer.score(images(2, seed=1), samples=2, seed=0)
    for r in res:
        assert r.ok and len(r.texts) == 2
        assert r.n_parsed == sum(preset.parse(t) is not None for t in r.texts)
        if r.n_parsed == 0:
            assert math.isnan(r.score)
    # With answers in the preset's format, the preset's parser reads them.
    import hawkeye_lite.rollout as rollout_module

    answer = {
        "visualquality_r1": "<answer>3.5</answer>",
        "q_insight": '<answer>{"rating": 3.5}</answer>',
        "q_hawkeye": "<answer>\n3.5\n</answer>",
    }[name]
    real = rollout_module.generate_rollouts

    def fake(*args, **kwargs):
        ro = real(*args, **kwargs)
        ro.texts[:] = [answer] * len(ro.texts)
        return ro

    monkeypatch.setattr(rollout_module, "generate_rollouts", fake)
    res = scorer.score(images(1), samples=2, seed=0)
    assert res[0].score == 3.5 and res[0].n_parsed == 2


def test_from_pretrained_picks_and_forces_presets(tiny_dir, tmp_path, monkeypatch):
    import shutil

    named = tmp_path / "VisualQuality-R1-7B"
    shutil.copytree(tiny_dir, named)
    s = Scorer.from_pretrained(named, device=DEVICE, dtype=DTYPE)
    assert s.preset is VISUALQUALITY_R1 and s.max_new_tokens == VISUALQUALITY_R1.max_new_tokens
    s = Scorer.from_pretrained(named, device=DEVICE, dtype=DTYPE, preset="q_hawkeye", max_new_tokens=8)
    assert s.preset is Q_HAWKEYE and s.prompt is Q_HAWKEYE.prompt and s.max_new_tokens == 8
    plain = Scorer.from_pretrained(tiny_dir, device=DEVICE, dtype=DTYPE)
    assert plain.preset is None and plain.prompt.name == "think"
    # A hub id with a subfolder (Q-Insight's weights) downloads only that folder: stand the
    # download in with the tiny model, no network.
    calls = []

    def fake_snapshot(repo_id, allow_patterns=None, **kw):
        calls.append((repo_id, allow_patterns))
        root = tmp_path / "hub"
        if not root.exists():
            shutil.copytree(tiny_dir, root / "score_degradation")
        return str(root)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    s = Scorer.from_pretrained("ByteDance/Q-Insight", device=DEVICE, dtype=DTYPE)
    assert calls == [("ByteDance/Q-Insight", ["score_degradation/*"])]
    assert s.preset is Q_INSIGHT
