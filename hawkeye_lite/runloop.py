"""The run around the RL steps: take the run folder, resume (from the newest intact checkpoint)
or start (warm start, first eval), step until done with checkpoints by steps and by time and
periodic evals, then the final eval, RUN/final and the plot. It drives a `trainer.Trainer`, which
owns what one step does.

Signals: SIGINT (Ctrl-C), SIGTERM (what SLURM pre-emption, `docker stop`, Kubernetes and systemd
send) and SIGUSR1 (what SLURM's --signal sends before a time limit) stop the run the same way in
every process: a step in flight finishes (or a checkpoint being written is completed), then a
checkpoint and a line saying how to resume; in the warm start or an evaluation nothing is
written that a resume would not redo, so the run stops at once. A second signal stops at once.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from .checkpoint import CHECKPOINTS, CONFIG_FILE, FINAL, check_world_size, intact_checkpoint, read_state, rng_state
from .errors import DataFault
from .runfolder import RunFolderError
from .runlog import METRICS

_now = time.monotonic  # the checkpoint clock (a test steps it)


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    interrupted: bool = False
    stopped_by: Optional[str] = None  # the signal that stopped the run (SIGINT, SIGTERM, SIGUSR1)
    checkpoint: Optional[Path] = None  # the checkpoint to resume from, when it stopped early
    eval_before: Optional[dict] = None
    eval_after: Optional[dict] = None
    seconds: float = 0.0
    main: bool = True  # False on torchrun ranks other than 0, which say nothing to the user


def run(trainer, *, resume: bool = False, max_steps: Optional[int] = None, overwrite: bool = False) -> RunResult:
    """Take the run folder (locked; a folder holding another run is refused unless `resume`
    or `overwrite`), then train. `max_steps` stops early after that many steps in total
    (tests, Ctrl-C emulation); the schedule still follows the configured total."""
    from .runfolder import claim

    with contextlib.ExitStack() as stack:
        # Rank 0 takes the folder (lock, refusal); the others learn whether it could.
        trainer.main_only(
            lambda: (
                stack.enter_context(claim(trainer.run_dir, resume=resume, overwrite=overwrite, log=trainer.log.info))
                and None
            )
        )
        return _run(trainer, resume, max_steps)


def _run(trainer, resume: bool, max_steps: Optional[int]) -> RunResult:
    t_start = time.time()
    result = RunResult(trainer.run_dir, 0, main=trainer.dist.main)
    with StopOnSignal(trainer.log) as stop:
        try:
            _phases(trainer, resume, max_steps, result, stop)
        except Interrupted as e:  # in a phase a resume redoes anyway: nothing more to write
            result.interrupted, result.stopped_by = True, e.signame
        result.steps = trainer.step
        if result.interrupted and trainer.saved_step is not None:
            result.checkpoint = trainer.run_dir / CHECKPOINTS / f"step-{trainer.saved_step:06d}"
    result.seconds = time.time() - t_start
    return result


def _phases(trainer, resume: bool, max_steps: Optional[int], result: RunResult, stop: StopOnSignal) -> None:
    log = trainer.log
    ckpt, changes = _check_resume(trainer) if resume else (None, [])
    trainer.prepare()
    if resume:
        _restart_log(trainer, ckpt, changes)
    if ckpt is not None:
        trainer.load_checkpoint(ckpt)
        if trainer.step >= trainer.total_steps and (trainer.run_dir / FINAL).is_dir():
            log.info(
                f"{trainer.run_dir}: the run finished at step {trainer.step} of {trainer.total_steps}; "
                "nothing to do (raise optim.max_steps or optim.epochs with --set to train on)"
            )
            return
    else:
        trainer.start()  # warm start, the RL policy and its optimizer
        if trainer.cfg.eval.before:
            result.eval_before = trainer.evaluate("before RL")
        if label_free(trainer.cfg):
            log.info("the model has never seen a quality label; RL will teach it from the reward")
    total = trainer.total_steps
    _steps(trainer, min(total, max_steps) if max_steps is not None else total, stop)
    if stop.requested:
        result.interrupted, result.stopped_by = True, stop.signame
        return
    with stop.deferred():  # the last checkpoint is written whole
        trainer.save_checkpoint()
    if trainer.step < total:  # stopped early on purpose (max_steps): the checkpoint is there
        return
    if trainer.cfg.eval.after:
        result.eval_after = trainer.evaluate("after RL")
    with stop.deferred():
        trainer.save_final()
    if trainer.cfg.logging.plot and trainer.dist.main:
        from .plot import plot_run

        log.info(plot_run(trainer.run_dir))
    log.close()  # the trackers: TensorBoard's last flush, W&B's run.finish()


def label_free(cfg) -> bool:
    """Whether no quality label reaches the policy before RL: a random model built here (the
    tiny demo model) whose warm start, if any, teaches only the answer format."""
    return cfg.tiny_model.build and (cfg.sft.steps == 0 or cfg.sft.target == "format")


def _check_resume(trainer) -> tuple:
    """(the newest intact checkpoint or None, the config changes), after checking that the config
    may change as it did. Runs before anything in the folder is touched (but for moving damaged
    checkpoints aside, on rank 0)."""
    from .runfolder import describe

    name = trainer.main_only(lambda: _name(intact_checkpoint(trainer.run_dir, trainer.log.info)))
    ckpt = Path(name) if name else None
    changes = _resume_changes(trainer)
    if ckpt is not None:
        # The checkpoint's adapter sits on a base made by these settings: they cannot change.
        fixed = [c for c in changes if c[0].split(".")[0] in ("model", "tiny_model", "sft")]
        if fixed:
            raise RunFolderError(
                f"--resume {trainer.run_dir}: {describe(fixed)} cannot change in a run that has "
                "checkpoints (the adapter was trained on that base); start a new run instead"
            )
        check_world_size(trainer.run_dir, ckpt, read_state(ckpt), trainer.dist.world)
    for key, old, new in changes:
        trainer.log.info(f"resume: {key} changed {old!r} -> {new!r}")
    return ckpt, changes


def _name(path: Optional[Path]) -> Optional[str]:
    return None if path is None else str(path)


def _restart_log(trainer, ckpt: Optional[Path], changes: List[tuple]) -> None:
    """metrics.jsonl cut back to what the checkpoint had seen (so each step appears once), and a
    "resume" record."""
    from .runfolder import cut_metrics

    if ckpt is None:
        trainer.log.info(f"no checkpoint in {trainer.run_dir / CHECKPOINTS}: starting from the beginning")
    if trainer.dist.main:
        at = 0 if ckpt is None else int(ckpt.name.split("-")[-1])
        keep_sft = ckpt is not None or trainer.cfg.sft.steps == 0 or trainer.sft_reusable()[0]
        dropped = cut_metrics(trainer.run_dir / METRICS, at, restart=ckpt is None, keep_sft=keep_sft)
        if dropped:
            trainer.log.info(f"metrics.jsonl: {dropped} records after step {at} removed (they are redone now)")
        trainer.log.write({"event": "resume", "step": at, "changes": {k: [o, n] for k, o, n in changes}})


def _resume_changes(trainer) -> List[tuple]:
    """Keys of this config that differ from the run's saved config.yaml (output_dir aside)."""
    import yaml

    from .runfolder import differences

    saved = trainer.run_dir / CONFIG_FILE
    if not saved.is_file():
        return []
    old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    return [d for d in differences(old, trainer.cfg.to_dict()) if d[0] != "output_dir"]


