"""Peak GPU memory of one complete training step of a Qwen2.5-VL-7B-shaped QLoRA policy.

    python bench/memory.py                          # GPU: 7B shape, NF4, LoRA r=64, G=8, 256 tokens, 448x448
    python bench/memory.py --preset 3b --json out.json --markdown out.md
    python bench/memory.py --preset tiny --device cpu --max-new-tokens 8   # the code path, on a CPU
    python bench/memory.py --grad-accum 8           # the 7B config's step: 8 images x G=8 = 64 rows decoded together

No download: the real Qwen2.5-VL-7B-Instruct configuration is written below, the model is built
on the meta device and then materialised one module at a time directly on the GPU, each
language-model linear layer quantised to NF4 as soon as its random bf16 weight exists (the
peak while building is one layer's bf16 weight on top of what is already quantised). The same
modules stay in bf16 as `load_policy` leaves them (vision tower, embeddings, lm_head), then
`hawkeye_lite.model.wrap_policy` attaches LoRA exactly as for a real checkpoint.

The step is the trainer's own `Trainer.rl_step` with the 7B config (configs/qwen2.5-vl-7b-koniq.yaml:
beta > 0, perception loss on, 8-bit AdamW, gradient checkpointing), by default one micro-batch of one
image and G rollouts; --grad-accum K makes it the step-wide case: the K x batch_size images of the
step rolled out together (--rollout-batch-size images at a time), K learning micro-batches. Every completion is forced to the full --max-new-tokens (stop tokens are never
sampled), the worst case for memory. Phases are timed and their peak memory read by wrapping
the functions the trainer calls (vision tower, rollouts, the three language-model passes, the
fused loss, gradient clipping, the optimizer step); what runs between the fused loss and the
gradient clipping is the backward pass. Step 1 allocates the optimizer states; step 2 shows
the steady state.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

# Run as a script, this file's folder is sys.path[0]: drop it so that `import kernels` (Hugging
# Face's package, which transformers and bitsandbytes probe for) can never find this folder's files.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from hawkeye_lite.config_loader import load_train_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GiB = 2**30

# Qwen/Qwen2.5-VL-7B-Instruct and -3B-Instruct config.json, the fields that set shapes.
PRESETS = {
    "7b": dict(
        config="configs/qwen2.5-vl-7b-koniq.yaml",
        text=dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            vocab_size=152064,
            mrope_section=[16, 24, 24],
        ),
        vision=dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=3584,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
        ),
        tie_word_embeddings=False,
    ),
    "3b": dict(
        config="configs/qwen2.5-vl-3b-koniq.yaml",
        text=dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            vocab_size=151936,
            mrope_section=[16, 24, 24],
        ),
        vision=dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=2048,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
        ),
        tie_word_embeddings=True,
    ),
    # The same code path at a size a CPU runs in seconds (tests/test_bench_memory.py).
    "tiny": dict(
        config="configs/qwen2.5-vl-7b-koniq.yaml",
        text=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=1024,
            mrope_section=[4, 2, 2],
        ),
        vision=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            window_size=56,
            fullatt_block_indexes=[1],
        ),
        tie_word_embeddings=False,
    ),
}


# Qwen3-VL (issue #27): the published dense configs' shapes (docs/dev/qwen3-vl.md cites them).
# head_dim is explicit (4B: 32 heads x 128 = 4096 > hidden 2560), interleaved mrope [24, 20, 20],
# patch 16, DeepStack from three tower layers, a learned 48 x 48 position grid.
_Q3_VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_heads=16,
    num_position_embeddings=2304,
    deepstack_visual_indexes=[5, 11, 17],
)
PRESETS.update(
    {
        "qwen3-4b": dict(
            arch="qwen3_vl",
            config="configs/qwen3-vl-4b-koniq.yaml",
            text=dict(
                hidden_size=2560,
                intermediate_size=9728,
                num_hidden_layers=36,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=128,
                vocab_size=151936,
                mrope_section=[24, 20, 20],
            ),
            vision=dict(_Q3_VISION, depth=24, out_hidden_size=2560),
            tie_word_embeddings=True,
        ),
        "qwen3-8b": dict(
            arch="qwen3_vl",
            config="configs/qwen3-vl-8b-koniq.yaml",
            text=dict(
                hidden_size=4096,
                intermediate_size=12288,
                num_hidden_layers=36,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=128,
                vocab_size=151936,
                mrope_section=[24, 20, 20],
            ),
            vision=dict(
                _Q3_VISION,
                depth=27,
                hidden_size=1152,
                intermediate_size=4304,
                out_hidden_size=4096,
                deepstack_visual_indexes=[8, 16, 24],
            ),
            tie_word_embeddings=False,
        ),
        "qwen3-tiny": dict(
            arch="qwen3_vl",
            config="configs/qwen3-vl-4b-koniq.yaml",
            text=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
                vocab_size=1024,
                mrope_section=[4, 2, 2],
            ),
            vision=dict(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=64,
                num_position_embeddings=256,
                deepstack_visual_indexes=[0, 1],
            ),
            tie_word_embeddings=False,
        ),
    }
)


def twin_preset(preset: dict, vocab_size: int) -> dict:
    """One decoder layer and one vision block, same head sizes and rope: cheap to build for real."""
    vision = dict(preset["vision"], depth=1, intermediate_size=8)
    vision.update(
        {"deepstack_visual_indexes": [0]} if preset.get("arch") == "qwen3_vl" else {"fullatt_block_indexes": [0]}
    )
    return dict(
        preset,
        text=dict(preset["text"], num_hidden_layers=1, intermediate_size=8, vocab_size=vocab_size),
        vision=vision,
    )


def image_processor(preset: dict, pixels: int):
    """The preset's image processor (no torchvision): Qwen3-VL's has patch 16 and mean/std 0.5."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if preset.get("arch") == "qwen3_vl":
        low = 4096
        return Qwen2VLImageProcessorPil(
            min_pixels=low, max_pixels=max(pixels, low), patch_size=16, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ), low
    return Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=max(pixels, 3136)), 3136


