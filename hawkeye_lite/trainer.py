"""The Q-Hawkeye trainer (SPEC §1): UA-GRPO + the implicit perception loss on a LoRA policy.

One RL step (`Trainer.rl_step`) over the step's grad_accum x batch_size images (this rank's
share of them under torchrun):
  1. encode the images; run the frozen vision tower ONCE on each (the features are reused by
     the rollouts and by every forward pass of the step),
  2. sample G completions per image, all images of the step decoded together by the engine
     (decode.py), each from the random stream of its slot in the step,
  3. per learning micro-batch: rewards (rewards.py) -> `group_advantages` (uncertainty weighted,
     kernels), reference log-probs with the adapter off (skipped when beta = 0) and the
     degraded-image hidden states (no gradient), on the same completions,
then μ times: policy forward -> completion hidden states only -> `policy_loss_from_hidden` (the
fused objective: never full-vocabulary logits) with γ(t) on its cosine, normalised over the whole
step -> backward -> (all-reduce across ranks) -> clip -> step.

Everything random is either seeded by (seed, step) (data order, sampling, degradations) or
restored from the checkpoint (torch RNG: LoRA dropout), so `--resume` continues exactly.
The run folder (runfolder.py), logging (runlog.py), checkpoint I/O (checkpoint.py) and the
ranks (distributed.py) live in modules of their own.
"""
from __future__ import annotations

import functools
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .checkpoint import CHECKPOINTS, STATE_DIR, atomic_dir, latest_checkpoint, rng_state, set_rng_state
from .distributed import Dist, picklable, share
from .config import ConfigError, ModelConfig, TrainConfig, dump_train_config, load_train_config
from .kernels import group_advantages, policy_loss_from_hidden, token_stats
from .runfolder import RunFolderError
from .runlog import METRICS, Logger

SFT_BASE = "sft-base"
FINAL = "final"
CONFIG_FILE = "config.yaml"


class TrainingError(RuntimeError):
    """The run cannot go on (too many non-finite steps, bad resume folder, ...)."""


class DataFault(TrainingError):
    """A training image failed to decode and data.on_bad is fail: bad input, not a bug."""


# ============================================================================ small pieces


def gamma_at(epoch: float, gamma0: float, zero_epoch: float) -> float:
    """SPEC §1.4: cosine from gamma0 at epoch 0 down to 0 at `zero_epoch`, then 0."""
    if epoch >= zero_epoch:
        return 0.0
    return 0.5 * gamma0 * (1.0 + math.cos(math.pi * epoch / zero_epoch))


def lr_at(step: int, total: int, *, lr: float, warmup: int, schedule: str, min_ratio: float) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine/linear/constant.
    A pure function of the step, so resuming needs no scheduler object."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return lr * (min_ratio + (1.0 - min_ratio) * shape)


def sft_target(rating: float, *, think: bool, description: Optional[str] = None) -> str:
    """The answer the warm start teaches: a one-word judgement of `rating` (or, with
    sft.target: describe, the image's `description`), then `rating` with 2 decimals. `rating`
    is the MOS (sft.target: mos) or a random draw (format, describe)."""
    word = ("bad", "poor", "fair", "good", "great")[min(4, max(0, int((rating - 1.0) / 0.8)))]
    answer = f"<answer>{rating:.2f}</answer>"
    return f"<think> {description or word} </think>{answer}" if think else answer


def sft_format_ratings(cfg: TrainConfig, step: int, n: int) -> List[float]:
    """The ratings of a label-free warm-start batch: uniform on [score_min, score_max], a pure
    function of (seed, step), so a rebuilt warm start is identical; never the images' MOS."""
    import numpy as np

    rng = np.random.default_rng([cfg.seed, 11, step])
    return [float(v) for v in rng.uniform(cfg.reward.score_min, cfg.reward.score_max, n)]


def reward_spread(rewards, G: int, eps: float = 1e-6) -> Dict[str, float]:
    """Where a step's learning signal comes from. GRPO learns only from the spread of rewards
    inside a group: `zero_spread` is the fraction of groups whose G rewards are all equal (their
    advantages are 0: no gradient), and `spread_<name>` is each reward column's share of the
    within-group variance of the total, cov(r_name, r_total) / var(r_total) summed over groups
    (the shares add up to 1), e.g. how much of the advantage comes from format vs accuracy."""
    total = rewards.total.double().view(-1, G)
    dev = total - total.mean(1, keepdim=True)
    out = {"zero_spread": float((total.std(1, unbiased=False) <= eps).double().mean()) if G > 1 else 1.0}
    var = float(dev.square().sum())
    for name, col in rewards.columns.items():
        c = col.double().view(-1, G)
        cov = float(((c - c.mean(1, keepdim=True)) * dev).sum())
        out[f"spread_{name}"] = cov / var if var > 0 else float("nan")
    return out


def collapse_warning(history: Sequence[dict], window: int = 10, threshold: float = 0.5) -> Optional[str]:
    """One log line when RL has collapsed onto one answer: over the last `window` step records
    the mean `zero_spread` (groups whose G rewards are all equal) is >= `threshold`. Such groups
    give no gradient, so a collapsed run stops learning while its loss looks calm; of the demo runs
    that collapsed (README, "RL from a label-free start") one in four recovered. None while not."""
    recent = [r.get("zero_spread") for r in history[-window:]]
    if len(recent) < window or any(v is None or v != v for v in recent):
        return None
    mean = sum(recent) / window
    if mean < threshold:
        return None
    step = history[-1].get("step", len(history))
    return (f"step {step}: RL has collapsed: in {mean:.0%} of the groups of the last {window} steps all "
            "G answers got the same reward, so those groups give no gradient. Lower optim.lr, raise "
            "objective.beta or rollout.temperature, or keep LoRA dropout in the warm start "
            "(sft.lora_dropout); see the README, 'RL from a label-free start'")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    except ImportError:  # pragma: no cover - Windows
        return float("nan")


def _scatter(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """[N] values at the True positions of a [S, T] mask -> [S, T] (0 elsewhere)."""
    return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values)


# ============================================================================ data


@dataclass
class Dataset:
    train: list  # IQARecord
    eval: list

    @staticmethod
    def load(cfg: TrainConfig, log: Callable[[str], None]) -> "Dataset":
        from .data import demo_records, load_records

        def read(specs: Sequence[str]) -> list:
            records, rest = [], []
            for spec in specs:
                if spec.startswith("demo:"):  # generated on first use, no download
                    records += demo_records(spec[len("demo:"):] or "data/demo")
                else:
                    rest.append(spec)
            if rest:
                res = load_records(rest, on_bad=cfg.data.on_bad, check_images=cfg.data.check_images, seed=cfg.data.split_seed)
                log(res.format())
                records += res.records
            return records

        records = read(cfg.data.train)
        train = [r for r in records if r.split == "train"]
        held = read(cfg.data.eval) if cfg.data.eval else records
        held = [r for r in held if r.split == cfg.data.eval_split]
        if cfg.eval.max_images:
            held = held[: cfg.eval.max_images]
        if not train:
            raise ConfigError(f"data.train: no records in the train split of {list(cfg.data.train)}")
        return Dataset(train, held)


