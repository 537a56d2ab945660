"""Qwen3-VL as a policy, on a tiny random one (`build_tiny_model(arch="qwen3_vl")`: head_dim
explicit, interleaved MRoPE, patch 16, DeepStack from every tower layer). What differs from
Qwen2.5-VL is where the package reaches into the model: the vision features carry the DeepStack
features ([tokens, 1 + k, H]) wherever they are reused, and the decode engine's layer step has
the per-head q/k norms. Each is checked against transformers' own forward and generate."""

from __future__ import annotations

import json

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


def test_prompt_ids_are_the_checkpoints_chat_template(q3, policy):
    """Qwen3-VL keeps its template in chat_template.json (no default system turn, unlike
    Qwen2.5-VL's): it is read, and the prompt hawkeye encodes is the template's rendering, token
    for token, for every prompt; the image slot widens to the image's token count."""
    from hawkeye_lite.presets import PRESETS
    from hawkeye_lite.prompts import chat_messages

    tok = policy.tokenizer
    assert tok.chat_template and json.loads((q3 / "tokenizer_config.json").read_text()).get("chat_template") is None
    ims = images(2)
    for prompt in {p.prompt for p in PRESETS.values()}:
        rendered = tok.apply_chat_template(
            chat_messages(prompt), tokenize=False, add_generation_prompt=True, add_vision_id=bool(prompt.image_prefix)
        )
        batch = policy.encode(ims, prompt)
        n = policy.processor.num_image_tokens(batch.image_grid_thw)
        for row, mask, count in zip(batch.input_ids, batch.attention_mask, n):
            expected = tok(rendered.replace("<|image_pad|>", "<|image_pad|>" * count), add_special_tokens=False)
            assert row[mask.bool()].tolist() == expected["input_ids"], prompt.name
        assert batch.assistant_prefix == ""


def test_a_template_that_writes_the_turns_otherwise_is_named_once_and_hawkeye_chatml_used(q3, tmp_path):
    import shutil
    import warnings

    from hawkeye_lite.model import VLProcessor
    from hawkeye_lite.prompts import THINK, chat_text

    other = shutil.copytree(q3, tmp_path / "other")
    template = json.loads((other / "chat_template.json").read_text())["chat_template"]
    # a template that drops the system turn (some community templates do)
    template = template.replace(
        "{% for message in messages %}", "{% for message in messages if message.role != 'system' %}"
    )
    (other / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    proc = VLProcessor.from_pretrained(str(other))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert proc.prompt_text(THINK) == (chat_text(THINK), "")
        assert proc.prompt_text(THINK) == (chat_text(THINK), "")
    assert len(caught) == 1 and str(other) in str(caught[0].message) and "at character" in str(caught[0].message)


def test_a_thinking_checkpoint_answers_from_inside_its_opened_think_block(tmp_path, demo_dir):
    """Qwen3-VL -Thinking templates end the prompt with "<think>\\n": hawkeye's prompt does too,
    the rewards and the parser read that prefix + the completion, the warm start's targets leave
    it out, and the run's warm start, adapter and Scorer keep the template."""
    from hawkeye_lite.config_loader import load_train_config
    from hawkeye_lite.model import VLProcessor
    from hawkeye_lite.prompts import THINK, parse_score
    from hawkeye_lite.scorer import Scorer
    from hawkeye_lite.trainer import Trainer

    think = build_tiny_model(tmp_path / "thinking", arch="qwen3_vl", seed=2, thinking=True)
    policy = load_policy(model_config(think, quantization="none"))
    batch = policy.encode(images(2), THINK)
    assert batch.assistant_prefix == "<think>\n"
    opened = policy.tokenizer("<|im_start|>assistant\n<think>\n", add_special_tokens=False)["input_ids"]
    assert batch.input_ids[0, -len(opened) :].tolist() == opened
    r = generate_rollouts(policy, images(2), num_generations=2, max_new_tokens=6, temperature=1.0, seeds=[1, 2])
    assert all(t.startswith("<think>\n") for t in r.texts)
    # what the completion ids decode to is the text after the prefix
    decoded = policy.tokenizer.decode(
        r.completion_ids[0][r.completion_mask[0].bool()].tolist(), skip_special_tokens=True
    )
    assert r.texts[0] == "<think>\n" + decoded
    del policy

    run = tmp_path / "run"
    cfg = load_train_config(
        None,
        [
            f"output_dir={run}",
            f"model.name_or_path={think}",
            "tiny_model.build=false",
            f"data.train=[demo:{demo_dir}]",
            "eval.before=false",
            "eval.after=false",
            "optim.batch_size=2",
            "rollout.num_generations=2",
            "rollout.max_new_tokens=24",
            "optim.max_steps=2",
            "optim.warmup_steps=1",
            "logging.progress=false",
            "logging.plot=false",
            "rollout.prompt=think",
            "reward.require_think=true",
            "sft.target=mos",
            "sft.steps=80",
            "sft.lr=5e-3",
            "sft.batch_size=2",
            f"model.device={DEVICE}",
        ],
    )
    result = Trainer(cfg).run()
    assert result.steps == 2
    assert VLProcessor.from_pretrained(str(run / "sft-base")).prompt_text(THINK)[1] == "<think>\n"
    # 40 supervised steps on targets without the opened "<think>": the answers now close the
    # block and rate, which the format check can only pass when it sees prefix + completion
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s["event"] == "step"]
    assert steps[0]["format_rate"] > 0.5, steps[0]
    out = Scorer.from_pretrained(run, max_new_tokens=24).score(images(2), samples=2)
    for res in out:
        assert all(t.startswith("<think>\n") for t in res.texts)
        assert res.ok and any(parse_score(t) is not None for t in res.texts), res.texts
