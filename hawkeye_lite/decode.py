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

import contextlib
import warnings
from typing import Iterator, List, Optional, Sequence

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


def _splitmix64_u64(x):
    """_splitmix64 on a numpy uint64 array (numpy's uint64 arithmetic wraps mod 2**64)."""
    import numpy as np

    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_keys(seeds: Sequence[int], num_generations: int, device=None) -> torch.Tensor:
    """[B*G, 2] int64 keys (two 32-bit words each), row b*G+g from (seeds[b], g) only:
    k = splitmix64(splitmix64(seed) ^ splitmix64(g)), split into its low and high words."""
    import numpy as np

    base = _splitmix64_u64(np.array([int(s) & M64 for s in seeds], dtype=np.uint64))
    gens = _splitmix64_u64(np.arange(num_generations, dtype=np.uint64))
    k = _splitmix64_u64(base[:, None] ^ gens[None, :]).reshape(-1)
    words = np.stack([k & np.uint64(M32), k >> np.uint64(32)], axis=1).astype(np.int64)
    return torch.from_numpy(words).to(device)


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
    # 24 bits -> float32 in (0, 1). The top value (2^24 - 0.5) / 2^24 rounds to exactly 1.0 in
    # float32, where the Gumbel noise is +inf and a filtered (-inf) token wins as NaN: clamp it to
    # the largest float32 below 1 (every other value is unchanged, so earlier draws reproduce).
    return (((x >> 8).float() + 0.5) * (1.0 / (1 << 24))).clamp_(max=1.0 - 2.0**-24)


def vocab_hash(vocab: int, device=None) -> torch.Tensor:
    return mix32(torch.arange(vocab, dtype=torch.long, device=device) ^ 0x5BD1E995)


# ----------------------------------------------------------------------------- stratified answers
#
# Stratified sampling of an image's G answers (the evaluation's K), nested through the whole
# completion. Picture each row's answer drawn by one uniform U through the inverse CDF of the
# completion distribution, tokens in lexicographic order; the G rows of an image take U in the G
# strata [k/G, (k+1)/G), dealt by a random permutation keyed by the image's seed. Each U is
# uniform, so each answer is an exact sample of the model; together the G answers cover the
# distribution evenly: any set of completions that is an interval in that order (e.g. "the first
# word is `good`", or "... and the rating starts with 3") of mass P holds G*P of them to within 2,
# where independent draws give G*P +- sqrt(G*P). The mean of the G ratings then moves far less
# between seeds.
#
# U is never materialised (a float would run out of bits over a long completion): a row keeps
# its stratum as an interval [lo, hi) in the coordinates of the current token's distribution,
# draws the token at a fresh uniform inside it, and maps the part of the interval that fell in
# the chosen token's cell onto [0, 1) for the next token. Once the interval covers [0, 1) the
# row samples independently. The state is per row (two float64s), so an answer still depends
# only on its own image, seed and g: not on the other images, compaction or the batch size.


def strata_init(seeds: Sequence[int], num_generations: int, device=None) -> torch.Tensor:
    """[B*G, 2] float64: row b*G+g's stratum [pi_b(g) / G, (pi_b(g) + 1) / G), pi_b a random
    permutation of 0..G-1 from seeds[b] alone."""
    out: List[List[float]] = []
    g = num_generations
    for s in seeds:
        base = _splitmix64(_splitmix64(int(s) & M64) ^ 0x243F6A8885A308D3)  # not a row key of row_keys
        order = sorted(range(g), key=lambda i: (_splitmix64(base ^ _splitmix64(i + 1)), i))
        rank = [0] * g
        for position, i in enumerate(order):
            rank[i] = position
        out.extend([rank[i] / g, (rank[i] + 1) / g] for i in range(g))
    return torch.tensor(out, dtype=torch.float64, device=device)


