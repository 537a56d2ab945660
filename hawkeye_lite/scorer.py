"""Scoring images with a trained model: `Scorer.from_pretrained(dir).score(images)`.

Each image gets K sampled answers; its score is the mean of the parsed ratings (each clamped
to [1, 5]) and its std their spread, which doubles as the model's uncertainty.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

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
    key: Optional[str] = None  # images.content_key of the pixels, 16 hex digits (None when unread)

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
        workers: int = 2,
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

        `score_iter` is the same with results streamed as they finish (for long lists).
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        if stream_keys is not None and len(stream_keys) != len(images):
            raise ValueError(f"stream_keys: {len(stream_keys)} keys for {len(images)} images")
        names = [_describe(image, i) for i, image in enumerate(images)]
        if on_error == "raise":  # every image read before any scoring: a bad one costs nothing
            images = [to_rgb(image, name) for image, name in zip(images, names)]
        return list(
            self._stream(
                images,
                names=names,
                samples=samples,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                max_new_tokens=max_new_tokens,
                seed=seed,
                batch_size=batch_size,
                on_error=on_error,
                stream_keys=stream_keys,
                stratified=stratified,
                workers=workers,
            )
        )

    def score_iter(
        self,
        images: Iterable[Any],
        *,
        samples: int = 8,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: Optional[int] = None,
        seed: Optional[int] = 0,
        batch_size: int = 8,
        on_error: str = "skip",
        stratified: bool = False,
        workers: int = 2,
        lookahead: Optional[int] = None,
    ) -> Iterator[ScoreResult]:
        """`score` for collections: yields one ScoreResult per input, in input order, each as soon
        as it (and every input before it) is done; `images` may be any iterable (a generator of
        100k paths is read lazily). The results are `score`'s, image for image.

        Inputs are read, converted and preprocessed by `workers` background threads (0: on this
        thread), overlapped with generation. At most `lookahead` (default 2 x batch_size)
        prepared inputs wait, and as many are being prepared; each batch is the oldest waiting
        image plus the waiting images closest to it in visual-token count, so little of a batch
        is padding. An input whose pixels (and so its random stream) repeat a recent one's is not
        scored again: its result is a copy with its own `source`.

        on_error="skip" (default here) yields ok=False results for unreadable inputs and goes
        on; "raise" raises ImageReadError when the stream reaches one."""
        return self._stream(
            images,
            names=None,
            samples=samples,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=batch_size,
            on_error=on_error,
            stream_keys=None,
            stratified=stratified,
            workers=workers,
            lookahead=lookahead,
        )

    # --- the pipeline behind score and score_iter

    def _prepare(self, index: int, image: Any, name: str, stream_key: Optional[int]) -> "_Prepared":
        """Runs in a worker thread: read + convert, key the pixels, preprocess for the model."""
        from .images import content_key

        try:
            rgb = to_rgb(image, name)
        except ImageReadError as exc:
            return _Prepared(index, name, error=exc)
        try:
            vision = self.policy.processor.process_image(rgb)
        except Exception as exc:  # e.g. an image too thin for the processor's patches
            return _Prepared(
                index, name, error=ImageReadError(f"{name}: cannot prepare image ({type(exc).__name__}: {exc})")
            )
        key = content_key(rgb)
        return _Prepared(
            index,
            name,
            image=rgb,
            key=key,
            stream_key=key if stream_key is None else int(stream_key),
            vision=vision,
            tokens=int(self.policy.processor.num_image_tokens(vision["image_grid_thw"])[0]),
        )

    def _stream(
        self,
        images: Iterable[Any],
        *,
        names: Optional[Sequence[str]],
        samples: int,
        temperature: float,
        top_p: float,
        top_k: int,
        max_new_tokens: Optional[int],
        seed: Optional[int],
        batch_size: int,
        on_error: str,
        stream_keys: Optional[Sequence[int]],
        stratified: bool,
        workers: int,
        lookahead: Optional[int] = None,
    ) -> Iterator[ScoreResult]:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error: must be 'raise' or 'skip', got {on_error!r}")
        if samples < 1 or batch_size < 1:
            raise ValueError(f"samples and batch_size must be >= 1, got {samples} and {batch_size}")
        if workers < 0:
            raise ValueError(f"workers: must be >= 0, got {workers}")
        lookahead = max(batch_size, lookahead if lookahead is not None else 2 * batch_size)
        return self._pipeline(
            iter(images), names, stream_keys, lookahead, workers, on_error, batch_size,
            dict(
                samples=samples, temperature=temperature, top_p=top_p, top_k=top_k,
                max_new_tokens=max_new_tokens or self.max_new_tokens, seed=seed, stratified=stratified,
            ),
        )  # fmt: skip

    def _pipeline(self, inputs, names, stream_keys, lookahead, workers, on_error, batch_size, sampling):
        from concurrent.futures import Future, ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers, thread_name_prefix="hawkeye-prep") if workers else None
        inflight: Deque[Future] = deque()  # being prepared (up to `lookahead`, while a batch generates)
        pending: List[_Prepared] = []  # prepared, waiting for a batch (a window of `lookahead`)
        waiting: Dict[Tuple[int, int], int] = {}  # (pixels, stream) key -> index, for images not done yet
        copies: Dict[int, List[_Prepared]] = {}  # such an image's index -> later inputs with its pixels
        recent: "OrderedDict[Tuple[int, int], ScoreResult]" = OrderedDict()  # the last results, by key
        done: Dict[int, ScoreResult] = {}  # finished, not yet yielded
        count, emitted, exhausted = 0, 0, False

        def submit() -> None:
            nonlocal count, exhausted
            while not exhausted and len(inflight) < lookahead:
                try:
                    image = next(inputs)
                except StopIteration:
                    exhausted = True
                    return
                name = names[count] if names is not None else _describe(image, count)
                key = None if stream_keys is None else stream_keys[count]
                if pool is None:
                    future: Future = Future()
                    future.set_result(self._prepare(count, image, name, key))
                else:
                    future = pool.submit(self._prepare, count, image, name, key)
                inflight.append(future)
                count += 1

        def copy_of(result: ScoreResult, name: str) -> ScoreResult:
            return replace(result, source=name, samples=list(result.samples), texts=list(result.texts))

        def finish(item: "_Prepared", result: ScoreResult) -> None:
            done[item.index] = result
            for later in copies.pop(item.index, []):
                done[later.index] = copy_of(result, later.name)
            if result.ok:
                k = (item.key, item.stream_key)
                del waiting[k]
                # A result is a function of (pixels, stream key), so forgetting old ones only means
                # a far-apart repeat is scored again (to the same result): memory stays bounded.
                recent[k] = result
                if len(recent) > _RECENT:
                    recent.popitem(last=False)

        try:
            while True:
                submit()
                # Take prepared inputs in input order (so batches do not depend on thread timing)
                # until a window of `lookahead` waits or the inputs are over.
                while inflight and len(pending) < lookahead:
                    item = inflight.popleft().result()
                    k = (item.key, item.stream_key)
                    if item.error is not None:
                        if on_error == "raise":
                            raise item.error
                        failed = ScoreResult(item.name, math.nan, math.nan, ok=False, error=str(item.error))
                        finish(item, failed)
                    elif k in recent:  # the same pixels again: scored once
                        recent.move_to_end(k)
                        done[item.index] = copy_of(recent[k], item.name)
                    elif k in waiting:
                        copies.setdefault(waiting[k], []).append(item)
                    else:
                        waiting[k] = item.index
                        pending.append(item)
                    submit()
                if pending:
                    chunk = _group(pending, batch_size)
                    submit()  # the workers prepare the next inputs while this batch generates
                    for item, result in zip(chunk, self._generate(chunk, **sampling)):
                        finish(item, result)
                while emitted in done:
                    yield done.pop(emitted)
                    emitted += 1
                if exhausted and not inflight and not pending:
                    return
        finally:
            if pool is not None:
                for future in inflight:
                    future.cancel()
                pool.shutdown(wait=True)

    def _generate(self, chunk, *, samples, temperature, top_p, top_k, max_new_tokens, seed, stratified):
        from .images import mix_seed
        from .rollout import generate_rollouts

        images = [item.image for item in chunk]
        rollouts = generate_rollouts(
            self.policy,
            images,
            num_generations=samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seeds=None if seed is None else [mix_seed(seed, item.stream_key) for item in chunk],
            prompt=self.prompt,
            stratified=stratified,
            batch=self.policy.encode(images, self.prompt, vision=[item.vision for item in chunk]),
        )
        out = []
        for b, item in enumerate(chunk):
            texts = rollouts.texts[b * samples : (b + 1) * samples]
            mean, std, values = aggregate(texts, parse=self.parse)
            out.append(
                ScoreResult(
                    source=item.name, score=mean, std=std, samples=values, texts=texts, n_parsed=len(values),
                    key=f"{item.key:016x}",
                )
            )  # fmt: skip
        return out


_RECENT = 4096  # results kept to answer repeated images without scoring them again


@dataclass
class _Prepared:
    index: int
    name: str
    image: Any = None  # upright RGB PIL image
    key: int = 0  # content_key of the pixels
    stream_key: int = 0  # what keys the random stream (the pixels' key unless stream_keys says otherwise)
    vision: Optional[dict] = None  # processor.process_image(image)
    tokens: int = 0  # visual tokens
    error: Optional[ImageReadError] = None


def _group(pending: List[_Prepared], batch_size: int) -> List[_Prepared]:
    """Take one batch out of `pending`: the oldest image (so every image is reached within a
    bounded delay) and the waiting images nearest to it in visual-token count (less padding)."""
    oldest = min(pending, key=lambda item: item.index)
    rest = sorted(
        (item for item in pending if item is not oldest), key=lambda i: (abs(i.tokens - oldest.tokens), i.index)
    )
    chunk = [oldest, *rest[: batch_size - 1]]
    taken = {id(item) for item in chunk}
    pending[:] = [item for item in pending if id(item) not in taken]
    return sorted(chunk, key=lambda item: item.index)
