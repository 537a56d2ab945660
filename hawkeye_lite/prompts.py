"""The rating prompt, its chat formatting, and reading a score back out of a completion.

The chat text is written here in Qwen's ChatML rather than through a checkpoint's chat
template: templates differ between Qwen2-VL / Qwen2.5-VL releases (some only live in the
processor's chat_template.json), and the training prompt must be byte-identical everywhere.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

# One image slot; the processor widens <|image_pad|> to the image's number of visual tokens.
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str
    question: str
    require_think: bool  # what the format reward should ask of this prompt's answers
    # Where the image goes in the user turn. Published checkpoints differ: VisualQuality-R1 puts
    # it first with the "Picture 1: " label of add_vision_id=True; Q-Insight and Q-Hawkeye put
    # the question first. A checkpoint scores best with the layout it was trained on.
    image_first: bool = True
    image_prefix: str = ""


# R1-style system prompt (as used by Q-Insight / Q-Hawkeye): reason in <think>, answer in <answer>.
THINK = PromptTemplate(
    name="think",
    system=(
        "A conversation between User and Assistant. The user asks a question, and the Assistant "
        "solves it. The assistant first thinks about the reasoning process in the mind and then "
        "provides the user with the answer. The reasoning process and answer are enclosed within "
        "<think> </think> and <answer> </answer> tags, respectively, i.e., "
        "<think> reasoning process here </think><answer> answer here </answer>"
    ),
    question=(
        "What is your overall rating on the quality of this picture? The rating should be a float "
        "between 1 and 5, rounded to two decimal places, with 1 representing very poor quality and "
        "5 representing excellent quality. First output the thinking process in <think> </think> "
        "tags and then output the final rating (only the number) in <answer> </answer> tags."
    ),
    require_think=True,
)

NO_THINK = PromptTemplate(
    name="no_think",
    system="You are a helpful assistant that rates image quality.",
    question=(
        "What is your overall rating on the quality of this picture? The rating should be a float "
        "between 1 and 5, rounded to two decimal places, with 1 representing very poor quality and "
        "5 representing excellent quality. Output only the rating inside <answer> </answer> tags, "
        "e.g. <answer>3.25</answer>."
    ),
    require_think=False,
)

PROMPTS = {p.name: p for p in (THINK, NO_THINK)}


def get_prompt(name: str) -> PromptTemplate:
    if name not in PROMPTS:
        raise ValueError(f"prompt: unknown prompt {name!r}; choose one of {', '.join(PROMPTS)}")
    return PROMPTS[name]


def chat_text(prompt: PromptTemplate = THINK, assistant_prefix: str = "") -> str:
    """ChatML text for one image + the question, ending where the assistant starts writing
    (after `assistant_prefix`, what the checkpoint's template opens the answer with)."""
    image = prompt.image_prefix + IMAGE_PLACEHOLDER
    user = image + prompt.question if prompt.image_first else prompt.question + image
    return (
        f"<|im_start|>system\n{prompt.system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
        f"<|im_start|>assistant\n{assistant_prefix}"
    )


def chat_messages(prompt: PromptTemplate = THINK) -> list:
    """The conversation `chat_text` writes, as chat-template messages (render it with
    add_generation_prompt=True, and add_vision_id=True when the prompt labels its picture)."""
    image = [{"type": "image"}]
    text = [{"type": "text", "text": prompt.question}]
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": image + text if prompt.image_first else text + image},
    ]


def assistant_prefix(rendered: str, prompt: PromptTemplate = THINK) -> str:
    """What a checkpoint's chat template writes after hawkeye's prompt, given the template's
    rendering of `chat_messages(prompt)`: "" for Qwen2.5-VL and Qwen3-VL Instruct, "<think>\n"
    for the Thinking checkpoints (their generation prompt opens the think block, and the model
    writes on from inside it). ValueError naming the first difference when the template writes
    the conversation itself differently."""
    ours = chat_text(prompt)
    if rendered.startswith(ours):
        return rendered[len(ours) :]
    i = next((k for k, (a, b) in enumerate(zip(rendered, ours)) if a != b), min(len(rendered), len(ours)))
    raise ValueError(
        f"at character {i} the template writes {rendered[i : i + 40]!r} where hawkeye writes {ours[i : i + 40]!r}"
    )


def completion_target(answer: str, prefix: str) -> str:
    """The part of a whole assistant turn `answer` that the model writes after the template's
    `prefix`: a supervised target must not repeat what the prompt already opened. An opened
    think block that the answer does not use is closed empty, as Qwen's templates do."""
    opened = prefix.strip()
    if not opened:
        return answer
    if answer.lstrip().startswith(opened):
        return answer.lstrip()[len(opened) :]
    if opened == "<think>":
        return "</think>" + answer
    raise ValueError(f"the chat template opens the answer with {prefix!r}, which {answer[:40]!r} does not start with")


# A plain decimal number, optional sign and exponent. No "nan"/"inf": those are not ratings.
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"  # ASCII digits only
_NUMBER_RE = re.compile(_NUMBER)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_DECIMAL_COMMA_RE = re.compile(r"^\s*[+-]?[0-9]+,[0-9]+\s*$")
_THINK_FORMAT_RE = re.compile(
    rf"\s*<think>(?:(?!</?think>|</?answer>).)*</think>\s*<answer>\s*{_NUMBER}\s*</answer>\s*", re.DOTALL
)
_NO_THINK_FORMAT_RE = re.compile(
    rf"\s*(?:<think>(?:(?!</?think>|</?answer>).)*</think>\s*)?<answer>\s*{_NUMBER}\s*</answer>\s*", re.DOTALL
)


def parse_score(text: object) -> Optional[float]:
    """The rating in the last closed <answer>…</answer> of `text`, or None.

    Inside the tag the first number counts ("3.5/5" -> 3.5, '{"rating": 3.42}' -> 3.42), a
    lone decimal comma is read as a point ("3,5" -> 3.5). Never raises: anything unreadable,
    non-finite or not a string is None. The value is not clamped (the rewards do that).
    """
    if not isinstance(text, str):
        return None
    answers = _ANSWER_RE.findall(text)
    if not answers:
        return None
    inner = answers[-1]
    if _DECIMAL_COMMA_RE.match(inner):
        inner = inner.replace(",", ".")
    match = _NUMBER_RE.search(inner)
    if match is None:
        return None
    try:
        value = float(match.group(0))
    except ValueError:  # pragma: no cover - the regex only admits float() syntax
        return None
    return value if math.isfinite(value) else None


def format_ok(text: object, require_think: bool = True) -> bool:
    """Whether the whole completion is `<think>…</think><answer>NUMBER</answer>` (whitespace
    tolerant). With require_think=False the think block is optional."""
    if not isinstance(text, str):
        return False
    pattern = _THINK_FORMAT_RE if require_think else _NO_THINK_FORMAT_RE
    return pattern.fullmatch(text) is not None