class Partners:
    """Degraded partner of a training image: the record's `image_deg` file when it has one (and
    degradation.use_partner_files), else made on the fly, deterministic per (seed, record id)."""

    def __init__(self, cfg: TrainConfig):
        from .data.degrade import Degrader

        d = cfg.objective.perception.degradation
        self.use_files = d.use_partner_files
        self.degrader = Degrader(seed=d.seed, recipe=d.recipe())
        self.decoded: Dict[str, object] = {}  # record id -> partner already read by Trainer._load

    def uses_file(self, record) -> bool:
        return bool(self.use_files and record.image_deg)

    def __call__(self, record, image):
        from .data import load_image

        if self.uses_file(record):
            decoded = self.decoded.pop(record.id, None)
            return decoded if decoded is not None else load_image(record, degraded=True)
        return self.degrader(image, record.id)


def batch_indices(n: int, step: int, micro: int, *, batch_size: int, grad_accum: int, seed: int) -> List[int]:
    """Record indices of micro-batch `micro` of step `step`: a seeded permutation per epoch,
    consumed in order, so the data order is a pure function of (seed, step)."""
    start = (step * grad_accum + micro) * batch_size
    return [_epoch_order(n, seed, pos // n)[pos % n] for pos in range(start, start + batch_size)]


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> List[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


# ============================================================================ model setup


def build_demo_model(path: Path, cfg: TrainConfig, log: Optional[Callable[[str], None]] = None) -> Path:
    """The tiny random Qwen2.5-VL the demo trains (written once, at model.name_or_path)."""
    from .model import build_tiny_model

    from .runfolder import write_settings

    t = cfg.tiny_model
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")  # removed at start if a kill leaves it
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(tmp, seed=t.seed, hidden_size=t.hidden_size, num_layers=t.num_layers, num_heads=t.num_heads,
                     intermediate_size=t.intermediate_size, vision_depth=t.vision_depth,
                     vision_hidden_size=t.vision_hidden_size, min_pixels=t.min_pixels, max_pixels=t.max_pixels)
    if t.vision_pretrain_steps > 0:  # a random tower sees no quality cues: give it low-level features
        from .tiny_vision import pretrain_tiny_vision

        pretrain_tiny_vision(tmp, steps=t.vision_pretrain_steps, log=log)
    write_settings(tmp, tiny_settings(cfg))
    try:
        os.replace(tmp, path)
    except OSError:  # built by another process meanwhile: theirs is identical (same settings)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def tiny_settings(cfg: TrainConfig) -> dict:
    """What the tiny model is a function of (recorded in it, checked before reuse)."""
    from dataclasses import asdict

    return {"tiny_model": {k: v for k, v in asdict(cfg.tiny_model).items() if k != "build"}}


def sft_settings(cfg: TrainConfig) -> dict:
    """What the warm start is a function of: RUN/sft-base is reused only when these match."""
    from dataclasses import asdict

    m = cfg.model
    out = {"sft": asdict(cfg.sft), "seed": cfg.seed, "rollout": {"prompt": cfg.rollout.prompt},
           "model": {"name_or_path": str(Path(m.name_or_path).resolve()) if Path(m.name_or_path).exists() else m.name_or_path,
                     "lora": asdict(m.lora) if m.lora else None, "dtype": m.dtype, "quantization": m.quantization,
                     "min_pixels": m.min_pixels, "max_pixels": m.max_pixels},
           "data": {"train": list(cfg.data.train), "split_seed": cfg.data.split_seed}}
    if cfg.sft.target != "mos":  # the random ratings are drawn from the reward's score range
        out["reward"] = {"score_min": cfg.reward.score_min, "score_max": cfg.reward.score_max}
    if cfg.tiny_model.build:
        out.update(tiny_settings(cfg))
    return json.loads(json.dumps(out))  # tuples -> lists, as read back from disk


def reference_model_config(cfg: ModelConfig, base: str) -> ModelConfig:
    """cfg with another base folder (the warm-started one); the LoRA settings stay."""
    from dataclasses import replace

    return replace(cfg, name_or_path=base)


# ============================================================================ the trainer


@dataclass
class Experience:
    """One sampled micro-batch, everything the μ policy updates need."""

    batch: object  # PromptBatch of the original images
    feats: torch.Tensor  # their vision features (computed once)
    batch_deg: Optional[object]
    feats_deg: Optional[torch.Tensor]
    completion_ids: torch.Tensor  # [S, T]
    completion_mask: torch.Tensor  # [S, T]
    advantages: torch.Tensor  # [S]
    ref_logp: Optional[torch.Tensor]  # [S, T]
    hidden_deg: Optional[torch.Tensor]  # [S, T, H] (no grad), or None when computed in the update
    old_logp: Optional[torch.Tensor] = None  # [S, T], filled when μ > 1
    stats: Dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    interrupted: bool = False
    eval_before: Optional[dict] = None
    eval_after: Optional[dict] = None
    seconds: float = 0.0
    main: bool = True  # False on torchrun ranks other than 0, which say nothing to the user


class Trainer:
    def __init__(self, cfg: TrainConfig, *, run_dir: Optional[Path] = None, log_stream=None,
                 dist: Optional[Dist] = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir or cfg.output_dir)
        # Data parallel (torchrun): rank 0 alone writes files and talks to the user.
        self.dist = dist or Dist.single()
        self.log = Logger(self.run_dir, every=cfg.logging.every, progress=cfg.logging.progress, stream=log_stream,
                          report_to=cfg.logging.report_to if self.dist.main else (), config=cfg.to_dict(),
                          silent=not self.dist.main)
        self.policy = None
        self.optimizer = None
        self.step = 0  # RL steps done
        self.bad_streak = 0
        self.data: Optional[Dataset] = None
        self.partners = Partners(cfg)
        self.base = cfg.model.name_or_path  # the RL policy's base (the warm-started model after SFT)
        self.history: List[dict] = []
        self._collapse_warned = False  # collapse_warning is said once a run
        self._stop = False
        self.bad_ids: set = set()  # training records whose image failed to decode
        self.faults = 0  # data faults so far (this process)
        self._saved_step: Optional[int] = None  # step of the newest checkpoint written or loaded
        self._positions: Optional[Dict[str, int]] = None

    # ------------------------------------------------------------------ setup

    @property
    def total_steps(self) -> int:
        o = self.cfg.optim
        if o.max_steps is not None:
            return o.max_steps
        per_step = o.batch_size * o.grad_accum * self.dist.world  # the effective batch: summed over ranks
        return max(1, math.ceil(o.epochs * len(self.data.train) / per_step))

    def _main_only(self, fn: Callable[[], object]):
        """Run `fn` on rank 0 only (it writes files), then let every rank see its result, or the
        exception it raised (so a refused folder or bad config stops all ranks with one message)."""
        if not self.dist.enabled:
            return fn()
        out, err = None, None
        if self.dist.main:
            try:
                out = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised on every rank below
                err = picklable(e)
        out = out if isinstance(out, (str, int, float, type(None))) else None  # only small results cross ranks
        out, err = self.dist.broadcast((out, err))
        if err is not None:
            raise err
        return out

    def prepare(self) -> None:
        """Model folder (built when it is the demo's and missing), data, saved resolved config.
        Under torchrun rank 0 does what writes (the tiny model, generated demo data, config.yaml)
        and the other ranks then read."""
        self._main_only(self._prepare)
        if self.data is None:
            self.data = Dataset.load(self.cfg, lambda msg: None)

    def _prepare(self) -> None:
        from .runfolder import describe, differences, read_settings

        cfg = self.cfg
        path = Path(cfg.model.name_or_path)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and cfg.tiny_model.build and read_settings(path) is not None:
            diffs = differences(read_settings(path), tiny_settings(cfg))
            if diffs:
                inside = path.resolve().is_relative_to(self.run_dir.resolve())
                if not inside:  # may be another run's base: never rebuild it behind its back
                    raise ConfigError(f"model.name_or_path: {path} is a tiny model built with other settings "
                                      f"({describe(diffs)}); delete it or point model.name_or_path elsewhere")
                self.log.info(f"rebuilding the tiny demo model at {path}: {describe(diffs)}")
                shutil.rmtree(path)
        if not path.exists() and cfg.tiny_model.build and not _looks_like_hub_id(cfg.model.name_or_path):
            self.log.info(f"building the tiny demo model at {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            build_demo_model(path, cfg, log=self.log.info)
        if self.data is None:
            self.data = Dataset.load(cfg, self.log.info)
        tmp = self.run_dir / (CONFIG_FILE + ".tmp")
        tmp.write_text(dump_train_config(cfg), encoding="utf-8")
        os.replace(tmp, self.run_dir / CONFIG_FILE)
        self.log.info(f"data: {len(self.data.train)} training images, {len(self.data.eval)} held-out images")

    def load_policy(self, base: str, adapter: Optional[Path] = None, lora_dropout: Optional[float] = None):
        """The policy on `base` with a fresh LoRA adapter (seeded), or the adapter weights of a
        checkpoint loaded into it. `lora_dropout` overrides model.lora.dropout (the warm start's)."""
        from dataclasses import replace

        from .model import load_policy

        torch.manual_seed(self.cfg.seed)  # LoRA A init draws from the global RNG
        mcfg = reference_model_config(self.cfg.model, base)
        if lora_dropout is not None and mcfg.lora is not None:
            mcfg = replace(mcfg, lora=replace(mcfg.lora, dropout=lora_dropout))
        policy = load_policy(mcfg)
        if adapter is not None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            file = adapter / "adapter_model.safetensors"
            if not file.is_file():
                raise TrainingError(f"{file}: missing (not a hawkeye-lite checkpoint?)")
            result = set_peft_model_state_dict(policy.model, load_file(str(file), device=str(policy.device)))
            unexpected = getattr(result, "unexpected_keys", [])
            if unexpected:
                raise TrainingError(f"{file}: adapter does not match model.lora (unexpected keys, e.g. {unexpected[0]})")
        policy.model.train()
        return policy

    def make_optimizer(self, params, lr: float, betas, weight_decay: float):
        if self.cfg.optim.optimizer == "adamw_8bit":
            if self.policy.device.type != "cuda":
                raise ConfigError("optim.optimizer: adamw_8bit needs a CUDA device")
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, weight_decay=weight_decay)
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)

    # ------------------------------------------------------------------ images

    def _load(self, records) -> tuple:
        """(records, RGB images) for a batch. Every image read of a run goes through here, so a
        file that fails to decode mid-run (truncated, deleted, replaced) is handled in one place:
        reported with its file and the line that listed it, counted, and replaced in the batch by
        the next readable training record (a pure function of which files are readable, so a
        resume makes the same choice); with data.on_bad: fail the run stops (run() checkpoints)."""
        out_records, out_images = [], []
        for record in records:
            pos = self._index_of(record)
            for _ in range(len(self.data.train)):
                image = self._read(record)
                if image is not None:
                    break
                pos = (pos + 1) % len(self.data.train)
                record = self.data.train[pos]
            else:
                raise TrainingError("no readable training image is left (every one failed to decode; see the log)")
            out_records.append(record)
            out_images.append(image)
        return out_records, out_images

    def _index_of(self, record) -> int:
        if self._positions is None:
            self._positions = {r.id: i for i, r in enumerate(self.data.train)}
        return self._positions.get(record.id, 0)

    def _read(self, record):
        """The record's image (and its partner file, when the perception loss uses one), or None
        after reporting why it cannot be read."""
        from .data import load_image
        from .images import ImageReadError

        if record.id in self.bad_ids:
            return None
        try:
            image = load_image(record)
            if self._perception_on() and self.partners.uses_file(record):
                self.partners.decoded[record.id] = load_image(record, degraded=True)
            return image
        except (ImageReadError, OSError, ValueError) as e:
            self.bad_ids.add(record.id)
            self.faults += 1
            msg = f"data fault: {e}"
            self.log.write({"event": "data_fault", "step": self.step + 1, "id": record.id,
                            "source": record.source, "error": str(e)})
            if self.cfg.data.on_bad == "fail":
                raise DataFault(f"{msg} (data.on_bad: fail)") from None
            self.log.info(f"{msg}; skipped for the rest of the run and replaced in this batch")
            return None

    def _perception_on(self) -> bool:
        return self.cfg.objective.perception.enabled

    # ------------------------------------------------------------------ SFT warm start

    def warm_start(self) -> str:
        """Supervised steps on `sft_target(rating)` (the MOS, or a random rating with
        sft.target: format / describe), then fold the adapter into the base and save it
        as RUN/sft-base (the RL base and reference). Returns that folder. Reuses a finished one."""
        from .runfolder import write_settings

        cfg, s = self.cfg, self.cfg.sft
        out = self.run_dir / SFT_BASE
        reusable, why = self.sft_reusable()
        if reusable:
            self.log.info(f"warm start: reusing {out} (made with the same settings)")
            return str(out.resolve())
        if why:
            self.log.info(f"warm start: rebuilding {out}: {why}")
        policy = self.load_policy(cfg.model.name_or_path, lora_dropout=s.lora_dropout)
        params = policy.trainable_parameters()
        opt = torch.optim.AdamW(params, lr=s.lr, betas=(0.9, 0.99), weight_decay=0.0)
        tok = policy.tokenizer
        eos = tok.convert_tokens_to_ids("<|im_end|>")
        think = cfg.rollout.prompt == "think"
        describe = self._describer() if s.target == "describe" else None
        t0 = time.time()
        for step in range(s.steps):
            idx = batch_indices(len(self.data.train), step, 0, batch_size=s.batch_size, grad_accum=1, seed=cfg.seed + 7)
            recs, images = self._load([self.data.train[i] for i in idx])
            batch = policy.encode(images, cfg.rollout.prompt)
            ratings = [r.mos for r in recs] if s.target == "mos" else sft_format_ratings(cfg, step, len(recs))
            texts = [sft_target(y, think=think, description=describe(r, im) if describe else None)
                     for y, r, im in zip(ratings, recs, images)]
            seqs = [tok(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, seq in enumerate(seqs):
                ids[i, : len(seq)] = torch.tensor(seq)
                mask[i, : len(seq)] = 1
            ids, mask = ids.to(policy.device), mask.to(policy.device)
            hidden = policy.completion_hidden_states(batch, ids, mask)
            sel = mask.bool()
            # Cross-entropy through the chunked token_stats: no full-vocabulary logits here either.
            loss = -token_stats(hidden[sel], policy.lm_head_weight, ids[sel]).logp.mean()
            lr = lr_at(step, s.steps, lr=s.lr, warmup=s.warmup_steps, schedule="cosine", min_ratio=0.1)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            self.log.write({"event": "sft", "step": step + 1, "loss": loss.item(), "lr": lr, "time": time.time() - t0})
            if (step + 1) % max(1, s.steps // 10) == 0 or step + 1 == s.steps:
                self.log.info(f"sft {step + 1:>4}/{s.steps} | loss {loss.item():.4f} | {time.time() - t0:.0f}s")
        merged = policy.model.merge_and_unload()

        def write(tmp: Path) -> None:
            merged.save_pretrained(str(tmp))
            policy.processor.save_pretrained(tmp)
            write_settings(tmp, sft_settings(cfg))

        atomic_dir(out, write)
        del policy, merged, opt
        return str(out.resolve())

    def _describer(self) -> Callable:
        """record, image -> its label-free description (describe.py), relative to the training
        images; cached per record, since the warm start sees each image many times."""
        from .describe import Describer

        _, images = self._load(self.data.train)
        describer, cache = Describer(images), {}

        def describe(record, image) -> str:
            if record.id not in cache:
                cache[record.id] = describer(image)
            return cache[record.id]

        return describe

    def sft_reusable(self) -> tuple:
        """(True, "") when RUN/sft-base exists and was made with this config's warm-start
        settings; else (False, why) — why is "" when there is none yet."""
        from .runfolder import describe, differences, read_settings

        out = self.run_dir / SFT_BASE
        if not (out / "config.json").is_file():
            return False, ""
        saved = read_settings(out)
        if saved is None:
            return False, "it records no settings (made by an older version)"
        diffs = differences(saved, sft_settings(self.cfg))
        return (False, f"made with other settings: {describe(diffs)}") if diffs else (True, "")

    # ------------------------------------------------------------------ one RL step

    @torch.no_grad()
    def sample(self, records, seeds: Sequence[int]) -> List[Experience]:
        """Rollouts for the images of a step (`records` in slot order, one rollout seed each),
        decoded `rollout.batch_size` images at a time (None: all together); then, per learning
        micro-batch of `optim.batch_size` images, rewards, advantages, reference log-probs and
        degraded hidden states. The vision tower runs once per image on the originals (its
        features feed the rollouts and every pass) and once on the partners."""
        from .decode import rollout_weights
        from .prompts import format_ok
        from .rewards import compute_rewards
        from .rollout import generate_rollouts

        cfg, policy = self.cfg, self.policy
        r = cfg.rollout
        records, images = self._load(records)
        if len(seeds) != len(records):
            raise ValueError(f"sample: {len(seeds)} seeds for {len(records)} images")
        n, mb, g = len(records), cfg.optim.batch_size, r.num_generations
        micro = [list(range(i, min(i + mb, n))) for i in range(0, n, mb)]
        batches, feats, per_image = [], [], []
        for m in micro:
            batch = policy.encode([images[i] for i in m], r.prompt)
            f = policy.image_features(batch)
            batches.append(batch)
            feats.append(f)
            per_image += list(torch.split(f, policy.processor.num_image_tokens(batch.image_grid_thw)))

        chunk = min(r.batch_size or n, n)
        done = [None] * n  # per image: (ids [G, T], mask [G, T], texts, scores [G])
        t0 = time.time()
        cache_len = max(b.input_ids.shape[1] for b in batches) + r.max_new_tokens
        with rollout_weights(policy, r.weights, rows=chunk * g, cache_len=cache_len):
            for c0 in range(0, n, chunk):
                idx = list(range(c0, min(c0 + chunk, n)))
                # A chunk that is exactly one micro-batch decodes from that micro-batch's prompts.
                batch = batches[c0 // mb] if c0 % mb == 0 and idx == micro[c0 // mb] else \
                    policy.encode([images[i] for i in idx], r.prompt)
                ro = generate_rollouts(policy, [images[i] for i in idx], num_generations=g,
                                       max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                                       top_k=r.top_k, seeds=[seeds[i] for i in idx], prompt=r.prompt, batch=batch,
                                       image_features=torch.cat([per_image[i] for i in idx]), engine=r.engine,
                                       sync_every=r.sync_every)
                for j, i in enumerate(idx):
                    rows = slice(j * g, (j + 1) * g)
                    done[i] = (ro.completion_ids[rows], ro.completion_mask[rows], ro.texts[rows], ro.scores[j])
        t_roll = time.time() - t0

        # Rewards, advantages, reference and degraded passes: per learning micro-batch.
        def experience(records, images, batch, feats, ids, mask, texts, scores, t_roll) -> Experience:
            o = cfg.objective
            B, G = len(records), r.num_generations
            rewards = compute_rewards(texts, [x.mos for x in records], cfg.reward, num_generations=G)
            adv = group_advantages(rewards.total.view(B, G).to(policy.device), scores.to(policy.device), alpha=o.alpha,
                                   score_min=cfg.reward.score_min, score_max=cfg.reward.score_max, eps=o.adv_eps,
                                   scale_rewards=o.scale_rewards, use_uncertainty=o.use_uncertainty)
            sel = mask.bool()
            ref_logp = None
            if o.beta > 0:  # reference = the same model with the adapter switched off
                with policy.reference():
                    h_ref = policy.completion_hidden_states(batch, ids, mask, feats)
                ref_logp = _scatter(sel, token_stats(h_ref[sel], policy.lm_head_weight, ids[sel],
                                                     temperature=r.temperature, chunk_size=o.chunk_size).logp)
            batch_deg = feats_deg = hidden_deg = None
            if self._perception_on():
                batch_deg = policy.encode([self.partners(rec, im) for rec, im in zip(records, images)], r.prompt)
                feats_deg = policy.image_features(batch_deg)
                if not o.perception.degraded_grad:
                    hidden_deg = policy.completion_hidden_states(batch_deg, ids, mask, feats_deg)

            stats = {"reward": float(rewards.total.mean()), "reward_std": float(rewards.total.std()) if rewards.total.numel() > 1 else 0.0}
            stats.update({f"reward_{k}": float(v.mean()) for k, v in rewards.columns.items()})
            stats["format_rate"] = sum(format_ok(t, require_think=cfg.reward.require_think) for t in texts) / len(texts)
            stats["parse_rate"] = float((~torch.isnan(scores)).float().mean())
            stats.update(reward_spread(rewards, G))
            stats["uncertainty"] = float(adv.uncertainty.mean())
            stats["weight"] = float(adv.weight.mean())
            stats["adv_std"] = float(adv.advantages.std())
            stats["completion_len"] = float(mask.sum(1).float().mean())
            stats["rollout_tokens"] = float(mask.sum())
            stats["rollout_time"] = t_roll  # this micro-batch's share of the step's decoding time
            return Experience(batch, feats, batch_deg, feats_deg, ids, mask, adv.advantages.reshape(-1).float(), ref_logp,
                              hidden_deg, stats=stats)

        pad = policy.tokenizer.pad_token_id
        exps = []
        for m, batch, f in zip(micro, batches, feats):
            # Each micro-batch's completions as one decode of it alone would give them: as wide
            # as its longest completion (only pad columns are cut or added).
            width = max(int(done[i][1].sum(1).max()) for i in m)
            ids = torch.full((len(m) * g, width), pad, dtype=torch.long, device=policy.device)
            mask = torch.zeros_like(ids)
            for j, i in enumerate(m):
                w = min(width, done[i][0].shape[1])
                ids[j * g : (j + 1) * g, :w] = done[i][0][:, :w]
                mask[j * g : (j + 1) * g, :w] = done[i][1][:, :w]
            texts = [t for i in m for t in done[i][2]]
            scores = torch.stack([done[i][3] for i in m])
            exps.append(experience([records[i] for i in m], [images[i] for i in m], batch, f, ids, mask, texts,
                                   scores, t_roll * len(m) / n))
        return exps

    def _normalisers(self, exps: List[Experience]) -> List[tuple]:
        """(scale, perception_scale) per micro-batch, so that the sum of `scale * loss` over the
        step's micro-batches and ranks is the objective of the whole step as one batch (SPEC
        §1.3-1.4) for every loss_type: the policy term is normalised by sequences (grpo, dr_grpo)
        or tokens (dapo) of the whole step, the perception terms by its tokens. Counts are summed
        over ranks, so R ranks x batch b give the gradient of one process with batch R*b."""
        seqs = [float(e.completion_mask.shape[0]) for e in exps]
        toks = [float(e.completion_mask.sum()) for e in exps]
        total_seqs, total_toks = self.dist.sum([sum(seqs), sum(toks)])
        out = []
        for s_i, t_i in zip(seqs, toks):
            scale = t_i / total_toks if self.cfg.objective.loss_type == "dapo" else s_i / total_seqs
            # The fused loss averages the perception terms over this micro-batch's tokens; rescale
            # their coefficients so that after `scale` they are averaged over the step's tokens.
            out.append((scale, (t_i / total_toks) / scale))
        return out

    def loss(self, exp: Experience, gamma: float, perception_scale: float = 1.0):
        """Policy forward on the completion positions only, then the fused objective."""
        cfg, policy = self.cfg, self.policy
        o, p = cfg.objective, cfg.objective.perception
        vision_trainable = policy.model.training and cfg.model.lora.vision
        feats = None if vision_trainable else exp.feats
        hidden = policy.completion_hidden_states(exp.batch, exp.completion_ids, exp.completion_mask, feats)
        hidden_deg = exp.hidden_deg
        if self._perception_on() and hidden_deg is None:  # degraded_grad: the pass is part of the graph
            hidden_deg = policy.completion_hidden_states(exp.batch_deg, exp.completion_ids, exp.completion_mask,
                                                         None if vision_trainable else exp.feats_deg)
        on = self._perception_on()
        loss, metrics = policy_loss_from_hidden(
            hidden, policy.lm_head_weight, exp.completion_ids, exp.advantages, exp.completion_mask,
            exp.old_logp, exp.ref_logp, hidden_deg if on else None,
            beta=o.beta, eps_low=o.eps_low, eps_high=o.eps_high, loss_type=o.loss_type,
            max_len=cfg.rollout.max_new_tokens, gamma=gamma * perception_scale if on else 0.0,
            eta1=p.eta1 * perception_scale if on else 0.0, eta2=p.eta2 * perception_scale if on else 0.0, temperature=cfg.rollout.temperature, chunk_size=o.chunk_size,
        )
        if cfg.optim.mu > 1 and exp.old_logp is None:
            # The sampling policy's log-probs, for the μ-1 later updates on this batch.
            sel = exp.completion_mask.bool()
            with torch.no_grad():
                lp = token_stats(hidden.detach()[sel], policy.lm_head_weight, exp.completion_ids[sel],
                                 temperature=cfg.rollout.temperature, chunk_size=o.chunk_size).logp
            exp.old_logp = _scatter(sel, lp)
        tokens = exp.completion_ids.shape[0] * (exp.batch.input_ids.shape[1] + exp.completion_ids.shape[1])
        return loss, metrics, tokens

    def rl_step(self) -> dict:
        """One step: rollouts for all grad_accum x batch_size images (rollout.batch_size at a
        time), then μ optimizer updates over the grad_accum micro-batches."""
        from .rollout import step_seeds

        cfg, o = self.cfg, self.cfg.optim
        step = self.step
        n = len(self.data.train)
        world, rank = self.dist.world, self.dist.rank
        epoch = step * o.batch_size * o.grad_accum * world / n
        gamma = gamma_at(epoch, cfg.objective.perception.gamma0, cfg.objective.perception.kl_zero_epoch)
        lr = lr_at(step, self.total_steps, lr=o.lr, warmup=o.warmup_steps, schedule=o.schedule, min_ratio=o.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.time()
        # The step's images in slot order (global micro-batch m, position i); rank r takes the
        # contiguous micro-batches r*grad_accum .. (r+1)*grad_accum-1, so R ranks x batch b is
        # the same images and rollout seeds as one process with batch R*b.
        records = []
        for micro in range(rank * o.grad_accum, (rank + 1) * o.grad_accum):
            idx = batch_indices(n, step, micro, batch_size=o.batch_size, grad_accum=o.grad_accum * world, seed=cfg.seed)
            records += [self.data.train[i] for i in idx]
        seeds = step_seeds(cfg.seed, step, len(records) * world)[rank * len(records):(rank + 1) * len(records)]
        fault = None
        try:
            exps = self.sample(records, seeds)
        except DataFault as e:  # on_bad: fail on one rank stops every rank with its message
            fault = str(e)
        if self.dist.enabled:
            faults = [f for f in self.dist.gather(fault) if f]
            fault = faults[0] if faults else None
        if fault is not None:
            raise DataFault(fault)
        t_sample = time.time() - t0
        norms = self._normalisers(exps)

        params = self.policy.trainable_parameters()
        t1 = time.time()
        losses, metrics_all, tokens, grad_norms, skipped = [], [], 0, [], 0
        self.policy.model.train()
        for _ in range(o.mu):
            self.optimizer.zero_grad(set_to_none=True)
            finite = True
            for exp, (scale, perception_scale) in zip(exps, norms):
                loss, metrics, ntok = self.loss(exp, gamma, perception_scale)
                tokens += ntok
                if not torch.isfinite(loss):
                    finite = False
                    break
                (loss * scale).backward()
                losses.append(loss.item())
                metrics_all.append(metrics)
            finite = not self.dist.any(not finite)  # every rank skips, or none
            if finite:
                self.dist.all_reduce_grads(params)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm if o.max_grad_norm > 0 else float("inf"))
            if not finite or not torch.isfinite(grad_norm):
                # A non-finite loss or gradient must never reach the weights (AdamW would spread
                # the NaN into every later step): drop this update.
                self.optimizer.zero_grad(set_to_none=True)
                skipped += 1
                grad_norms.append(float("nan"))
                continue
            self.optimizer.step()
            grad_norms.append(float(grad_norm))
        t_train = time.time() - t1

        self.step += 1
        rec = {"event": "step", "step": self.step, "epoch": round(epoch, 4), "lr": lr, "gamma": gamma}
        for key in exps[0].stats:
            rec[key] = sum(e.stats[key] for e in exps) / len(exps)
        rec["loss"] = sum(losses) / len(losses) if losses else float("nan")
        for key in sorted({k for m in metrics_all for k in m}):
            vals = [m[key] for m in metrics_all if key in m]
            rec[key] = sum(vals) / len(vals)
        finite_norms = [g for g in grad_norms if math.isfinite(g)]
        rec["grad_norm"] = sum(finite_norms) / len(finite_norms) if finite_norms else float("nan")
        rec["skipped_updates"] = skipped
        rec["rollout_tok_s"] = sum(e.stats["rollout_tokens"] for e in exps) / max(sum(e.stats["rollout_time"] for e in exps), 1e-9)
        rec["train_tok_s"] = tokens / max(t_train, 1e-9)
        rec["sample_time"] = t_sample
        rec["train_time"] = t_train
        rec["peak_mem_mb"] = peak_memory_mb(self.policy.device)
        if self.dist.enabled:  # the logged numbers are means over ranks (peak memory: the largest)
            keys = [k for k, v in rec.items() if isinstance(v, (int, float)) and k not in ("step", "epoch", "lr", "gamma")]
            vals = self.dist.sum([rec[k] for k in keys])
            peak = max(self.dist.gather(rec["peak_mem_mb"]))
            rec.update({k: v / world for k, v in zip(keys, vals)})
            rec["peak_mem_mb"], rec["skipped_updates"] = peak, skipped
        if skipped == o.mu:
            self.bad_streak += 1
            self.log.info(f"step {self.step}: non-finite loss or gradient, update skipped "
                          f"({self.bad_streak} in a row, stopping at {o.max_bad_steps})")
            if self.bad_streak >= o.max_bad_steps:
                self.log.write(rec)
                raise TrainingError(f"{self.bad_streak} consecutive steps with a non-finite loss or gradient "
                                    f"(optim.max_bad_steps={o.max_bad_steps}); stopping. Lower optim.lr or check the data.")
        else:
            self.bad_streak = 0
        return rec

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, tag: str) -> dict:
        from . import mechanism
        from .evaluate import evaluate, scorer_fn
        from .scorer import Scorer

        e, r = self.cfg.eval, self.cfg.rollout
        if len(self.data.eval) < 3:
            return {}
        scorer = Scorer(self.policy, prompt=r.prompt, max_new_tokens=e.max_new_tokens or r.max_new_tokens)
        t0 = time.time()

        def scored(seed: int):
            score = scorer_fn(scorer, samples=e.samples, temperature=e.temperature, seed=seed, stratified=e.stratified)
            if self.dist.enabled:
                # Sharded: each rank scores a contiguous share; every prediction is a function of its
                # image alone (per-image streams), so the gathered table is the single-process one.
                mine = [self.data.eval[i] for i in share(len(self.data.eval), self.dist.rank, self.dist.world)]
                rows = evaluate(mine, score, batch_size=e.batch_size).rows if mine else []
                by_image = {rec.image: p for part in self.dist.gather([(rec, p) for rec, p in rows]) for rec, p in part}
                return evaluate(self.data.eval, lambda paths: [by_image[q] for q in paths], batch_size=len(self.data.eval))
            return evaluate(self.data.eval, score, batch_size=e.batch_size)

        # eval.repeats: the whole scoring again with seeds seed+1, ...; the logged srcc/plcc stay seed's.
        reports = [scored(e.seed + i) for i in range(e.repeats)]
        report = reports[0]
        per_image, t1 = None, time.time()
        if e.mechanism:  # mechanism.py: sens, pkl, pkl_all (this rank's share, then gathered)
            mine = [report.rows[i] for i in share(len(report.rows), self.dist.rank, self.dist.world)]
            per_image = mechanism.measure(scorer, mine, self.partners, samples=e.samples, temperature=e.temperature,
                                          seed=e.seed, mechanism_samples=e.mechanism_samples, batch_size=e.batch_size,
                                          chunk_size=self.cfg.objective.chunk_size, stratified=e.stratified)
            per_image = [x for part in self.dist.gather(per_image) for x in part]
        per_dataset, extra = mechanism.eval_fields(reports, per_image)
        self.policy.model.train()
        out = {"event": "eval", "tag": tag, "step": self.step, "seconds": round(time.time() - t0, 2), "datasets": {}}
        if e.mechanism:
            out["mechanism_seconds"] = round(time.time() - t1, 2)
        for d in report.datasets:
            m = d.metrics
            out["datasets"][d.dataset] = {"n": d.n_images, "srcc": m.srcc, "plcc": m.plcc, "plcc_fit": m.plcc_fit,
                                          "krcc": m.krcc, "rmse": m.rmse, "parse_rate": d.sample_parse_rate,
                                          "n_failed": d.n_failed, **per_dataset[d.dataset]}
            if d.n_failed:
                self.log.info(f"eval [{tag}]: {d.n_failed} held-out image(s) of {d.dataset} could not be read "
                              "(not in the metrics)")
        vals = list(out["datasets"].values())
        out["srcc"] = sum(v["srcc"] for v in vals) / len(vals)
        out["plcc"] = sum(v["plcc"] for v in vals) / len(vals)
        out["parse_rate"] = sum(v["parse_rate"] for v in vals) / len(vals)
        out.update(extra)
        self.log.write(out)
        mech = f" sens {out['sens']:+.3f} pKL {out['pkl']:.2e}" if e.mechanism else ""
        self.log.info(f"eval [{tag}] step {self.step}: SRCC {out['srcc']:.4f} PLCC {out['plcc']:.4f} "
                      f"parse {out['parse_rate']:.1%}{mech} ({out['seconds']:.0f}s)")
        return out

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, rng: Optional[Dict[str, torch.Tensor]] = None) -> Path:
        """RUN/checkpoints/step-NNNNNN: adapter (PEFT safetensors) + processor + hawkeye.json +
        config.yaml + training_state/ (state.json, optimizer.pt, rng.safetensors). Atomic; keeps
        the last checkpoint.keep_last."""
        from safetensors.torch import save_file

        final = self.run_dir / CHECKPOINTS / f"step-{self.step:06d}"
        self._saved_step = self.step
        rng = rng or rng_state()
        if self.dist.enabled:  # every rank's stream (LoRA dropout), so a resume continues each exactly
            rng = {f"rank{r}.{k}": v for r, state in enumerate(self.dist.gather(rng)) for k, v in state.items()}
        if not self.dist.main:
            return final
        final.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            self._write_model(tmp)
            st = tmp / STATE_DIR
            st.mkdir()
            # Optimizer state is tensors + numbers only, so it reloads with weights_only=True.
            torch.save(self.optimizer.state_dict(), st / "optimizer.pt")
            save_file({k: v.contiguous() for k, v in rng.items()}, str(st / "rng.safetensors"))
            state = {"step": self.step, "base": self.base, "bad_streak": self.bad_streak, "world_size": self.dist.world,
                     "total_steps": self.total_steps, "scheduler": {"kind": self.cfg.optim.schedule, "step": self.step}}
            (st / "state.json").write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")

        atomic_dir(final, write)
        ckpts = sorted((self.run_dir / CHECKPOINTS).glob("step-*"))
        for old in ckpts[: -self.cfg.checkpoint.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def _read_state(ckpt: Path) -> dict:
        path = ckpt / STATE_DIR / "state.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise TrainingError(f"{path}: cannot read the training state ({e})") from None

    def _check_world_size(self, ckpt: Path, state: dict) -> None:
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.dist.world:
            # The data order and every rank's random stream are laid out per world size.
            raise RunFolderError(f"--resume {self.run_dir}: {ckpt.name} was written by {saved_world} process(es); "
                                 f"resume it with torchrun --nproc_per_node {saved_world} (this is {self.dist.world})")

    def load_checkpoint(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        st = ckpt / STATE_DIR
        state = self._read_state(ckpt)
        self._check_world_size(ckpt, state)
        self.base = state["base"]
        self.policy = self.load_policy(self.base, adapter=ckpt)
        o = self.cfg.optim
        self.optimizer = self.make_optimizer(self.policy.trainable_parameters(), o.lr, o.betas, o.weight_decay)
        # weights_only: never unpickle arbitrary objects from a file on disk.
        self.optimizer.load_state_dict(torch.load(st / "optimizer.pt", map_location=self.policy.device, weights_only=True))
        self.step = int(state["step"])
        self._saved_step = self.step
        self.bad_streak = int(state.get("bad_streak", 0))
        rng = load_file(str(st / "rng.safetensors"))
        if self.dist.enabled:
            prefix = f"rank{self.dist.rank}."
            rng = {k[len(prefix):]: v for k, v in rng.items() if k.startswith(prefix)}
        set_rng_state(rng)
        self.log.info(f"resumed from {ckpt} at step {self.step}")

    def save_final(self) -> Path:
        if not self.dist.main:
            return self.run_dir / FINAL
        return atomic_dir(self.run_dir / FINAL, self._write_model)

    def _write_model(self, out: Path) -> None:
        """What a checkpoint and final/ share: the adapter, hawkeye.json (prompt and completion
        cap the Scorer reads back), the resolved config and the README.md model card."""
        from .modelcard import write_model_card

        self.policy.save_pretrained(out, prompt=self.cfg.rollout.prompt, max_new_tokens=self.cfg.rollout.max_new_tokens)
        (out / CONFIG_FILE).write_text(dump_train_config(self.cfg), encoding="utf-8")
        kind = "checkpoint" if "step-" in out.name else "final"  # out is atomic_dir's .tmp-<name>-PID
        write_model_card(out, self.cfg, base=self.base, step=self.step, total_steps=self.total_steps,
                         run_dir=self.run_dir, kind=kind)

    # ------------------------------------------------------------------ the run

    def run(self, resume: bool = False, max_steps: Optional[int] = None, overwrite: bool = False) -> RunResult:
        """Take the run folder (locked; a folder holding another run is refused unless `resume`
        or `overwrite`), then train. `max_steps` stops early after that many steps in total
        (tests, Ctrl-C emulation); the schedule still follows the configured total."""
        import contextlib

        from .runfolder import claim

        with contextlib.ExitStack() as stack:
            # Rank 0 takes the folder (lock, refusal); the others learn whether it could.
            self._main_only(lambda: stack.enter_context(claim(self.run_dir, resume=resume, overwrite=overwrite,
                                                              log=self.log.info)) and None)
            return self._run(resume, max_steps)

    def _resume_changes(self) -> List[tuple]:
        """Keys of this config that differ from the run's saved config.yaml (output_dir aside)."""
        import yaml

        from .runfolder import differences

        saved = self.run_dir / CONFIG_FILE
        if not saved.is_file():
            return []
        old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        return [d for d in differences(old, self.cfg.to_dict()) if d[0] != "output_dir"]

    def _run(self, resume: bool, max_steps: Optional[int]) -> RunResult:
        """prepare -> (warm start) -> eval before -> RL steps (checkpoints, periodic eval) -> eval
        after -> RUN/final."""
        from .runfolder import cut_metrics, describe

        t_start = time.time()
        ckpt = latest_checkpoint(self.run_dir) if resume else None
        changes = self._resume_changes() if resume else []
        if ckpt is not None:
            # The checkpoint's adapter sits on a base made by these settings: they cannot change.
            fixed = [c for c in changes if c[0].split(".")[0] in ("model", "tiny_model", "sft")]
            if fixed:
                raise RunFolderError(f"--resume {self.run_dir}: {describe(fixed)} cannot change in a run that has "
                                     "checkpoints (the adapter was trained on that base); start a new run instead")
        if ckpt is not None:
            self._check_world_size(ckpt, self._read_state(ckpt))  # before anything in the folder is touched
        for key, old, new in changes:
            self.log.info(f"resume: {key} changed {old!r} -> {new!r}")
        self.prepare()
        result = RunResult(self.run_dir, 0, main=self.dist.main)
        if resume and ckpt is None:
            self.log.info(f"no checkpoint in {self.run_dir / CHECKPOINTS}: starting from the beginning")
        if resume and self.dist.main:
            at = 0 if ckpt is None else int(ckpt.name.split("-")[-1])
            keep_sft = ckpt is not None or self.cfg.sft.steps == 0 or self.sft_reusable()[0]
            dropped = cut_metrics(self.run_dir / METRICS, at, restart=ckpt is None, keep_sft=keep_sft)
            if dropped:
                self.log.info(f"metrics.jsonl: {dropped} records after step {at} removed (they are redone now)")
            self.log.write({"event": "resume", "step": at, "changes": {k: [o, n] for k, o, n in changes}})
        if ckpt is not None:
            self.load_checkpoint(ckpt)
            if self.step >= self.total_steps and (self.run_dir / FINAL).is_dir():
                self.log.info(f"{self.run_dir}: the run finished at step {self.step} of {self.total_steps}; "
                              "nothing to do (raise optim.max_steps or optim.epochs with --set to train on)")
                return RunResult(self.run_dir, self.step, seconds=time.time() - t_start, main=self.dist.main)
        else:
            if self.cfg.sft.steps > 0:  # rank 0 warm-starts; every rank then loads RUN/sft-base
                self.base = self._main_only(self.warm_start)
            self.policy = self.load_policy(self.base)
            o = self.cfg.optim
            self.optimizer = self.make_optimizer(self.policy.trainable_parameters(), o.lr, o.betas, o.weight_decay)
            if self.cfg.eval.before:
                result.eval_before = self.evaluate("before RL")
        total = self.total_steps
        stop_at = min(total, max_steps) if max_steps is not None else total
        started = self.step
        self.log.t0 = time.time()
        self.log.info(f"RL: steps {self.step + 1}..{stop_at} of {total} "
                      f"(B={self.cfg.optim.batch_size} images x G={self.cfg.rollout.num_generations}, "
                      f"accum {self.cfg.optim.grad_accum}, mu {self.cfg.optim.mu})")
        # Ctrl-C: the first one lets the current step finish, then checkpoints and stops (so the
        # checkpoint is always a whole number of steps); a second one stops at once.
        def on_sigint(signum, frame):
            if self._stop:
                raise KeyboardInterrupt
            self._stop = True
            self.log.info("\nCtrl-C: finishing this step, then writing a checkpoint (Ctrl-C again to stop now)")

        previous, previous_term = None, None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, on_sigint)
            if self.dist.enabled:  # torchrun passes a Ctrl-C on to its workers as SIGTERM
                previous_term = signal.signal(signal.SIGTERM, on_sigint)
        try:
            while self.step < stop_at and not self._stop:
                rng = rng_state()  # the step's starting RNG: what a checkpoint of the pre-step state holds
                step_before = self.step
                try:
                    faults_before = self.faults
                    rec = self.rl_step()
                    rec["data_faults"] = self.faults - faults_before
                except DataFault:
                    # Bad input with on_bad: fail: keep what was learnt, then stop with the message.
                    if self.step == step_before:
                        self.log.info(f"writing a checkpoint at step {self.step} before stopping")
                        self.save_checkpoint(rng)
                    raise
                except KeyboardInterrupt:
                    # Stopped inside a step: the step counter was not advanced, so save the state
                    # from before it (exact unless the interrupt fell between two of its μ updates).
                    self._stop = True
                    if self.step == step_before:
                        self.log.info(f"\ninterrupted: writing a checkpoint at step {self.step}")
                        self.save_checkpoint(rng)
                    break
                self._stop = self.dist.any(self._stop)  # all ranks stop after the same step
                self.history.append(rec)
                self.log.step(rec, total, started)
                if not self._collapse_warned:
                    warning = collapse_warning(self.history)
                    if warning:
                        self.log.info(warning)
                        self._collapse_warned = True
                every = self.cfg.checkpoint.every
                if every and self.step % every == 0 and self.step < total and not self._stop:
                    self.save_checkpoint()
                if self.cfg.eval.every and self.step % self.cfg.eval.every == 0 and self.step < total and not self._stop:
                    self.evaluate(f"step {self.step}")
            if self._stop:
                result.interrupted = True
                if self._saved_step != self.step:
                    self.log.info(f"writing a checkpoint at step {self.step}")
                    self.save_checkpoint()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if previous_term is not None:
                signal.signal(signal.SIGTERM, previous_term)
        result.steps = self.step
        if result.interrupted:
            result.seconds = time.time() - t_start
            return result
        if self.step < total:  # stopped early on purpose (max_steps): leave a resumable checkpoint
            self.save_checkpoint()
            result.seconds = time.time() - t_start
            return result
        self.save_checkpoint()
        if self.cfg.eval.after:
            result.eval_after = self.evaluate("after RL")
        self.save_final()
        if self.cfg.logging.plot and self.dist.main:
            from .plot import plot_run

            self.log.info(plot_run(self.run_dir))
        self.log.close()  # the trackers: TensorBoard's last flush, W&B's run.finish()
        result.seconds = time.time() - t_start
        return result


def _looks_like_hub_id(name: str) -> bool:
    import re

    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None and not name.startswith(("runs/", "./", "../"))


def summary_table(result: RunResult) -> str:
    """Held-out metrics before and after RL, one row per dataset."""
    lines = [f"{'dataset':<12}{'':>8}{'SRCC':>9}{'PLCC':>9}{'PLCC-fit':>10}{'parse':>8}", "-" * 56]

    def f(v):
        return f"{v:>9.4f}" if isinstance(v, float) and math.isfinite(v) else f"{'n/a':>9}"

    for tag, ev in (("before", result.eval_before), ("after", result.eval_after)):
        for name, d in ((ev or {}).get("datasets") or {}).items():
            lines.append(f"{name:<12}{tag:>8}{f(d['srcc'])}{f(d['plcc'])}{f(d['plcc_fit'])}{d['parse_rate']:>8.1%}")
    return "\n".join(lines)


def train(config: Optional[Path] = None, overrides: Sequence[str] = (), resume: Optional[Path] = None,
          log_stream=None, overwrite: bool = False) -> RunResult:
    """`hawkeye-lite train`: config file (default: the built-in demo) + overrides, or --resume RUN
    (the run's saved config.yaml, plus any overrides). `overwrite` replaces a run already in
    output_dir (otherwise such a folder is refused). Under torchrun (WORLD_SIZE > 1) every
    process runs this, data-parallel; rank 0 writes."""
    if resume is not None:
        resume = Path(resume)
        saved = resume / CONFIG_FILE
        if not saved.is_file():
            what = "no such folder" if not resume.exists() else f"no {CONFIG_FILE} there (not a hawkeye-lite run folder)"
            raise RunFolderError(f"--resume {resume}: {what}")
        if overwrite:
            raise RunFolderError("--resume continues the run in its folder; --overwrite would delete it: use one of them")
        cfg = load_train_config(saved, overrides)
    else:
        cfg = load_train_config(config, overrides)
    dist = Dist.from_env(timeout_s=cfg.distributed.timeout_s, device=cfg.model.device or "")
    try:
        if dist.backend == "nccl" and (cfg.model.device in (None, "cuda")):
            from dataclasses import replace

            cfg = replace(cfg, model=replace(cfg.model, device=f"cuda:{dist.local_rank}"))  # one GPU per rank
        trainer = Trainer(cfg, run_dir=resume, log_stream=log_stream, dist=dist)
        return trainer.run(resume=True) if resume is not None else trainer.run(overwrite=overwrite)
    finally:
        dist.close()
