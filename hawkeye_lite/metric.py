"""A hawkeye-lite model as an IQA-toolkit metric, in the convention of pyiqa (IQA-PyTorch).

Code written for a pyiqa no-reference metric (``metric = pyiqa.create_metric(name)`` then
``scores = metric(images)``) runs unchanged on a hawkeye-lite model::

    import torch
    from hawkeye_lite.metric import create_metric

    metric = create_metric("runs/my-run", samples=8, seed=0)  # a run folder, adapter, model or hub id
    x = torch.rand(4, 3, 224, 224)  # [N, 3, H, W] float in [0, 1]
    scores = metric(x)  # float32 [N] in [1, 5], higher is better; NaN where no answer parsed
    print(scores, metric.last_std)  # last_std: the spread of the K sampled ratings (uncertainty)
    print(metric(["a.jpg", "b.png"]), metric.score_range, metric.lower_better, metric.metric_mode)

The metric is a ``torch.nn.Module`` holding a `Scorer` (not registered parameters): ``.to()``,
``.eval()`` and ``.train()`` are accepted and change nothing (the model stays on the device it
was loaded on, in inference mode). It samples text, so it has **no gradient**: a tensor that
requires grad is detached, and ``as_loss=True`` is refused.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from .images import ImageReadError
from .scorer import SCORE_MAX, SCORE_MIN, Scorer, ScoreResult

__all__ = ["HawkeyeMetric", "create_metric", "scoring_option_names"]

# Scorer.score's keywords the metric decides itself: it always raises on a bad image (a metric
# has no place for a skipped one), and each image's random stream is keyed by its own pixels.
_RESERVED = {"on_error": "the metric always uses on_error='raise'", "stream_keys": "the metric keys by pixels"}


def scoring_option_names() -> List[str]:
    """The keyword arguments of `Scorer.score` a metric accepts (read from its signature)."""
    params = inspect.signature(Scorer.score).parameters.values()
    return [
        p.name
        for p in params
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "images", *_RESERVED)
    ]


def _check_options(options: Dict[str, Any]) -> None:
    allowed = scoring_option_names()
    for name in options:
        if name in _RESERVED:
            raise TypeError(f"scoring option {name!r} cannot be set ({_RESERVED[name]})")
        if name not in allowed:
            raise TypeError(
                f"unknown scoring option {name!r} (the options are those of Scorer.score: {', '.join(allowed)})"
            )


def _as_image_list(x: Any) -> List[Any]:
    """The input as a list of single images Scorer.score reads: a [N, C, H, W] tensor becomes its
    N rows (each a CxHxW tensor), a [C, H, W] tensor one image, a list stays a list."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()  # one transfer for the batch, not one per row
        if x.ndim == 4:
            return list(x.unbind(0))
        if x.ndim == 3:
            return [x]
        raise ImageReadError(
            f"input (torch.Tensor): expected a [N, C, H, W] or [C, H, W] tensor (C in 1, 3, 4), got shape {tuple(x.shape)}"
        )
    if isinstance(x, (list, tuple)):
        return [item.detach() if isinstance(item, torch.Tensor) else item for item in x]
    return [x]  # one path, PIL image or numpy array


