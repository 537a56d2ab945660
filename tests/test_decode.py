"""The keyed sampler (per-row counter-based random streams) and the decode engine."""

import os

import numpy as np
import pytest
import torch
from _tiny import images, model_config, perturb_lora
from scipy import stats

from hawkeye_lite.config import LoRAConfig
from hawkeye_lite.decode import (
    derive_seed,
    filter_logits,
    mix32,
    row_keys,
    sample_keyed,
    strata_init,
    uniform_noise,
    vocab_hash,
)
from hawkeye_lite.model import load_policy
from hawkeye_lite.rollout import generate_rollouts


def fresh_seed(label: str) -> int:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"{label} seed: {seed}")
    return seed


# ----------------------------------------------------------------------------- the hash


def test_mix32_matches_python_reference(gen):
    def ref(x):  # lowbias32 in exact Python integers
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    xs = torch.randint(0, 2**32, (4096,), generator=gen, dtype=torch.long)
    xs[:4] = torch.tensor([0, 1, 2**32 - 1, 2**31])
    assert mix32(xs).tolist() == [ref(int(x)) for x in xs]


def test_uniform_noise_is_uniform_and_row_local(gen):
    keys = torch.randint(0, 2**32, (64, 2), generator=gen, dtype=torch.long)
    vh = vocab_hash(2048)
    u = uniform_noise(keys, torch.tensor(3), vh)
    assert u.shape == (64, 2048) and bool((u > 0).all()) and bool((u < 1).all())
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-4
    # a row's noise depends on its key and the step only
    assert torch.equal(uniform_noise(keys[5:6], torch.tensor(3), vh), u[5:6])
    assert torch.equal(uniform_noise(keys.flip(0), torch.tensor(3), vh), u.flip(0))
    assert not torch.equal(uniform_noise(keys, torch.tensor(4), vh), u)
    # neighbouring vocab entries / steps are not correlated
    assert abs(np.corrcoef(u[:, :-1].flatten(), u[:, 1:].flatten())[0, 1]) < 0.02
    u4 = uniform_noise(keys, torch.tensor(4), vh)
    assert abs(np.corrcoef(u.flatten(), u4.flatten())[0, 1]) < 0.02


def test_row_keys_are_the_splitmix64_of_seed_and_generation(gen):
    """The vectorised keys equal the definition, computed with Python's exact integers."""
    from hawkeye_lite.decode import M32, M64, _splitmix64

    seeds = [0, 1, -1, 2**63, 2**64 - 1, -(2**70)] + torch.randint(-(2**62), 2**62, (50,), generator=gen).tolist()
    want = []
    for s in seeds:
        for g in range(7):
            k = _splitmix64(_splitmix64(int(s) & M64) ^ _splitmix64(g))
            want.append([k & M32, k >> 32])
    assert torch.equal(row_keys(seeds, 7), torch.tensor(want, dtype=torch.long))
    assert row_keys([], 3).shape == (0, 2)


def test_row_keys_depend_on_seed_and_generation_only():
    a = row_keys([11, 22, 33], 4)
    assert a.shape == (12, 2) and len({tuple(r) for r in a.tolist()}) == 12
    assert torch.equal(row_keys([22], 4), a[4:8])
    assert torch.equal(row_keys([33, 11], 4), torch.cat([a[8:], a[:4]]))
    assert int(a.max()) < 2**32 and int(a.min()) >= 0
    row_keys([-1, 2**70], 2)  # any Python integer is a seed
    assert derive_seed(5, 0) != derive_seed(5, 1) != derive_seed(6, 1)


# ----------------------------------------------------------------------------- a correct sampler


def chisquare_p(counts, expected, min_expected=5.0) -> float:
    """Pearson's chi-square p-value, with the cells expected fewer than `min_expected` times
    pooled into one (the test's approximation needs it: one draw of a 0.07-expected pair alone
    gives chi-square 12). 1.0 when fewer than two cells remain."""
    import numpy as np

    counts, expected = np.asarray(counts, dtype=float), np.asarray(expected, dtype=float)
    small = expected < min_expected
    if small.any():
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    return float(stats.chisquare(counts, expected).pvalue) if len(counts) > 1 else 1.0


def expected_probs(logits, temperature, top_p, top_k):
    return filter_logits(logits[None], temperature=temperature, top_p=top_p, top_k=top_k).softmax(-1)[0].double()


