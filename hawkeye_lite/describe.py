"""A label-free image description for the warm start (sft.target: describe).

The paper's RL starts from an instruct model that can already say what it sees ("the image is
blurry", "it is dark") but has not been taught to rate quality. The tiny demo model has no such
ability: its language model is random, and a warm start on random ratings (sft.target: format)
teaches it the answer format but gives it no reason to look at the image. Measured on the
demo (docs/experiments/rl-label-free.md), RL from that start learns image dependence only
slowly. This module is the stand-in for the instruct model's perception: the warm start teaches
the model to describe four generic pixel statistics in its <think> block, then a random rating:

    <think> sharp 7 noisy 2 dark 4 blocky 0 </think><answer>2.91</answer>

Each number is the decile (0-9) of one statistic of `tiny_vision.low_level_stats` among the
training images: gradient energy (sharp), high-frequency energy (noisy), 1 - mean luminance
(dark), 8-px block-border jumps (blocky). No MOS is involved: the deciles are computed from
pixels, and on the demo data each statistic alone has |SRCC| <= 0.22 with the MOS (a quality
judgement needs their combination, which is what RL has to learn). The rating stays random,
so the warm-started model's held-out SRCC is ~0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# (word, column of low_level_stats, whether larger values mean a larger decile)
FIELDS = (("sharp", 2, True), ("noisy", 3, True), ("dark", 0, False), ("blocky", 5, True))


class Describer:
    """Deciles of the FIELDS statistics relative to a reference set of images (the training
    split), and the text that reports them."""

    def __init__(self, images: Sequence):
        from .tiny_vision import low_level_stats

        if len(images) < 2:
            raise ValueError("Describer: needs at least 2 reference images")
        stats = np.stack([low_level_stats(im) for im in images])
        self.reference = [np.sort(stats[:, col]) for _, col, _ in FIELDS]

    def deciles(self, image) -> list:
        from .tiny_vision import low_level_stats

        s = low_level_stats(image)
        out = []
        for ref, (_, col, up) in zip(self.reference, FIELDS):
            q = np.searchsorted(ref, s[col], side="right") / len(ref)  # fraction of references <= value
            q = q if up else 1.0 - q
            out.append(int(min(9, max(0, int(q * 10)))))
        return out

    def __call__(self, image) -> str:
        return " ".join(f"{word} {d}" for (word, _, _), d in zip(FIELDS, self.deciles(image)))
