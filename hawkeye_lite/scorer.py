"""Scoring images with a trained model: `Scorer.from_pretrained(dir).score(images)`.

Each image gets K sampled answers; its score is the mean of the parsed ratings (each clamped
to [1, 5]) and its std their spread, which doubles as the model's uncertainty.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .config import LoRAConfig, ModelConfig
from .images import ImageReadError, as_rgb
from .presets import Preset, get_preset, preset_for
from .prompts import THINK, PromptTemplate, get_prompt, parse_score

SCORE_MIN, SCORE_MAX = 1.0, 5.0


@dataclass
class ScoreResult:
    source: str  # the path, or "images[i] (<type>)" for in-memory inputs
    score: float  # mean of the parsed samples in [1, 5]; NaN when none parsed or the image failed
    std: float  # population std of the parsed samples; NaN when none parsed
    samples: List[float] = field(default_factory=list)  # parsed ratings, clamped to [1, 5]
    texts: List[str] = field(default_factory=list)  # the K raw completions
    n_parsed: int = 0
    ok: bool = True  # False: the image could not be read (see error)
    error: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: NaN becomes None."""
        d = asdict(self)
        for key in ("score", "std"):
            if isinstance(d[key], float) and math.isnan(d[key]):
                d[key] = None
        return d


def aggregate(
    texts: Sequence[str],
    *,
    score_min: float = SCORE_MIN,
    score_max: float = SCORE_MAX,
    parse: Callable[[object], Optional[float]] = parse_score,
) -> Tuple[float, float, List[float]]:
    """(mean, population std, clamped parsed values) of the ratings `parse` reads in `texts`;
    an answer it cannot read (None) is left out, and none read gives NaN, never a guess."""
    values = [min(max(s, score_min), score_max) for s in map(parse, texts) if s is not None]
    if not values:
        return math.nan, math.nan, []
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return mean, std, values


# ----------------------------------------------------------------------------- image inputs


def _describe(image: Any, index: int) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    return f"images[{index}] ({type(image).__module__.split('.')[0]}.{type(image).__name__})"


def to_rgb(image: Any, name: str = "image"):
    """Any supported input (path, PIL, numpy HxW[xC], torch CxHxW) -> an upright RGB PIL image.
    Raises ImageReadError naming `name`."""
    return as_rgb(image, name)


# ----------------------------------------------------------------------------- scorer


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # "Qwen/Qwen2.5-VL-7B-Instruct"


def _find_adapter(path: Path) -> Optional[Path]:
    # An adapter folder, or a training run folder holding one in final/ or adapter/.
    for candidate in (path, path / "final", path / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    return None


def _hub_subfolder(repo_id: str, subfolder: str) -> str:
    """Local folder of `subfolder` of a hub repo (downloads only that folder, cached)."""
    from huggingface_hub import snapshot_download

    root = snapshot_download(repo_id, allow_patterns=[f"{subfolder}/*"])
    folder = Path(root) / subfolder
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"Scorer.from_pretrained: {repo_id} has no model in its {subfolder}/ folder")
    return str(folder)


