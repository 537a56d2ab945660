"""bench/memory.py (the 24 GB proof) on its tiny preset, on the CPU: the model built on meta and
materialised module by module with NF4 language-model layers, LoRA attached through
wrap_policy, and one full trainer step split into phases. The GPU numbers come from running the
same script on a GPU (bench/RESULTS.md)."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def memory():
    spec = importlib.util.spec_from_file_location("hawkeye_bench_memory", ROOT / "bench" / "memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_build_model_quantises_the_language_model_only(memory):
    import bitsandbytes as bnb
    from transformers import Qwen2_5_VLForConditionalGeneration

    from hawkeye_lite.tiny_model import build_tokenizer

    tok = build_tokenizer(400)
    preset = memory.PRESETS["tiny"]
    config = memory.qwen_config(preset, tok)
    twin = memory.qwen_config(memory.twin_preset(preset, 448), tok)
    model = memory.build_model(config, twin, device=torch.device("cpu"), dtype=torch.float32, nf4=True)
    q = {n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(q) == 7 * preset["text"]["num_hidden_layers"]
    assert all(".language_model.layers." in n for n in q)
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.model.visual.modules())
    assert model.is_loaded_in_4bit
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        assert not t.is_meta, name
        assert torch.isfinite(t.float()).all(), name
    # Rotary buffers equal those of the same model constructed normally.
    reference = dict(Qwen2_5_VLForConditionalGeneration(config).named_buffers())
    for name, b in model.named_buffers():
        torch.testing.assert_close(b, reference[name], rtol=0, atol=0)


def test_one_full_step_in_phases(memory, tmp_path):
    r, tokens = 8, 4
    saved_clip = torch.nn.utils.clip_grad_norm_
    result = memory.main(
        [
            "--preset",
            "tiny",
            "--device",
            "cpu",
            "--max-new-tokens",
            str(tokens),
            "--image-size",
            "56",
            "--steps",
            "1",
            "--lora-r",
            str(r),
            "--json",
            str(tmp_path / "m.json"),
            "--markdown",
            str(tmp_path / "m.md"),
        ]
    )
    assert torch.nn.utils.clip_grad_norm_ is saved_clip  # the instrumentation is undone
    (step,) = result["steps"]
    assert step["completion_len"] == tokens  # stop tokens suppressed: every completion runs to the end
    assert math.isfinite(step["loss"]) and math.isfinite(step["grad_norm"])
    phases = [row["phase"] for row in result["phases"]]
    assert phases == [
        "load + encode images",
        "vision tower (original)",
        "rollouts",
        "rewards + advantages",
        "reference forward (adapter off)",
        "reference log-probs",
        "encode degraded",
        "vision tower (degraded)",
        "degraded forward (no grad)",
        "policy forward",
        "fused loss (fwd + grad)",
        "backward",
        "grad clip",
        "optimizer step",
    ]
    # LoRA on q, k, v, o, gate, up, down of every layer: r * (in + out) each.
    t = memory.PRESETS["tiny"]["text"]
    h, kv = t["hidden_size"], t["num_key_value_heads"] * t["hidden_size"] // t["num_attention_heads"]
    per_layer = r * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + t["intermediate_size"]) + (t["intermediate_size"] + h))
    assert result["info"]["trainable_params"] == per_layer * t["num_hidden_layers"]
    assert (tmp_path / "m.json").is_file() and "| 1 | rollouts |" in (tmp_path / "m.md").read_text()


def test_step_wide_rollouts_in_phases(memory, tmp_path):
    """--grad-accum 2: both micro-batches' images are rolled out in one decode (one rollouts
    phase), with the dense rollout copy made once, then learned on in two micro-batches."""
    result = memory.main(
        [
            "--preset",
            "tiny",
            "--device",
            "cpu",
            "--max-new-tokens",
            "3",
            "--image-size",
            "56",
            "--steps",
            "1",
            "--lora-r",
            "4",
            "--grad-accum",
            "2",
            "--rollout-weights",
            "bf16",
        ]
    )
    phases = [row["phase"] for row in result["phases"]]
    assert phases.count("rollouts") == 1 and phases.count("rollout weights (dequantise)") == 1
    assert phases.index("rollout weights (dequantise)") < phases.index("rollouts")
    assert phases.count("vision tower (original)") == 2 and phases.count("policy forward") == 2
    assert result["steps"][0]["completion_len"] == 3 and math.isfinite(result["steps"][0]["loss"])


def test_rollout_bench_tiny_preset(tmp_path):
    """bench/rollout.py on its tiny preset: every case decodes the forced number of tokens, and
    in fp32 the engine (and the dense rollout copy) reproduce the loop's greedy tokens."""
    spec = importlib.util.spec_from_file_location("hawkeye_bench_rollout", ROOT / "bench" / "rollout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.main(
        [
            "--preset",
            "tiny",
            "--device",
            "cpu",
            "--rows",
            "8,16",
            "--max-new-tokens",
            "5",
            "--lora-r",
            "4",
            "--json",
            str(tmp_path / "r.json"),
            "--markdown",
            str(tmp_path / "r.md"),
        ]
    )
    cases = [(r["rows"], r["case"]) for r in result["results"]]
    assert cases == [(8, "loop"), (8, "engine"), (8, "engine_bf16"), (16, "loop"), (16, "engine"), (16, "engine_bf16")]
    assert all(r["tokens"] == r["rows"] * 5 and r["tokens_per_s"] > 0 for r in result["results"])
    for rows in (8, 16):
        for case in ("engine", "engine_bf16"):
            assert result["greedy"][rows][case]["rows_differing"] == 0
    assert (tmp_path / "r.json").is_file() and "| 16 | engine |" in (tmp_path / "r.md").read_text()


def test_qwen3_presets_have_the_published_sizes_and_one_step_runs(memory, tmp_path):
    """The Qwen3-VL shapes the next GPU call measures (issue #27): on meta, the parameter counts
    of the published 4B / 8B (4.44 B tied, 8.77 B untied); the tiny one runs a whole step."""
    from transformers import Qwen3VLForConditionalGeneration

    from hawkeye_lite.tiny_model import build_tokenizer

    tok = build_tokenizer(400)
    for name, billions, tied in (("qwen3-4b", 4.438, True), ("qwen3-8b", 8.767, False)):
        cfg = memory.qwen_config(memory.PRESETS[name], tok)
        with torch.device("meta"):
            model = Qwen3VLForConditionalGeneration(cfg)
        assert round(sum(p.numel() for p in model.parameters()) / 1e9, 3) == billions, name
        assert cfg.tie_word_embeddings is tied
    result = memory.main(
        ["--preset", "qwen3-tiny", "--device", "cpu", "--max-new-tokens", "4", "--image-size", "64", "--steps", "1"]
        + ["--lora-r", "4", "--json", str(tmp_path / "m.json")]
    )
    (step,) = result["steps"]
    assert step["completion_len"] == 4 and math.isfinite(step["loss"]) and math.isfinite(step["grad_norm"])
