"""The policy: a Qwen2.5-VL / Qwen2-VL checkpoint, optionally 4-bit (QLoRA), with a LoRA adapter.

`load_policy(ModelConfig)` is the only way a model is loaded, for a hub checkpoint and for the
tiny random model that `tiny_model.build_tiny_model` writes (which is how the CPU tests exercise the real
path). The processor is an image-only one of our own: without torchvision, transformers'
Qwen2.5-VL processor refuses to build (it wants a video processor) and AutoProcessor quietly
returns a bare tokenizer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from .config import ModelConfig
from .prompts import THINK, PromptTemplate, assistant_prefix, chat_messages, chat_text, get_prompt

# Qwen's special tokens, in Qwen's order. The vision ones must never be sampled: a random
# model happily emits <|image_pad|>, and the next forward then fails on a token/feature mismatch.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
IMAGE_TOKEN = "<|image_pad|>"

# Same ChatML the Qwen-VL templates produce for text and image content.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

ADAPTER_CONFIG = "adapter_config.json"
HAWKEYE_META = "hawkeye.json"  # which ModelConfig / prompt produced a saved adapter


# ----------------------------------------------------------------------------- processor


class VLProcessor:
    """Tokenizer + Qwen2-VL image processor (PIL backend, no torchvision), images only.

    `__call__` turns images and chat texts (one <|image_pad|> per image) into left-padded
    model inputs, widening each <|image_pad|> to that image's number of visual tokens.
    """

    def __init__(
        self, tokenizer, image_processor, *, min_pixels: Optional[int] = None, max_pixels: Optional[int] = None
    ):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        # Left padding keeps every prompt's last token in the last column, where decoding starts.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = "<|endoftext|>"
        self.image_token_id = self._token_id(IMAGE_TOKEN)
        self.merge_size = int(image_processor.merge_size)
        self.size_override = None
        self.source = "the tokenizer"  # named in the chat-template warning
        self._prompt_texts: dict = {}
        if min_pixels is not None or max_pixels is not None:
            size = dict(image_processor.size)
            if min_pixels is not None:
                size["shortest_edge"] = int(min_pixels)
            if max_pixels is not None:
                size["longest_edge"] = int(max_pixels)
            self.size_override = size

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer: has no {token} token; is this a Qwen2-VL / Qwen2.5-VL tokenizer?")
        return int(token_id)

    @classmethod
    def from_pretrained(
        cls, path: str, *, min_pixels: Optional[int] = None, max_pixels: Optional[int] = None
    ) -> "VLProcessor":
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        tokenizer = AutoTokenizer.from_pretrained(path)
        if not tokenizer.chat_template:
            # Qwen2.5-VL and Qwen3-VL releases keep the template in the processor's
            # chat_template.json, which AutoTokenizer does not read; saving the tokenizer with it
            # carries it into the runs' merged warm starts.
            tokenizer.chat_template = _processor_chat_template(path)
        # Qwen3-VL ships the same image processor (transformers maps qwen3_vl to it), with patch 16.
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
        out = cls(tokenizer, image_processor, min_pixels=min_pixels, max_pixels=max_pixels)
        out.source = str(path)
        saved = Path(path, "preprocessor_config.json")
        if saved.is_file():
            out.processor_class = json.loads(saved.read_text()).get("processor_class", out.processor_class)
        return out

    processor_class = "Qwen2_5_VLProcessor"  # what preprocessor_config.json names (Qwen3VLProcessor for Qwen3-VL)

    def save_pretrained(self, out_dir: Union[str, Path]) -> None:
        self.tokenizer.save_pretrained(str(out_dir))
        _write_preprocessor_config(out_dir, self.image_processor, self.size_override, self.processor_class)

    def prompt_text(self, prompt: PromptTemplate) -> tuple:
        """(chat text, assistant prefix) for `prompt`: hawkeye's ChatML, ending with whatever
        the checkpoint's chat template opens the answer with ("<think>\n" on Qwen3-VL Thinking
        checkpoints). A template that writes the conversation itself differently gets one
        warning and hawkeye's text, so training and scoring prompts stay byte-identical."""
        if prompt not in self._prompt_texts:
            prefix = ""
            template = self.tokenizer.chat_template
            if isinstance(template, dict):  # several named templates: the default one
                template = template.get("default")
            if template:
                try:
                    rendered = self.tokenizer.apply_chat_template(
                        chat_messages(prompt),
                        chat_template=template,
                        tokenize=False,
                        add_generation_prompt=True,
                        add_vision_id=bool(prompt.image_prefix),
                    )
                    prefix = assistant_prefix(rendered, prompt)
                except Exception as e:  # a template error must not stop scoring: say it, use ours
                    import warnings

                    warnings.warn(
                        f"{self.source}: the chat template does not render hawkeye's {prompt.name!r} prompt as "
                        f"ChatML ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        "hawkeye uses its own ChatML text",
                        stacklevel=2,
                    )
            self._prompt_texts[prompt] = (chat_text(prompt, prefix), prefix)
        return self._prompt_texts[prompt]

    def num_image_tokens(self, image_grid_thw: torch.Tensor) -> List[int]:
        return (image_grid_thw.prod(-1) // self.merge_size**2).tolist()

    def process_image(self, image) -> dict:
        """One image's vision inputs: pixel_values [patches, D] and image_grid_thw [1, 3]. The image
        processor treats every image on its own, so concatenating these is what a batched call
        gives (the Scorer prepares images in background threads with it)."""
        vision = self.image_processor(images=[self._presize(image)], return_tensors="pt", **self._size())
        return {"pixel_values": vision["pixel_values"], "image_grid_thw": vision["image_grid_thw"]}

    def _size(self) -> dict:
        return {"size": self.size_override} if self.size_override else {}

    def _presize(self, image):
        """The image at the size the processor resizes it to, resized the way it does (PIL, its
        filter): the processor's own resize is then a copy, and its array conversions run on the
        small image instead of the photo (a third of a 12 MP JPEG's preparation time). The same
        pixel values either way (tests/test_model.py compares them)."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        ip = self.image_processor
        size = self.size_override or ip.size
        limits = dict(
            factor=int(ip.patch_size) * self.merge_size,
            min_pixels=int(size["shortest_edge"]),
            max_pixels=int(size["longest_edge"]),
        )
        height, width = smart_resize(image.height, image.width, **limits)
        if (width, height) == image.size or smart_resize(height, width, **limits) != (height, width):
            return image  # nothing to do, or a size the processor would not keep (extreme aspect ratios)
        return image.resize((width, height), resample=int(ip.resample))

    def __call__(self, images: Sequence, texts: Sequence[str], *, vision: Optional[Sequence[dict]] = None) -> dict:
        """`vision`: the images' `process_image` outputs, computed earlier (the images are then
        only counted)."""
        if len(images) != sum(t.count(IMAGE_TOKEN) for t in texts):
            raise ValueError(
                f"processor: {len(images)} images for {sum(t.count(IMAGE_TOKEN) for t in texts)} {IMAGE_TOKEN} slots"
            )
        if vision is None:
            vision = self.image_processor(images=list(images), return_tensors="pt", **self._size())
        else:
            vision = {key: torch.cat([v[key] for v in vision], 0) for key in ("pixel_values", "image_grid_thw")}
        counts = iter(self.num_image_tokens(vision["image_grid_thw"]))
        expanded = []
        for text in texts:
            pieces = text.split(IMAGE_TOKEN)
            out = pieces[0]
            for piece in pieces[1:]:
                out += IMAGE_TOKEN * next(counts) + piece
            expanded.append(out)
        enc = self.tokenizer(expanded, padding=True, return_tensors="pt", add_special_tokens=False)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "pixel_values": vision["pixel_values"],
            "image_grid_thw": vision["image_grid_thw"],
            # get_rope_index wants the modality of every token: 1 = image.
            "mm_token_type_ids": (enc["input_ids"] == self.image_token_id).int(),
        }


def _processor_chat_template(path: str) -> Optional[str]:
    """The chat template a checkpoint (folder or hub id) keeps beside its processor, if any."""
    from transformers.utils import cached_file

    for name in ("chat_template.jinja", "chat_template.json"):
        try:
            found = cached_file(path, name, _raise_exceptions_for_missing_entries=False)
        except OSError:
            found = None
        if found:
            text = Path(found).read_text(encoding="utf-8")
            return json.loads(text).get("chat_template") if name.endswith(".json") else text
    return None


def _write_preprocessor_config(
    out_dir, image_processor, size_override=None, processor_class: str = "Qwen2_5_VLProcessor"
) -> None:
    # Written in the layout of the released Qwen2.5-VL checkpoints, so the tiny model's
    # processor is read through exactly the code that reads a real one.
    size = dict(size_override or image_processor.size)
    config = {
        "min_pixels": int(size["shortest_edge"]),
        "max_pixels": int(size["longest_edge"]),
        "patch_size": int(image_processor.patch_size),
        "temporal_patch_size": int(image_processor.temporal_patch_size),
        "merge_size": int(image_processor.merge_size),
        "image_mean": [float(x) for x in image_processor.image_mean],
        "image_std": [float(x) for x in image_processor.image_std],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": processor_class,
    }
    Path(out_dir, "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")


# ----------------------------------------------------------------------------- loading


def _resolve_device(device: Optional[str]) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.device: {device} was asked for but CUDA is not available")
    return device


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)


def _resolve_attn(name: str, device: torch.device, dtype: torch.dtype) -> str:
    if name != "auto":
        if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError(
                "model.attn_implementation: flash_attention_2 needs the flash-attn package (pip install 'hawkeye-lite[flash]')"
            )
        return name
    usable = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
    return "flash_attention_2" if usable and importlib.util.find_spec("flash_attn") is not None else "sdpa"


class ModelLoadError(FileNotFoundError, ValueError):
    """The model named by the user cannot be loaded (no such folder, not a model, offline hub id)."""


def _looks_like_path(name: str) -> bool:
    # "runs/dmeo" is a hub id in form, but when ./runs exists it is a mistyped folder (and asking
    # the hub would take half a minute of retries offline before failing anyway).
    first = name.split("/", 1)[0]
    return (
        name.startswith(("/", "./", "../", "~"))
        or name.count("/") > 1
        or "\\" in name
        or ("/" in name and Path(first).is_dir())
    )


def _model_class(name_or_path: str):
    from transformers import AutoConfig

    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{name_or_path}: is a file, not a model folder")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{name_or_path}: not a Hugging Face model folder (no config.json)")
    elif _looks_like_path(name_or_path):
        raise ModelLoadError(f"{name_or_path}: no such model folder")
    try:
        model_type = AutoConfig.from_pretrained(name_or_path).model_type
    except (OSError, ValueError) as e:  # HFValidationError is a ValueError; offline / 404 an OSError
        if path.exists():
            raise ModelLoadError(f"{name_or_path}/config.json: cannot read it ({str(e).splitlines()[0]})") from None
        raise ModelLoadError(
            f"{name_or_path}: not a local folder, and not loadable as a hub model id "
            f"({str(e).splitlines()[0][:200]}); check the path, or download the model first"
        ) from None
    if model_type == "qwen2_5_vl":
        from transformers import Qwen2_5_VLForConditionalGeneration as cls
    elif model_type == "qwen2_vl":
        from transformers import Qwen2VLForConditionalGeneration as cls
    elif model_type == "qwen3_vl":
        from transformers import Qwen3VLForConditionalGeneration as cls
    else:
        raise ValueError(
            f"model.name_or_path: {name_or_path} is a {model_type!r} model; "
            "only qwen2_5_vl, qwen2_vl and qwen3_vl are supported"
        )
    return cls


def _local_path(name_or_path: str) -> str:
    # Absolute, so an adapter saved later records a base path that works from any directory.
    return str(Path(name_or_path).resolve()) if Path(name_or_path).is_dir() else name_or_path


def load_policy(cfg: ModelConfig, *, trainable: bool = True) -> "Policy":
    """Load model + processor as `cfg` says. trainable=False loads for inference (eval mode,
    adapter frozen, no gradient checkpointing)."""
    from transformers import BitsAndBytesConfig

    device = _resolve_device(cfg.device)
    dtype = _resolve_dtype(cfg.dtype, device)
    name = _local_path(cfg.name_or_path)
    kwargs = dict(
        dtype=dtype,
        attn_implementation=_resolve_attn(cfg.attn_implementation, device, dtype),
        device_map={"": str(device)},
    )
    if cfg.quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            # The vision tower is small and precision-sensitive; lm_head feeds the fused loss
            # kernels, which read its weight directly. In transformers 5.x these must be the
            # full module paths ("visual" alone no longer matches).
            llm_int8_skip_modules=["model.visual", "lm_head"],
        )
    model = _model_class(name).from_pretrained(name, **kwargs)
    processor = VLProcessor.from_pretrained(name, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    return wrap_policy(model, processor, cfg, device=device, dtype=dtype, trainable=trainable)


def wrap_policy(
    model: nn.Module,
    processor: VLProcessor,
    cfg: ModelConfig,
    *,
    device: torch.device,
    dtype: torch.dtype,
    trainable: bool = True,
) -> "Policy":
    """Freeze the base, turn on gradient checkpointing and attach (or load) the LoRA adapter, as
    `cfg` says. Split from load_policy so a model built in code (bench/memory.py builds a
    7B-shaped NF4 model directly on the GPU) goes through exactly the same steps."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if trainable and cfg.quantization == "nf4" and device.type == "cpu":
        # bitsandbytes repacks 4-bit weights for its AVX512-BF16 CPU kernel on the first
        # no-grad eval forward (a rollout), and that kernel has no backward: the next training
        # forward then fails ("a view of a leaf Variable ... in-place"). Keep the plain layout.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False

    if trainable:
        if cfg.quantization == "nf4" and dtype != torch.bfloat16:
            # Freezes the base and upcasts every non-4-bit weight to fp32, which fp16 training
            # needs for stable norms. Skipped under bf16: there it only costs memory (the vision
            # tower, embeddings and lm_head in fp32 are ~3.5 GB extra on a 7B model).
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        for p in model.parameters():
            p.requires_grad_(False)
        if cfg.gradient_checkpointing:
            # Non-reentrant checkpointing works with frozen inputs and LoRA without the
            # enable_input_require_grads hack. (5.2x renamed the method; 5.17 has the old name.)
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False

    lora = cfg.lora
    if lora is not None and lora.adapter_path:
        model = PeftModel.from_pretrained(model, lora.adapter_path, is_trainable=trainable)
    elif lora is not None and trainable:
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_regex(),
                bias="none",
                task_type="CAUSAL_LM",
            ),
        )
    if not trainable:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return Policy(model=model, processor=processor, config=cfg, device=device, dtype=dtype)


