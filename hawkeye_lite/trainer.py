"""The Q-Hawkeye recipe (SPEC §1): UA-GRPO + the implicit perception loss on a LoRA policy.

`Trainer.rl_step` is one step, start to end; each stage lives in a module of its own:

  1. sample      the step's images, a pure function of (seed, step)       trainset.py
  2. roll out    G completions per image, all images decoded together     experience.py, decode.py
  3. reward      accuracy + format + repetition per completion            rewards.py
  4. weight      group advantages x exp(-α·uncertainty)                   kernels (group_advantages)
  5. passes      reference (adapter off) and degraded-partner hidden states, no gradient
  6. loss        clipped surrogate + β·k3 KL - γ(t)·KL(p‖p̃) + η·H, fused  update.py, kernels
  7. update      backward, all-reduce across ranks, clip, step (μ times)   update.py

Around it: the warm start (warmstart.py), held-out evaluation (heldout.py), checkpoints
(checkpoint.py), the run loop with resume and Ctrl-C (runloop.py), the run folder
(runfolder.py), logging (runlog.py) and the ranks under torchrun (distributed.py).

Everything random is either seeded by (seed, step) (data order, sampling, degradations) or
restored from the checkpoint (torch RNG: LoRA dropout), so `--resume` continues exactly.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch

from .checkpoint import (
    CONFIG_FILE,
    check_world_size,
    load_adapter,
    read_state,
    restore_training_state,
    save_checkpoint,
    save_final,
)
from .config import ConfigError, TrainConfig
from .config_loader import dump_train_config, load_train_config
from .distributed import Dist, picklable
from .errors import DataFault, TrainingError
from .experience import Experience, collect
from .fsio import atomic_write_text
from .runfolder import RunFolderError
from .runlog import Logger, step_record
from .runloop import RunResult
from .schedules import gamma_at, lr_at, set_lr
from .trainset import Dataset, ImageReader, Partners, step_records
from .update import update


class Trainer:
    def __init__(
        self, cfg: TrainConfig, *, run_dir: Optional[Path] = None, log_stream=None, dist: Optional[Dist] = None
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir or cfg.output_dir)
        # Data parallel (torchrun): rank 0 alone writes files and talks to the user.
        self.dist = dist or Dist.single()
        self.log = Logger(
            self.run_dir,
            every=cfg.logging.every,
            progress=cfg.logging.progress,
            stream=log_stream,
            report_to=cfg.logging.report_to if self.dist.main else (),
            config=cfg.to_dict(),
            silent=not self.dist.main,
        )
        self.policy = None
        self.optimizer = None
        self.step = 0  # RL steps done
        self.bad_streak = 0  # consecutive steps whose every update was non-finite
        self.data: Optional[Dataset] = None
        self.partners = Partners(cfg)
        self.base = cfg.model.name_or_path  # the RL policy's base (the warm-started model after SFT)
        self.history: List[dict] = []  # the step records of this process
        self.saved_step: Optional[int] = None  # step of the newest checkpoint written or loaded
        self._images: Optional[ImageReader] = None

    # ------------------------------------------------------------------ one RL step

    def rl_step(self) -> dict:
        """One step over the step's grad_accum x batch_size images (this rank's share under
        torchrun): rollouts for all of them together, then μ updates over the micro-batches."""
        cfg, o, dist = self.cfg, self.cfg.optim, self.dist
        p = cfg.objective.perception
        epoch = self.step * o.batch_size * o.grad_accum * dist.world / len(self.data.train)
        gamma = gamma_at(epoch, p.gamma0, p.kl_zero_epoch)
        lr = set_lr(
            self.optimizer,
            lr_at(
                self.step,
                self.total_steps,
                lr=o.lr,
                warmup=o.warmup_steps,
                schedule=o.schedule,
                min_ratio=o.min_lr_ratio,
            ),
        )
        t0 = time.time()
        # 1. sample: the step's images in slot order, and one rollout seed each
        records, seeds = step_records(self.data.train, self.step, cfg, dist.rank, dist.world)
        # 2-5. roll out, reward, weight by uncertainty, reference and degraded passes
        exps = self.sample(records, seeds)
        t_sample = time.time() - t0
        # 6-7. the fused loss and the optimizer update, μ times; non-finite updates are dropped
        upd = update(self.policy, self.optimizer, exps, cfg, dist, gamma)
        self.step += 1
        rec = step_record(
            self.step,
            epoch=epoch,
            lr=lr,
            gamma=gamma,
            exps=exps,
            upd=upd,
            sample_time=t_sample,
            device=self.policy.device,
            dist=dist,
        )
        self._count_bad_step(rec, all_skipped=upd.skipped == o.mu)
        return rec

    def sample(self, records, seeds: Sequence[int]) -> List[Experience]:
        """Read the step's images (an unreadable one is replaced; with data.on_bad: fail, the
        DataFault stops every rank with its message), then roll out and collect the experience."""
        fault, exps = None, []
        try:
            records, images = self.images.load(records)
            exps = collect(self.policy, self.cfg, records, images, seeds, self.partners)
        except DataFault as e:
            fault = str(e)
        if self.dist.enabled:
            fault = next((f for f in self.dist.gather(fault) if f), None)
        if fault is not None:
            raise DataFault(fault)
        return exps

    def _count_bad_step(self, rec: dict, *, all_skipped: bool) -> None:
        o = self.cfg.optim
        if not all_skipped:
            self.bad_streak = 0
            return
        self.bad_streak += 1
        self.log.info(
            f"step {self.step}: non-finite loss or gradient, update skipped "
            f"({self.bad_streak} in a row, stopping at {o.max_bad_steps})"
        )
        if self.bad_streak >= o.max_bad_steps:
            self.log.write(rec)
            raise TrainingError(
                f"{self.bad_streak} consecutive steps with a non-finite loss or gradient "
                f"(optim.max_bad_steps={o.max_bad_steps}); stopping. Lower optim.lr or check the data."
            )

    # ------------------------------------------------------------------ setup

    @property
    def total_steps(self) -> int:
        o = self.cfg.optim
        if o.max_steps is not None:
            return o.max_steps
        per_step = o.batch_size * o.grad_accum * self.dist.world  # the effective batch: summed over ranks
        return max(1, math.ceil(o.epochs * len(self.data.train) / per_step))

    @property
    def images(self) -> ImageReader:
        """The run's image reader (faults counted across the run), for the current `data`."""
        if self._images is None or self._images.data is not self.data:
            self._images = ImageReader(self.cfg, self.data, self.partners, self.log, step=lambda: self.step + 1)
        return self._images

    def main_only(self, fn: Callable[[], object]):
        """Run `fn` on rank 0 only (it writes files), then let every rank see its result, or the
        exception it raised (so a refused folder or bad config stops all ranks with one message)."""
        if not self.dist.enabled:
            return fn()
        out, err = None, None
        if self.dist.main:
            try:
                out = fn()
            except BaseException as e:
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
        self.main_only(self._prepare)
        if self.data is None:
            self.data = Dataset.load(self.cfg, lambda msg: None)

    def _prepare(self) -> None:
        from .tiny_model import ensure_demo_model

        self.run_dir.mkdir(parents=True, exist_ok=True)
        ensure_demo_model(self.cfg, self.run_dir, self.log)
        if self.data is None:
            self.data = Dataset.load(self.cfg, self.log.info)
        atomic_write_text(self.run_dir / CONFIG_FILE, dump_train_config(self.cfg))
        self.log.info(f"data: {len(self.data.train)} training images, {len(self.data.eval)} held-out images")

    def start(self) -> None:
        """A new run: the warm start (rank 0; every rank then loads RUN/sft-base), then the RL
        policy with a fresh adapter and its optimizer."""
        if self.cfg.sft.steps > 0:
            self.base = self.main_only(self.warm_start)
        self.policy = self.load_policy(self.base)
        o = self.cfg.optim
        self.optimizer = self.make_optimizer(self.policy.trainable_parameters(), o.lr, o.betas, o.weight_decay)

    def load_policy(self, base: str, adapter: Optional[Path] = None, lora_dropout: Optional[float] = None):
        """The policy on `base` with a fresh LoRA adapter (seeded), or the adapter weights of a
        checkpoint loaded into it. `lora_dropout` overrides model.lora.dropout (the warm start's)."""
        from dataclasses import replace

        from .model import load_policy

        torch.manual_seed(self.cfg.seed)  # LoRA A init draws from the global RNG
        mcfg = replace(self.cfg.model, name_or_path=base)
        if lora_dropout is not None and mcfg.lora is not None:
            mcfg = replace(mcfg, lora=replace(mcfg.lora, dropout=lora_dropout))
        policy = load_policy(mcfg)
        if adapter is not None:
            load_adapter(policy, adapter)
        policy.model.train()
        return policy

    def make_optimizer(self, params, lr: float, betas, weight_decay: float):
        if self.cfg.optim.optimizer == "adamw_8bit":
            if self.policy.device.type != "cuda":
                raise ConfigError("optim.optimizer: adamw_8bit needs a CUDA device")
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, weight_decay=weight_decay)
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)

    def warm_start(self) -> str:
        """RUN/sft-base (warmstart.py): made now, or reused when made with the same settings."""
        from .warmstart import warm_start

        return warm_start(self.cfg, self.run_dir, self.data.train, self.images, self.load_policy, self.log)

    def sft_reusable(self) -> tuple:
        from .warmstart import sft_reusable

        return sft_reusable(self.cfg, self.run_dir)

    # ------------------------------------------------------------------ evaluation and checkpoints

    def evaluate(self, tag: str) -> dict:
        from .heldout import evaluate_heldout

        return evaluate_heldout(
            self.policy,
            self.cfg,
            self.data.eval,
            self.partners,
            dist=self.dist,
            log=self.log,
            step=self.step,
            tag=tag,
            chunk_size=self.cfg.objective.chunk_size,
        )

    def save_checkpoint(self, rng=None) -> Path:
        """RUN/checkpoints/step-NNNNNN of the current step; `rng`: the torch RNG state to record
        (the step's starting one when a step was interrupted)."""
        self.saved_step = self.step
        return save_checkpoint(
            self.run_dir,
            self.cfg,
            self.policy,
            self.optimizer,
            step=self.step,
            base=self.base,
            bad_streak=self.bad_streak,
            total_steps=self.total_steps,
            dist=self.dist,
            rng=rng,
        )

    def load_checkpoint(self, ckpt: Path) -> None:
        state = read_state(ckpt)
        check_world_size(self.run_dir, ckpt, state, self.dist.world)
        self.base = state["base"]
        self.policy = self.load_policy(self.base, adapter=ckpt)
        o = self.cfg.optim
        self.optimizer = self.make_optimizer(self.policy.trainable_parameters(), o.lr, o.betas, o.weight_decay)
        restore_training_state(ckpt, self.optimizer, device=self.policy.device, dist=self.dist)
        self.step = self.saved_step = int(state["step"])
        self.bad_streak = int(state.get("bad_streak", 0))
        self.log.info(f"resumed from {ckpt} at step {self.step}")

    def save_final(self) -> Path:
        return save_final(
            self.run_dir,
            self.cfg,
            self.policy,
            base=self.base,
            step=self.step,
            total_steps=self.total_steps,
            dist=self.dist,
        )

    # ------------------------------------------------------------------ the run

    def run(self, resume: bool = False, max_steps: Optional[int] = None, overwrite: bool = False) -> RunResult:
        """The whole run (runloop.py): folder, resume or warm start, steps, evals, final."""
        from .runloop import run

        return run(self, resume=resume, max_steps=max_steps, overwrite=overwrite)


