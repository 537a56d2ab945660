"""Tiny Qwen2.5-VL: build -> save -> load (plain, NF4) -> LoRA forward/backward -> reference."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _tiny import DEVICE, DTYPE, images, model_config, perturb_lora, tiny_model_dir

from hawkeye_lite.config import LoRAConfig, ModelConfig
from hawkeye_lite.model import VLProcessor, load_policy
from hawkeye_lite.prompts import THINK, chat_text
from hawkeye_lite.rollout import generate_rollouts
from hawkeye_lite.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


def lora(**kw):
    return LoRAConfig(**{"r": 4, "alpha": 8, "dropout": 0.0, **kw})


def test_build_writes_a_standard_checkpoint_folder(tiny_dir):
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    ):
        assert (tiny_dir / name).is_file(), name
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    pre = json.loads((tiny_dir / "preprocessor_config.json").read_text())
    # laid out like the released checkpoints' file
    assert pre["image_processor_type"] == "Qwen2VLImageProcessor" and pre["max_pixels"] == 112 * 112


def test_build_is_deterministic_per_seed(tiny_dir, tmp_path):
    same = build_tiny_model(tmp_path / "same", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    reference = (tiny_dir / "model.safetensors").read_bytes()
    assert (same / "model.safetensors").read_bytes() == reference
    assert (other / "model.safetensors").read_bytes() != reference
    assert (same / "tokenizer.json").read_text() == (tiny_dir / "tokenizer.json").read_text()


def test_processor_loads_through_the_real_checkpoint_path(tiny_dir):
    proc = VLProcessor.from_pretrained(str(tiny_dir))
    tok = proc.tokenizer
    for token in ("<|im_start|>", "<|im_end|>", "<|image_pad|>", "<|vision_start|>", "<|endoftext|>"):
        assert len(tok(token, add_special_tokens=False).input_ids) == 1, token
    # The tokenizer's chat template and our ChatML formatter agree.
    messages = [
        {"role": "system", "content": THINK.system},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": THINK.question}]},
    ]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == chat_text(THINK)

    ims = images(2)
    enc = proc(ims, [chat_text(THINK)] * 2)
    n_tokens = proc.num_image_tokens(enc["image_grid_thw"])
    assert (enc["input_ids"] == proc.image_token_id).sum(1).tolist() == n_tokens
    assert n_tokens[0] != n_tokens[1]  # different image sizes ...
    assert enc["attention_mask"][:, -1].all() and not enc["attention_mask"][:, 0].all()  # ... -> left padding
    with pytest.raises(ValueError, match="images"):
        proc(ims, [chat_text(THINK)])
    # min/max pixel overrides reach the image processor
    small = VLProcessor.from_pretrained(str(tiny_dir), max_pixels=56 * 56)
    assert int(small(ims[:1], [chat_text(THINK)])["image_grid_thw"].prod()) <= 16


def test_load_plain(tiny_dir):
    policy = load_policy(model_config(tiny_dir, quantization="none", lora=None), trainable=False)
    assert policy.dtype == getattr(torch, DTYPE) and policy.device.type == torch.device(DEVICE).type
    assert policy.hf_model.config._attn_implementation in ("sdpa", "flash_attention_2")  # auto
    if DEVICE == "cpu":
        assert policy.hf_model.config._attn_implementation == "sdpa"
    assert not any("4bit" in type(m).__name__ for m in policy.model.modules())
    assert not policy.has_adapter and not policy.trainable_parameters()
    with pytest.raises(RuntimeError, match="adapter"):
        with policy.reference():
            pass
    assert policy.lm_head_weight.shape == (policy.hf_model.config.get_text_config().vocab_size, 64)


def test_load_nf4_keeps_vision_and_lm_head_unquantised(tiny_dir):
    import bitsandbytes as bnb

    policy = load_policy(model_config(tiny_dir, quantization="nf4", lora=lora()))
    quantised = [n for n, m in policy.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantised and all(".language_model." in n for n in quantised)
    assert quantised[0] and policy.hf_model.config.quantization_config.bnb_4bit_use_double_quant
    assert policy.hf_model.config.quantization_config.bnb_4bit_quant_type == "nf4"
    assert type(policy.hf_model.lm_head) is torch.nn.Linear
    assert all(not isinstance(m, bnb.nn.Linear4bit) for m in policy.backbone.visual.modules())


def test_lora_targets_language_model_only_unless_vision_asked(tiny_dir):
    lm_only = load_policy(model_config(tiny_dir, quantization="none", lora=lora()))
    names = [n for n, p in lm_only.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and ".language_model." in n for n in names)
    # every projection of every layer is adapted
    assert sum("lora_A" in n for n in names) == 2 * 7

    with_vision = load_policy(model_config(tiny_dir, quantization="none", lora=lora(vision=True)))
    names = [n for n, p in with_vision.model.named_parameters() if p.requires_grad]
    assert any(".visual.blocks." in n for n in names) and all("lora_" in n for n in names)


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_lora_forward_backward_and_reference(tiny_dir, quantization):
    policy = load_policy(model_config(tiny_dir, quantization=quantization, lora=lora()))
    # sample once (eval, no grad) and then train on it: on CPU this is the path that used to
    # break bitsandbytes (weights repacked for inference have no backward)
    rollouts = generate_rollouts(policy, images(2), num_generations=2, max_new_tokens=6, temperature=0)

    with torch.no_grad():
        fresh = policy.completion_hidden_states(rollouts.prompt, rollouts.completion_ids, rollouts.completion_mask)
        with policy.reference():
            ref0 = policy.completion_hidden_states(rollouts.prompt, rollouts.completion_ids, rollouts.completion_mask)
    assert torch.equal(fresh, ref0)  # a new adapter is the identity

    perturb_lora(policy)
    policy.model.train()
    hidden = policy.completion_hidden_states(rollouts.prompt, rollouts.completion_ids, rollouts.completion_mask)
    assert hidden.shape == (4, rollouts.completion_ids.shape[1], 64)
    logp = torch.log_softmax(hidden @ policy.lm_head_weight.T, -1)
    logp = logp.gather(-1, rollouts.completion_ids.unsqueeze(-1)).squeeze(-1)
    (-(logp * rollouts.completion_mask).sum()).backward()

    lora_params = {n: p for n, p in policy.model.named_parameters() if "lora_" in n}
    assert lora_params and all(p.requires_grad for p in lora_params.values())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_params.values())
    frozen = [p for n, p in policy.model.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad and p.grad is None for p in frozen)

    with torch.no_grad():
        with policy.reference():
            ref = policy.completion_hidden_states(rollouts.prompt, rollouts.completion_ids, rollouts.completion_mask)
        again = policy.completion_hidden_states(rollouts.prompt, rollouts.completion_ids, rollouts.completion_mask)
    assert torch.allclose(ref, ref0, atol=1e-5)  # reference = base model, unchanged by the adapter
    assert (ref - again).abs().max() > 1e-3  # adapter on vs off differ
    assert torch.allclose(again, hidden.detach(), atol=1e-5)  # and the adapter came back on


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dir):
    grads = []
    for checkpointing in (False, True):
        cfg = model_config(tiny_dir, quantization="none", lora=lora(), gradient_checkpointing=checkpointing)
        policy = load_policy(cfg)
        perturb_lora(policy)
        policy.model.train()
        batch = policy.encode(images(1))
        ids = torch.tensor([[40, 41, 42, 43]], device=policy.device)
        hidden = policy.completion_hidden_states(batch, ids, torch.ones_like(ids))
        hidden.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.trainable_parameters()]))
    layers = policy.backbone.language_model.layers
    assert all(layer.gradient_checkpointing for layer in layers)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("vision", [False, True])
def test_shared_prefix_forward_matches_the_repeated_prompts(tiny_dir, vision):
    """The prompt once per image, its keys/values widened to the G rows, must give the hidden
    states and the LoRA gradients of running every row's prompt again: left-padded prompts of
    different lengths, completions that end at different lengths, random weights per seed."""
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    print("seed", seed)
    gen = torch.Generator().manual_seed(seed)
    policy = load_policy(
        model_config(tiny_dir, quantization="none", lora=lora(vision=vision), gradient_checkpointing=False)
    )
    perturb_lora(policy, std=0.3, seed=seed % 1000)
    policy.model.train()
    b, g, t = 3, 4, 7
    batch = policy.encode(images(b, seed=seed % 97))
    assert len(set(batch.attention_mask.sum(1).tolist())) > 1  # the prompts really are padded differently
    ids = torch.randint(10, 400, (b * g, t), generator=gen)
    lengths = torch.randint(1, t + 1, (b * g,), generator=gen)
    mask = (torch.arange(t) < lengths[:, None]).long()
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, policy.tokenizer.pad_token_id))
    w = torch.randn(b * g, t, 64, generator=gen, dtype=torch.float64)

    out, grads = {}, {}
    for shared in (False, True):
        policy.model.zero_grad(set_to_none=True)
        h = policy.completion_hidden_states(batch, ids, mask, shared_prefix=shared)
        assert h.shape == (b * g, t, 64)
        ((h.double() * w) * mask[..., None]).sum().backward()
        out[shared] = h.detach()
        grads[shared] = torch.cat([p.grad.flatten() for p in policy.trainable_parameters()])
    sel = mask.bool()
    assert torch.allclose(out[True][sel], out[False][sel], rtol=1e-4, atol=1e-5), (
        (out[True][sel] - out[False][sel]).abs().max()
    )
    assert grads[False].abs().sum() > 0
    # float32 sums in a different order: compare the gradient as a vector (relative error).
    err = float((grads[True] - grads[False]).norm() / grads[False].norm())
    assert err < 1e-4, err
    with torch.no_grad():  # the default (None) takes the shared path for G > 1
        assert torch.allclose(policy.completion_hidden_states(batch, ids, mask)[sel], out[True][sel], atol=1e-6)


def test_shared_prefix_is_refused_under_gradient_checkpointing(tiny_dir):
    policy = load_policy(model_config(tiny_dir, quantization="none", lora=lora(), gradient_checkpointing=True))
    perturb_lora(policy)
    policy.model.train()
    batch = policy.encode(images(2))
    ids = torch.randint(10, 400, (4, 5))
    with pytest.raises(ValueError, match="gradient checkpointing"):
        policy.completion_hidden_states(batch, ids, torch.ones_like(ids), shared_prefix=True)
    # None falls back to the repeated prompts there (transformers would drop the cache) and
    # still takes the shared path without gradients (reference / degraded passes).
    h = policy.completion_hidden_states(batch, ids, torch.ones_like(ids))
    with torch.no_grad():
        h_shared = policy.completion_hidden_states(batch, ids, torch.ones_like(ids))
        h_full = policy.completion_hidden_states(batch, ids, torch.ones_like(ids), shared_prefix=False)
    assert torch.allclose(h.detach(), h_full, atol=1e-5) and torch.allclose(h_shared, h_full, atol=1e-5)


def test_saved_adapter_loads_in_plain_peft(tiny_dir, tmp_path):
    policy = load_policy(model_config(tiny_dir, quantization="none", lora=lora()))
    perturb_lora(policy)
    out = policy.save_pretrained(tmp_path / "adapter")
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))  # no pickles

    ids = [[1, 30, 31, 32, 33, 2]]
    with torch.no_grad():
        expected = policy.hf_model(input_ids=torch.tensor(ids, device=policy.device)).logits[0, -1].float().cpu()
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        from transformers import Qwen2_5_VLForConditionalGeneration
        from peft import PeftModel
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained({str(tiny_dir)!r})
        model = PeftModel.from_pretrained(base, {str(out)!r}).eval()
        with torch.no_grad():
            logits = model(input_ids=torch.tensor({ids})).logits[0, -1]
            with model.disable_adapter():
                base_logits = model(input_ids=torch.tensor({ids})).logits[0, -1]
        assert not any(m.startswith("hawkeye_lite") for m in sys.modules)
        print(json.dumps([logits.tolist(), base_logits.tolist()]))
        """
    )
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got, base = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3)
    assert (base - expected).abs().max() > 0.1  # the adapter was really applied

    # training continues from a saved adapter: same weights, trainable again
    resumed = load_policy(model_config(tiny_dir, quantization="none", lora=lora(adapter_path=str(out))))
    saved = {n: p for n, p in policy.model.named_parameters() if "lora_" in n}
    loaded = {n: p for n, p in resumed.model.named_parameters() if "lora_" in n}
    assert saved.keys() == loaded.keys()
    assert all(
        torch.equal(saved[n].detach().cpu(), loaded[n].detach().cpu()) and loaded[n].requires_grad for n in saved
    )


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="model.name_or_path"):
        ModelConfig()
    with pytest.raises(ValueError, match="model.quantization"):
        ModelConfig(name_or_path="x", quantization="int3")
    with pytest.raises(ValueError, match="model.attn_implementation"):
        ModelConfig(name_or_path="x", attn_implementation="fast")
    with pytest.raises(ValueError, match="lora.r"):
        LoRAConfig(r=0)
    with pytest.raises(ValueError, match="model.max_pixels"):
        ModelConfig(name_or_path="x", max_pixels=10)
    assert ModelConfig(name_or_path="x", lora={"r": 8}).lora.r == 8
    with pytest.raises(ValueError, match="model.device"):
        if torch.cuda.is_available():
            raise ValueError("model.device: (skip: CUDA present)")
        load_policy(model_config(tmp_path, device="cuda"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="qwen2_5_vl"):
        load_policy(model_config(tmp_path, quantization="none"))


def test_qwen2_vl_loads_and_generates(tmp_path):
    path = build_tiny_model(tmp_path / "qwen2-vl", arch="qwen2_vl", num_layers=1, vision_depth=1)
    policy = load_policy(model_config(path, quantization="nf4", lora=lora()))
    assert type(policy.hf_model).__name__ == "Qwen2VLForConditionalGeneration"
    ims = images(2)
    shared = generate_rollouts(policy, ims, num_generations=2, max_new_tokens=6, temperature=0)
    naive = generate_rollouts(policy, ims, num_generations=2, max_new_tokens=6, temperature=0, shared_prefix=False)
    assert torch.equal(shared.completion_ids, naive.completion_ids)


@pytest.mark.parametrize("max_pixels", [None, 56 * 56, 448 * 448])
def test_process_image_is_the_image_processor_on_that_image(tiny_dir, gen, max_pixels):
    """process_image (the Scorer's per-image preparation, which resizes before the processor's
    array conversions) gives exactly the pixel values and grid of the processor's own call, over
    random sizes and extreme aspect ratios (where the processor's target size is not stable)."""
    import numpy as np
    from PIL import Image

    proc = VLProcessor.from_pretrained(str(tiny_dir), max_pixels=max_pixels)
    kwargs = {"size": proc.size_override} if proc.size_override else {}
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen)))
    sizes = [tuple(int(x) for x in rng.integers(20, 1200, 2)) for _ in range(12)]
    sizes += [(28, 2000), (2000, 28), (57, 3000), (56, 56), (1, 300)]
    for h, w in sizes:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        try:
            ref = proc.image_processor(images=[im], return_tensors="pt", **kwargs)
        except ValueError as exc:  # e.g. an aspect ratio over 200: process_image refuses it alike
            with pytest.raises(ValueError, match=str(exc)[:20]):
                proc.process_image(im)
            continue
        got = proc.process_image(im)
        assert torch.equal(got["image_grid_thw"], ref["image_grid_thw"]), (h, w)
        assert torch.equal(got["pixel_values"], ref["pixel_values"]), (h, w)


REAL_QWEN25 = Path(__file__).resolve().parents[2] / "shared" / "qwen25vl_real"


@pytest.mark.skipif(not REAL_QWEN25.is_dir(), reason="needs ../shared/qwen25vl_real (the real tokenizer files)")
@pytest.mark.parametrize("size", ["3B", "7B"])
def test_the_real_qwen25_vl_template_renders_every_prompt_as_hawkeye_writes_it(size, tmp_path):
    """The released tokenizer + chat_template.json, read through VLProcessor.from_pretrained:
    the template renders hawkeye's prompts (every preset) byte for byte, with no answer prefix."""
    import warnings

    from hawkeye_lite.presets import PRESETS

    for f in (REAL_QWEN25 / f"Qwen2.5-VL-{size}-Instruct").iterdir():
        (tmp_path / f.name).symlink_to(f)
    proc = VLProcessor.from_pretrained(str(tmp_path))
    assert proc.tokenizer.chat_template
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a mismatch would be a warning
        for prompt in {p.prompt for p in PRESETS.values()} | {THINK}:
            assert proc.prompt_text(prompt) == (chat_text(prompt), ""), prompt.name