# ----------------------------------------------------------------------------- policy


@dataclass
class PromptBatch:
    """Encoded prompts for B images (left padded) plus their multimodal rope positions."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    pixel_values: torch.Tensor  # [num_patches, patch_dim], all images concatenated
    image_grid_thw: torch.Tensor  # [B, 3]
    position_ids: torch.Tensor  # [3, B, L] (temporal, height, width)
    rope_deltas: torch.Tensor  # [B, 1]: text position of token i is i + delta after the image
    # What the chat template already wrote of the answer ("<think>\n" on Thinking checkpoints):
    # the rewards and the parser read it + the completion, a supervised target omits it.
    assistant_prefix: str = ""

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class Policy:
    model: nn.Module  # the HF model, or a PeftModel around it
    processor: VLProcessor
    config: ModelConfig
    device: torch.device
    dtype: torch.dtype

    # --- structure

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def hf_model(self) -> nn.Module:
        """The Qwen*ForConditionalGeneration, under any PEFT wrapper."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def backbone(self) -> nn.Module:
        """The Qwen*VLModel holding `.visual` and `.language_model`."""
        return self.hf_model.model

    @property
    def lm_head_weight(self) -> torch.Tensor:
        """[V, H]; what the fused loss kernels multiply the completion hidden states with."""
        return self.hf_model.lm_head.weight

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    def trainable_parameters(self) -> List[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """The reference policy = the base model with the LoRA adapter switched off."""
        if not self.has_adapter:
            raise RuntimeError("reference(): this policy has no LoRA adapter, so there is no separate reference model")
        with self.model.disable_adapter():
            yield

    def stop_token_ids(self) -> List[int]:
        tok = self.tokenizer
        ids = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"), tok.eos_token_id}
        eos = getattr(self.hf_model.generation_config, "eos_token_id", None)
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
        return sorted(i for i in ids if i is not None)

    def suppressed_token_ids(self) -> List[int]:
        """Vision tokens, plus the embedding rows past the tokenizer (padding in real checkpoints)."""
        ids = [self.tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
        ids = [i for i in ids if i is not None and i != self.tokenizer.unk_token_id]
        return sorted(set(ids) | set(range(len(self.tokenizer), self.lm_head_weight.shape[0])))

    # --- encoding

    def encode(
        self, images: Sequence, prompt: Union[PromptTemplate, str] = THINK, *, vision: Optional[Sequence[dict]] = None
    ) -> PromptBatch:
        """PIL RGB images -> one chat prompt per image, left padded, with mrope positions.
        `vision`: the images' `processor.process_image` outputs, if already computed."""
        prompt = get_prompt(prompt) if isinstance(prompt, str) else prompt
        text, prefix = self.processor.prompt_text(prompt)
        enc = self.processor(images, [text] * len(images), vision=vision)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        position_ids, rope_deltas = self.backbone.get_rope_index(
            enc["input_ids"],
            mm_token_type_ids=enc["mm_token_type_ids"],
            image_grid_thw=enc["image_grid_thw"],
            attention_mask=enc["attention_mask"],
        )
        return PromptBatch(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            pixel_values=enc["pixel_values"].to(self.dtype),
            image_grid_thw=enc["image_grid_thw"],
            position_ids=position_ids,
            rope_deltas=rope_deltas.reshape(-1, 1),
            assistant_prefix=prefix,
        )

    # --- forward pieces (shared by rollouts and the trainer)

    def image_features(self, batch: PromptBatch) -> torch.Tensor:
        """Vision tower over every image of the batch once: [num_image_tokens, H]."""
        return self.vision_features(batch.pixel_values, batch.image_grid_thw)

    def vision_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """The tower (and merger) on already-encoded patches: [sum of merged tokens, H]; for
        Qwen3-VL [tokens, 1 + k, H]: the merged output, then the k DeepStack features (from
        intermediate tower layers, added to the first k decoder layers' hidden states at the
        image positions). Split, repeated and concatenated along dim 0 alike."""
        out = self.backbone.get_image_features(pixel_values, image_grid_thw)
        feats = _flat(getattr(out, "pooler_output", out))
        deep = getattr(out, "deepstack_features", None)
        if deep:  # transformers 5.24: per layer a tuple of per-image tensors; 5.17: one tensor per layer
            feats = torch.stack([feats, *(_flat(d) for d in deep)], 1)
        return feats

    def embed(self, input_ids: torch.Tensor, image_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        embeds = self.backbone.get_input_embeddings()(input_ids)
        if image_features is not None:
            mask = input_ids == self.processor.image_token_id
            if int(mask.sum()) != image_features.shape[0]:
                raise ValueError(f"embed: {int(mask.sum())} image tokens but {image_features.shape[0]} image features")
            main = image_features[:, 0] if image_features.dim() == 3 else image_features
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), main.to(embeds.dtype))
        return embeds

    def prompt_forward(
        self, input_ids: torch.Tensor, image_features, attention_mask, position_ids, cache=None
    ) -> torch.Tensor:
        """Decoder stack on token ids whose image tokens take `image_features` (the output of
        `image_features`/`vision_features`; Qwen3-VL's DeepStack features go in with them)."""
        extra = {}
        if image_features is not None and image_features.dim() == 3 and image_features.shape[1] > 1:
            extra = dict(
                visual_pos_masks=input_ids == self.processor.image_token_id,
                deepstack_visual_embeds=[f.to(self.dtype) for f in image_features[:, 1:].unbind(1)],
            )
        return self.language_forward(
            self.embed(input_ids, image_features), attention_mask, position_ids, cache, **extra
        )

    def language_forward(self, inputs_embeds, attention_mask, position_ids, cache=None, **extra) -> torch.Tensor:
        """Decoder stack only (no lm_head): final normed hidden states [N, L, H]. `extra`: what
        the model takes beside the embeddings (Qwen3-VL's DeepStack inputs, see prompt_forward)."""
        lm = self.backbone.language_model
        kwargs = {_cache_kwarg(lm): cache} if cache is not None else {}
        # transformers 5.17 drops the cache in every checkpointed layer of a model in train mode,
        # gradients or not (5.24: only with gradients). Without gradients checkpointing saves
        # nothing, so it is off for such a pass and the cache is filled on both versions.
        keep_cache = cache is not None and not torch.is_grad_enabled()
        with _checkpointing_off(lm.layers) if keep_cache else contextlib.nullcontext():
            out = lm(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=cache is not None,
                **kwargs,
                **extra,
            )
        return out.last_hidden_state

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.hf_model.config.get_text_config())

    def completion_hidden_states(
        self,
        batch: PromptBatch,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        image_features: Optional[torch.Tensor] = None,
        *,
        shared_prefix: Optional[bool] = None,
    ) -> torch.Tensor:
        """Hidden states that predict each completion token: [B*G, T, H], row b*G+g belongs to
        image b. hidden @ lm_head_weight.T gives the logits of completion_ids. The vision tower
        runs once per image; its features are shared by the image's G rows. `image_features`
        (the output of `image_features(batch)`) skips the vision tower entirely: the trainer
        computes them once per step and reuses them for every pass.

        shared_prefix (None = model.shared_prefix where it applies): the prompt runs once per image and its keys and
        values are widened to the image's G rows, which then run only their completion tokens;
        gradients reach the prompt through the widening (it sums the G rows' contributions).
        The same function as running every row's prompt again (tests/test_model.py checks both
        the values and the gradients), at a fraction of the cost when the prompt is longer than
        the completion (the demo: 308 prompt tokens vs <= 24). It does not apply when G = 1 or
        under gradient checkpointing with gradients on (transformers drops the cache there)."""
        completion_ids = completion_ids.to(self.device)
        completion_mask = completion_mask.to(self.device)
        n, t = completion_ids.shape
        b = batch.batch_size
        if n % b:
            raise ValueError(f"completion_hidden_states: {n} completions is not a multiple of {b} prompts")
        g = n // b
        if image_features is not None:
            feats = image_features
        else:
            vision_grad = any(p.requires_grad for p in self.backbone.visual.parameters())
            with torch.set_grad_enabled(vision_grad and torch.is_grad_enabled()):
                feats = self.image_features(batch)
        checkpointed = (
            torch.is_grad_enabled()
            and self.model.training
            and any(getattr(layer, "gradient_checkpointing", False) for layer in self.backbone.language_model.layers)
        )
        if shared_prefix is None:
            shared_prefix = self.config.shared_prefix and g > 1 and not checkpointed
        elif shared_prefix and checkpointed:
            raise ValueError(
                "completion_hidden_states: shared_prefix needs the KV cache, which gradient "
                "checkpointing turns off while gradients are on"
            )
        # Completion positions continue the text positions after the prompt (same on all 3 axes).
        steps = batch.attention_mask.sum(1, keepdim=True) + batch.rope_deltas  # [B, 1]
        comp_pos = (
            (steps.repeat_interleave(g, 0) + torch.arange(t, device=completion_ids.device))
            .unsqueeze(0)
            .expand(3, -1, -1)
        )
        full_mask = torch.cat(
            [batch.attention_mask.repeat_interleave(g, 0), completion_mask.to(batch.attention_mask.dtype)], 1
        )
        if shared_prefix:
            cache = self.new_cache()
            prompt_hidden = self.prompt_forward(batch.input_ids, feats, batch.attention_mask, batch.position_ids, cache)
            cache.batch_repeat_interleave(g)
            hidden = self.language_forward(self.embed(completion_ids), full_mask, comp_pos, cache)
            # The prompt's last position predicts completion token 0; completion token i predicts i+1.
            return torch.cat([prompt_hidden[:, -1:].repeat_interleave(g, 0), hidden[:, :-1]], 1)

        per_image = torch.split(feats, self.processor.num_image_tokens(batch.image_grid_thw))
        feats = torch.cat([f for f in per_image for _ in range(g)], 0)
        ids = torch.cat([batch.input_ids.repeat_interleave(g, 0), completion_ids], 1)
        pos = torch.cat([batch.position_ids.repeat_interleave(g, 1), comp_pos], 2)
        hidden = self.prompt_forward(ids, feats, full_mask, pos)
        prompt_len = batch.input_ids.shape[1]
        return hidden[:, prompt_len - 1 : prompt_len - 1 + t]

    # --- saving

    def save_pretrained(
        self,
        out_dir: Union[str, Path],
        *,
        prompt: Union[PromptTemplate, str] = THINK,
        max_new_tokens: Optional[int] = None,
    ) -> Path:
        """Adapter (PEFT format, safetensors) + processor + a small hawkeye.json naming the
        prompt, the completion length it was trained with and the model settings, which is what
        Scorer.from_pretrained reads back."""
        if not self.has_adapter:
            raise RuntimeError("save_pretrained: this policy has no LoRA adapter to save")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out_dir), safe_serialization=True)
        self.processor.save_pretrained(out_dir)
        meta = {"model": asdict(self.config), "prompt": prompt if isinstance(prompt, str) else prompt.name}
        if max_new_tokens is not None:
            meta["max_new_tokens"] = int(max_new_tokens)
        meta["model"]["lora"] = None if self.config.lora is None else {**asdict(self.config.lora), "adapter_path": None}
        meta["model"]["name_or_path"] = _local_path(self.config.name_or_path)
        (out_dir / HAWKEYE_META).write_text(json.dumps(meta, indent=2) + "\n")
        return out_dir


@contextlib.contextmanager
def _checkpointing_off(layers):
    on = [layer for layer in layers if getattr(layer, "gradient_checkpointing", False)]
    for layer in on:
        layer.gradient_checkpointing = False
    try:
        yield
    finally:
        for layer in on:
            layer.gradient_checkpointing = True


def _flat(x) -> torch.Tensor:
    return torch.cat(list(x), 0) if isinstance(x, (list, tuple)) else x


def _cache_kwarg(module: nn.Module) -> str:
    # transformers renamed `past_key_values` to `cache` in 5.2x; the GPU image still has 5.17.
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def read_meta(path: Union[str, Path]) -> Optional[dict]:
    meta = Path(path) / HAWKEYE_META
    return json.loads(meta.read_text()) if meta.is_file() else None


__all__ = ["ModelLoadError", "load_policy", "Policy", "PromptBatch", "VLProcessor", "read_meta"]
