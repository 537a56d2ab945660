"""Shared-prefix multi-rollout generation on the tiny model."""

import math
import os

import pytest
import torch
from _tiny import images, perturb_lora

from hawkeye_lite.model import VISION_TOKENS
from hawkeye_lite.prompts import parse_score
from hawkeye_lite.rewards import compute_rewards
from hawkeye_lite.rollout import generate_rollouts, sample_tokens


@pytest.fixture
def calls(policy):
    """What the vision tower and the decoder stack are run on: images encoded per vision call,
    and (rows, tokens) per language-model call."""
    seen = {"vision": [], "lm": []}

    def on_vision(module, args, kwargs, output):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        seen["vision"].append(grid.shape[0])

    def on_lm(module, args, kwargs, output):
        x = kwargs.get("inputs_embeds")
        x = x if x is not None else kwargs.get("input_ids", args[0] if args else None)
        seen["lm"].append(tuple(x.shape[:2]))

    handles = [
        policy.backbone.visual.register_forward_hook(on_vision, with_kwargs=True),
        policy.backbone.language_model.register_forward_hook(on_lm, with_kwargs=True),
    ]
    yield seen
    for h in handles:
        h.remove()


@pytest.mark.parametrize("engine", ["loop", "eager"])
def test_vision_and_prefill_run_once_per_image(policy, calls, engine):
    b, g = 3, 4
    rows = []
    layer0 = policy.backbone.language_model.layers[0].self_attn.q_proj
    handle = layer0.register_forward_hook(lambda m, a, o: rows.append(tuple(a[0].shape[:2])))
    try:
        r = generate_rollouts(policy, images(b), num_generations=g, max_new_tokens=5, seed=0, engine=engine)
    finally:
        handle.remove()
    prompt_len = r.prompt_ids.shape[1]
    assert calls["vision"] == [b]  # one vision call, each image once (not b * g)
    assert calls["lm"][0] == (b, prompt_len)  # prefill on b rows ...
    assert rows[0] == (b, prompt_len)
    assert all(shape == (b * g, 1) for shape in rows[1:])  # ... decoding on b * g rows
    assert len(rows) - 1 >= r.completion_ids.shape[1] - 1
    if engine == "loop":
        assert len(calls["lm"]) == r.completion_ids.shape[1]
    else:  # the engine's decode steps run the layers directly: the model forward is the prefill only
        assert len(calls["lm"]) == 1

    calls["lm"].clear()
    generate_rollouts(policy, images(b), num_generations=g, max_new_tokens=5, seed=0, shared_prefix=False)
    assert calls["lm"][0] == (b * g, prompt_len)  # the naive path prefills every prompt g times


def test_greedy_shared_prefix_matches_naive_generate(policy):
    ims = images(3)  # three sizes -> three token counts, left padding and different rope deltas
    shared = generate_rollouts(policy, ims, num_generations=3, max_new_tokens=16, temperature=0)
    naive = generate_rollouts(policy, ims, num_generations=3, max_new_tokens=16, temperature=0, shared_prefix=False)
    assert shared.completion_ids.shape == (9, 16)
    assert torch.equal(shared.completion_ids, naive.completion_ids)
    assert torch.equal(shared.completion_mask, naive.completion_mask)
    assert shared.texts == naive.texts
    # the image matters: not every prompt gets the same greedy answer
    assert len({tuple(r) for r in shared.completion_ids[::3].tolist()}) > 1


