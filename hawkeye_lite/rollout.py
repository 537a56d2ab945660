"""G sampled completions per image, sharing one vision pass and one prompt prefill per image.

The G rollouts of an image all start from the same prompt, so the vision tower and the
prefill run on B rows, and only the KV cache is widened to B*G rows before decoding. Decoding
is our own loop over the decoder stack: it passes explicit 3-axis (mrope) positions, which is
where batch growth from B to B*G would otherwise go wrong (Qwen-VL caches `rope_deltas` per
prompt row and needs them repeated per rollout).
"""

from __future__ import annotations

import contextlib
import math
import operator
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Union

import torch

from .decode import (
    DecodeEngine,
    derive_seed,
    rollout_weights,
    row_keys,
    sample_keyed,
    sample_tokens,  # noqa: F401 - re-exported: the old loop's sampler, tested from here
    strata_init,
    vocab_hash,
)
from .model import Policy, PromptBatch
from .prompts import THINK, PromptTemplate, parse_score

ENGINES = ("auto", "graph", "eager", "loop")


@dataclass
class Rollouts:
    prompt: PromptBatch  # the B encoded prompts (what the trainer re-scores completions against)
    completion_ids: torch.Tensor  # [B*G, T] long, group-major (row b*G + g), stop token included
    completion_mask: torch.Tensor  # [B*G, T] long: 1 up to and including the stop token
    texts: List[str]  # B*G decoded completions, special tokens removed
    scores: torch.Tensor  # [B, G] float32 parsed ratings, NaN where none parses
    num_generations: int

    @property
    def prompt_ids(self) -> torch.Tensor:  # [B, L], left padded
        return self.prompt.input_ids

    @property
    def prompt_mask(self) -> torch.Tensor:  # [B, L]
        return self.prompt.attention_mask


def _check_args(num_generations, max_new_tokens, temperature, top_p, top_k) -> None:
    if not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"num_generations: must be a positive integer, got {num_generations!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be a positive integer, got {max_new_tokens!r}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: must be >= 0 (0 = greedy), got {temperature!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p: must be in (0, 1], got {top_p!r}")
    if top_k < 0:
        raise ValueError(f"top_k: must be >= 0 (0 = off), got {top_k!r}")


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    # Sampling must not see LoRA dropout; the trainer's train()/eval() choice is restored after.
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _as_pil(images: Sequence) -> list:
    from PIL import Image

    out = []
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(
                f"images[{i}]: expected a PIL image, got {type(image).__name__} (Scorer converts other inputs)"
            )
        out.append(image if image.mode == "RGB" else image.convert("RGB"))
    return out