def _sample_in_strata(
    scaled: torch.Tensor, keys: torch.Tensor, step: torch.Tensor, vhash: torch.Tensor, strata: torch.Tensor
) -> torch.Tensor:
    """Inverse-CDF draw at a fresh uniform inside each row's stratum; narrows strata in place."""
    probs = scaled.softmax(-1)
    cdf = probs.cumsum(-1)
    total = cdf[:, -1].double()
    lo, hi = strata[:, 0], strata[:, 1]
    v = uniform_noise(keys, step, vhash[:1]).double()[:, 0]  # the row's fresh uniform (one per step)
    u = (lo + (hi - lo) * v) * total
    # The first token whose cumulative mass reaches u: never one of probability 0, as long as u
    # stays below the total (rounding u to float32 could lift it onto the total: keep it under).
    top = torch.nextafter(cdf[:, -1], torch.zeros_like(cdf[:, -1]))
    tok = (cdf < torch.minimum(u.float(), top)[:, None]).sum(-1).clamp_(max=scaled.shape[-1] - 1)
    p = probs.gather(1, tok[:, None])[:, 0].double()
    c = cdf.gather(1, tok[:, None])[:, 0].double() - p  # the token's cell is [c, c + p) of [0, total)
    p, c = p / total, c / total
    new_lo = ((torch.maximum(lo, c) - c) / p).clamp(0.0, 1.0)
    new_hi = ((torch.minimum(hi, c + p) - c) / p).clamp(0.0, 1.0)
    # float32 rounding at a cell's edge can leave an empty interval: that row goes on unstratified.
    empty = ~(new_hi > new_lo)
    strata[:, 0] = torch.where(empty, torch.zeros_like(new_lo), new_lo)
    strata[:, 1] = torch.where(empty, torch.ones_like(new_hi), new_hi)
    return tok


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


