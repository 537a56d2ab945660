"""Typed configuration for hawkeye-lite.

Plain dataclasses with small validation; every error names the offending field so a bad YAML
key or CLI override is found at once. The model / reward sections are used by the Scorer too;
the training sections (data, rollout, objective, optim, sft, eval, logging, checkpoint) and the
top-level `TrainConfig` are read from YAML with `load_train_config(path, overrides)`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

QUANTIZATIONS = ("nf4", "none")
DTYPES = ("auto", "bfloat16", "float16", "float32")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")

# Projection names of the Qwen2/Qwen2.5 language model. The vision tower reuses several of
# them (gate/up/down_proj), which is why the LoRA target is a regex anchored on the module path.
LM_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Qwen2.5-VL vision blocks: attn.qkv, attn.proj, mlp.{gate,up,down}_proj; Qwen2-VL: mlp.fc1/fc2.
VISION_TARGET_MODULES = ("qkv", "proj", "gate_proj", "up_proj", "down_proj", "fc1", "fc2")


def _check_choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices)}")


@dataclass
class LoRAConfig:
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    # Projection names inside the language model (and inside the vision blocks when vision=True).
    target_modules: Tuple[str, ...] = LM_TARGET_MODULES
    vision: bool = False  # also adapt the vision tower's blocks (more memory, rarely needed)
    vision_target_modules: Tuple[str, ...] = VISION_TARGET_MODULES
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
    name_or_path: str = ""
    quantization: str = "nf4"  # nf4: 4-bit NF4 base with double quantisation (QLoRA); none
    dtype: str = "auto"  # auto: bfloat16 on CUDA (float16 without bf16 support), float32 on CPU
    lora: Optional[LoRAConfig] = field(default_factory=LoRAConfig)  # None: no adapter at all
    gradient_checkpointing: bool = True
    # The loss passes (policy, reference, degraded) run each prompt once per image and widen its
    # keys/values to the G rollouts, instead of once per rollout: same values and gradients,
    # several times cheaper when the prompt is long. false reproduces runs made before it.
    shared_prefix: bool = True
    attn_implementation: str = "auto"  # auto: flash_attention_2 when importable on CUDA, else sdpa
    device: Optional[str] = None  # None: cuda when available, else cpu
    # Image resolution bounds in pixels; None keeps the checkpoint's processor settings.
    # (448*448 = 200704 is the paper's training resolution.)
    min_pixels: Optional[int] = None
    max_pixels: Optional[int] = None

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
            raise ValueError(f"model.min_pixels ({self.min_pixels}) is larger than model.max_pixels ({self.max_pixels})")


@dataclass
class RewardConfig:
    """SPEC §1.1. `functions` picks which rewards are summed."""

    functions: Tuple[str, ...] = ("accuracy", "format", "repetition")
    tau: float = 0.30  # accuracy: exp(-|clamp(y_hat) - y| / tau)
    score_min: float = 1.0
    score_max: float = 5.0
    format_value: float = 0.8
    require_think: bool = True  # format reward asks for <think>…</think> before <answer>
    repetition_max_count: int = 5  # a word occurring more often than this is penalised
    repetition_penalty: float = 0.25
    repetition_floor: float = -2.0

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

    build: bool = True
    seed: int = 0
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    vision_depth: int = 2
    vision_hidden_size: int = 32
    min_pixels: int = 56 * 56
    max_pixels: int = 112 * 112
    # Steps of low-level-statistics regression (per image and per visual token) for the random
    # vision tower, a stand-in for a pretrained one (hawkeye_lite.tiny_vision); 0 keeps it random.
    vision_pretrain_steps: int = 3000


@dataclass
class DataConfig:
    # Data specs (hawkeye_lite.data.load_records), plus `demo:DIR` for the generated demo set
    # (written to DIR on first use).
    train: Tuple[str, ...] = ("demo:data/demo",)
    # Held-out specs for the periodic and final SRCC/PLCC; empty = the `eval_split` records of `train`.
    eval: Tuple[str, ...] = ()
    eval_split: str = "test"
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
        _require(self.check_images in ("full", "header", "none"), "data.check_images",
                 f"must be full, header or none, got {self.check_images!r}")
        _require(self.eval_split in ("train", "val", "test"), "data.eval_split", f"must be train, val or test, got {self.eval_split!r}")


@dataclass
class RolloutConfig:
    num_generations: int = 8  # G completions per image
    max_new_tokens: int = 24  # completion length cap (the demo's answers are ~16 tokens)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    prompt: str = "think"  # think: <think>…</think><answer>x</answer>; no_think: <answer>x</answer>
    # Images decoded together: None = every image of the optimizer step (batch_size x
    # grad_accum), however learning splits them. Rows decoded = batch_size x G; each row holds a
    # KV cache of (prompt + max_new_tokens) columns, the new memory cost (docs/decoding.md).
    batch_size: Optional[int] = None
    weights: str = "auto"  # NF4 base only: nf4 | bf16 (a dequantised copy for decoding) | auto (bf16 if it fits)
    engine: str = "auto"  # auto: CUDA graph on CUDA, eager elsewhere | graph | eager | loop (the old loop)
    sync_every: int = 8  # decode steps between two host reads of the finished flags

    def __post_init__(self) -> None:
        _require(self.batch_size is None or self.batch_size >= 1, "rollout.batch_size",
                 f"must be >= 1 or null (all images of a step), got {self.batch_size}")
        _require(self.weights in ROLLOUT_WEIGHTS, "rollout.weights",
                 f"must be one of {', '.join(ROLLOUT_WEIGHTS)}, got {self.weights!r}")
        _require(self.engine in ROLLOUT_ENGINES, "rollout.engine",
                 f"must be one of {', '.join(ROLLOUT_ENGINES)}, got {self.engine!r}")
        _require(self.sync_every >= 1, "rollout.sync_every", f"must be >= 1, got {self.sync_every}")
        _require(self.num_generations >= 2, "rollout.num_generations",
                 f"GRPO compares rollouts within a group, so G must be >= 2, got {self.num_generations}")
        _require(self.max_new_tokens >= 1, "rollout.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _require(self.temperature > 0, "rollout.temperature",
                 f"must be > 0 (the policy-gradient log-probs are of the sampling distribution), got {self.temperature}")
        _require(0 < self.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {self.top_p}")
        _require(self.top_k >= 0, "rollout.top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        _require(self.prompt in PROMPTS, "rollout.prompt", f"must be one of {', '.join(PROMPTS)}, got {self.prompt!r}")


@dataclass
class StageConfig:
    """One degradation stage (SPEC §1.4; hawkeye_lite.data.degrade.StageParams)."""

    noise_sigma: float = 45.0
    blur_radius: float = 2.0
    jpeg_quality: int = 5
    jpeg_passes: int = 3
    darken: float = 0.6


@dataclass
class DegradationConfig:
    kinds: Tuple[str, ...] = ("noise", "blur", "jpeg", "darken")
    first: StageConfig = field(default_factory=StageConfig)
    second_stage: bool = False
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

        return DegradeRecipe(kinds=self.kinds, first=StageParams(**dataclasses.asdict(self.first)),
                             second_stage=self.second_stage, second=StageParams(**dataclasses.asdict(self.second)))


@dataclass
class PerceptionConfig:
    """SPEC §1.4: -γ(t)·KL(p‖p̃) + η1·H(p) + η2·H(p̃) with a degraded partner of each image."""

    enabled: bool = True
    gamma0: float = 1e-4  # γ at epoch 0; cosine down to 0 at kl_zero_epoch
    kl_zero_epoch: float = 5.0
    eta1: float = 1e-3
    eta2: float = 0.0  # needs degraded_grad: H(p̃) has no gradient otherwise
    degraded_grad: bool = False  # run the degraded pass with gradient (more memory)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    def __post_init__(self) -> None:
        _require(self.gamma0 >= 0, "objective.perception.gamma0", f"must be >= 0, got {self.gamma0}")
        _require(self.kl_zero_epoch > 0, "objective.perception.kl_zero_epoch", f"must be > 0, got {self.kl_zero_epoch}")
        _require(self.eta2 == 0 or self.degraded_grad, "objective.perception.eta2",
                 f"is {self.eta2} but objective.perception.degraded_grad is false: H(p~) would have no gradient "
                 "(set degraded_grad: true, or eta2: 0)")


@dataclass
class ObjectiveConfig:
    loss_type: str = "grpo"  # grpo | dapo | dr_grpo (SPEC §1.3)
    beta: float = 0.04  # k3 KL to the reference (adapter off); 0 skips the reference pass
    eps_low: float = 0.2
    eps_high: float = 0.28
    alpha: float = 0.2  # uncertainty weight w = exp(-alpha * u)
    use_uncertainty: bool = True  # UA-GRPO; false = plain GRPO advantages
    scale_rewards: bool = True  # false: Dr. GRPO (no division by the group std)
    adv_eps: float = 1e-4
    chunk_size: Optional[int] = None  # tokens per logits chunk in the fused loss (None: auto)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)

    def __post_init__(self) -> None:
        _require(self.loss_type in LOSS_TYPES, "objective.loss_type", f"must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        _require(self.beta >= 0, "objective.beta", f"must be >= 0, got {self.beta}")
        _require(0 <= self.eps_low < 1, "objective.eps_low", f"must be in [0, 1), got {self.eps_low}")
        _require(self.eps_high >= 0, "objective.eps_high", f"must be >= 0, got {self.eps_high}")
        _require(self.alpha >= 0, "objective.alpha", f"must be >= 0, got {self.alpha}")
        _require(self.chunk_size is None or self.chunk_size >= 1, "objective.chunk_size", f"must be >= 1, got {self.chunk_size}")


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adamw | adamw_8bit (bitsandbytes, CUDA only)
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.99)
    schedule: str = "cosine"  # cosine | linear | constant, after warmup
    warmup_steps: int = 5
    min_lr_ratio: float = 0.0  # cosine/linear end at lr * min_lr_ratio
    max_grad_norm: float = 1.0  # 0 disables clipping
    batch_size: int = 8  # images (prompts) per micro-batch; each gets G rollouts
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: Optional[int] = 120  # optimizer steps; None: run `epochs` over the train set
    epochs: Optional[float] = None
    mu: int = 1  # policy updates per sampled batch (μ > 1 reuses it with old log-probs)
    max_bad_steps: int = 5  # consecutive NaN/Inf steps before the run stops

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        _require(self.optimizer in OPTIMIZERS, "optim.optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        _require(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas", f"must be two numbers in [0, 1), got {self.betas}")
        _require(self.schedule in SCHEDULES, "optim.schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        _require(self.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _require(self.max_grad_norm >= 0, "optim.max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        _require(self.batch_size >= 1, "optim.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.grad_accum >= 1, "optim.grad_accum", f"must be >= 1, got {self.grad_accum}")
        _require((self.max_steps is None) != (self.epochs is None), "optim.max_steps",
                 "set exactly one of optim.max_steps and optim.epochs (the other null)")
        _require(self.max_steps is None or self.max_steps >= 1, "optim.max_steps", f"must be >= 1, got {self.max_steps}")
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
    lr: float = 3e-3
    batch_size: int = 16
    warmup_steps: int = 10

    def __post_init__(self) -> None:
        _require(self.steps >= 0, "sft.steps", f"must be >= 0, got {self.steps}")
        _require(self.target in ("mos", "format", "describe"), "sft.target",
                 f"must be mos, format or describe, got {self.target!r}")
        _require(self.lr > 0, "sft.lr", f"must be > 0, got {self.lr}")
        _require(self.lora_dropout is None or 0 <= self.lora_dropout < 1, "sft.lora_dropout",
                 f"must be in [0, 1) or null, got {self.lora_dropout}")
        _require(self.batch_size >= 1, "sft.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.warmup_steps >= 0, "sft.warmup_steps", f"must be >= 0, got {self.warmup_steps}")


@dataclass
class EvalConfig:
    every: int = 0  # held-out SRCC/PLCC every N optimizer steps (0: only before and after RL)
    before: bool = True  # evaluate before RL (after the warm start)
    after: bool = True
    samples: int = 32  # K sampled answers per image; the prediction is their mean
    # The K answers drawn as a stratified sample (decode.strata_init): each still an exact
    # sample, together an even cover of the answer distribution, so the mean moves far less with
    # the eval seed. false: K independent draws (how evaluations before it were made).
    stratified: bool = True
    temperature: float = 1.0
    max_new_tokens: Optional[int] = None  # None: rollout.max_new_tokens
    batch_size: int = 32
    max_images: Optional[int] = None  # cap the held-out set (periodic evals on big datasets)
    seed: int = 0
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
        _require(self.max_images is None or self.max_images >= 3, "eval.max_images", f"must be >= 3 (correlations), got {self.max_images}")


@dataclass
class LoggingConfig:
    every: int = 1  # console line every N steps (metrics.jsonl gets every step)
    progress: bool = True  # tqdm bar with ETA on stderr when it is a terminal (plain lines otherwise)
    plot: bool = True  # write plot.png (reward, SRCC/PLCC, KL terms, entropies, lr over steps) at the end
    # Trackers that get the metrics.jsonl records too (TRL's report_to): tensorboard (event files
    # in RUN/tensorboard, extra `tensorboard`) and/or wandb (RUN/wandb, extra `wandb`).
    report_to: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.report_to = tuple(self.report_to)
        for name in self.report_to:
            _require(name in ("tensorboard", "wandb"), "logging.report_to",
                     f"unknown tracker {name!r} (choose from tensorboard, wandb)")
        _require(len(set(self.report_to)) == len(self.report_to), "logging.report_to", f"names a tracker twice: {list(self.report_to)}")


@dataclass
class CheckpointConfig:
    every: int = 20  # optimizer steps between checkpoints (0: only the final one)
    keep_last: int = 2

    def __post_init__(self) -> None:
        _require(self.every >= 0, "checkpoint.every", f"must be >= 0, got {self.every}")
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
    return ModelConfig(name_or_path="runs/demo/tiny-model", quantization="none", dtype="float32",
                       # RL's adapter without dropout; the warm start's is sft.lora_dropout (0.2)
                       lora=LoRAConfig(r=16, alpha=32, dropout=0.0), gradient_checkpointing=False, device="cpu")


@dataclass
class TrainConfig:
    output_dir: str = "runs/demo"
    seed: int = 0
    model: ModelConfig = field(default_factory=_demo_model)
    tiny_model: TinyModelConfig = field(default_factory=TinyModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, max_steps=300))
    # A short supervised warm start: LoRA dropout 0.2 keeps it from over-fitting the 288 images.
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=150, lora_dropout=0.2))
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(samples=256))
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        # Combinations no single section can judge.
        _require(self.output_dir != "", "output_dir", "required")
        _require(not (self.objective.use_uncertainty and self.rollout.num_generations < 2), "rollout.num_generations",
                 "uncertainty weighting needs G >= 2 parsed scores per group")
        _require(not (self.objective.beta > 0 and self.model.lora is None), "objective.beta",
                 "the reference policy is the model with its LoRA adapter off, so beta > 0 needs model.lora (or beta: 0)")
        _require(self.model.lora is not None, "model.lora", "training updates a LoRA adapter; model.lora must be set")
        _require(not (self.sft.steps > 0 and self.model.quantization == "nf4"), "sft.steps",
                 "the warm start folds its adapter into the base weights, which needs model.quantization: none")
        _require(not (self.sft.steps > 0 and self.sft.target == "describe" and self.rollout.prompt != "think"),
                 "sft.target", "describe writes the description in the <think> block; it needs rollout.prompt: think")
        _require(not (self.reward.require_think and self.rollout.prompt == "no_think"), "reward.require_think",
                 "the no_think prompt tells the model not to think; the format reward must not ask for <think> (set false)")
        _require(not (self.optim.optimizer == "adamw_8bit" and self.model.device == "cpu"), "optim.optimizer",
                 "adamw_8bit is a CUDA optimizer (bitsandbytes); use adamw on CPU")
        p = self.objective.perception
        _require(not (p.enabled and p.gamma0 == 0 and p.eta1 == 0 and p.eta2 == 0), "objective.perception.enabled",
                 "is true but gamma0, eta1 and eta2 are all 0 (set enabled: false to skip the degraded pass)")

    def to_dict(self) -> Dict[str, Any]:
        return _to_plain(self)


# ----------------------------------------------------------------------------- YAML + overrides


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Turn a YAML / CLI value into the field's declared type, or raise naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:  # Optional[X]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if origin in (tuple, list, Tuple, List):
        if isinstance(value, str):
            value = _split_list(value, key)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
            if tp is int:
                if isinstance(number, float) and not number.is_integer():
                    raise ValueError
                return int(number)
            return float(number)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {'an integer' if tp is int else 'a number'}, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _split_list(text: str, key: str) -> List[str]:
    """`[a, b]` or `a,b` from the command line -> ['a', 'b'], without YAML: data specs hold `?`,
    `&` and `,` (`csv:F?path=a&mos=b`, `range=0,100`), which a YAML flow list cannot carry.
    Data specs split only where a new `kind:` starts; other lists at every comma outside quotes."""
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    elif inner.startswith("[") or inner.endswith("]"):
        raise ConfigError(f"{key}: unbalanced brackets in {text!r}; write a list as [a, b]")
    pieces, buf, quote = [], "", None
    for ch in inner:
        if quote:
            if ch == quote:
                quote = None
            else:
                buf += ch
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            pieces.append(buf)
            buf = ""
        else:
            buf += ch
    if quote:
        raise ConfigError(f"{key}: unclosed quote in {text!r}")
    pieces.append(buf)
    pieces = [p.strip() for p in pieces]
    if key.startswith("data."):
        import re

        merged: List[str] = []
        for p in pieces:  # "csv:F?range=0" + "100" is one spec; "koniq:/d" starts the next
            if merged and not re.match(r"^[a-z]+:", p) and not p.lower().endswith((".json", ".jsonl", ".csv")):
                merged[-1] += "," + p
            else:
                merged.append(p)
        pieces = merged
    return [p for p in pieces if p]


def _build(cls, values: Dict[str, Any], prefix: str):
    """Strictly build dataclass `cls` from a dict: unknown keys are errors, types are coerced."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{where}: unknown key (known keys{' of ' + prefix if prefix else ''}: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if name == "lora" and cls is ModelConfig:
            tp = Optional[LoRAConfig]
        kwargs[name] = _coerce(value, tp, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        msg = str(e)
        # The model/reward validators name their key relative to their section ("lora.r: ..."):
        # complete it to the full dotted path ("model.lora.r: ...").
        last = prefix.split(".")[-1]
        parent = prefix.rsplit(".", 1)[0] if "." in prefix else ""
        if prefix and msg.startswith(last):
            raise ConfigError(f"{parent}.{msg}" if parent else msg) from None
        raise ConfigError(f"{prefix or 'config'}: {msg}") from None


def apply_override(tree: Dict[str, Any], assignment: str) -> None:
    """`a.b.c=value` into a nested dict (the value is coerced later, against the field type)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. optim.lr=1e-4")
    key, value = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"--set {assignment!r}: bad key {key!r}")
    cls: Any = TrainConfig
    node = tree
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        if cls is None or not dataclasses.is_dataclass(cls):
            raise ConfigError(f"{path}: {'.'.join(parts[:i])} is not a section")
        hints = typing.get_type_hints(cls)
        if part not in hints:
            raise ConfigError(f"{path}: unknown key (known keys: {', '.join(sorted(hints))})")
        tp = LoRAConfig if (cls is ModelConfig and part == "lora") else hints[part]
        if typing.get_origin(tp) is Union:
            tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
        if i == len(parts) - 1:
            import yaml

            # YAML scalars ("true", "[1, 2]", "null") read as YAML; everything else stays a
            # string and is coerced against the field type (PyYAML reads "1e-4" as a string).
            try:
                parsed = yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:
                parsed = value
            node[part] = parsed
        else:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else child
                if not isinstance(child, dict):
                    raise ConfigError(f"{path}: is not a section")
                node[part] = child
            node, cls = child, tp


def _merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def train_config_from_dict(tree: Dict[str, Any]) -> TrainConfig:
    """Keys not given keep the demo defaults (TrainConfig()), section by section."""
    if not isinstance(tree, dict):
        raise ConfigError(f"config: the top level must be a mapping of sections, got {type(tree).__name__}")
    return _build(TrainConfig, _merge(TrainConfig().to_dict(), tree), "")


def load_train_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """YAML file (None: the built-in demo defaults) + `key=value` overrides -> a validated TrainConfig.
    Errors are ConfigError naming the file and the dotted key."""
    import yaml

    tree: Dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML ({e})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for assignment in overrides:
        apply_override(tree, assignment)
    try:
        return train_config_from_dict(tree)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None


def dump_train_config(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
