"""Scorer presets for published RL-trained IQA checkpoints: each model's own prompt (system
turn, user turn, where the image goes), its answer format and how its authors read the score
out of an answer.

A checkpoint rates best with the exact prompt it was trained on, and each one answers in its own
format, so one parser for all would silently mis-read some of them. Every parser here returns
None for an answer it cannot read; the Scorer turns that into NaN and counts it (n_parsed).
Never a made-up score: VisualQuality-R1's published script substitutes `random.randint(1, 5)`
for an unreadable answer, which hides failures inside the correlations.

Sources (read for the prompts and the parsing rules; the code here is our own):
- visualquality_r1: TianheWu/VisualQuality-R1, README "Quick Start for Inference" (the
  with-thinking variant): no system message (so Qwen2.5-VL's default one), the image first,
  labelled "Picture 1: " (apply_chat_template(add_vision_id=True)), then the question; the
  score is the first number in the last <answer>...</answer>, or in the whole answer when it
  has none. Sampling there: top_k=50, top_p=1, up to 2048 new tokens.
- q_insight: the score task of ByteDance/Q-Insight (weights in the `score_degradation`
  subfolder of the hub repo): the R1 system prompt, the question then the image, the answer a
  JSON object {"rating": x} (inside <answer>), read with the first `"rating": NUMBER`.
  Sampling there: temperature 1.0, top_k=50, top_p=0.95, up to 1024 new tokens.
- q_hawkeye: AMAP-ML/Q-Hawkeye inference.py, the released inference prompt: the format
  instructions in the system turn, the question then the image; the score is the first
  `<answer> NUMBER </answer>` (digits and dots only, whitespace allowed), as its training
  reward reads it. Sampling there: temperature 1.0, up to 1024 new tokens. Its weights are not
  published yet; any hub id or folder named like "Q-Hawkeye" picks this preset.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

from .prompts import NO_THINK, THINK, PromptTemplate, parse_score

QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."  # what Qwen2.5-VL's chat template adds when there is none

_LAST_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FIRST_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_RATING_KEY = re.compile(r'"rating"\s*:\s*([0-9.]+)')
_PLAIN_ANSWER = re.compile(r"<answer>\s*([\d.]+)\s*</answer>", re.DOTALL | re.IGNORECASE)


def _to_float(text: str) -> Optional[float]:
    try:
        value = float(text)
    except ValueError:  # "3.4.5", "."
        return None
    return value if math.isfinite(value) else None


def parse_visualquality_r1(text: object) -> Optional[float]:
    """First number of the last <answer>...</answer>, or of the whole text without one."""
    if not isinstance(text, str):
        return None
    answers = _LAST_ANSWER.findall(text)
    inner = answers[-1].strip() if answers else text.strip()
    match = _FIRST_NUMBER.search(inner)
    return _to_float(match.group(0)) if match else None


def parse_q_insight(text: object) -> Optional[float]:
    """The number after the first `"rating":` of the answer (a JSON object in <answer>)."""
    if not isinstance(text, str):
        return None
    match = _RATING_KEY.search(text)
    return _to_float(match.group(1)) if match else None


def parse_q_hawkeye(text: object) -> Optional[float]:
    """The first <answer> that holds only a number (digits and dots, whitespace around)."""
    if not isinstance(text, str):
        return None
    match = _PLAIN_ANSWER.search(text)
    return _to_float(match.group(1)) if match else None


@dataclass(frozen=True)
class Preset:
    name: str
    prompt: PromptTemplate
    parse: Callable[[object], Optional[float]]
    hub_ids: Tuple[str, ...] = ()  # repos this preset is picked for (case-insensitive)
    name_patterns: Tuple[str, ...] = ()  # ... and any id or folder whose name contains one of these
    subfolder: Optional[str] = None  # the weights' folder inside the hub repo
    max_new_tokens: int = 512
    temperature: float = 1.0  # the authors' sampling settings (pass them to Scorer.score)
    top_p: float = 1.0
    top_k: int = 0
    source: str = ""


_R1_SYSTEM = THINK.system  # the R1 system prompt Q-Insight trains with is the same text as ours

VISUALQUALITY_R1 = Preset(
    name="visualquality_r1",
    prompt=PromptTemplate(
        name="visualquality_r1",
        system=QWEN_DEFAULT_SYSTEM,
        question=(
            "You are doing the image quality assessment task. Here is the question: What is your overall rating on "
            "the quality of this picture? The rating should be a float between 1 and 5, rounded to two decimal "
            "places, with 1 representing very poor quality and 5 representing excellent quality. First output the "
            "thinking process in <think> </think> tags and then output the final answer with only one score in "
            "<answer> </answer> tags."
        ),
        require_think=True,
        image_first=True,
        image_prefix="Picture 1: ",
    ),
    parse=parse_visualquality_r1,
    hub_ids=("TianheWu/VisualQuality-R1-7B", "TianheWu/VisualQuality-R1-7B-preview"),
    name_patterns=("visualquality-r1",),
    max_new_tokens=2048,
    top_k=50,
    source="github.com/TianheWu/VisualQuality-R1 README, Quick Start for Inference",
)

Q_INSIGHT = Preset(
    name="q_insight",
    prompt=PromptTemplate(
        name="q_insight",
        system=_R1_SYSTEM,
        question=(
            "What is your overall rating on the quality of this picture? The rating should be a float between 1 and 5, "
            "rounded to two decimal places, with 1 representing very poor quality and 5 representing excellent "
            'quality. Return the final answer in JSON format with the following keys: "rating": The score.'
        ),
        require_think=True,
        image_first=False,
    ),
    parse=parse_q_insight,
    hub_ids=("ByteDance/Q-Insight",),
    name_patterns=("q-insight",),
    subfolder="score_degradation",
    max_new_tokens=1024,
    top_p=0.95,
    top_k=50,
    source="github.com/bytedance/Q-Insight, score task (hub weights: ByteDance/Q-Insight/score_degradation)",
)

Q_HAWKEYE = Preset(
    name="q_hawkeye",
    prompt=PromptTemplate(
        name="q_hawkeye",
        system=(
            "You are doing the image quality assessment task. Here is the question: What is your overall rating on "
            "the quality of this picture?\n"
            "Please provide your response in the following format:\n"
            "<think>\n[Your detailed analysis of the image quality here]\n</think>\n"
            "<answer>\n[Only the numerical score here]\n</answer>\n"
            "Requirements:\n"
            "- The rating should be a float between 1 and 5, rounded to two decimal places\n"
            "- 1 represents very poor quality and 5 represents excellent quality\n"
            "- The <answer></answer> tags must contain ONLY the numerical score (e.g., 3.75), no other text\n"
        ),
        question=(
            "Please evaluate and rating this picture following the exact format specified in the instructions. The "
            "rating should be a float between 1 and 5, rounded to two decimal places. Return the final answer with "
            "the following keys: final_score : The score."
        ),
        require_think=True,
        image_first=False,
    ),
    parse=parse_q_hawkeye,
    name_patterns=("q-hawkeye", "q_hawkeye", "qhawkeye"),
    max_new_tokens=1024,
    source="github.com/AMAP-ML/Q-Hawkeye inference.py",
)

# This package's own prompts, so `preset=` can name them too.
HAWKEYE_THINK = Preset(name="think", prompt=THINK, parse=parse_score, source="hawkeye_lite.prompts.THINK")
HAWKEYE_NO_THINK = Preset(name="no_think", prompt=NO_THINK, parse=parse_score, source="hawkeye_lite.prompts.NO_THINK")

PRESETS: Dict[str, Preset] = {
    p.name: p for p in (VISUALQUALITY_R1, Q_INSIGHT, Q_HAWKEYE, HAWKEYE_THINK, HAWKEYE_NO_THINK)
}


def get_preset(preset: Union[str, Preset]) -> Preset:
    if isinstance(preset, Preset):
        return preset
    key = str(preset).strip().lower().replace("-", "_")
    if key not in PRESETS:
        raise ValueError(f"preset: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[key]


def preset_for(name_or_path: Union[str, Path]) -> Optional[Preset]:
    """The preset a hub id or model folder is known by (exact hub id first, then a name
    pattern in its last two path parts), else None (this package's own prompt applies)."""
    text = str(name_or_path).strip().rstrip("/")
    lowered = text.lower()
    for p in PRESETS.values():
        if any(lowered == h.lower() for h in p.hub_ids):
            return p
    tail = "/".join(lowered.replace("\\", "/").split("/")[-2:])
    for p in PRESETS.values():
        if any(pattern in tail for pattern in p.name_patterns):
            return p
    return None