@pytest.mark.parametrize(
    "temperature,top_p,top_k",
    [(1.0, 1.0, 0), (0.5, 1.0, 0), (2.0, 1.0, 0), (1.0, 1.0, 4), (1.0, 0.8, 0), (0.7, 0.9, 6)],
)
def test_keyed_sampler_draws_from_the_filtered_softmax(gen, temperature, top_p, top_k):
    """Chi-square of token counts against softmax(filter(logits / T)): over many rows (one draw
    each) and over many steps of one row (the stream along t)."""
    v = 12
    logits = torch.randn(v, generator=gen) * 1.5
    p = expected_probs(logits, temperature, top_p, top_k)
    vh = vocab_hash(v)
    kw = dict(temperature=temperature, top_p=top_p, top_k=top_k)
    n = 20000
    across_rows = sample_keyed(
        logits.expand(n, v), torch.randint(0, 2**32, (n, 2), generator=gen), torch.tensor(0), vh, **kw
    )
    key = torch.randint(0, 2**32, (1, 2), generator=gen)
    # One row's stream over steps 0..3999, drawn in one call (row t at step t; `step` broadcasts
    # per row); the same draws as one call per step, checked on a few steps.
    steps = torch.arange(4000)
    along_steps = sample_keyed(logits.expand(4000, v), key.expand(4000, 2), steps, vh, **kw)
    for t in (0, 1, 1999, 3999):
        assert int(sample_keyed(logits[None], key, torch.tensor(t), vh, **kw)) == int(along_steps[t])
    for draws in (across_rows, along_steps):
        counts = torch.bincount(draws, minlength=v).double()
        assert counts[p == 0].sum() == 0  # filtered tokens never drawn
        keep = p > 0
        exp = p[keep] / p[keep].sum() * len(draws)
        pvalue = chisquare_p(counts[keep].numpy(), exp.numpy())
        assert pvalue > 1e-4, (counts.tolist(), exp.tolist())


def test_chisquare_pools_rare_cells():
    assert chisquare_p([4, 2, 27, 1, 0, 56], [1.5, 0.1, 33.0, 1.3, 0.4, 53.7]) > 1e-4  # a rare pair hit twice
    assert chisquare_p([100, 0, 0], [50, 25, 25]) < 1e-10  # a real misfit still fails
    assert chisquare_p([3], [3.0]) == 1.0


def test_keyed_uniform_never_reaches_one():
    """Replays the draw CI found (gen seed 320946178, step 1952): its uniform was exactly 1.0 in
    float32, so a top-p-filtered token was drawn. Every uniform must lie strictly inside (0, 1)."""
    g = torch.Generator().manual_seed(320946178)
    v = 12
    logits = torch.randn(v, generator=g) * 1.5
    torch.randint(0, 2**32, (20000, 2), generator=g)
    key = torch.randint(0, 2**32, (1, 2), generator=g)
    u = uniform_noise(key, torch.tensor(1952), vocab_hash(v))
    assert float(u.max()) < 1.0 and float(u.min()) > 0.0
    p = expected_probs(logits, 1.0, 0.8, 0)
    tok = sample_keyed(logits[None], key, torch.tensor(1952), vocab_hash(v), temperature=1.0, top_p=0.8, top_k=0)
    assert p[int(tok)] > 0


def test_temperature_zero_is_greedy(gen):
    logits = torch.randn(50, 30, generator=gen)
    keys = torch.randint(0, 2**32, (50, 2), generator=gen)
    out = sample_keyed(logits, keys, torch.tensor(0), vocab_hash(30), temperature=0.0, top_p=1.0, top_k=0)
    assert torch.equal(out, logits.argmax(-1))


# ----------------------------------------------------------------------------- stratified sampling


def _image_seeds(gen, n):
    return torch.randint(0, 2**62, (n,), generator=gen).tolist()


@pytest.mark.parametrize("g", [1, 5, 16])
def test_strata_partition_the_unit_interval_per_image(gen, g):
    seeds = _image_seeds(gen, 2000)
    st = strata_init(seeds, g)
    assert st.shape == (2000 * g, 2) and st.dtype == torch.float64
    lo = st[:, 0].view(-1, g).sort(1).values
    assert torch.equal(lo, (torch.arange(g, dtype=torch.float64) / g).expand_as(lo))  # one row per stratum
    assert torch.allclose(st[:, 1] - st[:, 0], torch.full((2000 * g,), 1.0 / g, dtype=torch.float64))
    assert torch.equal(strata_init(seeds[7:9], g), st[7 * g : 9 * g])  # an image's strata: its seed alone
    if g > 1:  # which row gets which stratum is a fair draw
        counts = torch.bincount((st.view(-1, g, 2)[:, 0, 0] * g).round().long(), minlength=g).double()
        assert stats.chisquare(counts.numpy()).pvalue > 1e-4, counts.tolist()


