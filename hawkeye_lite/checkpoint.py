"""Checkpoint I/O: the training state saved and restored, checkpoints verified on resume.

A checkpoint is RUN/checkpoints/step-NNNNNN: the adapter (PEFT safetensors) + processor +
hawkeye.json + config.yaml + the model card, training_state/ (state.json, optimizer.pt,
rng.safetensors) and manifest.json (every file's size and sha256); RUN/final is the same without
training_state/. Folders are written atomically and fsynced (fsio.py), so a crash or a power
loss never leaves a half-written checkpoint under its real name; a checkpoint damaged later (a
disk or copy fault) is found by its manifest, named, and skipped for the newest intact one.
Nothing is ever unpickled: the optimizer state loads with weights_only=True. Together with the
data order and the sampling streams (pure functions of seed and step) this is everything an
exact resume needs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from .errors import TrainingError
from .fsio import atomic_dir, check_free_space, folder_size, verify_manifest, writing

CHECKPOINTS = "checkpoints"
STATE_DIR = "training_state"
FINAL = "final"
CONFIG_FILE = "config.yaml"


def rng_state() -> Dict[str, torch.Tensor]:
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda_{i}"] = s
    return state


def set_rng_state(state: Dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    cuda = [state[k] for k in sorted(k for k in state if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def checkpoints(run_dir: Path) -> List[Path]:
    """The run's checkpoints with a training state, oldest first."""
    ckpts = sorted((run_dir / CHECKPOINTS).glob("step-*"))
    return [c for c in ckpts if (c / STATE_DIR / "state.json").is_file()]


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    ckpts = checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def damage(ckpt: Path) -> Optional[str]:
    """What is wrong with a checkpoint (a file missing, cut short, or not what was written), or None."""
    problem = verify_manifest(ckpt)
    if problem is None:
        try:
            read_state(ckpt)
        except TrainingError as e:
            problem = str(e)
    return problem


def intact_checkpoint(run_dir: Path, log: Callable[[str], None]) -> Optional[Path]:
    """The newest checkpoint whose files are what was written, each damaged newer one named in one
    line; None when there is none. Every checkpoint damaged: RunFolderError (exit 2) naming them."""
    from .runfolder import RunFolderError

    found = checkpoints(run_dir)
    damaged: List[Path] = []
    for ckpt in reversed(found):
        problem = damage(ckpt)
        if problem is None:
            for bad in damaged:  # out of the way of keep_last, kept for a look
                aside = bad.with_name(f"damaged-{bad.name}")
                shutil.rmtree(aside, ignore_errors=True)
                bad.rename(aside)
            if damaged:
                log(f"resuming from {ckpt.name}, the newest intact checkpoint (damaged ones moved to damaged-step-*)")
            return ckpt
        log(f"checkpoint {ckpt} is damaged: {problem}")
        damaged.append(ckpt)
    if damaged:
        raise RunFolderError(
            f"--resume {run_dir}: every checkpoint is damaged ({', '.join(c.name for c in damaged)}; see above); "
            "restore one from a copy, or start the run again with --overwrite"
        )
    return None


# ----------------------------------------------------------------------------- save


def write_model(out: Path, policy, cfg, *, base: str, step: int, total_steps: int, run_dir: Path) -> None:
    """What a checkpoint and final/ share: the adapter, hawkeye.json (prompt and completion cap
    the Scorer reads back), the resolved config and the README.md model card."""
    from .config_loader import dump_train_config
    from .modelcard import write_model_card

    policy.save_pretrained(out, prompt=cfg.rollout.prompt, max_new_tokens=cfg.rollout.max_new_tokens)
    (out / CONFIG_FILE).write_text(dump_train_config(cfg), encoding="utf-8")
    kind = "checkpoint" if "step-" in out.name else "final"  # out is atomic_dir's .tmp-<name>-PID
    write_model_card(out, cfg, base=base, step=step, total_steps=total_steps, run_dir=run_dir, kind=kind)


