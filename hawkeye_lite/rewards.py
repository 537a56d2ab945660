"""Per-completion rewards (SPEC §1.1): small pure functions plus one combinator.

Each function maps one completion (and its ground truth) to a float, so it can be tested on
its own and the set that is summed is a config choice (RewardConfig.functions).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch

from .config import RewardConfig
from .prompts import format_ok, parse_score


def accuracy_reward(
    text: str, target: float, *, tau: float = 0.30, score_min: float = 1.0, score_max: float = 5.0
) -> float:
    """exp(-|clamp(y_hat) - y| / tau); 0 when no score parses."""
    score = parse_score(text)
    if score is None:
        return 0.0
    score = min(max(score, score_min), score_max)
    return math.exp(-abs(score - float(target)) / tau)


def format_reward(text: str, *, require_think: bool = True, value: float = 0.8) -> float:
    return value if format_ok(text, require_think=require_think) else 0.0


# Latin words (letters/digits/apostrophes) count as one unit each; every CJK character counts
# on its own, because Chinese/Japanese text has no spaces to split on.
_UNIT_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+(?:'[^\W_]+)*")
_TAG_RE = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)


def repetition_reward(text: str, *, max_count: int = 5, penalty: float = 0.25, floor: float = -2.0) -> float:
    """-penalty for every distinct word (or CJK character) occurring more than max_count times
    in the completion, floored. Catches the degenerate loops RL tends to find."""
    units = _UNIT_RE.findall(_TAG_RE.sub(" ", text).lower())
    repeated = sum(1 for count in Counter(units).values() if count > max_count)
    return max(-penalty * repeated, floor)


@dataclass
class Rewards:
    columns: Dict[str, torch.Tensor]  # reward name -> [N] float32, one column per function
    total: torch.Tensor  # [N] float32, their sum

    def mean(self) -> Dict[str, float]:
        out = {name: float(col.mean()) for name, col in self.columns.items()}
        out["total"] = float(self.total.mean())
        return out


def compute_rewards(
    texts: Sequence[str],
    targets: Sequence[float],
    cfg: Optional[RewardConfig] = None,
    *,
    num_generations: int = 1,
) -> Rewards:
    """Rewards for N completions. `targets` has one ground truth per completion, or one per
    prompt when num_generations=G (completions group-major: index b*G + g)."""
    cfg = cfg or RewardConfig()
    n = len(texts)
    targets = [float(t) for t in targets]
    if len(targets) * num_generations == n and num_generations > 1:
        targets = [t for t in targets for _ in range(num_generations)]
    if len(targets) != n:
        raise ValueError(
            f"compute_rewards: {n} completions but {len(targets)} targets (num_generations={num_generations})"
        )
    functions = {
        "accuracy": lambda text, y: accuracy_reward(
            text, y, tau=cfg.tau, score_min=cfg.score_min, score_max=cfg.score_max
        ),
        "format": lambda text, y: format_reward(text, require_think=cfg.require_think, value=cfg.format_value),
        "repetition": lambda text, y: repetition_reward(
            text, max_count=cfg.repetition_max_count, penalty=cfg.repetition_penalty, floor=cfg.repetition_floor
        ),
    }
    columns = {
        name: torch.tensor([functions[name](text, y) for text, y in zip(texts, targets)], dtype=torch.float32)
        for name in cfg.functions
    }
    total = torch.stack(list(columns.values())).sum(0) if n else torch.zeros(0)
    return Rewards(columns=columns, total=total)
