"""`hawkeye-lite push RUN --repo ID`: publish a trained adapter on the Hugging Face Hub.

Uploads, in one commit, what `Scorer.from_pretrained(ID)` and plain `peft` need: the adapter
(adapter_config.json, adapter_model.safetensors), the processor files, hawkeye.json (prompt and
completion cap), config.yaml, and the README.md model card, re-rendered so its load snippets
name the hub repository. Never the optimizer state (training_state/) of a checkpoint.

The login is huggingface_hub's (`hf auth login` or HF_TOKEN).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from .modelcard import CARD, render_model_card

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
SKIP_DIRS = {"training_state"}


class HubError(RuntimeError):
    """The push cannot go ahead (no adapter, bad repo id, the Hub refused); one line for the user."""


def find_model_dir(path) -> Path:
    """RUN -> RUN/final; an adapter folder (final/, a checkpoint) -> itself."""
    path = Path(path)
    for candidate in (path / "final", path):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    if path.is_dir() and (path / "checkpoints").is_dir():
        raise HubError(
            f"{path}: the run has no final/ adapter yet; push a checkpoint folder instead "
            f"(e.g. {sorted((path / 'checkpoints').glob('step-*'))[-1:] or path / 'checkpoints/step-N'})"
        )
    raise HubError(f"{path}: no adapter_config.json here or in {path / 'final'} (not a hawkeye-lite run or adapter)")


def files_to_upload(model_dir: Path) -> List[Path]:
    return sorted(
        p
        for p in model_dir.rglob("*")
        if p.is_file() and not (set(p.relative_to(model_dir).parts[:-1]) & SKIP_DIRS) and not p.name.startswith(".")
    )


def _step_info(model_dir: Path) -> Tuple[int, Optional[int]]:
    """(RL step, total) of a checkpoint (its training state) or of final/ (the run's last step record)."""
    state = model_dir / "training_state" / "state.json"
    if state.is_file():
        s = json.loads(state.read_text())
        return int(s.get("step", 0)), s.get("total_steps")
    step = 0
    log = model_dir.parent / "metrics.jsonl"
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("event") == "step":
                step = int(rec["step"])
    return step, step or None


def model_card_for_hub(model_dir: Path, repo_id: str) -> Optional[str]:
    """The card re-rendered for `repo_id` from the folder's config.yaml, or None when the
    config cannot be read (then the folder's own README.md goes up as it is)."""
    from .config import ConfigError
    from .config_loader import load_train_config

    config = model_dir / "config.yaml"
    if not config.is_file():
        return None
    try:
        cfg = load_train_config(config)
    except ConfigError:
        return None
    base = (
        json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
        or cfg.model.name_or_path
    )
    kind = "checkpoint" if (model_dir / "training_state").is_dir() else "final"
    run_dir = model_dir.parent.parent if kind == "checkpoint" else model_dir.parent
    from .modelcard import eval_records

    step, total = _step_info(model_dir)
    return render_model_card(
        cfg, base=base, step=step, total_steps=total, evals=eval_records(run_dir), kind=kind, repo_id=repo_id
    )


def push_to_hub(
    path,
    repo_id: str,
    *,
    private: bool = False,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> str:
    """Create `repo_id` if needed and upload the adapter folder of `path` in one commit; returns
    the commit (or repository) URL."""
    if not _REPO_ID.fullmatch(repo_id or ""):
        raise HubError(f"--repo {repo_id!r}: expected a hub id like user/name")
    model_dir = find_model_dir(path)
    files = files_to_upload(model_dir)
    card = model_card_for_hub(model_dir, repo_id)
    base = json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path", "")
    if base and (Path(base).exists() or not _REPO_ID.fullmatch(base)):
        log(f"note: the adapter's base model {base} is a local folder; readers need it too (the model card says so)")

    from huggingface_hub import CommitOperationAdd, HfApi

    ops = [
        CommitOperationAdd(path_in_repo=p.relative_to(model_dir).as_posix(), path_or_fileobj=str(p))
        for p in files
        if not (card is not None and p.relative_to(model_dir).as_posix() == CARD)
    ]
    if card is not None:
        ops.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card.encode("utf-8")))
    log(f"uploading {len(ops)} files from {model_dir} to {repo_id}")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(
            repo_id=repo_id,
            operations=ops,
            revision=revision,
            repo_type="model",
            commit_message=commit_message or f"hawkeye-lite: upload {model_dir.name}",
        )
    except Exception as e:  # HfHubHTTPError, missing token, no network: one line, not a traceback
        raise HubError(
            f"push to {repo_id} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    return getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}"