def _steps(trainer, stop_at: int, stop: StopOnSignal) -> None:
    """RL steps up to `stop_at`, with checkpoints (every `checkpoint.every` steps or
    `checkpoint.every_minutes`, whichever comes first) and evals on their schedules. A signal
    lets the step in flight finish; then the loop writes a checkpoint of the last whole step."""
    cfg, log, total = trainer.cfg, trainer.log, trainer.total_steps
    started = trainer.step
    log.t0 = time.time()
    last_checkpoint = _now()
    log.info(
        f"RL: steps {trainer.step + 1}..{stop_at} of {total} "
        f"(B={cfg.optim.batch_size} images x G={cfg.rollout.num_generations}, "
        f"accum {cfg.optim.grad_accum}, mu {cfg.optim.mu})"
    )
    with stop.deferred():  # from here on, every step done is saved before the run stops
        _loop(trainer, stop_at, stop, started, last_checkpoint)
        if stop.requested and trainer.saved_step != trainer.step:
            log.info(f"writing a checkpoint at step {trainer.step}")
            trainer.save_checkpoint()


def _loop(trainer, stop_at: int, stop: StopOnSignal, started: int, last_checkpoint: float) -> None:
    cfg, log, total = trainer.cfg, trainer.log, trainer.total_steps
    c = cfg.checkpoint
    warned = False  # collapse_warning is said once a run
    while trainer.step < stop_at and not stop.requested:
        rng = rng_state()  # the step's starting RNG: what a checkpoint of the pre-step state holds
        step_before, faults_before = trainer.step, trainer.images.faults
        try:
            rec = trainer.rl_step()
            rec["data_faults"] = trainer.images.faults - faults_before
        except DataFault:
            # Bad input with on_bad: fail: keep what was learnt, then stop with the message.
            if trainer.step == step_before:
                log.info(f"writing a checkpoint at step {trainer.step} before stopping")
                trainer.save_checkpoint(rng)
            raise
        except KeyboardInterrupt:
            # A second signal inside a step: the step counter was not advanced, so save the state
            # from before it (exact unless it fell between two of the step's μ updates).
            stop.requested = True
            if trainer.step == step_before:
                log.info(f"\ninterrupted: writing a checkpoint at step {trainer.step}")
                trainer.save_checkpoint(rng)
            break
        stop.requested = trainer.dist.any(stop.requested)  # all ranks stop after the same step
        trainer.history.append(rec)
        log.step(rec, total, started)
        if not warned:
            warning = collapse_warning(trainer.history)
            if warning:
                log.info(warning)
                warned = True
        step = trainer.step
        due = bool(c.every) and step % c.every == 0
        due = due or (c.every_minutes > 0 and _now() - last_checkpoint >= 60 * c.every_minutes)
        if trainer.dist.enabled:  # the clocks of the ranks differ: all checkpoint, or none
            due = trainer.dist.any(due)
        if due and step < total and not stop.requested:
            trainer.save_checkpoint()
            last_checkpoint = _now()
        if cfg.eval.every and step % cfg.eval.every == 0 and step < total and not stop.requested:
            try:
                with stop.abortable():  # an eval is not worth waiting for: the checkpoint is
                    trainer.evaluate(f"step {step}")
            except Interrupted:
                break


