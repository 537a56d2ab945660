"""The tiny random Qwen2.5-VL: tests, benches and the CPU demo train it offline.

`build_tiny_model` writes a randomly initialised checkpoint folder (config, weights, a byte-level
BPE tokenizer trained on the task's own sentences, the image processor) that loads through the
same `model.load_policy` path as a real checkpoint. For the demo (`tiny_model.*`) the folder is
built once at model.name_or_path with its vision stand-in pretrained (tiny_vision.py), and reused
only when it was built with the same settings (recorded in it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from .config import ConfigError, TrainConfig
from .model import CHAT_TEMPLATE, SPECIAL_TOKENS, _write_preprocessor_config
from .prompts import THINK

# ----------------------------------------------------------------------------- the model


def build_tokenizer(vocab_size: int):
    """Byte-level BPE trained offline on a few sentences of the task's own language, so the
    tiny model's tokens look like a real tokenizer's (multi-byte merges, Qwen special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .prompts import NO_THINK

    corpus = [THINK.system, THINK.question, NO_THINK.system, NO_THINK.question]
    corpus += [
        f"<think> The image is {w}. </think><answer>{s}</answer>"
        for w in ("sharp", "blurry", "noisy", "dark", "clean")
        for s in ("1.25", "2.50", "3.42", "4.00", "4.87")
    ]
    corpus += ["0 1 2 3 4 5 6 7 8 9 . quality rating poor fair good excellent"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def qwen3_vl_chat_template(*, thinking: bool = False) -> str:
    """A chat template with the conventions of the published Qwen3-VL ones, for images and text:
    ChatML, no system turn unless one is given, "Picture N: " before each image with
    add_vision_id, and the Thinking checkpoints' generation prompt, which opens <think>."""
    opening = "<think>\n" if thinking else ""
    return (
        "{% set n = namespace(image=0) %}"
        "{% for message in messages %}"
        "<|im_start|>{{ message.role }}\n"
        "{% if message.content is string %}{{ message.content }}"
        "{% else %}{% for part in message.content %}"
        "{% if part.type == 'image' or 'image' in part %}{% set n.image = n.image + 1 %}"
        "{% if add_vision_id %}Picture {{ n.image }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif 'text' in part %}{{ part.text }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n" + opening + "{% endif %}"
    )


def build_tiny_model(
    out_dir: Union[str, Path],
    *,
    seed: int = 0,
    arch: str = "qwen2_5_vl",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vision_depth: int = 2,
    vision_hidden_size: int = 32,
    vision_heads: int = 2,
    tokenizer_vocab: int = 400,
    min_pixels: int = 56 * 56,
    max_pixels: int = 112 * 112,
    init_std: float = 0.1,
    lm_head_scale: float = 8.0,
    tie_embeddings: bool = False,
    thinking: bool = False,
) -> Path:
    """Write a randomly initialised Qwen2.5-VL (or Qwen2-VL / Qwen3-VL with arch="qwen2_vl" /
    "qwen3_vl") with its
    tokenizer and processor to `out_dir` as a standard Hugging Face checkpoint folder
    (config.json, model.safetensors, tokenizer, preprocessor_config.json). Deterministic for a
    given seed. Returns the folder. thinking=True (Qwen3-VL only) writes the chat template of
    the -Thinking checkpoints, whose generation prompt opens a <think> block."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if thinking and arch != "qwen3_vl":
        raise ValueError("build_tiny_model: thinking=True is a Qwen3-VL convention (arch='qwen3_vl')")

    head_dim = hidden_size // num_heads
    if head_dim * num_heads != hidden_size or head_dim % 2:
        raise ValueError(f"build_tiny_model: hidden_size {hidden_size} must split into {num_heads} heads of even size")
    half = head_dim // 2  # mrope splits the rotary half-dimension into temporal/height/width
    mrope_section = [half - 2 * (half // 3), half // 3, half // 3]
    patch = 16 if arch == "qwen3_vl" else 14

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(tokenizer_vocab)
    if arch == "qwen3_vl":
        # As the Qwen3 tokenizers: <think> and </think> are single, non-special tokens, and the
        # chat template lives beside the processor (chat_template.json), not in the tokenizer.
        tokenizer.add_tokens(["<think>", "</think>"])
        tokenizer.chat_template = None
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    # Like the real checkpoints, the embedding has a few more rows than the tokenizer has tokens.
    vocab_size = (len(tokenizer) + 63) // 64 * 64

    text_config = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        initializer_range=init_std,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope_section},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision_common = dict(
        depth=vision_depth,
        num_heads=vision_heads,
        patch_size=patch,
        spatial_merge_size=2,
        temporal_patch_size=2,
        initializer_range=init_std,
    )
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig as config_cls
        from transformers import Qwen2_5_VLForConditionalGeneration as model_cls

        vision_config = dict(
            vision_common,
            hidden_size=vision_hidden_size,
            intermediate_size=2 * vision_hidden_size,
            out_hidden_size=hidden_size,
            window_size=56,
            fullatt_block_indexes=[vision_depth - 1],
        )
    elif arch == "qwen2_vl":
        from transformers import Qwen2VLConfig as config_cls
        from transformers import Qwen2VLForConditionalGeneration as model_cls

        vision_config = dict(vision_common, embed_dim=vision_hidden_size, hidden_size=hidden_size, mlp_ratio=2)
    elif arch == "qwen3_vl":
        from transformers import Qwen3VLConfig as config_cls
        from transformers import Qwen3VLForConditionalGeneration as model_cls

        # As the published ones: head_dim explicit, interleaved mrope, DeepStack from every tower
        # layer here (the 2B/4B take layers 5, 11, 17 of 24), a learned position grid.
        text_config.update(head_dim=head_dim)
        text_config["rope_parameters"] = dict(text_config["rope_parameters"], mrope_interleaved=True)
        vision_config = dict(
            vision_common,
            hidden_size=vision_hidden_size,
            intermediate_size=2 * vision_hidden_size,
            out_hidden_size=hidden_size,
            num_position_embeddings=256,
            deepstack_visual_indexes=list(range(vision_depth)),
        )
    else:
        raise ValueError(f"build_tiny_model: arch must be 'qwen2_5_vl', 'qwen2_vl' or 'qwen3_vl', got {arch!r}")
    config = config_cls(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=tie_embeddings,  # the small Qwen3-VL (2B, 4B) and Qwen2.5-VL-3B tie them
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    # With the usual 0.02 init a model this small ignores its input (every image gets the same
    # greedy answer). A wider init and lm_head make generations depend on the image and the
    # adapter, which the tests rely on.
    with torch.no_grad():
        if not tie_embeddings:  # tied: the embeddings are the output layer, left as initialised
            model.lm_head.weight.mul_(lm_head_scale)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    if arch == "qwen3_vl":  # patch 16, mean and std 0.5 (the published preprocessor_config.json)
        image_processor = Qwen2VLImageProcessorPil(
            min_pixels=min_pixels * 64 // 49,
            max_pixels=max_pixels * 64 // 49,
            patch_size=16,
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
        )
        _write_preprocessor_config(out_dir, image_processor, processor_class="Qwen3VLProcessor")
        template = {"chat_template": qwen3_vl_chat_template(thinking=thinking)}
        Path(out_dir, "chat_template.json").write_text(json.dumps(template, indent=2) + "\n")
    else:
        image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
        _write_preprocessor_config(out_dir, image_processor)
    return out_dir


# ----------------------------------------------------------------------------- the demo's folder


def tiny_settings(cfg: TrainConfig) -> dict:
    """What the tiny model is a function of (recorded in it, checked before reuse)."""
    from dataclasses import asdict

    return {"tiny_model": {k: v for k, v in asdict(cfg.tiny_model).items() if k != "build"}}


def looks_like_hub_id(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None and not name.startswith(("runs/", "./", "../"))


def build_demo_model(path: Path, cfg: TrainConfig, log: Optional[Callable[[str], None]] = None) -> Path:
    """The tiny random Qwen2.5-VL the demo trains (written once, at model.name_or_path)."""
    from .runfolder import write_settings

    t = cfg.tiny_model
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")  # removed at start if a kill leaves it
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(
        tmp,
        seed=t.seed,
        hidden_size=t.hidden_size,
        num_layers=t.num_layers,
        num_heads=t.num_heads,
        intermediate_size=t.intermediate_size,
        vision_depth=t.vision_depth,
        vision_hidden_size=t.vision_hidden_size,
        min_pixels=t.min_pixels,
        max_pixels=t.max_pixels,
    )
    if t.vision_pretrain_steps > 0:  # a random tower sees no quality cues: give it low-level features
        from .tiny_vision import pretrain_tiny_vision

        pretrain_tiny_vision(
            tmp, steps=t.vision_pretrain_steps, lr=t.vision_pretrain_lr, n_scenes=t.vision_pretrain_scenes, log=log
        )
    write_settings(tmp, tiny_settings(cfg))
    try:
        os.replace(tmp, path)
    except OSError:  # built by another process meanwhile: theirs is identical (same settings)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def ensure_demo_model(cfg: TrainConfig, run_dir: Path, log) -> None:
    """Build the tiny model when the config asks for it and it is missing; rebuild one inside
    this run's folder that was built with other settings; refuse to touch one outside it."""
    from .runfolder import describe, differences, read_settings

    path = Path(cfg.model.name_or_path)
    if path.is_dir() and cfg.tiny_model.build and read_settings(path) is not None:
        saved = read_settings(path)
        # Models built before the recipe's lr and scenes were settings were built with these.
        for key, value in (("vision_pretrain_lr", 2e-3), ("vision_pretrain_scenes", 1280)):
            saved.get("tiny_model", {}).setdefault(key, value)
        diffs = differences(saved, tiny_settings(cfg))
        if diffs:
            inside = path.resolve().is_relative_to(run_dir.resolve())
            if not inside:  # may be another run's base: never rebuild it behind its back
                raise ConfigError(
                    f"model.name_or_path: {path} is a tiny model built with other settings "
                    f"({describe(diffs)}); delete it or point model.name_or_path elsewhere"
                )
            log.info(f"rebuilding the tiny demo model at {path}: {describe(diffs)}")
            shutil.rmtree(path)
    if not path.exists() and cfg.tiny_model.build and not looks_like_hub_id(cfg.model.name_or_path):
        log.info(f"building the tiny demo model at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        build_demo_model(path, cfg, log=log.info)
