import math

import pytest
import torch

from hawkeye_lite.config import RewardConfig
from hawkeye_lite.prompts import IMAGE_PLACEHOLDER, NO_THINK, THINK, chat_text, format_ok, get_prompt, parse_score
from hawkeye_lite.rewards import accuracy_reward, compute_rewards, format_reward, repetition_reward

# (completion text, expected parse) — shapes seen from real VLM answers.
PARSE_TABLE = [
    ("<think>sharp, well exposed</think><answer>3.42</answer>", 3.42),
    ("<think>x</think>\n<answer>  4.10 \n</answer>", 4.10),
    ("<answer>+2.5</answer>", 2.5),
    ("<answer>3</answer>", 3.0),
    ("<answer>.75</answer>", 0.75),
    ("<answer>5.</answer>", 5.0),
    ("<answer>-1.2</answer>", -1.2),  # parsed as is; the rewards clamp
    ("<answer>7.9</answer>", 7.9),
    ("<answer>1</answer> ... wait <answer>2.25</answer>", 2.25),  # last answer wins
    ("<answer>2</answer><answer>no idea</answer>", None),  # last answer wins even if bad
    ("<ANSWER>3.3</ANSWER>", 3.3),
    ('<answer>{"rating": 3.85}</answer>', 3.85),
    ("<answer>The rating is 4.2 out of 5</answer>", 4.2),
    ("<answer>3.5/5</answer>", 3.5),
    ("<answer>3,5</answer>", 3.5),
    ("<answer>2.1e0</answer>", 2.1),
    ("<answer>1e999</answer>", None),  # overflows to inf
    ("<answer>nan</answer>", None),
    ("<answer>inf</answer>", None),
    ("<answer></answer>", None),
    ("<answer>   </answer>", None),
    ("<answer>good</answer>", None),
    ("<answer>3.42", None),  # truncated before the closing tag
    ("3.42", None),  # no tag at all
    ("<think>the score is 4</think>", None),
    ("", None),
    ("<answer>\u0663.\u0665</answer>", None),  # arabic-indic digits are not ascii digits
    ("<<answer>>4<</answer>>", 4.0),
]


@pytest.mark.parametrize("text,expected", PARSE_TABLE)
def test_parse_score_table(text, expected):
    got = parse_score(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    "junk", [None, 3.5, b"<answer>3</answer>", ["<answer>3</answer>"], "<answer>" * 1000, "\x00\xff" * 50]
)
def test_parse_score_never_raises(junk):
    assert parse_score(junk) is None


FORMAT_TABLE = [
    ("<think>blurry edges</think><answer>2.10</answer>", True, True),
    ("  <think>\nmulti\nline\n</think>\n<answer> 3 </answer>\n", True, True),
    ("<answer>3.1</answer>", False, True),  # no think: fine only when not required
    ("<think>a</think><answer>x</answer>", False, False),
    ("<think>a</think><answer>3.1</answer> trailing words", False, False),
    ("prefix <think>a</think><answer>3.1</answer>", False, False),
    ("<think>a</think><think>b</think><answer>3.1</answer>", False, False),
    ("<think>a<answer>1</answer></think><answer>3.1</answer>", False, False),
    ("<think>a</think>", False, False),
    ("", False, False),
]


@pytest.mark.parametrize("text,think_ok,no_think_ok", FORMAT_TABLE)
def test_format_ok(text, think_ok, no_think_ok):
    assert format_ok(text, require_think=True) is think_ok
    assert format_ok(text, require_think=False) is no_think_ok


def test_chat_text_has_one_image_slot_and_ends_at_assistant():
    for prompt in (THINK, NO_THINK):
        text = chat_text(prompt)
        assert text.count(IMAGE_PLACEHOLDER) == 1
        assert text.endswith("<|im_start|>assistant\n")
        assert prompt.question in text and prompt.system in text
    assert get_prompt("no_think") is NO_THINK
    with pytest.raises(ValueError, match="prompt"):
        get_prompt("nope")


def test_accuracy_reward():
    assert accuracy_reward("<answer>3.0</answer>", 3.0) == pytest.approx(1.0)
    assert accuracy_reward("<answer>3.3</answer>", 3.0) == pytest.approx(math.exp(-1.0))
    assert accuracy_reward("<answer>3.3</answer>", 3.0, tau=0.6) == pytest.approx(math.exp(-0.5))
    # clamped to [1, 5] before the distance
    assert accuracy_reward("<answer>9</answer>", 5.0) == pytest.approx(1.0)
    assert accuracy_reward("<answer>-3</answer>", 1.3) == pytest.approx(math.exp(-1.0))
    assert accuracy_reward("no answer", 3.0) == 0.0


