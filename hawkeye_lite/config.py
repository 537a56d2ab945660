"""Typed configuration for hawkeye-lite.

Plain dataclasses with small validation; every error names the offending field so a bad YAML
key or CLI override is found at once. The model / reward sections are used by the Scorer too;
the training sections (data, rollout, objective, optim, sft, eval, logging, checkpoint) and the
top-level `TrainConfig` are read from YAML with `config_loader.load_train_config(path, overrides)`.
Each field's comment is its documentation: docs/config.md is generated from them
(`python -m hawkeye_lite.config_doc`), and a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

QUANTIZATIONS = ("nf4", "none")
DTYPES = ("auto", "bfloat16", "float16", "float32")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")

# Projection names of the Qwen2/Qwen2.5 language model. The vision tower reuses several of
# them (gate/up/down_proj), which is why the LoRA target is a regex anchored on the module path.
LM_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Qwen2.5-VL vision blocks: attn.qkv, attn.proj, mlp.{gate,up,down}_proj; Qwen2-VL: mlp.fc1/fc2.
# Qwen2.5-VL's tower MLP is gate/up/down_proj, Qwen2-VL's fc1/fc2, Qwen3-VL's linear_fc1/linear_fc2.
VISION_TARGET_MODULES = ("qkv", "proj", "gate_proj", "up_proj", "down_proj", "fc1", "fc2", "linear_fc1", "linear_fc2")


def _check_choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices)}")


@dataclass
class LoRAConfig:
    """The LoRA adapter that training updates (PEFT; on the NF4 base under QLoRA)."""

    r: int = 64  # LoRA rank
    alpha: int = 128  # LoRA scaling numerator: the update is scaled by alpha / r
    dropout: float = 0.05  # LoRA dropout of the RL adapter (the warm start's is sft.lora_dropout)
    # Projection names inside the language model (and inside the vision blocks when vision=True).
    target_modules: Tuple[str, ...] = LM_TARGET_MODULES
    vision: bool = False  # also adapt the vision tower's blocks (more memory, rarely needed)
    vision_target_modules: Tuple[str, ...] = VISION_TARGET_MODULES  # projection names inside the vision blocks
    adapter_path: Optional[str] = None  # continue from an existing PEFT adapter folder

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"lora.r: must be a positive integer, got {self.r!r}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha: must be positive, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout: must be in [0, 1), got {self.dropout!r}")
        self.target_modules = tuple(self.target_modules)
        self.vision_target_modules = tuple(self.vision_target_modules)
        if not self.target_modules:
            raise ValueError("lora.target_modules: must name at least one module")
        for name in self.target_modules + self.vision_target_modules:
            if not name.replace("_", "").isalnum():
                raise ValueError(f"lora.target_modules: {name!r} is not a plain module name")

    def target_regex(self) -> str:
        """PEFT matches a string target against the full module name, so this picks only the
        language model's projections (and the vision blocks' when asked)."""
        parts = [rf".*\.language_model\..*\.({'|'.join(self.target_modules)})"]
        if self.vision:
            parts.append(rf".*\.visual\.blocks\..*\.({'|'.join(self.vision_target_modules)})")
        return "|".join(f"(?:{p})" for p in parts)


@dataclass
class ModelConfig:
    """The base model and how it is loaded (also used by the Scorer)."""

    name_or_path: str = ""  # the base model: a Hugging Face hub id or a local folder
    quantization: str = "nf4"  # nf4: 4-bit NF4 base with double quantisation (QLoRA); none
    dtype: str = "auto"  # auto: bfloat16 on CUDA (float16 without bf16 support), float32 on CPU
    lora: Optional[LoRAConfig] = field(default_factory=LoRAConfig)  # None: no adapter at all
    gradient_checkpointing: bool = True  # recompute activations in backward: less memory, more time
    # The loss passes (policy, reference, degraded) run each prompt once per image and widen its
    # keys/values to the G rollouts, instead of once per rollout: same values and gradients,
    # several times cheaper when the prompt is long. false reproduces runs made before it.
    shared_prefix: bool = True
    attn_implementation: str = "auto"  # auto: flash_attention_2 when importable on CUDA, else sdpa
    device: Optional[str] = None  # None: cuda when available, else cpu
    min_pixels: Optional[int] = None  # an image's fewest pixels after resizing (None: the checkpoint's processor's)
    max_pixels: Optional[int] = None  # its most pixels (None: the processor's; 448*448 = 200704 is the paper's)

    def __post_init__(self) -> None:
        if not isinstance(self.name_or_path, str) or not self.name_or_path:
            raise ValueError("model.name_or_path: required (a Hugging Face hub id or a model folder)")
        _check_choice("model.quantization", self.quantization, QUANTIZATIONS)
        _check_choice("model.dtype", self.dtype, DTYPES)
        _check_choice("model.attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        if isinstance(self.lora, dict):
            self.lora = LoRAConfig(**self.lora)
        if self.lora is not None and not isinstance(self.lora, LoRAConfig):
            raise ValueError(f"model.lora: expected a LoRAConfig or None, got {type(self.lora).__name__}")
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 28 * 28):
                raise ValueError(f"model.{name}: must be an integer >= 784 (one 28x28 cell), got {value!r}")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(
                f"model.min_pixels ({self.min_pixels}) is larger than model.max_pixels ({self.max_pixels})"
            )


@dataclass
class RewardConfig:
    """SPEC §1.1. `functions` picks which rewards are summed."""

    functions: Tuple[str, ...] = (
        "accuracy",
        "format",
        "repetition",
    )  # the rewards summed: accuracy, format, repetition
    tau: float = 0.30  # accuracy: exp(-|clamp(y_hat) - y| / tau)
    score_min: float = 1.0  # the answer scale's lower end (answers are clamped to it)
    score_max: float = 5.0  # the answer scale's upper end
    format_value: float = 0.8  # format: this reward when the whole completion has the required format
    require_think: bool = True  # format reward asks for <think>…</think> before <answer>
    repetition_max_count: int = 5  # a word occurring more often than this is penalised
    repetition_penalty: float = 0.25  # repetition: minus this per over-repeated word or character
    repetition_floor: float = -2.0  # repetition: the penalty's lowest total

    def __post_init__(self) -> None:
        self.functions = tuple(self.functions)
        known = ("accuracy", "format", "repetition")
        for name in self.functions:
            _check_choice("reward.functions", name, known)
        if not self.functions:
            raise ValueError("reward.functions: at least one reward function is needed")
        if self.tau <= 0:
            raise ValueError(f"reward.tau: must be positive, got {self.tau!r}")
        if self.score_max <= self.score_min:
            raise ValueError(f"reward.score_max ({self.score_max}) must exceed reward.score_min ({self.score_min})")
        if self.repetition_max_count < 1:
            raise ValueError(f"reward.repetition_max_count: must be >= 1, got {self.repetition_max_count!r}")
        if self.repetition_floor > 0:
            raise ValueError(f"reward.repetition_floor: must be <= 0, got {self.repetition_floor!r}")


# ============================================================================= training config
#
# Every section is a dataclass whose defaults are the CPU demo (configs/demo.yaml spells the
# same values out, and a test keeps the two equal), so `hawkeye-lite train` with no arguments
# needs no file at all. The paper-scale configs override what differs.

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "adamw_8bit")
PROMPTS = ("think", "no_think")
ROLLOUT_WEIGHTS = ("auto", "nf4", "bf16")
ROLLOUT_ENGINES = ("auto", "graph", "eager", "loop")


class ConfigError(ValueError):
    """A bad configuration; the message starts with the dotted key at fault."""


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


@dataclass
class TinyModelConfig:
    """Build a tiny random Qwen2.5-VL at model.name_or_path when that folder does not exist
    (the offline demo). Ignored when the folder exists or `build` is false."""

    build: bool = True  # build it when model.name_or_path does not exist
    seed: int = 0  # its random weights' seed
    hidden_size: int = 64  # language model width
    num_layers: int = 2  # language model layers
    num_heads: int = 4  # attention heads
    intermediate_size: int = 128  # MLP width
    vision_depth: int = 2  # vision tower blocks
    vision_hidden_size: int = 32  # vision tower width
    min_pixels: int = 56 * 56  # its processor's fewest pixels per image after resizing
    max_pixels: int = 112 * 112  # its processor's most pixels per image (112 x 112 = 16 visual tokens)
    # Steps of low-level-statistics regression (per image and per visual token) for the random
    # vision tower, a stand-in for a pretrained one (hawkeye_lite.tiny_vision); 0 keeps it random.
    vision_pretrain_steps: int = 3000
    vision_pretrain_lr: float = 2e-3  # its Adam learning rate (cosine decay, short warm-up)
    vision_pretrain_scenes: int = 1280  # synthetic scenes (6 images each, never the demo's) it learns from

    def __post_init__(self) -> None:
        _require(self.vision_pretrain_steps >= 0, "tiny_model.vision_pretrain_steps", "must be >= 0")
        _require(self.vision_pretrain_lr > 0, "tiny_model.vision_pretrain_lr", "must be > 0")
        _require(self.vision_pretrain_scenes >= 2, "tiny_model.vision_pretrain_scenes", "must be >= 2")


@dataclass
class DataConfig:
    """Training and held-out data, as data specs (docs/data.md)."""

    # Data specs (hawkeye_lite.data.load_records), plus `demo:DIR` for the generated demo set
    # (written to DIR on first use).
    train: Tuple[str, ...] = ("demo:data/demo",)
    # Held-out specs for the periodic and final SRCC/PLCC; empty = the `eval_split` records of `train`.
    eval: Tuple[str, ...] = ()
    eval_split: str = "test"  # the split of the held-out specs evaluated: train | val | test
    on_bad: str = "skip"  # skip (reported) | fail
    # full (decode every image at start) | header (open only) | none. full is the default: it costs
    # 2.7 ms per 1024x768 JPEG on 2 CPU cores (27 s for 10k images, bench/check_images.py) and
    # catches truncated files before the run instead of hours into it.
    check_images: str = "full"
    split_seed: int = 0  # seeded train/test split of datasets without their own

    def __post_init__(self) -> None:
        self.train, self.eval = tuple(self.train), tuple(self.eval)
        _require(len(self.train) > 0, "data.train", "at least one data spec is needed")
        _require(self.on_bad in ("skip", "fail"), "data.on_bad", f"must be skip or fail, got {self.on_bad!r}")
        _require(
            self.check_images in ("full", "header", "none"),
            "data.check_images",
            f"must be full, header or none, got {self.check_images!r}",
        )
        _require(
            self.eval_split in ("train", "val", "test"),
            "data.eval_split",
            f"must be train, val or test, got {self.eval_split!r}",
        )


@dataclass
class RolloutConfig:
    """Sampling the G completions of each training image (the decoding engine: docs/decoding.md)."""

    num_generations: int = 8  # G completions per image
    max_new_tokens: int = 24  # completion length cap (the demo's answers are ~16 tokens)
    temperature: float = 1.0  # sampling temperature of the rollouts (and of their log-probs in the loss)
    top_p: float = 1.0  # nucleus sampling (1: off)
    top_k: int = 0  # top-k sampling (0: off)
    prompt: str = "think"  # think: <think>…</think><answer>x</answer>; no_think: <answer>x</answer>
    # Images decoded together: None = every image of the optimizer step (batch_size x
    # grad_accum), however learning splits them. Rows decoded = batch_size x G; each row holds a
    # KV cache of (prompt + max_new_tokens) columns, the new memory cost (docs/decoding.md).
    batch_size: Optional[int] = None
    weights: str = "auto"  # NF4 base only: nf4 | bf16 (a dequantised copy for decoding) | auto (bf16 if it fits)
    engine: str = "auto"  # auto: CUDA graph on CUDA, eager elsewhere | graph | eager | loop (the old loop)
    sync_every: int = 8  # decode steps between two host reads of the finished flags

    def __post_init__(self) -> None:
        _require(
            self.batch_size is None or self.batch_size >= 1,
            "rollout.batch_size",
            f"must be >= 1 or null (all images of a step), got {self.batch_size}",
        )
        _require(
            self.weights in ROLLOUT_WEIGHTS,
            "rollout.weights",
            f"must be one of {', '.join(ROLLOUT_WEIGHTS)}, got {self.weights!r}",
        )
        _require(
            self.engine in ROLLOUT_ENGINES,
            "rollout.engine",
            f"must be one of {', '.join(ROLLOUT_ENGINES)}, got {self.engine!r}",
        )
        _require(self.sync_every >= 1, "rollout.sync_every", f"must be >= 1, got {self.sync_every}")
        _require(
            self.num_generations >= 2,
            "rollout.num_generations",
            f"GRPO compares rollouts within a group, so G must be >= 2, got {self.num_generations}",
        )
        _require(self.max_new_tokens >= 1, "rollout.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _require(
            self.temperature > 0,
            "rollout.temperature",
            f"must be > 0 (the policy-gradient log-probs are of the sampling distribution), got {self.temperature}",
        )
        _require(0 < self.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {self.top_p}")
        _require(self.top_k >= 0, "rollout.top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        _require(self.prompt in PROMPTS, "rollout.prompt", f"must be one of {', '.join(PROMPTS)}, got {self.prompt!r}")


@dataclass
class StageConfig:
    """One degradation stage (SPEC §1.4; hawkeye_lite.data.degrade.StageParams)."""

    noise_sigma: float = 45.0  # gaussian noise, σ on 0-255
    blur_radius: float = 2.0  # gaussian blur radius, pixels
    jpeg_quality: int = 5  # JPEG quality of the repeated compression
    jpeg_passes: int = 3  # JPEG compressions in a row
    darken: float = 0.6  # brightness factor


@dataclass
class DegradationConfig:
    """How a training image's degraded partner is made (SPEC §1.4; the paper's recipe by default)."""

    kinds: Tuple[str, ...] = ("noise", "blur", "jpeg", "darken")  # the degradations a partner draws one of
    first: StageConfig = field(default_factory=StageConfig)
    second_stage: bool = False  # a second, different degradation on top of the first
    second: StageConfig = field(default_factory=lambda: StageConfig(65.0, 4.0, 5, 3, 0.5))
    seed: int = 0  # same (seed, record id) -> same partner, on the fly or offline
    use_partner_files: bool = True  # use a record's `image_deg` file when it has one

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        try:
            self.recipe()
        except ValueError as e:
            raise ConfigError(f"objective.perception.degradation: {e}") from None

    def recipe(self):
        from .data.degrade import DegradeRecipe, StageParams

        return DegradeRecipe(
            kinds=self.kinds,
            first=StageParams(**dataclasses.asdict(self.first)),
            second_stage=self.second_stage,
            second=StageParams(**dataclasses.asdict(self.second)),
        )


@dataclass
class PerceptionConfig:
    """SPEC §1.4: -γ(t)·KL(p‖p̃) + η1·H(p) + η2·H(p̃) with a degraded partner of each image."""

    enabled: bool = True  # the perception terms and the degraded pass (false: plain (UA-)GRPO)
    gamma0: float = 1e-4  # γ at epoch 0; cosine down to 0 at kl_zero_epoch
    kl_zero_epoch: float = 5.0  # the epoch at which γ reaches 0
    eta1: float = 1e-3  # weight of H(p), the entropy with the original image
    eta2: float = 0.0  # weight of H(p̃), the entropy with the partner; needs degraded_grad (no gradient otherwise)
    degraded_grad: bool = False  # run the degraded pass with gradient (more memory)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    def __post_init__(self) -> None:
        _require(self.gamma0 >= 0, "objective.perception.gamma0", f"must be >= 0, got {self.gamma0}")
        _require(self.kl_zero_epoch > 0, "objective.perception.kl_zero_epoch", f"must be > 0, got {self.kl_zero_epoch}")
        _require(
            self.eta2 == 0 or self.degraded_grad,
            "objective.perception.eta2",
            f"is {self.eta2} but objective.perception.degraded_grad is false: H(p~) would have no gradient "
            "(set degraded_grad: true, or eta2: 0)",
        )


@dataclass
class ObjectiveConfig:
    """The RL objective: UA-GRPO advantages and the clipped policy loss (SPEC §1.2-1.3)."""

    loss_type: str = "grpo"  # grpo | dapo | dr_grpo (SPEC §1.3)
    beta: float = 0.04  # k3 KL to the reference (adapter off); 0 skips the reference pass
    eps_low: float = 0.2  # the ratio is clipped to [1 - eps_low, 1 + eps_high]
    eps_high: float = 0.28  # the upper clip (larger than eps_low, as in DAPO)
    alpha: float = 0.2  # uncertainty weight w = exp(-alpha * u)
    use_uncertainty: bool = True  # UA-GRPO; false = plain GRPO advantages
    scale_rewards: bool = True  # false: Dr. GRPO (no division by the group std)
    adv_eps: float = 1e-4  # ε in (r - mean) / (std + ε)
    chunk_size: Optional[int] = None  # tokens per logits chunk in the fused loss (None: auto)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)

    def __post_init__(self) -> None:
        _require(
            self.loss_type in LOSS_TYPES,
            "objective.loss_type",
            f"must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}",
        )
        _require(self.beta >= 0, "objective.beta", f"must be >= 0, got {self.beta}")
        _require(0 <= self.eps_low < 1, "objective.eps_low", f"must be in [0, 1), got {self.eps_low}")
        _require(self.eps_high >= 0, "objective.eps_high", f"must be >= 0, got {self.eps_high}")
        _require(self.alpha >= 0, "objective.alpha", f"must be >= 0, got {self.alpha}")
        _require(
            self.chunk_size is None or self.chunk_size >= 1,
            "objective.chunk_size",
            f"must be >= 1, got {self.chunk_size}",
        )


@dataclass
class OptimConfig:
    """The optimizer, the learning-rate schedule and how many images a step takes."""

    optimizer: str = "adamw"  # adamw | adamw_8bit (bitsandbytes, CUDA only)
    lr: float = 1e-4  # peak learning rate of the LoRA adapter
    weight_decay: float = 0.0  # AdamW weight decay
    betas: Tuple[float, float] = (0.9, 0.99)  # AdamW betas
    schedule: str = "cosine"  # cosine | linear | constant, after warmup
    warmup_steps: int = 5  # linear warmup steps
    min_lr_ratio: float = 0.0  # cosine/linear end at lr * min_lr_ratio
    max_grad_norm: float = 1.0  # 0 disables clipping
    batch_size: int = 8  # images (prompts) per micro-batch; each gets G rollouts
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: Optional[int] = 120  # optimizer steps; None: run `epochs` over the train set
    epochs: Optional[float] = None  # passes over the train set; None: max_steps
    mu: int = 1  # policy updates per sampled batch (μ > 1 reuses it with old log-probs)
    max_bad_steps: int = 5  # consecutive NaN/Inf steps before the run stops

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        _require(
            self.optimizer in OPTIMIZERS,
            "optim.optimizer",
            f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
        )
        _require(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        _require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optim.betas",
            f"must be two numbers in [0, 1), got {self.betas}",
        )
        _require(
            self.schedule in SCHEDULES,
            "optim.schedule",
            f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
        )
        _require(self.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _require(self.max_grad_norm >= 0, "optim.max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        _require(self.batch_size >= 1, "optim.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.grad_accum >= 1, "optim.grad_accum", f"must be >= 1, got {self.grad_accum}")
        _require(
            (self.max_steps is None) != (self.epochs is None),
            "optim.max_steps",
            "set exactly one of optim.max_steps and optim.epochs (the other null)",
        )
        _require(
            self.max_steps is None or self.max_steps >= 1, "optim.max_steps", f"must be >= 1, got {self.max_steps}"
        )
        _require(self.epochs is None or self.epochs > 0, "optim.epochs", f"must be > 0, got {self.epochs}")
        _require(self.mu >= 1, "optim.mu", f"must be >= 1, got {self.mu}")
        _require(self.max_bad_steps >= 1, "optim.max_bad_steps", f"must be >= 1, got {self.max_bad_steps}")


@dataclass
class SFTConfig:
    """Supervised warm start: teach a model that cannot follow the answer format (the tiny demo
    model) to write `<think> word </think><answer>MOS</answer>` before RL. After it, the adapter
    is folded into the base weights (saved as RUN/sft-base) and RL starts a fresh adapter on
    top, so the reference policy of the KL term is the warm-started model, not the random one."""

    steps: int = 0  # 0: no warm start
    # mos: the rating in each target is the image's MOS (supervised). format: a rating drawn
    # uniformly from [reward.score_min, reward.score_max], independent of the image, so only the
    # answer format is taught and no label reaches the model before RL. describe: a random
    # rating too, after a <think> that reports four pixel statistics of the image (describe.py),
    # the stand-in for an instruct model that can say what it sees (needs rollout.prompt: think).
    target: str = "mos"
    # LoRA dropout of the warm start's adapter; null = model.lora.dropout (which is then the RL
    # adapter's alone). The label-free warm start needs it (configs/demo-rl.yaml): without it the
    # warm-started model's ratings are narrow and RL collapses onto one answer.
    lora_dropout: Optional[float] = None
    lr: float = 3e-3  # warm start learning rate (cosine to a tenth of it)
    batch_size: int = 16  # images per warm start step
    warmup_steps: int = 10  # linear warmup steps of the warm start

    def __post_init__(self) -> None:
        _require(self.steps >= 0, "sft.steps", f"must be >= 0, got {self.steps}")
        _require(
            self.target in ("mos", "format", "describe"),
            "sft.target",
            f"must be mos, format or describe, got {self.target!r}",
        )
        _require(self.lr > 0, "sft.lr", f"must be > 0, got {self.lr}")
        _require(
            self.lora_dropout is None or 0 <= self.lora_dropout < 1,
            "sft.lora_dropout",
            f"must be in [0, 1) or null, got {self.lora_dropout}",
        )
        _require(self.batch_size >= 1, "sft.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.warmup_steps >= 0, "sft.warmup_steps", f"must be >= 0, got {self.warmup_steps}")


@dataclass
class EvalConfig:
    """Held-out evaluation during training (before RL, every N steps, after RL)."""

    every: int = 0  # held-out SRCC/PLCC every N optimizer steps (0: only before and after RL)
    before: bool = True  # evaluate before RL (after the warm start)
    after: bool = True  # evaluate after RL
    samples: int = 32  # K sampled answers per image; the prediction is their mean
    # The K answers drawn as a stratified sample (decode.strata_init): each still an exact
    # sample, together an even cover of the answer distribution, so the mean moves far less with
    # the eval seed. false: K independent draws (how evaluations before it were made).
    stratified: bool = True
    temperature: float = 1.0  # sampling temperature of the K answers (0: greedy, one answer)
    max_new_tokens: Optional[int] = None  # None: rollout.max_new_tokens
    batch_size: int = 32  # images scored together
    max_images: Optional[int] = None  # cap the held-out set (periodic evals on big datasets)
    seed: int = 0  # the evaluation's sampling seed (the same seed scores an image the same way)
    # The whole scoring again with seeds seed+1 .. seed+repeats-1: srcc_std / plcc_std say how
    # much of a difference between two evals is sampling noise. srcc / plcc stay seed's.
    repeats: int = 1
    # Mechanism metrics (mechanism.py): sens (score drop on the degraded partner), pkl / pkl_all
    # (KL between the answers on original and partner). Costs ~2.5x the scoring itself (demo, CPU).
    mechanism: bool = True
    mechanism_samples: int = 4  # completions per image teacher-forced for pkl (the eval's first ones)

    def __post_init__(self) -> None:
        _require(self.every >= 0, "eval.every", f"must be >= 0, got {self.every}")
        _require(self.repeats >= 1, "eval.repeats", f"must be >= 1, got {self.repeats}")
        _require(self.mechanism_samples >= 1, "eval.mechanism_samples", f"must be >= 1, got {self.mechanism_samples}")
        _require(self.samples >= 1, "eval.samples", f"must be >= 1, got {self.samples}")
        _require(self.temperature >= 0, "eval.temperature", f"must be >= 0, got {self.temperature}")
        _require(self.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(
            self.max_images is None or self.max_images >= 3,
            "eval.max_images",
            f"must be >= 3 (correlations), got {self.max_images}",
        )


@dataclass
class LoggingConfig:
    """What a run prints and writes besides metrics.jsonl."""

    every: int = 1  # console line every N steps (metrics.jsonl gets every step)
    progress: bool = True  # tqdm bar with ETA on stderr when it is a terminal (plain lines otherwise)
    plot: bool = True  # write plot.png (reward, SRCC/PLCC, KL terms, entropies, lr over steps) at the end
    # Per-image lists in each step record ("images": id, u, w, reward_acc, adv_abs: what each
    # training image's group contributed), for studies of the uncertainty weighting (issue #28).
    # Under torchrun: rank 0's images only.
    per_image: bool = False
    # Trackers that get the metrics.jsonl records too (TRL's report_to): tensorboard (event files
    # in RUN/tensorboard, extra `tensorboard`) and/or wandb (RUN/wandb, extra `wandb`).
    report_to: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.report_to = tuple(self.report_to)
        for name in self.report_to:
            _require(
                name in ("tensorboard", "wandb"),
                "logging.report_to",
                f"unknown tracker {name!r} (choose from tensorboard, wandb)",
            )
        _require(
            len(set(self.report_to)) == len(self.report_to),
            "logging.report_to",
            f"names a tracker twice: {list(self.report_to)}",
        )


@dataclass
class CheckpointConfig:
    """Checkpoints for resuming (RUN/checkpoints/step-NNNNNN)."""

    every: int = 20  # optimizer steps between checkpoints (0: only the final one)
    # Minutes between checkpoints, whichever of the two comes first (0: by steps only). A 7B step
    # takes minutes, so a count of steps alone is hours of exposure or a disk full of checkpoints;
    # 30 bounds what a crash loses to half an hour for ~1% of the run's time writing (~2 GB each).
    every_minutes: float = 30.0
    keep_last: int = 2  # checkpoints kept (older ones are deleted)

    def __post_init__(self) -> None:
        _require(self.every >= 0, "checkpoint.every", f"must be >= 0, got {self.every}")
        _require(self.every_minutes >= 0, "checkpoint.every_minutes", f"must be >= 0, got {self.every_minutes}")
        _require(self.keep_last >= 1, "checkpoint.keep_last", f"must be >= 1, got {self.keep_last}")


@dataclass
class DistributedConfig:
    """Data parallelism under torchrun (hawkeye_lite/distributed.py); ignored by one process."""

    # Every collective (gradient all-reduce, the wait for rank 0's warm start, the gathered
    # evaluation) gives up after this long: a rank that died stops the others with an error
    # instead of a hang. It must exceed the longest single-rank phase (the warm start).
    timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        _require(self.timeout_s > 0, "distributed.timeout_s", f"must be > 0, got {self.timeout_s}")


def _demo_model() -> ModelConfig:
    return ModelConfig(
        name_or_path="runs/demo/tiny-model",
        quantization="none",
        dtype="float32",
        # RL's adapter without dropout; the warm start's is sft.lora_dropout (0.2)
        lora=LoRAConfig(r=16, alpha=32, dropout=0.0),
        gradient_checkpointing=False,
        device="cpu",
    )


@dataclass
class TrainConfig:
    """Everything `hawkeye-lite train` reads; the defaults are the CPU demo (configs/demo.yaml)."""

    output_dir: str = "runs/demo"  # the run folder
    seed: int = 0  # the run's seed: adapter init, data order, rollouts, partners
    model: ModelConfig = field(default_factory=_demo_model)
    # The demo's stand-in tower: 1000 steps at lr 1e-2 on 640 scenes (ridge probe 0.69, 58 s here)
    # instead of the section's 3000 at 2e-3 on 1280 (0.74, 168 s; configs/demo-sft.yaml, demo-rl.yaml).
    tiny_model: TinyModelConfig = field(
        default_factory=lambda: TinyModelConfig(
            vision_pretrain_steps=1000, vision_pretrain_lr=1e-2, vision_pretrain_scenes=640
        )
    )
    data: DataConfig = field(default_factory=DataConfig)
    # The demo answers with the rating alone (no_think): 12 tokens, and the rating's first digit is
    # the first choice RL can reward.
    reward: RewardConfig = field(default_factory=lambda: RewardConfig(require_think=False))
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(prompt="no_think", max_new_tokens=12))
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-3, max_steps=200, batch_size=16))
    # A label-free warm start: the answer format with random ratings, never a MOS (sft.target).
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=100, target="format", lora_dropout=0.2))
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(samples=32, stratified=True, every=50))
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        # Combinations no single section can judge.
        _require(self.output_dir != "", "output_dir", "required")
        _require(
            not (self.objective.use_uncertainty and self.rollout.num_generations < 2),
            "rollout.num_generations",
            "uncertainty weighting needs G >= 2 parsed scores per group",
        )
        _require(
            not (self.objective.beta > 0 and self.model.lora is None),
            "objective.beta",
            "the reference policy is the model with its LoRA adapter off, so beta > 0 needs model.lora (or beta: 0)",
        )
        _require(self.model.lora is not None, "model.lora", "training updates a LoRA adapter; model.lora must be set")
        _require(
            not (self.sft.steps > 0 and self.model.quantization == "nf4"),
            "sft.steps",
            "the warm start folds its adapter into the base weights, which needs model.quantization: none",
        )
        _require(
            not (self.sft.steps > 0 and self.sft.target == "describe" and self.rollout.prompt != "think"),
            "sft.target",
            "describe writes the description in the <think> block; it needs rollout.prompt: think",
        )
        _require(
            not (self.reward.require_think and self.rollout.prompt == "no_think"),
            "reward.require_think",
            "the no_think prompt tells the model not to think; the format reward must not ask for <think> (set false)",
        )
        _require(
            not (self.optim.optimizer == "adamw_8bit" and self.model.device == "cpu"),
            "optim.optimizer",
            "adamw_8bit is a CUDA optimizer (bitsandbytes); use adamw on CPU",
        )
        p = self.objective.perception
        _require(
            not (p.enabled and p.gamma0 == 0 and p.eta1 == 0 and p.eta2 == 0),
            "objective.perception.enabled",
            "is true but gamma0, eta1 and eta2 are all 0 (set enabled: false to skip the degraded pass)",
        )

    def to_dict(self) -> Dict[str, Any]:
        return _to_plain(self)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj
