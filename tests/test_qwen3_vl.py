"""Qwen3-VL as a policy, on a tiny random one (`build_tiny_model(arch="qwen3_vl")`: head_dim
explicit, interleaved MRoPE, patch 16, DeepStack from every tower layer). What differs from
Qwen2.5-VL is where the package reaches into the model: the vision features carry the DeepStack
features ([tokens, 1 + k, H]) wherever they are reused, and the decode engine's layer step has
the per-head q/k norms. Each is checked against transformers' own forward and generate."""

from __future__ import annotations

import pytest
import torch
from _tiny import DEVICE, images, model_config

from hawkeye_lite.config import LoRAConfig
from hawkeye_lite.model import load_policy
from hawkeye_lite.rollout import generate_rollouts
from hawkeye_lite.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def q3(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-vl"), arch="qwen3_vl", seed=0)


@pytest.fixture(scope="module")
def policy(q3):
    return load_policy(model_config(q3, quantization="none"))


def test_the_reused_vision_features_are_the_full_forward_deepstack_included(policy):
    batch = policy.encode(images(3))
    feats = policy.image_features(batch)
    k = len(policy.backbone.visual.deepstack_visual_indexes)
    assert feats.dim() == 3 and feats.shape[1] == 1 + k and k > 0
    mm = (batch.input_ids == policy.processor.image_token_id).int()
    with torch.no_grad():
        full = policy.hf_model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            mm_token_type_ids=mm,
            use_cache=False,
        ).logits
        ours = policy.hf_model.lm_head(
            policy.prompt_forward(batch.input_ids, feats, batch.attention_mask, batch.position_ids)
        )
        without = policy.hf_model.lm_head(
            policy.language_forward(policy.embed(batch.input_ids, feats), batch.attention_mask, batch.position_ids)
        )
    m = batch.attention_mask.bool()
    assert torch.allclose(ours[m], full[m], atol=1e-5)
    assert (without[m] - full[m]).abs().max() > 1e-2  # DeepStack matters: dropping it is not the model


@pytest.mark.parametrize("engine", ["eager", "loop"])
def test_greedy_rollouts_equal_transformers_generate(policy, engine):
    ims = images(3)
    ours = generate_rollouts(policy, ims, num_generations=2, max_new_tokens=8, temperature=0, engine=engine)
    ref = generate_rollouts(policy, ims, num_generations=2, max_new_tokens=8, temperature=0, shared_prefix=False)
    assert torch.equal(ours.completion_ids, ref.completion_ids)


def test_shared_prefix_passes_equal_the_repeated_prompts(policy):
    r = generate_rollouts(policy, images(3), num_generations=2, max_new_tokens=6, temperature=1.0, seeds=[1, 2, 3])
    with torch.no_grad():
        shared = policy.completion_hidden_states(r.prompt, r.completion_ids, r.completion_mask, shared_prefix=True)
        rows = policy.completion_hidden_states(r.prompt, r.completion_ids, r.completion_mask, shared_prefix=False)
    assert torch.allclose(shared, rows, atol=1e-5)


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_lora_policy_loads_samples_and_backpropagates(q3, quantization):
    policy = load_policy(model_config(q3, quantization=quantization, lora=LoRAConfig(r=4, alpha=8)))
    r = generate_rollouts(policy, images(2), num_generations=2, max_new_tokens=5, temperature=1.0, seeds=[3, 4])
    policy.model.train()
    hidden = policy.completion_hidden_states(r.prompt, r.completion_ids, r.completion_mask)
    hidden.float().pow(2).mean().backward()
    grads = [p.grad for n, p in policy.model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None for g in grads)


def test_scorer_and_a_short_training_run(q3, demo_dir, tmp_path):
    from hawkeye_lite.config_loader import load_train_config
    from hawkeye_lite.scorer import Scorer
    from hawkeye_lite.trainer import Trainer

    demo = demo_dir
    run = tmp_path / "run"
    cfg = load_train_config(
        None,
        [
            f"output_dir={run}",
            f"model.name_or_path={q3}",
            "tiny_model.build=false",
            f"data.train=[demo:{demo}]",
            "eval.before=false",
            "eval.after=false",
            "optim.batch_size=2",
            "rollout.num_generations=2",
            "rollout.max_new_tokens=5",
            "optim.max_steps=2",
            "optim.warmup_steps=1",
            "logging.progress=false",
            "logging.plot=false",
            "sft.steps=0",
            f"model.device={DEVICE}",
        ],
    )
    result = Trainer(cfg).run()
    assert result.steps == 2 and (run / "final" / "adapter_model.safetensors").is_file()
    scorer = Scorer.from_pretrained(run, max_new_tokens=5)
    out = scorer.score(images(2), samples=2)
    assert len(out) == 2 and all(r.ok and len(r.texts) == 2 for r in out)


def test_vision_lora_reaches_the_towers_attention_and_mlp(q3):
    policy = load_policy(model_config(q3, quantization="none", lora=LoRAConfig(r=4, alpha=8, vision=True)))
    names = {n.rsplit(".lora_A", 1)[0] for n, _ in policy.model.named_parameters() if "lora_A" in n}
    blocks = {n.split("visual.blocks.")[1].split(".", 1)[1] for n in names if "visual.blocks." in n}
    assert {"attn.qkv", "attn.proj", "mlp.linear_fc1", "mlp.linear_fc2"} <= blocks, blocks
    assert not any("deepstack_merger" in n or "visual.merger" in n for n in names)  # the blocks only


def test_tied_embeddings_under_nf4_and_lora(tmp_path):
    """Qwen3-VL-2B/4B tie the output layer to the embeddings: under QLoRA both stay one bf16/fp32
    matrix (lm_head is never quantised), sampling and gradients work."""
    tied = build_tiny_model(tmp_path / "tied", arch="qwen3_vl", seed=1, tie_embeddings=True)
    policy = load_policy(model_config(tied, quantization="nf4", lora=LoRAConfig(r=4, alpha=8)))
    emb = policy.backbone.get_input_embeddings().weight
    assert policy.hf_model.lm_head.weight.data_ptr() == emb.data_ptr()
    r = generate_rollouts(policy, images(2), num_generations=2, max_new_tokens=5, temperature=0)
    ref = generate_rollouts(policy, images(2), num_generations=2, max_new_tokens=5, temperature=0, shared_prefix=False)
    assert torch.equal(r.completion_ids, ref.completion_ids)
    policy.model.train()
    policy.completion_hidden_states(r.prompt, r.completion_ids, r.completion_mask).float().pow(2).mean().backward()
    assert all(p.grad is not None for n, p in policy.model.named_parameters() if "lora_" in n)