class Interrupted(Exception):
    """A signal arrived where nothing is lost by stopping at once (warm start, evaluations)."""

    def __init__(self, signame: str):
        super().__init__(signame)
        self.signame = signame


class StopOnSignal:
    """SIGINT, SIGTERM and SIGUSR1, from the start of the run to its end. Inside `deferred()` (a
    step, a checkpoint or final/ being written) the first signal only asks the loop to stop after
    it; elsewhere it stops at once (Interrupted). A second signal stops at once anywhere
    (KeyboardInterrupt: the loop then saves the state from before the step in flight)."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")

    def __init__(self, log):
        self.log = log
        self.requested = False
        self.signame: Optional[str] = None
        self._depth = 0
        self._previous: list = []

    @contextlib.contextmanager
    def deferred(self):
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    @contextlib.contextmanager
    def abortable(self):
        depth, self._depth = self._depth, 0
        try:
            yield
        finally:
            self._depth = depth

    def _handler(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signame = True, name
        if self._depth == 0:
            self.log.info(f"\n{name}: stopping (nothing to save in this phase; --resume redoes it)")
            raise Interrupted(name)
        self.log.info(f"\n{name}: finishing this step, then writing a checkpoint ({name} again to stop now)")

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for name in self.SIGNALS:
                if hasattr(signal, name):
                    sig = getattr(signal, name)
                    self._previous.append((sig, signal.signal(sig, self._handler)))
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous:
            signal.signal(sig, handler)


def collapse_warning(history: Sequence[dict], window: int = 10, threshold: float = 0.5) -> Optional[str]:
    """One log line when RL has collapsed onto one answer: over the last `window` step records
    the mean `zero_spread` (groups whose G rewards are all equal) is >= `threshold`. Such groups
    give no gradient, so a collapsed run stops learning while its loss looks calm; of the demo runs
    that collapsed (docs/experiments/rl-label-free.md) one in four recovered. None while not."""
    recent = [r.get("zero_spread") for r in history[-window:]]
    if len(recent) < window or any(v is None or v != v for v in recent):
        return None
    mean = sum(recent) / window
    if mean < threshold:
        return None
    step = history[-1].get("step", len(history))
    return (
        f"step {step}: RL has collapsed: in {mean:.0%} of the groups of the last {window} steps all "
        "G answers got the same reward, so those groups give no gradient. Lower optim.lr, raise "
        "objective.beta or rollout.temperature, or keep LoRA dropout in the warm start "
        "(sft.lora_dropout); see docs/experiments/rl-label-free.md"
    )


def closing_line(result: RunResult, plot: Optional[Path]) -> Optional[str]:
    """One sentence on what RL did to the first held-out dataset, and where the curves are."""
    before = ((result.eval_before or {}).get("datasets") or {}).items()
    after = dict(((result.eval_after or {}).get("datasets") or {}).items())
    for name, b in before:
        if name in after:
            a = after[name]
            where = f"; learning curves: {plot}" if plot is not None and plot.is_file() else ""
            return (
                f"RL took held-out SRCC on {name} from {b['srcc']:.3f} to {a['srcc']:.3f} "
                f"(PLCC {b['plcc']:.3f} -> {a['plcc']:.3f}) in {result.steps} steps{where}"
            )
    return None


def summary_table(result: RunResult) -> str:
    """Held-out metrics before and after RL, one row per dataset."""
    lines = [f"{'dataset':<12}{'':>8}{'SRCC':>9}{'PLCC':>9}{'PLCC-fit':>10}{'parse':>8}", "-" * 56]

    def f(v):
        return f"{v:>9.4f}" if isinstance(v, float) and math.isfinite(v) else f"{'n/a':>9}"

    for tag, ev in (("before", result.eval_before), ("after", result.eval_after)):
        for name, d in ((ev or {}).get("datasets") or {}).items():
            lines.append(f"{name:<12}{tag:>8}{f(d['srcc'])}{f(d['plcc'])}{f(d['plcc_fit'])}{d['parse_rate']:>8.1%}")
    return "\n".join(lines)