def _stop_mask(completion_ids: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
    """1 up to and including the first stop token of each row, 0 after."""
    is_stop = torch.isin(completion_ids, stop_ids)
    after_stop = (is_stop.cumsum(1) - is_stop.long()) > 0
    return (~after_stop).long()


def _finish(
    policy: Policy, batch: PromptBatch, completion_ids: torch.Tensor, completion_mask: torch.Tensor, g: int
) -> Rollouts:
    texts = [
        batch.assistant_prefix + policy.tokenizer.decode(ids[mask.bool()].tolist(), skip_special_tokens=True)
        for ids, mask in zip(completion_ids.cpu(), completion_mask.cpu())
    ]
    scores = torch.tensor([math.nan if (s := parse_score(t)) is None else s for t in texts], dtype=torch.float32)
    return Rollouts(
        prompt=batch,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        texts=texts,
        scores=scores.view(batch.batch_size, g),
        num_generations=g,
    )


@torch.no_grad()
def generate_rollouts(
    policy: Policy,
    images: Sequence,
    *,
    num_generations: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: Optional[int] = None,
    seeds: Optional[Sequence[int]] = None,
    prompt: Union[PromptTemplate, str] = THINK,
    shared_prefix: bool = True,
    batch: Optional[PromptBatch] = None,
    image_features: Optional[torch.Tensor] = None,
    engine: str = "auto",
    sync_every: int = 8,
    weights: str = "nf4",
    stratified: bool = False,
) -> Rollouts:
    """Sample `num_generations` completions for each of the B images (PIL).

    temperature=0 is greedy. Randomness comes from per-row counter-based streams
    (hawkeye_lite/decode.py), never from the global RNG or a torch.Generator:

    - `seeds`: one integer per image. The G completions of image b then depend only on the
      image (its prompt), seeds[b], g, the sampling settings and the model: not on the other
      images, b's position, or how many images are decoded together.
    - `seed`: one integer for the call; image b gets seeds[b] = derive_seed(seed, b), so its
      answers depend on its position in `images` (not on the other images themselves).
    - neither: seeds are drawn from torch's global RNG (reproducible under torch.manual_seed).

    shared_prefix=False runs transformers' `generate(num_return_sequences=G)` instead (the
    naive path: vision and prefill G times per image); it exists to check and to benchmark the
    shared path against, uses the global RNG seeded in a forked state, and takes `seed` only.

    `engine`: "auto" = the static-cache decode engine (hawkeye_lite/decode.py), captured as a
    CUDA graph on CUDA and eager elsewhere; "graph" / "eager" force one of the two; "loop" is the
    previous decode loop (dynamic cache, one host sync per token), kept to compare against.
    `sync_every`: how many engine steps run between two looks at the finished flags.
    `weights` (an NF4 base only): "bf16" decodes from a dense copy of the language model
    dequantised for this call, "auto" does so when it fits in free GPU memory, "nf4" (default)
    decodes from the 4-bit weights (decode.rollout_weights; the trainer makes the copy once per
    step instead, around all of the step's calls).

    `stratified`: the G completions of an image are drawn as a stratified sample of the
    completion distribution (decode.strata_init): each one still an exact sample of the model,
    together an even cover of it, so their mean varies much less with the seed (evaluation;
    training keeps independent draws, which GRPO's group statistics assume).

    `batch` / `image_features`: the trainer's already encoded prompts of `images` and their
    vision-tower output, so one training step runs the vision tower once per image in total
    (rollouts, policy and reference passes share it).
    """
    _check_args(num_generations, max_new_tokens, temperature, top_p, top_k)
    if engine not in ENGINES:
        raise ValueError(f"engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
    if weights not in ("auto", "nf4", "bf16"):
        raise ValueError(f"weights: must be auto, nf4 or bf16, got {weights!r}")
    images = _as_pil(images)
    if not images:
        raise ValueError("generate_rollouts: no images")
    g = num_generations
    with _eval_mode(policy.model):
        if batch is None:
            batch = policy.encode(images, prompt)
        elif batch.batch_size != len(images):
            raise ValueError(f"generate_rollouts: batch holds {batch.batch_size} prompts for {len(images)} images")
        stop_ids = torch.tensor(policy.stop_token_ids(), device=policy.device)
        if not shared_prefix:
            if seeds is not None or stratified:
                raise ValueError(
                    "generate_rollouts: seeds= and stratified= need shared_prefix=True "
                    "(transformers' generate has one global stream)"
                )
            completion_ids = _generate_naive(
                policy, batch, g, max_new_tokens, temperature, top_p, top_k, seed, stop_ids
            )
            return _finish(policy, batch, completion_ids, _stop_mask(completion_ids, stop_ids), g)

        resolved = _resolve_seeds(seed, seeds, len(images))
        keys = row_keys(resolved, g, device=policy.device)
        strata = strata_init(resolved, g, device=policy.device) if stratified else None
        suppressed = torch.tensor(policy.suppressed_token_ids(), device=policy.device, dtype=torch.long)
        pad_id = policy.tokenizer.pad_token_id
        lm_head = policy.hf_model.lm_head
        vhash = vocab_hash(policy.lm_head_weight.shape[0], device=policy.device)

        feats = policy.image_features(batch) if image_features is None else image_features
        if weights != "nf4":
            rows, cache_len = batch.batch_size * g, batch.input_ids.shape[1] + max_new_tokens
            with rollout_weights(policy, weights, rows=rows, cache_len=cache_len):
                return generate_rollouts(
                    policy,
                    images,
                    num_generations=g,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    top_k=top_k,
                    seeds=resolved,
                    batch=batch,
                    image_features=feats,
                    engine=engine,
                    sync_every=sync_every,
                    stratified=stratified,
                )
        if engine != "loop":
            graph = engine == "graph" or (engine == "auto" and policy.device.type == "cuda")
            eng = DecodeEngine(
                policy,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                stop_ids=stop_ids.tolist(),
                suppressed_ids=suppressed.tolist(),
                pad_id=pad_id,
                graph=graph,
                sync_every=sync_every,
                graph_fallback=engine == "auto",
            )
            completion_ids = eng.generate(batch, feats, g, max_new_tokens, keys, strata)
            completion_mask = _stop_mask(completion_ids, stop_ids)
            # The old loop stopped at the step where the last row finished; the engine only looks
            # every sync_every steps. Same tensor: cut the columns after the longest completion.
            width = int(completion_mask.sum(1).max())
            return _finish(policy, batch, completion_ids[:, :width], completion_mask[:, :width], g)

        # The previous loop. Prefill once per image: vision tower + prompt, B rows.
        cache = policy.new_cache()
        hidden = policy.prompt_forward(batch.input_ids, feats, batch.attention_mask, batch.position_ids, cache)
        logits = lm_head(hidden[:, -1]).repeat_interleave(g, 0)
        # ... then widen to B*G rows. Rows of one image are adjacent (group-major).
        cache.batch_repeat_interleave(g)
        mask = batch.attention_mask.repeat_interleave(g, 0)
        # Next token's position on all three rope axes: text continues at len + delta.
        next_pos = (batch.attention_mask.sum(1, keepdim=True) + batch.rope_deltas).repeat_interleave(g, 0)

        n = batch.batch_size * g
        finished = torch.zeros(n, dtype=torch.bool, device=policy.device)
        tokens: List[torch.Tensor] = []
        for step in range(max_new_tokens):
            logits[:, suppressed] = float("-inf")
            token = sample_keyed(
                logits,
                keys,
                torch.tensor(step, device=policy.device),
                vhash,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                strata=strata,
            )
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            tokens.append(token)
            finished |= torch.isin(token, stop_ids)
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            mask = torch.cat([mask, mask.new_ones(n, 1)], 1)
            positions = next_pos.view(1, n, 1).expand(3, n, 1)
            hidden = policy.language_forward(policy.embed(token[:, None]), mask, positions, cache)
            logits = lm_head(hidden[:, -1])
            next_pos = next_pos + 1

        completion_ids = torch.stack(tokens, 1)
        return _finish(policy, batch, completion_ids, _stop_mask(completion_ids, stop_ids), g)


def step_seeds(seed: int, step: int, count: int) -> List[int]:
    """Per-image rollout seeds of optimizer step `step`: image slot j of the step (micro-batch m,
    position i: j = m * batch_size + i) gets a pure function of (seed, step, j), so its tokens do
    not depend on how the step's images are grouped for decoding."""
    base = derive_seed(seed, step)
    return [derive_seed(base, j) for j in range(count)]


def _resolve_seeds(seed: Optional[int], seeds: Optional[Sequence[int]], n: int) -> List[int]:
    if seeds is not None:
        if seed is not None:
            raise ValueError("generate_rollouts: pass seed= or seeds=, not both")
        seeds = list(seeds)
        if len(seeds) != n:
            raise ValueError(f"generate_rollouts: seeds holds {len(seeds)} values for {n} images")
        for i, s in enumerate(seeds):
            try:
                seeds[i] = operator.index(s)  # ints, numpy / torch integers; not floats or bools
            except TypeError:
                raise TypeError(f"seeds[{i}]: expected an integer, got {type(s).__name__}") from None
            if isinstance(s, bool):
                raise TypeError(f"seeds[{i}]: expected an integer, got bool")
        return [int(s) for s in seeds]
    if seed is not None:
        return [derive_seed(int(seed), b) for b in range(n)]
    return torch.randint(0, 2**62, (n,)).tolist()


def _generate_naive(policy, batch, g, max_new_tokens, temperature, top_p, top_k, seed, stop_ids) -> torch.Tensor:
    # transformers refuses num_return_sequences > 1 with greedy search; top_k=1 sampling is
    # the same argmax.
    if temperature == 0:
        temperature, top_p, top_k = 1.0, 1.0, 1
    kwargs = dict(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        pixel_values=batch.pixel_values,
        image_grid_thw=batch.image_grid_thw,
        mm_token_type_ids=(batch.input_ids == policy.processor.image_token_id).int(),
        num_return_sequences=g,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        eos_token_id=stop_ids.tolist(),
        pad_token_id=policy.tokenizer.pad_token_id,
        suppress_tokens=policy.suppressed_token_ids(),
        use_cache=True,
    )
    devices = [policy.device] if policy.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(int(seed))
        out = policy.hf_model.generate(**kwargs)
    return out[:, batch.input_ids.shape[1] :]