class Scorer:
    def __init__(
        self,
        policy,
        *,
        prompt: Union[PromptTemplate, str] = THINK,
        max_new_tokens: int = 512,
        preset: Optional[Union[str, Preset]] = None,
    ):
        """`preset` (hawkeye_lite.presets: visualquality_r1, q_insight, q_hawkeye, think,
        no_think) sets the prompt and the answer parser together and wins over `prompt`."""
        self.policy = policy
        self.preset: Optional[Preset] = get_preset(preset) if preset is not None else None
        if self.preset is not None:
            self.prompt, self.parse = self.preset.prompt, self.preset.parse
        else:
            self.prompt = get_prompt(prompt) if isinstance(prompt, str) else prompt
            self.parse = parse_score
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(
        cls,
        path: Union[str, Path],
        *,
        device: Optional[str] = None,
        quantization: Optional[str] = None,
        dtype: Optional[str] = None,
        prompt: Optional[str] = None,
        max_new_tokens: Optional[int] = None,
        preset: Optional[Union[str, Preset]] = None,
    ) -> "Scorer":
        """`path`: a training run folder, an adapter folder (its base model is read from
        adapter_config.json), a full model folder, or a hub id. quantization/dtype/prompt/
        max_new_tokens default to what the adapter was trained with (hawkeye.json), else
        none/auto/think/512.

        A published checkpoint (VisualQuality-R1, Q-Insight, Q-Hawkeye: hawkeye_lite.presets)
        is scored with its own prompt and answer parser, picked from its hub id or folder name;
        `preset=` forces one (or "think" for this package's prompt). A preset's completion cap
        (its authors') is the default after hawkeye.json's; an explicit `prompt=` without
        `preset=` turns the automatic choice off."""
        from .model import ModelLoadError, load_policy, read_meta

        local = Path(path)
        adapter = _find_adapter(local) if local.is_dir() else None
        if not local.is_dir() and (local.exists() or not _HUB_ID.fullmatch(str(path))):
            raise ModelLoadError(f"{path}: no such model, adapter or run folder")
        meta = read_meta(adapter) if adapter is not None else None
        # A hawkeye-lite adapter knows its prompt (hawkeye.json); anything else is matched by name.
        chosen = get_preset(preset) if preset is not None else (None if meta or prompt else preset_for(path))
        if chosen is not None and chosen.subfolder and not local.is_dir():
            path = _hub_subfolder(str(path), chosen.subfolder)  # e.g. ByteDance/Q-Insight/score_degradation
            local = Path(path)
        saved = (meta or {}).get("model", {})
        if adapter is not None:
            base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
            if not base:
                raise ValueError(f"{adapter / 'adapter_config.json'}: has no base_model_name_or_path")
            if not Path(base).is_dir() and (adapter / base).is_dir():
                base = str((adapter / base).resolve())  # a base path saved relative to the adapter
            lora = LoRAConfig(adapter_path=str(adapter))
        else:
            if local.is_dir() and not (local / "config.json").is_file():
                raise ModelLoadError(
                    f"{path}: not a model, adapter or run folder (it has neither adapter_config.json nor config.json)"
                )
            base, lora = str(path), None
        cfg = ModelConfig(
            name_or_path=base,
            quantization=quantization or saved.get("quantization") or "none",
            dtype=dtype or saved.get("dtype") or "auto",
            lora=lora,
            gradient_checkpointing=False,
            attn_implementation=saved.get("attn_implementation", "auto"),
            device=device,
            min_pixels=saved.get("min_pixels"),
            max_pixels=saved.get("max_pixels"),
        )
        policy = load_policy(cfg, trainable=False)
        # The completion cap the policy was trained with: a longer one lets a small model run on
        # past where training stopped it, and scores differ from the run's own evaluation.
        max_new_tokens = (
            max_new_tokens
            or (meta or {}).get("max_new_tokens")
            or (chosen.max_new_tokens if chosen is not None else None)
            or 512
        )
        return cls(
            policy,
            prompt=prompt or (meta or {}).get("prompt") or THINK.name,
            max_new_tokens=max_new_tokens,
            preset=chosen,
        )

    def score(
        self,
        images: Union[Any, Sequence[Any]],
        *,
        samples: int = 8,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: Optional[int] = None,
        seed: Optional[int] = 0,
        batch_size: int = 8,
        on_error: str = "raise",
        stream_keys: Optional[Sequence[int]] = None,
        stratified: bool = False,
    ) -> List[ScoreResult]:
        """One ScoreResult per image, in input order. Inputs: paths, PIL images, numpy HxWxC
        uint8 (or uint16 / float in [0, 1]), torch CxHxW float in [0, 1].

        on_error="raise" checks every image before any scoring and raises ImageReadError
        naming the first bad one; "skip" returns a result with ok=False for it and scores the
        rest.

        Determinism: each image's K samples come from a random stream of its own, keyed by the
        seed and the image's pixels (`images.content_key`), so a result depends only on the
        image, the seed, the model and the sampling settings — not on its position, the other
        images, duplicates in the call or batch_size. seed=None draws fresh randomness.
        `stream_keys` (one int per image, e.g. `images.content_key(original)`) keys the streams
        instead of the pixels: a degraded copy scored with its original's key draws the same
        random numbers, so the two scores differ by what the pixels change, not by sampling
        noise (mechanism.py's sensitivity).

        stratified=True draws the K samples of an image with stratified uniforms: each is still
        an exact sample of the model, but together they cover its answer distribution evenly
        (a rating of probability p appears about K*p times, not K*p +- sqrt(K*p)), so `score`
        varies much less with the seed for the same K. The samples are then not independent
        of each other: `std` still estimates the model's spread; a per-sample statistic over
        them is not an i.i.d. one.
        """
        from .images import content_key, mix_seed
        from .rollout import generate_rollouts

        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error: must be 'raise' or 'skip', got {on_error!r}")
        if samples < 1 or batch_size < 1:
            raise ValueError(f"samples and batch_size must be >= 1, got {samples} and {batch_size}")
        if not isinstance(images, (list, tuple)):
            images = [images]
        if stream_keys is not None and len(stream_keys) != len(images):
            raise ValueError(f"stream_keys: {len(stream_keys)} keys for {len(images)} images")

        results: List[Optional[ScoreResult]] = [None] * len(images)
        loaded = []  # (index, name, RGB image)
        for i, image in enumerate(images):
            name = _describe(image, i)
            try:
                loaded.append((i, name, to_rgb(image, name)))
            except ImageReadError as exc:
                if on_error == "raise":
                    raise
                results[i] = ScoreResult(source=name, score=math.nan, std=math.nan, ok=False, error=str(exc))

        for start in range(0, len(loaded), batch_size):
            chunk = loaded[start : start + batch_size]
            keys = [content_key(im) if stream_keys is None else int(stream_keys[i]) for i, _, im in chunk]
            seeds = None if seed is None else [mix_seed(seed, k) for k in keys]
            rollouts = generate_rollouts(
                self.policy,
                [im for _, _, im in chunk],
                num_generations=samples,
                max_new_tokens=max_new_tokens or self.max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                seeds=seeds,
                prompt=self.prompt,
                stratified=stratified,
            )
            for b, (i, name, _) in enumerate(chunk):
                texts = rollouts.texts[b * samples : (b + 1) * samples]
                mean, std, values = aggregate(texts, parse=self.parse)
                results[i] = ScoreResult(
                    source=name, score=mean, std=std, samples=values, texts=texts, n_parsed=len(values)
                )
        return results  # type: ignore[return-value]