def sample_keyed(
    logits: torch.Tensor,
    keys: torch.Tensor,
    step: torch.Tensor,
    vhash: torch.Tensor,
    *,
    temperature: float,
    top_p: float,
    top_k: int,
    strata: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """[N, V] logits -> [N] token ids, row n drawn from its own stream (keys[n], step).
    temperature 0 is greedy (the noise is not computed). `strata` ([N, 2] float64 from
    strata_init, narrowed in place): stratified answers, see above (the same distribution for
    each row; Gumbel-max otherwise)."""
    if temperature == 0:
        return logits.float().argmax(-1)
    scaled = filter_logits(logits, temperature=temperature, top_p=top_p, top_k=top_k)
    if strata is not None:
        return _sample_in_strata(scaled, keys, step, vhash, strata)
    u = uniform_noise(keys, step, vhash[: scaled.shape[-1]])
    gumbel = -torch.log(-torch.log(u))
    return (scaled + gumbel).argmax(-1)


def sample_tokens(
    logits: torch.Tensor, *, temperature: float, top_p: float, top_k: int, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """[N, V] logits -> [N] token ids from a torch.Generator (multinomial); temperature 0 is
    greedy. Kept for callers outside rollouts; rollouts use the keyed sampler above."""
    if temperature == 0:
        return logits.float().argmax(-1)
    scaled = filter_logits(logits, temperature=temperature, top_p=top_p, top_k=top_k)
    return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)


# ============================================================================= the decode engine


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Rows:
    """The static state of R decoding rows: KV cache [R, kv_heads, S, D] per layer, attention
    mask [R, S], next rope position, last logits, random keys, finished flags and the tokens so
    far. Every decode step updates these in place (what a CUDA graph needs: fixed addresses)."""

    def __init__(self, **buffers):
        self.__dict__.update(buffers)
        self.graph = None

    @property
    def size(self) -> int:
        return self.finished.shape[0]

    def select(self, index: torch.Tensor, ids: List[int]) -> "_Rows":
        """A smaller state holding rows `index` (a compaction: finished rows leave the batch)."""
        pick = lambda x: x.index_select(0, index)
        return _Rows(
            k=[pick(x) for x in self.k],
            v=[pick(x) for x in self.v],
            mask=pick(self.mask),
            pos=pick(self.pos),
            logits=pick(self.logits),
            keys=pick(self.keys),
            strata=None if self.strata is None else pick(self.strata),
            finished=pick(self.finished),
            out=pick(self.out),
            t=self.t.clone(),
            slot=self.slot.clone(),
            ids=ids,
        )


class DecodeEngine:
    """Batched decoding of B prompts x G rows on a static KV cache.

    Prefill runs through the model's own forward (B rows, transformers' DynamicCache), exactly as
    the old loop did; its keys/values are then copied, widened to B*G rows, into our own
    preallocated cache of prompt_len + max_new_tokens columns (rounded up to a multiple of 8). A
    decode step is our own pass over the decoder layers, calling the layers' modules (so peft
    LoRA and bitsandbytes 4-bit layers run as they are): rope for the text position (all three
    mrope axes are equal after the image),
    the new key/value written into column prompt_len + t with index_copy_, SDPA over the whole
    cache under the mask. Nothing in a step allocates per-call state, reads a value back to the
    host, or depends on Python-side data, so on CUDA one step is captured as a CUDA graph
    (torch.cuda.CUDAGraph) and replayed. The host looks at the finished flags every
    `sync_every` steps: it stops when all rows are done, and when at most half of the rows are
    still running it compacts the state to those rows (padded up to a power of two, one graph per
    size), so finished rows stop costing compute.

    Why our own cache and not transformers' StaticCache: the step must not go through the
    model's top-level forward, whose mask construction inspects the mask on the host (a sync,
    which breaks graph capture) and whose cache/mask API differs between the transformers
    versions this package runs on (5.17 on the GPU image, 5.2x here); two tensors per layer
    and an index_copy_ are all a static cache needs.
    """

    def __init__(
        self,
        policy,
        *,
        temperature: float,
        top_p: float,
        top_k: int,
        stop_ids: Sequence[int],
        suppressed_ids: Sequence[int],
        pad_id: int,
        graph: bool = False,
        sync_every: int = 8,
        compact: bool = True,
        graph_fallback: bool = False,
    ):
        if graph and policy.device.type != "cuda":
            raise ValueError("DecodeEngine: graph=True needs a CUDA device")
        if sync_every < 1:
            raise ValueError(f"sync_every: must be >= 1, got {sync_every}")
        self.policy = policy
        lm = policy.backbone.language_model
        self.lm = lm
        cfg = lm.config
        self.num_heads = int(cfg.num_attention_heads)
        self.kv_heads = int(cfg.num_key_value_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        for layer in lm.layers:
            if getattr(layer.self_attn, "sliding_window", None):
                raise ValueError("DecodeEngine: sliding-window attention layers are not supported (use engine='loop')")
        self.inv_freq = lm.rotary_emb.inv_freq.float()
        self.rope_scale = float(getattr(lm.rotary_emb, "attention_scaling", 1.0))
        self.sampling = dict(temperature=float(temperature), top_p=float(top_p), top_k=int(top_k))
        dev = policy.device
        self.stop_ids = torch.tensor(list(stop_ids), dtype=torch.long, device=dev)
        self.suppressed = torch.tensor(list(suppressed_ids), dtype=torch.long, device=dev)
        self.pad_id = int(pad_id)
        self.vocab = int(policy.lm_head_weight.shape[0])
        self.vhash = vocab_hash(self.vocab, device=dev)
        self.graph = graph
        self.graph_fallback = graph_fallback  # engine "auto": a failed capture falls back to eager
        self.sync_every = int(sync_every)
        self.compact = compact
        self.stats: dict = {}

    # ------------------------------------------------------------------ one step

    def _rope(self, pos: torch.Tensor, dtype: torch.dtype):
        freqs = pos[:, None].float() * self.inv_freq  # [R, D/2], as the model's rotary embedding does
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scale).to(dtype)[:, None, None, :]  # [R, 1, 1, D]
        sin = (emb.sin() * self.rope_scale).to(dtype)[:, None, None, :]
        return cos, sin

    def _layer(self, layer, h, cos, sin, kc, vc, mask, slot):
        r = h.shape[0]
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(r, 1, self.num_heads, self.head_dim)
        k = attn.k_proj(x).view(r, 1, self.kv_heads, self.head_dim)
        if hasattr(attn, "q_norm"):  # Qwen3(-VL): RMSNorm over each head before the rotation
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [R, H, 1, D]
        v = attn.v_proj(x).view(r, 1, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        kc.index_copy_(2, slot, k.to(kc.dtype))
        vc.index_copy_(2, slot, v.to(vc.dtype))
        # One query per row: fold the query heads of a kv head into the query-length axis
        # ([R, kv, rep, D]) instead of repeating the cache rep times.
        qg = q.reshape(r, self.kv_heads, self.num_heads // self.kv_heads, self.head_dim)
        o = torch.nn.functional.scaled_dot_product_attention(
            qg, kc, vc, attn_mask=mask[:, None, None, :], scale=attn.scaling
        )
        h = h + attn.o_proj(o.reshape(r, 1, self.num_heads * self.head_dim))
        return h + layer.mlp(layer.post_attention_layernorm(h))

    def _step(self, rows: _Rows) -> None:
        """Sample token t of every row from the last logits, then run it through the model."""
        logits = rows.logits
        logits.index_fill_(1, self.suppressed, float("-inf"))
        tok = sample_keyed(logits, rows.keys, rows.t, self.vhash, strata=rows.strata, **self.sampling)
        tok = tok.masked_fill(rows.finished, self.pad_id)
        rows.out.index_copy_(1, rows.t, tok[:, None])
        rows.finished |= torch.isin(tok, self.stop_ids)
        rows.mask.index_fill_(1, rows.slot, True)
        h = self.lm.embed_tokens(tok[:, None])
        cos, sin = self._rope(rows.pos, h.dtype)
        for i, layer in enumerate(self.lm.layers):
            h = self._layer(layer, h, cos, sin, rows.k[i], rows.v[i], rows.mask, rows.slot)
        h = self.lm.norm(h)
        rows.logits.copy_(self.policy.hf_model.lm_head(h[:, 0]))
        rows.pos += 1
        rows.slot += 1
        rows.t += 1

    def _capture(self, rows: _Rows) -> None:
        # One real step on a side stream first (cuBLAS handles, lazy inits, allocator warm-up),
        # as torch.cuda.graphs requires; capture then records a step without running it.
        stream = torch.cuda.Stream(device=self.policy.device)
        stream.wait_stream(torch.cuda.current_stream(self.policy.device))
        with torch.cuda.stream(stream):
            self._step(rows)
        torch.cuda.current_stream(self.policy.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(rows)
        rows.graph = graph
        self.stats["captures"] = self.stats.get("captures", 0) + 1

    # ------------------------------------------------------------------ a whole decode

    def prefill(
        self,
        batch,
        image_features: torch.Tensor,
        g: int,
        max_new_tokens: int,
        keys: torch.Tensor,
        strata: Optional[torch.Tensor] = None,
    ) -> _Rows:
        policy = self.policy
        cache = policy.new_cache()
        hidden = policy.prompt_forward(batch.input_ids, image_features, batch.attention_mask, batch.position_ids, cache)
        logits = policy.hf_model.lm_head(hidden[:, -1]).float().repeat_interleave(g, 0)
        b, length = batch.input_ids.shape
        # Columns rounded up to a multiple of 8 (masked): GPU attention kernels want an aligned mask stride.
        n, s = b * g, -(-(length + max_new_tokens) // 8) * 8
        dev = policy.device
        ks, vs = [], []
        for i in range(len(self.lm.layers)):
            k_p, v_p = _cache_layer(cache, i)
            k = k_p.new_zeros(n, self.kv_heads, s, self.head_dim)
            v = v_p.new_zeros(n, self.kv_heads, s, self.head_dim)
            k[:, :, :length] = k_p.repeat_interleave(g, 0)
            v[:, :, :length] = v_p.repeat_interleave(g, 0)
            ks.append(k)
            vs.append(v)
        del cache
        mask = torch.zeros(n, s, dtype=torch.bool, device=dev)
        mask[:, :length] = batch.attention_mask.bool().repeat_interleave(g, 0)
        pos = (batch.attention_mask.sum(1) + batch.rope_deltas.reshape(-1)).repeat_interleave(g, 0).long()
        return _Rows(
            k=ks,
            v=vs,
            mask=mask,
            pos=pos,
            logits=logits,
            keys=keys.to(dev),
            strata=None if strata is None else strata.to(dev).clone(),
            finished=torch.zeros(n, dtype=torch.bool, device=dev),
            out=torch.full((n, max_new_tokens), self.pad_id, dtype=torch.long, device=dev),
            t=torch.zeros(1, dtype=torch.long, device=dev),
            slot=torch.full((1,), length, dtype=torch.long, device=dev),
            ids=list(range(n)),
        )

    def generate(
        self,
        batch,
        image_features: torch.Tensor,
        g: int,
        max_new_tokens: int,
        keys: torch.Tensor,
        strata: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """[B*G, T] completion ids (pad after the stop token), T = the longest completion.
        `strata` (strata_init): stratified answers across each image's G rows."""
        rows = self.prefill(batch, image_features, g, max_new_tokens, keys, strata)
        n = rows.size
        out = torch.full((n, max_new_tokens), self.pad_id, dtype=torch.long, device=self.policy.device)
        done = 0
        self.stats.update(steps=0, row_steps=0, sizes=[n])
        while done < max_new_tokens:
            chunk = min(self.sync_every, max_new_tokens - done)
            for _ in range(chunk):
                if self.graph and rows.graph is None:
                    before = int(rows.t)
                    try:
                        self._capture(rows)  # also runs one real step
                    except Exception as exc:
                        # Fall back only when the eager warm-up step ran (the recording failed).
                        if not self.graph_fallback or int(rows.t) == before:
                            raise
                        warnings.warn(
                            f"decode: CUDA graph capture failed ({type(exc).__name__}: {exc}); "
                            f"decoding eagerly (rollout.engine: eager silences this)"
                        )
                        self.graph = False
                        self.stats["capture_error"] = f"{type(exc).__name__}: {exc}"
                elif rows.graph is not None:
                    rows.graph.replay()
                else:
                    self._step(rows)
                self.stats["row_steps"] += rows.size
            done += chunk
            self.stats["steps"] = done
            live = int((~rows.finished).sum())  # the one host sync per `sync_every` steps
            if live == 0 or done >= max_new_tokens:
                break
            if self.compact and live <= rows.size // 2:
                _write_back(out, rows)
                keep = torch.nonzero(~rows.finished).reshape(-1)
                size = 1 << (live - 1).bit_length()  # next power of two: few distinct graph sizes
                filler = torch.nonzero(rows.finished).reshape(-1)[: size - live]
                index = torch.cat([keep, filler])
                ids = [rows.ids[i] for i in keep.tolist()] + [-1] * (size - live)
                rows = rows.select(index, ids)
                self.stats["sizes"].append(size)
        _write_back(out, rows)
        return out


def _write_back(out: torch.Tensor, rows: _Rows) -> None:
    valid = [i for i, r in enumerate(rows.ids) if r >= 0]
    if valid:
        src = torch.tensor(valid, device=out.device)
        dst = torch.tensor([rows.ids[i] for i in valid], device=out.device)
        out.index_copy_(0, dst, rows.out.index_select(0, src))


def _cache_layer(cache, i: int):
    """(keys, values) [B, kv_heads, L, D] of layer i of a transformers DynamicCache (5.x layers;
    4.x key_cache lists)."""
    if hasattr(cache, "layers"):
        layer = cache.layers[i]
        return layer.keys, layer.values
    return cache.key_cache[i], cache.value_cache[i]


# ============================================================================= rollout weights


GIB = 1 << 30
AUTO_MARGIN_BYTES = 2 * GIB  # left free for the decode's own temporaries (logits, top-p sort, graph pool)


def kv_cache_bytes(policy, rows: int, cache_len: int) -> int:
    """rows x cache_len x layers x 2 (K and V) x kv_heads x head_dim x bytes per element."""
    cfg = policy.backbone.language_model.config
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    elem = torch.finfo(policy.dtype).bits // 8
    return rows * cache_len * int(cfg.num_hidden_layers) * 2 * int(cfg.num_key_value_heads) * head_dim * elem


def _linear4bit_modules(root: torch.nn.Module):
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    found = []
    for name, module in root.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            parent_name, _, attr = name.rpartition(".")
            found.append((root.get_submodule(parent_name) if parent_name else root, attr, module))
    return found


def dense_copy_bytes(policy) -> int:
    """Bytes of a compute-dtype copy of the language model's 4-bit linears (0 without any)."""
    elem = torch.finfo(policy.dtype).bits // 8
    return sum(m.in_features * m.out_features * elem for _, _, m in _linear4bit_modules(policy.backbone.language_model))


def resolve_rollout_weights(policy, mode: str, *, rows: int, cache_len: int) -> str:
    """'nf4' or 'bf16' for this rollout. auto -> bf16 only on CUDA, and only when the copy, the
    KV cache and a 2 GiB margin fit in the device's free memory right now; on CPU never (the
    copy would only cost memory: the CPU 4-bit path already dequantises to the compute dtype)."""
    if mode not in ("auto", "nf4", "bf16"):
        raise ValueError(f"rollout.weights: must be auto, nf4 or bf16, got {mode!r}")
    copy = dense_copy_bytes(policy)
    if copy == 0:
        return "nf4"  # not a 4-bit base: nothing to dequantise, the weights are already dense
    if mode != "auto":
        return mode
    if policy.device.type != "cuda":
        return "nf4"
    free, _ = torch.cuda.mem_get_info(policy.device)
    return "bf16" if copy + kv_cache_bytes(policy, rows, cache_len) + AUTO_MARGIN_BYTES <= free else "nf4"


@contextlib.contextmanager
def rollout_weights(policy, mode: str, *, rows: int = 0, cache_len: int = 0) -> Iterator[str]:
    """Inside: every 4-bit linear of the language model is replaced by a plain nn.Linear holding
    its weight dequantised once, in the compute dtype (bf16 on a GPU), when `mode` resolves to
    bf16. A LoRA layer keeps wrapping it (only its base_layer is swapped), so the adapter still
    applies. The 4-bit modules are put back and the copy freed on exit, before learning. Yields
    the resolved mode."""
    resolved = resolve_rollout_weights(policy, mode, rows=rows, cache_len=cache_len)
    if resolved != "bf16":
        yield resolved
        return
    import bitsandbytes.functional as bnbf

    swapped = []
    try:
        for parent, attr, module in _linear4bit_modules(policy.backbone.language_model):
            weight = bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state).to(policy.dtype)
            dense = torch.nn.Linear(
                module.in_features, module.out_features, bias=module.bias is not None, device="meta"
            )
            dense.weight = torch.nn.Parameter(
                weight.reshape(module.out_features, module.in_features), requires_grad=False
            )
            if module.bias is not None:
                dense.bias = torch.nn.Parameter(module.bias.data.to(policy.dtype), requires_grad=False)
            setattr(parent, attr, dense)
            swapped.append((parent, attr, module))
        yield resolved
    finally:
        for parent, attr, module in swapped:
            setattr(parent, attr, module)
        swapped.clear()
        if policy.device.type == "cuda":
            torch.cuda.empty_cache()  # hand the copy's memory back before the learning phase