class HawkeyeMetric(nn.Module):
    """No-reference IQA metric over a `Scorer`: ``metric(x)`` -> float32 ``[N]`` scores in [1, 5].

    ``x``: a ``[N, C, H, W]`` tensor (float in [0, 1], C = 3; 1 and 4 are read as grayscale and
    RGBA as `Scorer` does), a ``[C, H, W]`` tensor (N = 1), a path (str / PathLike), or a list of
    paths, PIL images, numpy arrays and ``CxHxW`` tensors. Each image is scored independently with
    the same options (its score does not depend on the other images in the call).

    Returns the scores on the input tensor's device when ``x`` is a tensor, on the CPU otherwise.
    An image none of whose K answers parsed scores NaN. A bad image (wrong shape, values outside
    [0, 1], an unreadable or missing file) raises `ImageReadError` naming it (``images[i] (...)``
    or the path) before anything is scored.

    After each call ``last_std`` holds the per-image population std of the K sampled ratings (the
    model's uncertainty; NaN where none parsed), on the same device as the scores, and
    ``last_results`` the `ScoreResult` list (texts, parsed samples).

    Not differentiable: inputs that require grad are detached and the scores carry no gradient.
    """

    score_range = (SCORE_MIN, SCORE_MAX)
    lower_better = False
    metric_mode = "NR"
    metric_name = "hawkeye_lite"

    def __init__(self, scorer: Scorer, **options: Any):
        super().__init__()
        _check_options(options)
        self.scorer = scorer  # a plain attribute: the Policy is no nn.Module, nothing is registered
        self.options: Dict[str, Any] = dict(options)
        self.last_std: Optional[torch.Tensor] = None
        self.last_results: Optional[List[ScoreResult]] = None

    @property
    def as_loss(self) -> bool:
        return False

    @as_loss.setter
    def as_loss(self, value: bool) -> None:
        if value:
            raise ValueError("HawkeyeMetric cannot be a loss: its scores come from sampled text and have no gradient")

    @property
    def device(self) -> torch.device:
        """Where the model runs (set when loading: create_metric(..., device=...)); `.to()` does not move it."""
        return torch.device(getattr(self.scorer.policy, "device", "cpu"))

    def forward(self, x: Union[torch.Tensor, str, os.PathLike, Sequence[Any]]) -> torch.Tensor:
        out_device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
        images = _as_image_list(x)
        with torch.no_grad():
            results = self.scorer.score(images, on_error="raise", **self.options) if images else []
        self.last_results = results
        scores = torch.tensor([r.score for r in results], dtype=torch.float32)
        std = torch.tensor([r.std for r in results], dtype=torch.float32)
        self.last_std = std.to(out_device)
        return scores.to(out_device)

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.metric_mode}, score_range={self.score_range}, lower_better={self.lower_better}" + (
            f", {opts}" if opts else ""
        )


def create_metric(
    model: Union[str, os.PathLike, Scorer],
    *,
    device: Optional[str] = None,
    quantization: Optional[str] = None,
    preset: Optional[str] = None,
    max_new_tokens: Optional[int] = None,
    as_loss: bool = False,
    **scoring_options: Any,
) -> HawkeyeMetric:
    """A `HawkeyeMetric` (pyiqa's ``create_metric(name)``, for a hawkeye-lite model).

    ``model``: a training run folder, adapter folder, model folder or hub id, loaded with
    `Scorer.from_pretrained` (``device``, ``quantization``, ``preset`` and ``max_new_tokens`` are
    passed when given; otherwise its defaults apply), or a `Scorer`, used as it is (then only
    ``max_new_tokens`` may be given: it becomes a scoring option).

    ``scoring_options``: keyword arguments of `Scorer.score` (samples, temperature, top_p, top_k,
    max_new_tokens, seed, batch_size, stratified) used for every call. An unknown name raises
    TypeError before any model is loaded; ``on_error`` and ``stream_keys`` are the metric's own.
    ``as_loss`` is accepted for pyiqa compatibility; True raises ValueError (no gradient).
    """
    _check_options(scoring_options)
    if as_loss:
        raise ValueError(
            "create_metric: as_loss=True is not supported: the scores come from sampled text and have no gradient"
        )
    if isinstance(model, Scorer):
        given = [
            name
            for name, v in (("device", device), ("quantization", quantization), ("preset", preset))
            if v is not None
        ]
        if given:
            raise ValueError(
                f"create_metric: {', '.join(given)} apply when loading a model; the Scorer given is already loaded"
            )
        if max_new_tokens is not None:
            scoring_options = {"max_new_tokens": max_new_tokens, **scoring_options}
        return HawkeyeMetric(model, **scoring_options)
    load = {"device": device, "quantization": quantization, "preset": preset, "max_new_tokens": max_new_tokens}
    scorer = Scorer.from_pretrained(model, **{k: v for k, v in load.items() if v is not None})
    return HawkeyeMetric(scorer, **scoring_options)
