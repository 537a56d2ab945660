"""Sampling with per-row counter-based random streams, and the decode engine.

Random streams. Every rollout row r (image b, generation g) owns a 64-bit key derived on the
host from (seeds[b], g). The uniform noise of row r at decode step t for vocabulary entry v is a
pure hash of (key_r, t, v), so a row's tokens depend only on its own prompt, its key and the
model: never on the other rows, its position, or how many rows are decoded together. No
torch.Generator state is involved, which also makes the sampler capturable in a CUDA graph (no
host sync, no generator offsets). Sampling is Gumbel-max: argmax(logits / T + Gumbel(u)) over
the top-k / top-p-filtered logits draws exactly from softmax of the filtered logits.

The hash is 32-bit integer mixing (Wellons' "lowbias32" finaliser) done in int64 tensors with
every intermediate kept below 2**63: values live in [0, 2**32), and a 32x32-bit product is
split into two 32x16-bit products, so there is no signed overflow (undefined in C++, which
torch's kernels are) and every right shift is of a non-negative number.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
_GOLDEN32 = 0x9E3779B9


# ----------------------------------------------------------------------------- host-side keys


def _splitmix64(x: int) -> int:
    """splitmix64's output function on a Python int (exact 64-bit arithmetic)."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def derive_seed(seed: int, index: int) -> int:
    """A 63-bit seed for item `index` of a call seeded with `seed` (the legacy `seed=` argument
    of generate_rollouts: image b gets derive_seed(seed, b))."""
    return _splitmix64(_splitmix64(int(seed) & M64) ^ (int(index) & M64)) >> 1


def row_keys(seeds: Sequence[int], num_generations: int, device=None) -> torch.Tensor:
    """[B*G, 2] int64 keys (two 32-bit words each), row b*G+g from (seeds[b], g) only."""
    out: List[List[int]] = []
    for s in seeds:
        base = _splitmix64(int(s) & M64)
        for g in range(num_generations):
            k = _splitmix64(base ^ _splitmix64(g))
            out.append([k & M32, k >> 32])
    return torch.tensor(out, dtype=torch.long, device=device)


# ----------------------------------------------------------------------------- device-side hash


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2**32 for x in [0, 2**32): x*lo < 2**48 and ((x*hi) mod 2**16) << 16 < 2**32.
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: a bijection of [0, 2**32) with full avalanche; int64 in, int64 out."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform_noise(keys: torch.Tensor, step: torch.Tensor, vocab_hash: torch.Tensor) -> torch.Tensor:
    """[N, V] float32 uniforms in (0, 1) for rows with `keys` [N, 2] at decode step `step`
    (an int64 tensor of any shape that broadcasts to [N], so a CUDA graph can advance it in
    place). vocab_hash = mix32(arange(V)), precomputed once."""
    t = (step.reshape(-1) & M32).to(keys.device)
    s1 = mix32(keys[:, 0] ^ mix32((t * _GOLDEN32) & M32))  # per (row, step)
    s2 = mix32((s1 + keys[:, 1]) & M32)
    x = mix32(((s1[:, None] + vocab_hash[None, :]) & M32) ^ s2[:, None])
    # 24 bits -> exactly representable float32 in (0, 1), never 0 or 1.
    return ((x >> 8).float() + 0.5) * (1.0 / (1 << 24))


def vocab_hash(vocab: int, device=None) -> torch.Tensor:
    return mix32(torch.arange(vocab, dtype=torch.long, device=device) ^ 0x5BD1E995)


# ----------------------------------------------------------------------------- sampling


def filter_logits(logits: torch.Tensor, *, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """Temperature-scaled logits with the tokens outside top-k / top-p set to -inf (float32)."""
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already hold top_p of the mass;
        # the most likely token always survives.
        drop = probs.cumsum(-1) - probs > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample_keyed(logits: torch.Tensor, keys: torch.Tensor, step: torch.Tensor, vhash: torch.Tensor, *,
                 temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """[N, V] logits -> [N] token ids, row n drawn from its own stream (keys[n], step).
    temperature 0 is greedy (the noise is not computed)."""
    if temperature == 0:
        return logits.float().argmax(-1)
    scaled = filter_logits(logits, temperature=temperature, top_p=top_p, top_k=top_k)
    u = uniform_noise(keys, step, vhash[: scaled.shape[-1]])
    gumbel = -torch.log(-torch.log(u))
    return (scaled + gumbel).argmax(-1)


def sample_tokens(logits: torch.Tensor, *, temperature: float, top_p: float, top_k: int,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """[N, V] logits -> [N] token ids from a torch.Generator (multinomial); temperature 0 is
    greedy. Kept for callers outside rollouts; rollouts use the keyed sampler above."""
    if temperature == 0:
        return logits.float().argmax(-1)
    scaled = filter_logits(logits, temperature=temperature, top_p=top_p, top_k=top_k)
    return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)