def test_result_layout(policy):
    b, g = 2, 3
    r = generate_rollouts(policy, images(b), num_generations=g, max_new_tokens=8, seed=1)
    assert r.prompt_ids.shape[0] == b and r.prompt_mask.shape == r.prompt_ids.shape
    assert r.completion_ids.shape == r.completion_mask.shape and r.completion_ids.shape[0] == b * g
    assert len(r.texts) == b * g and r.scores.shape == (b, g) and r.num_generations == g
    for i, text in enumerate(r.texts):
        parsed = parse_score(text)
        got = float(r.scores[i // g, i % g])
        assert (math.isnan(got) and parsed is None) or got == pytest.approx(parsed)
    # the decoded text is exactly the masked completion tokens
    ids = r.completion_ids[0][r.completion_mask[0].bool()].tolist()
    assert r.texts[0] == policy.tokenizer.decode(ids, skip_special_tokens=True)
    # rewards take the completions group-major, one target per image
    rewards = compute_rewards(r.texts, [3.0, 4.0], num_generations=g)
    assert rewards.total.shape == (b * g,)


def test_seeded_sampling_is_reproducible(policy):
    kw = dict(num_generations=4, max_new_tokens=10, temperature=1.0)
    a = generate_rollouts(policy, images(2), seed=7, **kw)
    b = generate_rollouts(policy, images(2), seed=7, **kw)
    c = generate_rollouts(policy, images(2), seed=8, **kw)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    assert not torch.equal(a.completion_ids, c.completion_ids)
    # the G rollouts of one image are different samples, not copies
    assert len({tuple(row) for row in a.completion_ids[:4].tolist()}) > 1


def test_stops_at_stop_token_and_pads_after(policy, monkeypatch):
    ims = images(2)
    first = generate_rollouts(policy, ims, num_generations=2, max_new_tokens=8, temperature=0)
    stop = int(first.completion_ids[0, 2])  # pretend this token ends the turn
    at = first.completion_ids[0].tolist().index(stop)
    original = policy.stop_token_ids()
    monkeypatch.setattr(policy, "stop_token_ids", lambda: sorted(set(original) | {stop}))
    shared = generate_rollouts(policy, ims, num_generations=2, max_new_tokens=8, temperature=0)
    naive = generate_rollouts(policy, ims, num_generations=2, max_new_tokens=8, temperature=0, shared_prefix=False)
    assert torch.equal(shared.completion_ids, naive.completion_ids)
    mask = shared.completion_mask[0]
    assert mask[: at + 1].all() and not mask[at + 1 :].any()  # stop token included, then nothing
    assert shared.completion_ids[0, at] == stop
    assert (shared.completion_ids[0, at + 1 :] == policy.tokenizer.pad_token_id).all()


def test_vision_tokens_are_never_sampled(policy):
    suppressed = [policy.tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
    vocab = policy.lm_head_weight.shape[0]
    beyond_tokenizer = list(range(len(policy.tokenizer), vocab))
    assert beyond_tokenizer  # the tiny model has padding rows, like the real ones

    def favour_forbidden(module, args, output):  # make the forbidden ids the most likely
        output = output.clone()
        output[..., suppressed + beyond_tokenizer] += 1000.0
        return output

    handle = policy.hf_model.lm_head.register_forward_hook(favour_forbidden)
    try:
        greedy = generate_rollouts(policy, images(2), num_generations=2, max_new_tokens=6, temperature=0)
        sampled = generate_rollouts(policy, images(2), num_generations=2, max_new_tokens=6, seed=0)
        naive = generate_rollouts(
            policy, images(2), num_generations=2, max_new_tokens=6, temperature=0, shared_prefix=False
        )
    finally:
        handle.remove()
    for r in (greedy, sampled, naive):
        forbidden = torch.tensor(suppressed + beyond_tokenizer, device=r.completion_ids.device)
        assert not torch.isin(r.completion_ids, forbidden).any()
    assert torch.equal(greedy.completion_ids, naive.completion_ids)


def test_training_forward_sees_the_sampled_positions(policy):
    """The trainer's re-forward of prompt + completion predicts exactly the greedy tokens."""
    r = generate_rollouts(policy, images(3), num_generations=2, max_new_tokens=10, temperature=0)
    with torch.no_grad():
        hidden = policy.completion_hidden_states(r.prompt, r.completion_ids, r.completion_mask)
    logits = hidden @ policy.lm_head_weight.T
    logits[..., policy.suppressed_token_ids()] = float("-inf")
    mask = r.completion_mask.bool()
    assert torch.equal(logits.argmax(-1)[mask], r.completion_ids[mask])


def test_train_mode_is_restored(policy):
    policy.model.train()
    try:
        generate_rollouts(policy, images(1), num_generations=1, max_new_tokens=2, seed=0)
        assert policy.model.training
    finally:
        policy.model.eval()


def test_sample_tokens_top_k_top_p():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]]).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_tokens(logits, temperature=1.0, top_p=1.0, top_k=2, generator=g).tolist()) <= {0, 1}
    # p(0) ~ 0.73: top_p=0.5 keeps only token 0
    assert set(sample_tokens(logits, temperature=1.0, top_p=0.5, top_k=0, generator=g).tolist()) == {0}
    assert sample_tokens(logits, temperature=0.0, top_p=1.0, top_k=0, generator=g).eq(0).all()
    hot = sample_tokens(logits, temperature=100.0, top_p=1.0, top_k=0, generator=g)
    assert len(set(hot.tolist())) == 4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_generations": 0}, "num_generations"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"engine": "fast"}, "engine"),
    ],
)
def test_bad_arguments_are_named(policy, kwargs, match):
    args = {"num_generations": 2, "max_new_tokens": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate_rollouts(policy, images(1), **args)


def test_non_pil_input_is_named(policy):
    with pytest.raises(TypeError, match=r"images\[1\]"):
        generate_rollouts(policy, [images(1)[0], "not-an-image.png"], num_generations=1, max_new_tokens=2)


# ----------------------------------------------------------------------------- step-wide rollouts in the trainer


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from hawkeye_lite.data import demo_records

    root = tmp_path_factory.mktemp("demo-data")
    demo_records(root)
    return root


def test_step_wide_rollouts_equal_micro_batch_rollouts(tiny, demo_dir, tmp_path, monkeypatch):
    """All 6 images of a step decoded together, 3 at a time (not aligned with the micro-batches
    of 2) and micro-batch by micro-batch: the same tokens for every image (per-image seeds are a
    function of (seed, step, slot)), and learning still sees micro-batches of 2."""
    import hawkeye_lite.rollout as rollout_mod
    from hawkeye_lite.config_loader import load_train_config
    from hawkeye_lite.rollout import step_seeds
    from hawkeye_lite.trainer import Trainer
    from hawkeye_lite.trainset import batch_indices

    calls = []
    real = rollout_mod.generate_rollouts

    def spy(policy, images, **kw):
        calls.append(len(images))
        return real(policy, images, **kw)

    monkeypatch.setattr(rollout_mod, "generate_rollouts", spy)
    seed = int.from_bytes(os.urandom(2), "little")
    print(f"trainer seed: {seed}")
    results = {}
    for chunk in ("null", "3", "2"):
        cfg = load_train_config(
            None,
            [
                f"output_dir={tmp_path / chunk}",
                f"model.name_or_path={tiny}",
                "tiny_model.build=false",
                f"data.train=[demo:{demo_dir}]",
                "optim.batch_size=2",
                "optim.grad_accum=3",
                "rollout.num_generations=3",
                "rollout.max_new_tokens=10",
                f"rollout.batch_size={chunk}",
                "sft.steps=0",
                "logging.progress=false",
                "objective.perception.enabled=false",
                f"seed={seed}",
            ],
        )
        t = Trainer(cfg)
        t.prepare()
        t.policy = t.load_policy(t.base)
        perturb_lora(t.policy, std=0.2)
        recs = [
            t.data.train[i]
            for m in range(3)
            for i in batch_indices(len(t.data.train), 5, m, batch_size=2, grad_accum=3, seed=seed)
        ]
        calls.clear()
        exps = t.sample(recs, step_seeds(seed, 5, len(recs)))
        results[chunk] = exps
        assert calls == {"null": [6], "3": [3, 3], "2": [2, 2, 2]}[chunk]
        assert [e.completion_ids.shape[0] for e in exps] == [6, 6, 6]
    for chunk in ("3", "2"):
        for a, b in zip(results["null"], results[chunk]):
            assert torch.equal(a.completion_ids, b.completion_ids), chunk
            assert torch.equal(a.completion_mask, b.completion_mask) and torch.equal(a.advantages, b.advantages)
    ids = torch.cat([e.completion_ids[:, :3] for e in results["null"]])
    assert len({tuple(r) for r in ids.tolist()}) > 6  # real samples, not one answer repeated
    assert step_seeds(seed, 5, 6)[:4] == step_seeds(seed, 5, 4) and step_seeds(seed, 6, 6) != step_seeds(seed, 5, 6)