def save_checkpoint(
    run_dir: Path,
    cfg,
    policy,
    optimizer,
    *,
    step: int,
    base: str,
    bad_streak: int,
    total_steps: int,
    dist,
    rng: Optional[Dict[str, torch.Tensor]] = None,
) -> Path:
    """RUN/checkpoints/step-NNNNNN, atomically; keeps the last checkpoint.keep_last. `rng`: the
    torch RNG state to record (default: now). Under torchrun every rank's stream is gathered and
    rank 0 writes."""
    from safetensors.torch import save_file

    final = run_dir / CHECKPOINTS / f"step-{step:06d}"
    rng = rng or rng_state()
    if dist.enabled:  # every rank's stream (LoRA dropout), so a resume continues each exactly
        rng = {f"rank{r}.{k}": v for r, state in enumerate(dist.gather(rng)) for k, v in state.items()}
    if not dist.main:
        return final
    with writing(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
    previous = latest_checkpoint(run_dir)
    if previous is not None:  # the next one is about as big: stop before writing, not half-way
        check_free_space(final.parent, int(folder_size(previous) * 1.1) + 2**20, f"checkpoint {final.name}")

    def write(tmp: Path) -> None:
        write_model(tmp, policy, cfg, base=base, step=step, total_steps=total_steps, run_dir=run_dir)
        st = tmp / STATE_DIR
        st.mkdir()
        # Optimizer state is tensors + numbers only, so it reloads with weights_only=True.
        with writing(st / "optimizer.pt"):
            torch.save(optimizer.state_dict(), st / "optimizer.pt")
        with writing(st / "rng.safetensors"):
            save_file({k: v.contiguous() for k, v in rng.items()}, str(st / "rng.safetensors"))
        state = {
            "step": step,
            "base": base,
            "bad_streak": bad_streak,
            "world_size": dist.world,
            "total_steps": total_steps,
            "scheduler": {"kind": cfg.optim.schedule, "step": step},
        }
        (st / "state.json").write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")

    atomic_dir(final, write)
    ckpts = sorted((run_dir / CHECKPOINTS).glob("step-*"))
    for old in ckpts[: -cfg.checkpoint.keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_final(run_dir: Path, cfg, policy, *, base: str, step: int, total_steps: int, dist) -> Path:
    """RUN/final: the adapter and what the Scorer reads (no training state), atomically."""
    if not dist.main:
        return run_dir / FINAL
    return atomic_dir(
        run_dir / FINAL,
        lambda out: write_model(out, policy, cfg, base=base, step=step, total_steps=total_steps, run_dir=run_dir),
    )


# ----------------------------------------------------------------------------- restore


def read_state(ckpt: Path) -> dict:
    path = ckpt / STATE_DIR / "state.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TrainingError(f"{path}: cannot read the training state ({e})") from None


def check_world_size(run_dir: Path, ckpt: Path, state: dict, world: int) -> None:
    from .runfolder import RunFolderError

    saved_world = int(state.get("world_size", 1))
    if saved_world != world:
        # The data order and every rank's random stream are laid out per world size.
        raise RunFolderError(
            f"--resume {run_dir}: {ckpt.name} was written by {saved_world} process(es); "
            f"resume it with torchrun --nproc_per_node {saved_world} (this is {world})"
        )


def load_adapter(policy, folder: Path) -> None:
    """The adapter weights of a checkpoint (PEFT safetensors) into the policy's fresh adapter."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    file = folder / "adapter_model.safetensors"
    if not file.is_file():
        raise TrainingError(f"{file}: missing (not a hawkeye-lite checkpoint?)")
    try:
        weights = load_file(str(file), device=str(policy.device))
    except Exception as e:  # a damaged file of a checkpoint written before manifests
        raise TrainingError(f"{file}: cannot be read ({type(e).__name__}: {e})") from None
    result = set_peft_model_state_dict(policy.model, weights)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise TrainingError(f"{file}: adapter does not match model.lora (unexpected keys, e.g. {unexpected[0]})")


def restore_training_state(ckpt: Path, optimizer, *, device, dist) -> None:
    """The optimizer state and this rank's RNG stream of a checkpoint (after the policy is loaded)."""
    from safetensors.torch import load_file

    st = ckpt / STATE_DIR
    try:
        # weights_only: never unpickle arbitrary objects from a file on disk.
        optimizer.load_state_dict(torch.load(st / "optimizer.pt", map_location=device, weights_only=True))
        rng = load_file(str(st / "rng.safetensors"))
    except Exception as e:  # damaged, written before manifests (SafetensorError, RuntimeError, ...)
        raise TrainingError(f"{ckpt}: its training state cannot be read ({type(e).__name__}: {e})") from None
    if dist.enabled:
        prefix = f"rank{dist.rank}."
        rng = {k[len(prefix) :]: v for k, v in rng.items() if k.startswith(prefix)}
    set_rng_state(rng)