def train(
    config: Optional[Path] = None,
    overrides: Sequence[str] = (),
    resume: Optional[Path] = None,
    log_stream=None,
    overwrite: bool = False,
) -> RunResult:
    """`hawkeye-lite train`: config file (default: the built-in demo) + overrides, or --resume RUN
    (the run's saved config.yaml, plus any overrides). `overwrite` replaces a run already in
    output_dir (otherwise such a folder is refused). Under torchrun (WORLD_SIZE > 1) every
    process runs this, data-parallel; rank 0 writes."""
    if resume is not None:
        resume = Path(resume)
        saved = resume / CONFIG_FILE
        if not saved.is_file():
            what = (
                "no such folder" if not resume.exists() else f"no {CONFIG_FILE} there (not a hawkeye-lite run folder)"
            )
            raise RunFolderError(f"--resume {resume}: {what}")
        if overwrite:
            raise RunFolderError(
                "--resume continues the run in its folder; --overwrite would delete it: use one of them"
            )
        cfg = load_train_config(saved, overrides)
    else:
        cfg = load_train_config(config, overrides)
    dist = Dist.from_env(timeout_s=cfg.distributed.timeout_s, device=cfg.model.device or "")
    try:
        if dist.backend == "nccl" and (cfg.model.device in (None, "cuda")):
            from dataclasses import replace

            cfg = replace(cfg, model=replace(cfg.model, device=f"cuda:{dist.local_rank}"))  # one GPU per rank
        trainer = Trainer(cfg, run_dir=resume, log_stream=log_stream, dist=dist)
        result = trainer.run(resume=True) if resume is not None else trainer.run(overwrite=overwrite)
        dist.close(together=True)
        return result
    finally:
        dist.close()