def _two_steps(gen, v1, v2, temperature, top_p, top_k):
    """A toy two-token 'model': first-token logits, and second-token logits given the first
    (redrawn until the filters leave at least 3 first tokens, none above 0.8)."""
    while True:
        l1 = torch.randn(v1, generator=gen) * 1.5
        p1 = expected_probs(l1, temperature, top_p, top_k)
        if int((p1 > 0).sum()) >= 3 and float(p1.max()) < 0.8:
            break
    l2 = torch.randn(v1, v2, generator=gen) * 1.5
    p2 = torch.stack([expected_probs(l2[a], temperature, top_p, top_k) for a in range(v1)])
    return l1, l2, p1[:, None] * p2  # joint [v1, v2]


def _draw_two(l1, l2, seeds, g, strata, **kw):
    n = len(seeds) * g
    keys = row_keys(seeds, g)
    st = strata_init(seeds, g) if strata else None
    a = sample_keyed(l1.expand(n, -1), keys, torch.tensor(0), vocab_hash(l1.shape[0]), strata=st, **kw)
    b = sample_keyed(l2[a], keys, torch.tensor(1), vocab_hash(l2.shape[1]), strata=st, **kw)
    return a.view(-1, g), b.view(-1, g)


@pytest.mark.parametrize("temperature,top_p,top_k", [(1.0, 1.0, 0), (0.7, 0.9, 5), (1.3, 1.0, 4)])
def test_stratified_answers_are_exact_per_row_and_even_per_image(gen, temperature, top_p, top_k):
    """Each row is still a draw from the model: the joint law of its two tokens (chi-square over
    images, one row position at a time). And an image's G answers cover the distribution evenly,
    nested: every first token and every (first, second) pair appears G*p times to within 2,
    which independent draws do not (the same check fails for them)."""
    v1, v2, g, n = 6, 5, 128, 1500
    l1, l2, joint = _two_steps(gen, v1, v2, temperature, top_p, top_k)
    seeds = _image_seeds(gen, n)
    kw = dict(temperature=temperature, top_p=top_p, top_k=top_k)
    a, b = _draw_two(l1, l2, seeds, g, True, **kw)
    ia, ib = _draw_two(l1, l2, seeds, g, False, **kw)
    pair, ipair = a * v2 + b, ia * v2 + ib
    p = joint.flatten()
    keep = p > 0
    for col in (0, g // 2, g - 1):
        counts = torch.bincount(pair[:, col], minlength=v1 * v2).double()
        assert counts[~keep].sum() == 0  # filtered tokens never drawn
        exp = p[keep] / p[keep].sum() * n
        assert chisquare_p(counts[keep].numpy(), exp.numpy()) > 1e-4, (counts.tolist(), exp.tolist())

    def worst(draws, probs):
        per_image = torch.stack([torch.bincount(r, minlength=len(probs)) for r in draws]).double()
        return float((per_image - g * probs).abs().max())

    assert worst(a, joint.sum(1)) <= 2.0 and worst(pair, p) <= 2.0
    assert worst(ia, joint.sum(1)) > 2.0 and worst(ipair, p) > 2.0
    # What an evaluation averages: a rating per answer, led by its first token as "3.42" is by
    # its 3. The per-image mean of G ratings moves far less between seeds.
    first, second = (
        torch.rand(v1, generator=gen, dtype=torch.float64) * 4 + 1,
        torch.rand(v2, generator=gen, dtype=torch.float64),
    )
    rating = (first[:, None] + 0.1 * second[None, :]).flatten()
    assert rating[pair].mean(1).std() < 0.5 * rating[ipair].mean(1).std()


def test_stratified_answers_stay_exact_past_the_strata(gen):
    """A row's stratum widens with every token until it spans the whole interval (then the row
    samples independently): after several steps of a near-uniform distribution the token law
    at a late step is still the model's."""
    v, g, n, steps = 8, 4, 3000, 6
    logits = torch.randn(v, generator=gen) * 0.3
    p = expected_probs(logits, 1.0, 1.0, 0)
    seeds = _image_seeds(gen, n)
    keys, st = row_keys(seeds, g), strata_init(seeds, g)
    for t in range(steps):
        tok = sample_keyed(
            logits.expand(n * g, v),
            keys,
            torch.tensor(t),
            vocab_hash(v),
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            strata=st,
        )
    assert float((st[:, 1] - st[:, 0]).mean()) > 2.0 / g  # the strata widened
    counts = torch.bincount(tok, minlength=v).double()
    assert chisquare_p(counts.numpy(), (p / p.sum() * n * g).numpy()) > 1e-4


def test_stratified_draw_at_the_edges_never_takes_a_filtered_token(gen):
    """Strata pressed against 1 (and against 0) with the vocabulary's tail filtered out: float32
    rounding of u must not land on a token of probability 0, and the state stays finite."""
    v, n = 9, 2000
    logits = torch.randn(n, v, generator=gen)
    logits[:, 5:] = float("-inf")
    keys = row_keys(_image_seeds(gen, n), 1)
    for lo, hi in ((1 - 1e-12, 1.0), (0.0, 1e-12)):
        st = torch.tensor([[lo, hi]], dtype=torch.float64).repeat(n, 1)
        tok = sample_keyed(logits, keys, torch.tensor(0), vocab_hash(v), temperature=1.0, top_p=1.0, top_k=0, strata=st)
        assert int(tok.max()) < 5
        assert bool(torch.isfinite(st).all()) and bool((st[:, 0] < st[:, 1]).all())


def test_stratified_rollouts_engine_matches_loop_and_are_batch_invariant(policy, monkeypatch):
    ims = images(4, seed=5)
    g = 6
    _early_stops(policy, ims, g, monkeypatch)  # rows finish at different steps: the engine compacts
    kw = dict(num_generations=g, max_new_tokens=20, temperature=1.0, seeds=[9, 8, 7, 6], stratified=True)
    loop = generate_rollouts(policy, ims, engine="loop", **kw)
    eng = generate_rollouts(policy, ims, engine="eager", sync_every=2, **kw)
    assert torch.equal(eng.completion_ids, loop.completion_ids) and eng.texts == loop.texts
    iid = generate_rollouts(policy, ims, engine="eager", **{**kw, "stratified": False})
    assert iid.texts != eng.texts  # another sampler
    for b in (0, 3):  # an image alone gets the same G completions
        alone = generate_rollouts(policy, [ims[b]], engine="eager", **{**kw, "seeds": [kw["seeds"][b]]})
        assert alone.texts == eng.texts[b * g : (b + 1) * g]
    with pytest.raises(ValueError, match="stratified"):
        generate_rollouts(
            policy, ims, num_generations=2, max_new_tokens=4, seed=1, shared_prefix=False, stratified=True
        )


# ----------------------------------------------------------------------------- batch invariance on the model


def _per_image(r, g):
    return [tuple(r.texts[b * g : (b + 1) * g]) for b in range(len(r.texts) // g)]


def test_per_image_seeds_make_answers_batch_invariant(policy):
    base = fresh_seed("image seeds")
    ims = images(8, seed=base % 1000)
    seeds = [base + 7919 * i for i in range(8)]
    g = 3
    kw = dict(num_generations=g, max_new_tokens=12, temperature=1.0, top_p=0.95, top_k=50)
    alone = [_per_image(generate_rollouts(policy, [ims[i]], seeds=[seeds[i]], **kw), g)[0] for i in range(8)]
    assert len(set(alone)) > 1  # images and seeds matter
    assert any(len(set(a)) > 1 for a in alone)  # the G answers of an image differ
    whole = _per_image(generate_rollouts(policy, ims, seeds=seeds, **kw), g)
    assert whole == alone  # batch size 8
    order = list(np.random.RandomState(base % 2**31).permutation(8))
    perm = _per_image(generate_rollouts(policy, [ims[i] for i in order], seeds=[seeds[i] for i in order], **kw), g)
    assert perm == [alone[i] for i in order]  # other positions
    for start in range(0, 8, 3):  # batch size 3 (and a last batch of 2)
        part = _per_image(generate_rollouts(policy, ims[start : start + 3], seeds=seeds[start : start + 3], **kw), g)
        assert part == alone[start : start + 3]
    dup = _per_image(generate_rollouts(policy, [ims[2], ims[5], ims[2]], seeds=[seeds[2], seeds[5], seeds[2]], **kw), g)
    assert dup == [alone[2], alone[5], alone[2]]  # duplicated within one call
    other = _per_image(generate_rollouts(policy, [ims[2]], seeds=[seeds[2] + 1], **kw), g)[0]
    assert other != alone[2]  # the seed matters


def test_legacy_seed_is_derived_per_position(policy):
    ims = images(3)
    kw = dict(num_generations=2, max_new_tokens=8, temperature=1.0)
    a = generate_rollouts(policy, ims, seed=42, **kw)
    b = generate_rollouts(policy, ims, seeds=[derive_seed(42, i) for i in range(3)], **kw)
    assert a.texts == b.texts
    torch.manual_seed(0)
    c = generate_rollouts(policy, ims, **kw)  # no seed: drawn from the global RNG
    torch.manual_seed(0)
    d = generate_rollouts(policy, ims, **kw)
    assert c.texts == d.texts


def test_bad_seeds_are_named(policy):
    kw = dict(num_generations=2, max_new_tokens=2)
    with pytest.raises(ValueError, match="seeds holds 1 values for 2 images"):
        generate_rollouts(policy, images(2), seeds=[1], **kw)
    with pytest.raises(ValueError, match="not both"):
        generate_rollouts(policy, images(1), seeds=[1], seed=1, **kw)
    with pytest.raises(TypeError, match=r"seeds\[1\]"):
        generate_rollouts(policy, images(2), seeds=[1, 2.5], **kw)
    generate_rollouts(policy, images(2), seeds=[np.int64(3), torch.tensor(4)], **kw)


# ----------------------------------------------------------------------------- the engine against the old loop


@pytest.fixture(scope="module")
def qwen2_policy(tmp_path_factory):
    from hawkeye_lite.tiny_model import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2-vl"), seed=1, arch="qwen2_vl")
    p = load_policy(model_config(path, quantization="none", lora=LoRAConfig(r=4, alpha=8, dropout=0.0)))
    perturb_lora(p, std=0.2)
    return p


def _early_stops(policy, ims, g, monkeypatch):
    """Make a token the greedy loop emits mid-completion a stop token, so rows finish at
    different steps (what the engine's checks and compaction must get right)."""
    first = generate_rollouts(policy, ims, num_generations=g, max_new_tokens=20, temperature=0, engine="loop")
    ids = first.completion_ids
    tok = int(torch.mode(ids[:, 1:12].flatten()).values)
    original = policy.stop_token_ids()
    monkeypatch.setattr(policy, "stop_token_ids", lambda: sorted(set(original) | {tok}))


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen2_vl"])
@pytest.mark.parametrize("stops", [False, True])
def test_engine_greedy_matches_loop(policy, qwen2_policy, arch, stops, monkeypatch):
    p = policy if arch == "qwen2_5_vl" else qwen2_policy
    ims = images(4)  # four sizes -> four prompt lengths -> left padding, different rope deltas
    g = 3
    if stops:
        _early_stops(p, ims, g, monkeypatch)
    loop = generate_rollouts(p, ims, num_generations=g, max_new_tokens=20, temperature=0, engine="loop")
    assert len({tuple(r) for r in loop.completion_ids[::g].tolist()}) > 1  # the image matters
    for sync_every in (1, 3, 8):
        eng = generate_rollouts(
            p, ims, num_generations=g, max_new_tokens=20, temperature=0, engine="eager", sync_every=sync_every
        )
        assert torch.equal(eng.completion_ids, loop.completion_ids), sync_every
        assert torch.equal(eng.completion_mask, loop.completion_mask) and eng.texts == loop.texts
    if stops:  # rows did finish early, at different steps
        lengths = loop.completion_mask.sum(1)
        assert lengths.min() < 20 and len(set(lengths.tolist())) > 1


def test_engine_sampling_matches_loop_and_compacts(policy, monkeypatch):
    from hawkeye_lite import decode

    ims = images(4, seed=3)
    g = 4
    _early_stops(policy, ims, g, monkeypatch)
    sizes = []
    real = decode.DecodeEngine.generate

    def spy(self, *a, **k):
        out = real(self, *a, **k)
        sizes.append(list(self.stats["sizes"]))
        return out

    monkeypatch.setattr(decode.DecodeEngine, "generate", spy)
    kw = dict(num_generations=g, max_new_tokens=20, temperature=1.0, top_k=40, seeds=[5, 6, 7, 8])
    loop = generate_rollouts(policy, ims, engine="loop", **kw)
    eng = generate_rollouts(policy, ims, engine="eager", sync_every=2, **kw)
    assert torch.equal(eng.completion_ids, loop.completion_ids) and eng.texts == loop.texts
    assert len(sizes[-1]) > 1 and sizes[-1][-1] < 16, sizes  # finished rows left the batch
    nocompact = []
    monkeypatch.setattr(
        decode.DecodeEngine,
        "generate",
        lambda self, *a, **k: (setattr(self, "compact", False), nocompact.append(1), real(self, *a, **k))[2],
    )
    same = generate_rollouts(policy, ims, engine="eager", sync_every=2, **kw)
    assert nocompact and torch.equal(same.completion_ids, loop.completion_ids)


def test_engine_nf4_greedy_matches_loop(tiny):
    p = load_policy(model_config(tiny, quantization="nf4", lora=LoRAConfig(r=4, alpha=8, dropout=0.0)), trainable=False)
    ims = images(3)
    loop = generate_rollouts(p, ims, num_generations=2, max_new_tokens=16, temperature=0, engine="loop")
    eng = generate_rollouts(p, ims, num_generations=2, max_new_tokens=16, temperature=0, engine="eager")
    assert type(p.backbone.language_model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    assert torch.equal(eng.completion_ids, loop.completion_ids) and eng.texts == loop.texts


@pytest.mark.parametrize("stratified", [False, True])
def test_engine_step_is_static(policy, monkeypatch, stratified):
    """A step never reads a value back to the host and never reallocates the cache: what a CUDA
    graph needs (checked on CPU by making every host read raise inside the step), with the
    stratified sampler too."""
    from hawkeye_lite.decode import DecodeEngine

    ims = images(2)
    batch = policy.encode(ims)
    eng = DecodeEngine(
        policy,
        temperature=1.0,
        top_p=0.9,
        top_k=20,
        stop_ids=policy.stop_token_ids(),
        suppressed_ids=policy.suppressed_token_ids(),
        pad_id=policy.tokenizer.pad_token_id,
    )
    with torch.no_grad():
        rows = eng.prefill(
            batch,
            policy.image_features(batch),
            3,
            6,
            row_keys([1, 2], 3),
            strata_init([1, 2], 3) if stratified else None,
        )
        ptrs = [x.data_ptr() for x in rows.k + rows.v + [rows.mask, rows.out, rows.logits, rows.t]]
        shapes = [tuple(x.shape) for x in rows.k + [rows.mask]]

        def refuse(*a, **k):
            raise AssertionError("host read inside a decode step")

        with monkeypatch.context() as m:
            for name in ("__bool__", "item", "tolist", "__int__", "__float__", "cpu", "numpy"):
                m.setattr(torch.Tensor, name, refuse)
            for _ in range(4):
                eng._step(rows)
    assert [x.data_ptr() for x in rows.k + rows.v + [rows.mask, rows.out, rows.logits, rows.t]] == ptrs
    assert [tuple(x.shape) for x in rows.k + [rows.mask]] == shapes
    length = batch.input_ids.shape[1]
    assert rows.mask.shape[1] % 8 == 0 and rows.mask.shape[1] >= length + 6
    assert rows.t.item() == 4 and rows.mask[:, length : length + 4].all() and not rows.mask[:, length + 4 :].any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_cuda_graph_matches_eager(tiny, quantization):
    """On a GPU: the captured step replays to the same tokens as the eager engine, in fp32 (and
    with the NF4 base + LoRA: does the capture take bitsandbytes' 4-bit calls?)."""
    p = load_policy(
        model_config(
            tiny, device="cuda", dtype="float32", quantization=quantization, lora=LoRAConfig(r=4, alpha=8, dropout=0.0)
        )
    )
    perturb_lora(p, std=0.2)
    ims = images(4)
    for kw in (dict(temperature=0.0), dict(temperature=1.0, top_p=0.9, seeds=[1, 2, 3, 4])):
        eager = generate_rollouts(p, ims, num_generations=4, max_new_tokens=24, engine="eager", **kw)
        graph = generate_rollouts(p, ims, num_generations=4, max_new_tokens=24, engine="graph", **kw)
        loop = generate_rollouts(p, ims, num_generations=4, max_new_tokens=24, engine="loop", **kw)
        assert torch.equal(graph.completion_ids, eager.completion_ids)
        assert torch.equal(graph.completion_ids, loop.completion_ids)


# ----------------------------------------------------------------------------- bf16 rollout weights


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dense_rollout_weights_match_nf4(tiny, dtype):
    """Criterion fixed before the first run. float32: the dense copy holds exactly the values
    bitsandbytes dequantises on every 4-bit call, so greedy tokens must be identical row for
    row. bfloat16: the copy must equal bitsandbytes' own dequantize_4bit exactly; the matmuls
    may then round differently from the 4-bit kernel, so: every row's first 4 tokens equal and
    at least half of the rows equal in full."""
    import bitsandbytes.functional as bnbf

    from hawkeye_lite.decode import dense_copy_bytes, resolve_rollout_weights, rollout_weights

    p = load_policy(model_config(tiny, quantization="nf4", dtype=dtype, lora=LoRAConfig(r=4, alpha=8, dropout=0.0)))
    perturb_lora(p, std=0.2)
    p.model.eval()
    lm = p.backbone.language_model
    up = lm.layers[0].mlp.up_proj  # a LoRA layer around a 4-bit base
    four_bit = up.base_layer
    assert dense_copy_bytes(p) > 0
    assert resolve_rollout_weights(p, "auto", rows=8, cache_len=64) == "nf4"  # CPU: never
    with rollout_weights(p, "bf16") as mode:
        assert mode == "bf16" and isinstance(up.base_layer, torch.nn.Linear) and up.base_layer.weight.dtype == p.dtype
        ref = bnbf.dequantize_4bit(four_bit.weight.data, four_bit.weight.quant_state).to(p.dtype)
        assert torch.equal(up.base_layer.weight, ref.reshape(up.base_layer.weight.shape))
    assert up.base_layer is four_bit  # restored

    ims = images(4)
    kw = dict(num_generations=2, max_new_tokens=16, temperature=0)
    nf4 = generate_rollouts(p, ims, weights="nf4", **kw)
    dense = generate_rollouts(p, ims, weights="bf16", **kw)
    assert up.base_layer is four_bit
    # the LoRA adapter still applies under the dense copy
    with p.model.disable_adapter():
        off = generate_rollouts(p, ims, weights="bf16", **kw)
    assert not torch.equal(off.completion_ids, dense.completion_ids)
    if dtype == "float32":
        assert torch.equal(dense.completion_ids, nf4.completion_ids) and dense.texts == nf4.texts
    else:
        assert torch.equal(dense.completion_ids[:, :4], nf4.completion_ids[:, :4])
        same = [a == b for a, b in zip(dense.texts, nf4.texts)]
        assert sum(same) >= len(same) / 2, same


def test_failed_capture_falls_back_to_eager_under_auto(policy, monkeypatch):
    """engine auto on CUDA: a layer the CUDA graph cannot record must not kill a run. Simulated
    on CPU: the capture runs its real warm-up step, then the recording raises."""
    from hawkeye_lite.decode import DecodeEngine

    def fake_capture(self, rows):
        self._step(rows)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(DecodeEngine, "_capture", fake_capture)
    ims = images(2)
    kw = dict(
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        stop_ids=policy.stop_token_ids(),
        suppressed_ids=policy.suppressed_token_ids(),
        pad_id=policy.tokenizer.pad_token_id,
    )
    batch = policy.encode(ims)
    with torch.no_grad():
        feats = policy.image_features(batch)
        eager = DecodeEngine(policy, **kw).generate(batch, feats, 2, 10, row_keys([3, 4], 2))
        fallback = DecodeEngine(policy, **kw, graph_fallback=True)
        fallback.graph = True  # as on CUDA
        with pytest.warns(UserWarning, match="capture failed"):
            out = fallback.generate(batch, feats, 2, 10, row_keys([3, 4], 2))
        assert torch.equal(out, eager) and "capture_error" in fallback.stats
        strict = DecodeEngine(policy, **kw)
        strict.graph = True
        with pytest.raises(RuntimeError, match="capturing"):
            strict.generate(batch, feats, 2, 10, row_keys([3, 4], 2))