def qwen_config(preset: dict, tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    from hawkeye_lite.model import SPECIAL_TOKENS

    qwen3 = preset.get("arch") == "qwen3_vl"
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    t = dict(preset["text"])
    mrope = t.pop("mrope_section")
    rope = {"rope_type": "default", "rope_theta": 5_000_000.0 if qwen3 else 1_000_000.0, "mrope_section": mrope}
    if qwen3:
        rope["mrope_interleaved"] = True
    text = dict(
        t,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        initializer_range=0.02,
        rope_parameters=rope,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    if qwen3:
        vision = dict(
            preset["vision"],
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            hidden_act="gelu_pytorch_tanh",
            in_channels=3,
            initializer_range=0.02,
        )
        return Qwen3VLConfig(
            text_config=text,
            vision_config=vision,
            tie_word_embeddings=preset["tie_word_embeddings"],
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
    vision = dict(
        preset["vision"],
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        hidden_act="silu",
        in_chans=3,
        tokens_per_second=2,
        initializer_range=0.02,
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=preset["tie_word_embeddings"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )


def build_model(
    config, twin_config, *, device: torch.device, dtype: torch.dtype, nf4: bool, std: float = 0.02
) -> nn.Module:
    """Random Qwen2.5-VL (or Qwen3-VL) of `config`, built on meta and materialised module by module
    on `device`; with nf4, every linear layer of the language model is quantised as soon as it is
    created. `twin_config`: the same heads and rope with one layer, for the rotary buffers."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

    cls = Qwen3VLForConditionalGeneration if config.model_type == "qwen3_vl" else Qwen2_5_VLForConditionalGeneration
    with torch.device("meta"):
        model = cls(config).to(dtype)
    # Rotary inverse frequencies are buffers computed in __init__ (lost on meta). They depend only
    # on head sizes and rope settings, so take them from a one-layer twin built for real.
    twin = dict(cls(twin_config).named_buffers())
    gen = torch.Generator(device=device).manual_seed(0)
    quantised = 0
    for name, module in list(model.named_modules()):
        is_lm_linear = isinstance(module, nn.Linear) and ".language_model." in f".{name}" and "lm_head" not in name
        if nf4 and is_lm_linear:
            _replace(model, name, _nf4_linear(module, device=device, dtype=dtype, std=std, gen=gen))
            quantised += 1
            continue
        for pname, p in list(module.named_parameters(recurse=False)):
            norm = "Norm" in type(module).__name__
            if pname == "bias":
                value = torch.zeros(p.shape, device=device, dtype=dtype)
            elif norm:
                value = torch.ones(p.shape, device=device, dtype=dtype)
            else:
                value = torch.randn(p.shape, device=device, dtype=dtype, generator=gen) * std
            setattr(module, pname, nn.Parameter(value, requires_grad=False))
        for bname, _ in list(module.named_buffers(recurse=False)):
            full = f"{name}.{bname}" if name else bname
            if full not in twin:
                raise RuntimeError(f"build_model: no way to initialise buffer {full} (not in the one-layer twin)")
            module._buffers[bname] = twin[full].to(device)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"build_model: still on meta: {left[:3]}")
    if nf4:
        model.is_loaded_in_4bit = True  # what peft reads to wrap Linear4bit with its 4-bit LoRA layer
    model.generation_config.eos_token_id = config.get_text_config().eos_token_id
    return model.eval()


def _nf4_linear(linear: nn.Linear, *, device, dtype, std, gen) -> nn.Module:
    import bitsandbytes as bnb

    q = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=dtype,
        compress_statistics=True,
        quant_type="nf4",
        quant_storage=torch.uint8,
        device="meta",
    )
    w = torch.randn(linear.out_features, linear.in_features, device=device, dtype=dtype, generator=gen) * std
    # Params4bit.to() quantises (double-quantised NF4, block 64: what BitsAndBytesConfig in load_policy asks for).
    q.weight = bnb.nn.Params4bit(
        w, requires_grad=False, compress_statistics=True, quant_type="nf4", quant_storage=torch.uint8, module=q
    ).to(device)
    del w
    if linear.bias is not None:
        q.bias = nn.Parameter(torch.zeros(linear.out_features, device=device, dtype=dtype), requires_grad=False)
    return q


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


# ----------------------------------------------------------------------------- phase memory


class Phases:
    """Splits a run into named phases; for each: wall time, peak allocated / reserved memory
    during it, and memory still allocated at its end."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.rows: list = []
        self.current = "setup"
        self.step = 0
        self.t = time.perf_counter()
        self._reset()

    def _reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def mark(self, name: str) -> None:
        """End the current phase, begin `name`."""
        row = {"step": self.step, "phase": self.current}
        if self.cuda:
            torch.cuda.synchronize()
            row.update(
                peak_alloc_gib=torch.cuda.max_memory_allocated() / GiB,
                peak_reserved_gib=torch.cuda.max_memory_reserved() / GiB,
                alloc_end_gib=torch.cuda.memory_allocated() / GiB,
            )
        now = time.perf_counter()
        row["ms"] = (now - self.t) * 1e3
        self.rows.append(row)
        self.t = now
        self.current = name
        self._reset()

    def wrap(self, fn, names, after: str):
        """fn as a phase; successive calls within a step take successive names from `names`."""
        calls = {}

        def wrapped(*args, **kwargs):
            i = calls.get(self.step, 0)
            calls[self.step] = i + 1
            self.mark(names[min(i, len(names) - 1)])
            out = fn(*args, **kwargs)
            self.mark(after)
            return out

        return wrapped


def instrument(trainer, phases: Phases):
    """Wrap the functions Trainer.rl_step calls so each becomes a phase (the bench only; the
    trainer is unchanged). Returns a function that undoes the module-level wraps."""
    import hawkeye_lite.decode as decode_mod
    import hawkeye_lite.experience as experience_mod
    import hawkeye_lite.rollout as rollout_mod
    import hawkeye_lite.update as update_mod

    policy = trainer.policy
    glue = "(glue)"
    k = trainer.cfg.optim.grad_accum  # the step's micro-batches: each runs its own passes, in this order
    policy.image_features = phases.wrap(
        policy.image_features, ["vision tower (original)"] * k + ["vision tower (degraded)"], glue
    )
    policy.completion_hidden_states = phases.wrap(
        policy.completion_hidden_states,
        ["reference forward (adapter off)", "degraded forward (no grad)"] * k + ["policy forward"],
        glue,
    )
    saved = (
        rollout_mod.generate_rollouts,
        experience_mod.token_stats,
        update_mod.policy_loss_from_hidden,
        torch.nn.utils.clip_grad_norm_,
        decode_mod.rollout_weights,
    )
    rollout_mod.generate_rollouts = phases.wrap(rollout_mod.generate_rollouts, ["rollouts"], "rewards + advantages")
    real_weights = decode_mod.rollout_weights

    @contextlib.contextmanager
    def weights_phase(policy, mode, **kw):
        # The dense rollout copy, when one is made, is a phase of its own.
        dense = decode_mod.resolve_rollout_weights(policy, mode, **kw) == "bf16"
        if dense:
            phases.mark("rollout weights (dequantise)")
        with real_weights(policy, mode, **kw) as resolved:
            if dense:
                phases.mark(glue)
            yield resolved

    decode_mod.rollout_weights = weights_phase
    experience_mod.token_stats = phases.wrap(experience_mod.token_stats, ["reference log-probs"], "encode degraded")
    update_mod.policy_loss_from_hidden = phases.wrap(
        update_mod.policy_loss_from_hidden, ["fused loss (fwd + grad)"], "backward"
    )
    clip = torch.nn.utils.clip_grad_norm_
    torch.nn.utils.clip_grad_norm_ = phases.wrap(clip, ["grad clip"], glue)
    trainer.optimizer.step = phases.wrap(trainer.optimizer.step, ["optimizer step"], glue)

    def undo() -> None:
        (
            rollout_mod.generate_rollouts,
            experience_mod.token_stats,
            update_mod.policy_loss_from_hidden,
            torch.nn.utils.clip_grad_norm_,
            decode_mod.rollout_weights,
        ) = saved

    return undo


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="7b")
    ap.add_argument("--config", default=None, help="trainer YAML (default: the preset's config)")
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--no-nf4", action="store_true", help="keep the language model in --dtype (no QLoRA)")
    ap.add_argument("--lora-r", type=int, default=64)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--batch-size", type=int, default=1, help="images per micro-batch")
    ap.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        help="micro-batches per step; all batch_size x grad_accum images are rolled out together",
    )
    ap.add_argument(
        "--rollout-batch-size", type=int, default=None, help="images decoded together (default: all of the step)"
    )
    ap.add_argument("--rollout-weights", default="nf4", choices=["auto", "nf4", "bf16"])
    ap.add_argument("--engine", default="auto", choices=["auto", "graph", "eager", "loop"])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument(
        "--allow-stop", action="store_true", help="let completions end at a stop token (default: full length)"
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more trainer config overrides")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image

    from hawkeye_lite.data import IQARecord
    from hawkeye_lite.data.demo import render_scene
    from hawkeye_lite.model import VLProcessor, wrap_policy
    from hawkeye_lite.tiny_model import build_tokenizer
    from hawkeye_lite.trainer import Trainer
    from hawkeye_lite.trainset import Dataset

    preset = PRESETS[args.preset]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    pixels = args.image_size * args.image_size
    tmp = Path(tempfile.mkdtemp(prefix="hawkeye-memory-"))
    overrides = [
        f"output_dir={tmp / 'run'}",
        f"model.device={device.type}",
        f"model.dtype={str(dtype).split('.')[-1]}",
        f"model.quantization={'none' if args.no_nf4 else 'nf4'}",
        f"model.lora.r={args.lora_r}",
        f"model.lora.alpha={2 * args.lora_r}",
        f"model.max_pixels={max(pixels, 4096 if preset.get('arch') == 'qwen3_vl' else 3136)}",
        f"rollout.num_generations={args.num_generations}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        f"optim.batch_size={args.batch_size}",
        f"optim.grad_accum={args.grad_accum}",
        f"optim.max_steps={args.steps}",
        "optim.epochs=null",
        f"rollout.batch_size={args.rollout_batch_size or 'null'}",
        f"rollout.weights={args.rollout_weights}",
        f"rollout.engine={args.engine}",
        "logging.progress=false",
    ]
    if device.type != "cuda":
        overrides.append("optim.optimizer=adamw")  # 8-bit AdamW is CUDA-only
    cfg = load_train_config(ROOT / (args.config or preset["config"]), overrides + list(args.set))

    info = {
        "preset": args.preset,
        "device": str(device),
        "dtype": str(dtype),
        "nf4": not args.no_nf4,
        "lora_r": args.lora_r,
        "G": args.num_generations,
        "max_new_tokens": args.max_new_tokens,
        "image": f"{args.image_size}x{args.image_size}",
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "rollout_batch_size": args.rollout_batch_size,
        "rollout_weights": args.rollout_weights,
        "engine": args.engine,
        "optimizer": cfg.optim.optimizer,
        "gradient_checkpointing": cfg.model.gradient_checkpointing,
        "beta": cfg.objective.beta,
        "perception": cfg.objective.perception.enabled,
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{p.name} ({p.total_memory / GiB:.0f} GiB)"
        torch.cuda.reset_peak_memory_stats()
    print(json.dumps(info))

    tokenizer = build_tokenizer(400)
    vision_processor, low = image_processor(preset, pixels)
    processor = VLProcessor(tokenizer, vision_processor, min_pixels=low, max_pixels=max(pixels, low))
    t0 = time.perf_counter()
    twin = qwen_config(twin_preset(preset, (len(tokenizer) + 63) // 64 * 64), tokenizer)
    model = build_model(qwen_config(preset, tokenizer), twin, device=device, dtype=dtype, nf4=not args.no_nf4)
    build_s = time.perf_counter() - t0
    mem = {}
    if device.type == "cuda":
        mem["build_peak_gib"] = torch.cuda.max_memory_allocated() / GiB
        mem["weights_gib"] = torch.cuda.memory_allocated() / GiB
    torch.manual_seed(cfg.seed)
    policy = wrap_policy(model, processor, cfg.model, device=device, dtype=dtype, trainable=True)
    policy.model.train()
    n_train = sum(p.numel() for p in policy.trainable_parameters())
    if device.type == "cuda":
        mem["weights_and_lora_gib"] = torch.cuda.memory_allocated() / GiB
    info.update(build_s=round(build_s, 1), trainable_params=n_train, **{k: round(v, 3) for k, v in mem.items()})
    print(
        f"built in {build_s:.1f} s; trainable (LoRA) parameters {n_train / 1e6:.1f} M; "
        + ", ".join(f"{k} {v:.2f}" for k, v in mem.items())
    )
    if not args.allow_stop:
        stops = policy.stop_token_ids()
        base = policy.suppressed_token_ids
        policy.suppressed_token_ids = lambda: sorted(set(base()) | set(stops))

    records = []
    for i in range(args.batch_size * args.grad_accum):
        path = tmp / f"image{i}.png"
        rng = np.random.default_rng([7, i])
        Image.fromarray(np.asarray(render_scene(rng, args.image_size, args.image_size))).save(path)
        records.append(
            IQARecord(
                id=f"bench{i}",
                image=str(path),
                mos=3.0,
                mos_raw=3.0,
                mos_range=(1.0, 5.0),
                dataset="bench",
                split="train",
            )
        )
    trainer = Trainer(cfg, run_dir=tmp / "run")
    trainer.data = Dataset(records, [])
    trainer.policy = policy
    o = cfg.optim
    trainer.optimizer = trainer.make_optimizer(policy.trainable_parameters(), o.lr, o.betas, o.weight_decay)

    phases = Phases(device)
    undo = instrument(trainer, phases)
    steps = []
    try:
        run_steps(trainer, phases, args.steps, steps)
    finally:
        undo()
        shutil.rmtree(tmp, ignore_errors=True)  # the generated image and the run folder
    rows = fold_glue([r for r in phases.rows if r["step"] > 0 and r["phase"] != "setup"])
    result = {"info": info, "steps": steps, "phases": rows}
    if device.type == "cuda":
        result["peak_alloc_gib"] = max(r["peak_alloc_gib"] for r in rows)
        result["peak_reserved_gib"] = max(r["peak_reserved_gib"] for r in rows)
    md = to_markdown(result)
    print(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(md + "\n")
    return result


def fold_glue(rows: list) -> list:
    """Merge the short '(glue)' stretches between wrapped calls into the phase before them."""
    out = []
    for r in rows:
        if r["phase"] == "(glue)" and out and out[-1]["step"] == r["step"]:
            prev = out[-1]
            prev["ms"] += r["ms"]
            for k in ("peak_alloc_gib", "peak_reserved_gib"):
                if k in r:
                    prev[k] = max(prev[k], r[k])
            if "alloc_end_gib" in r:
                prev["alloc_end_gib"] = r["alloc_end_gib"]
        else:
            out.append(dict(r))
    return out


def run_steps(trainer, phases: Phases, n: int, out: list) -> None:
    for s in range(n):
        phases.step = s + 1
        phases.mark("load + encode images")
        t = time.perf_counter()
        rec = trainer.rl_step()
        phases.mark("setup")
        out.append(
            {
                "step": s + 1,
                "seconds": round(time.perf_counter() - t, 3),
                "completion_len": rec["completion_len"],
                "loss": rec["loss"],
                "grad_norm": rec["grad_norm"],
            }
        )
        print(json.dumps(out[-1]), flush=True)


def to_markdown(result: dict) -> str:
    info = result["info"]
    head = (
        f"{info.get('gpu', info['device'])}, torch {info['torch']}: preset {info['preset']}, "
        f"{'NF4 + ' if info['nf4'] else ''}LoRA r={info['lora_r']}, B={info['batch_size']} x grad_accum "
        f"{info.get('grad_accum', 1)} x G={info['G']} (rollouts {info.get('rollout_batch_size') or 'all'} images at a time, "
        f"{info.get('rollout_weights', 'nf4')} weights, engine {info.get('engine', 'loop')}), "
        f"{info['max_new_tokens']} completion tokens, {info['image']} image, optimizer {info['optimizer']}, "
        f"beta {info['beta']}, perception {'on' if info['perception'] else 'off'}"
    )
    lines = [
        head,
        "",
        "| step | phase | ms | peak allocated GiB | peak reserved GiB | allocated after GiB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["phases"]:
        if "peak_alloc_gib" in r:
            lines.append(
                f"| {r['step']} | {r['phase']} | {r['ms']:.0f} | {r['peak_alloc_gib']:.2f} | "
                f"{r['peak_reserved_gib']:.2f} | {r['alloc_end_gib']:.2f} |"
            )
        else:
            lines.append(f"| {r['step']} | {r['phase']} | {r['ms']:.0f} | n/a | n/a | n/a |")
    if "peak_alloc_gib" in result:
        lines += [
            "",
            f"Peak allocated {result['peak_alloc_gib']:.2f} GiB, peak reserved {result['peak_reserved_gib']:.2f} GiB "
            f"(weights {info.get('weights_gib', float('nan')):.2f} GiB, + LoRA {info.get('weights_and_lora_gib', float('nan')):.2f} GiB; "
            f"build peak {info.get('build_peak_gib', float('nan')):.2f} GiB).",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