def test_format_reward():
    assert format_reward("<think>t</think><answer>2</answer>") == pytest.approx(0.8)
    assert format_reward("<answer>2</answer>") == 0.0
    assert format_reward("<answer>2</answer>", require_think=False) == pytest.approx(0.8)
    assert format_reward("<think>t</think><answer>2</answer>", value=1.0) == 1.0


def test_repetition_reward():
    assert repetition_reward("<think>the image is sharp</think><answer>4</answer>") == 0.0
    assert repetition_reward("blur " * 6) == pytest.approx(-0.25)
    assert repetition_reward("blur " * 5) == 0.0  # at most 5 is allowed
    assert repetition_reward("blur " * 6 + "noise " * 7) == pytest.approx(-0.5)
    assert repetition_reward("Blur BLUR blur blur, blur. blur!") == pytest.approx(-0.25)  # case, punctuation
    assert repetition_reward("模" * 6) == pytest.approx(-0.25)  # CJK characters count one by one
    many = " ".join(f"w{i} " * 6 for i in range(20))
    assert repetition_reward(many) == pytest.approx(-2.0)  # floor
    assert repetition_reward("<answer>" * 10) == 0.0  # tags are not words


def test_compute_rewards_columns_and_total():
    texts = [
        "<think>fine</think><answer>3.0</answer>",
        "<answer>3.0</answer>",
        "garbage " * 8,
        "<think>ok</think><answer>4.5</answer>",
    ]
    r = compute_rewards(texts, [3.0, 4.5], num_generations=2)
    assert set(r.columns) == {"accuracy", "format", "repetition"}
    assert torch.allclose(r.columns["accuracy"], torch.tensor([1.0, 1.0, 0.0, 1.0]))
    assert torch.allclose(r.columns["format"], torch.tensor([0.8, 0.0, 0.0, 0.8]))
    assert torch.allclose(r.columns["repetition"], torch.tensor([0.0, 0.0, -0.25, 0.0]))
    assert torch.allclose(r.total, torch.tensor([1.8, 1.0, -0.25, 1.8]))
    assert r.total.dtype == torch.float32
    assert r.mean()["total"] == pytest.approx(float(r.total.mean()))

    only = compute_rewards(texts, [3.0] * 4, RewardConfig(functions=("accuracy",)))
    assert list(only.columns) == ["accuracy"] and torch.equal(only.total, only.columns["accuracy"])

    no_think = compute_rewards(texts[:2], [3.0, 3.0], RewardConfig(require_think=False))
    assert torch.allclose(no_think.columns["format"], torch.tensor([0.8, 0.8]))

    with pytest.raises(ValueError, match="targets"):
        compute_rewards(texts, [3.0, 3.0, 3.0])


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"functions": ("accuracy", "speed")}, "reward.functions"),
        ({"tau": 0}, "reward.tau"),
        ({"score_min": 5, "score_max": 1}, "reward.score_max"),
        ({"repetition_floor": 1.0}, "reward.repetition_floor"),
    ],
)
def test_reward_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RewardConfig(**kwargs)


def test_assistant_prefix_is_what_a_template_writes_after_the_prompt():
    from hawkeye_lite.prompts import assistant_prefix

    for prompt in (THINK, NO_THINK):
        assert assistant_prefix(chat_text(prompt), prompt) == ""
        assert assistant_prefix(chat_text(prompt) + "<think>\n", prompt) == "<think>\n"
        assert chat_text(prompt, "<think>\n") == chat_text(prompt) + "<think>\n"
    # a template that writes the conversation otherwise is named at the first difference
    other = chat_text(THINK).replace("<|im_start|>user\n", "<|im_start|>user\n\n")
    with pytest.raises(ValueError, match=r"at character \d+ the template writes"):
        assistant_prefix(other, THINK)


def test_completion_target_leaves_out_what_the_prompt_opened():
    from hawkeye_lite.prompts import completion_target

    answer = "<think> good </think><answer>3.50</answer>"
    assert completion_target(answer, "") == answer
    rest = completion_target(answer, "<think>\n")
    assert rest == " good </think><answer>3.50</answer>"
    assert format_ok("<think>\n" + rest) and parse_score("<think>\n" + rest) == 3.5
    # an answer without a think block closes the one the template opened, empty
    plain = completion_target("<answer>2.00</answer>", "<think>\n")
    assert plain == "</think><answer>2.00</answer>"
    assert format_ok("<think>\n" + plain, require_think=False) and parse_score("<think>\n" + plain) == 2.0
    with pytest.raises(ValueError, match="opens the answer with"):
        completion_target("<answer>2.00</answer>", "Rating: ")
