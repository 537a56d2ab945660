"""A run folder belongs to one run (SPEC §3, "One run per folder").

- `run.json` says which run a folder holds (an id, when it started, a hash of its settings);
  `hawkeye-lite train` into a folder that holds a run stops unless it is `--resume` (continue
  it) or `--overwrite` (replace it).
- `.lock` is an OS lock (flock) held by the process using the folder, and names it: a second
  process is refused at once, naming the first. The kernel releases it when its process dies
  (kill -9, a crash, a reboot), so a dead run's lock is never in the way.
- Anything reused from the folder carries the settings that made it (`settings.json` next to
  the warm start), and is reused only when they match.
- A resume prints every key that differs from the saved config, and `metrics.jsonl` is cut back
  to what the checkpoint had seen, so each step appears once.
- Temporary folders of a crashed write (`.tmp-*`, `.old-*`) are removed once the lock is held.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .fsio import atomic_write_text

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
SETTINGS_FILE = "settings.json"  # inside a reusable artifact (sft-base, the tiny model)
# What a run writes into its folder: --overwrite removes exactly these (never the user's files).
RUN_ARTIFACTS = (
    "run.json",
    "config.yaml",
    "metrics.jsonl",
    "checkpoints",
    "final",
    "sft-base",
    "plot.png",
    "plot.svg",
    "tensorboard",
    "wandb",
)


class RunFolderError(ValueError):
    """The run folder cannot be used as asked; the message says why and what to do."""


# ----------------------------------------------------------------------------- settings


def flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: Dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def settings_hash(settings: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(flatten(settings), sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    """(key, old, new) for every dotted key whose value differs (missing keys read as None)."""
    a, b = flatten(old), flatten(new)
    norm = lambda v: list(v) if isinstance(v, tuple) else v
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if norm(a.get(k)) != norm(b.get(k))]


def describe(diffs: Sequence[Tuple[str, Any, Any]], limit: int = 6) -> str:
    text = ", ".join(f"{k} {o!r} -> {n!r}" for k, o, n in diffs[:limit])
    return text + (f" (and {len(diffs) - limit} more)" if len(diffs) > limit else "")


def write_settings(folder: Path, settings: Dict[str, Any]) -> None:
    (Path(folder) / SETTINGS_FILE).write_text(
        json.dumps(settings, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8"
    )


def read_settings(folder: Path) -> Optional[Dict[str, Any]]:
    path = Path(folder) / SETTINGS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


# ----------------------------------------------------------------------------- the lock


def _proc_start(pid: int) -> Optional[str]:
    """Start time of a process (Linux: field 22 of /proc/PID/stat), so a reused PID is not
    mistaken for the run that held the lock."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """The folder's lock: an OS lock (flock) on RUN/.lock, held while the process lives, so the
    kernel releases it when the process dies (kill -9, a crash, a reboot) and no guess about a
    dead holder is needed, across containers and PID namespaces too. The file also names the
    holder (PID, host, start) for the refusal message. Where the filesystem has no flock, the
    file itself is the lock (created with O_EXCL; a holder whose process is gone is stale).
    `acquire` raises RunFolderError naming the holder."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self.held = False
        self._fd: Optional[int] = None

    def _holder(self) -> Optional[dict]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def _me(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "proc_start": _proc_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }

    def _refuse(self, holder: Optional[dict]) -> RunFolderError:
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            return RunFolderError(f"{self.path.parent}: this process already runs in this folder")
        who = (
            "another process"
            if holder is None
            else (f"PID {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}")
        )
        return RunFolderError(
            f"{self.path.parent}: in use by another hawkeye-lite run ({who}); wait for it "
            f"to finish, or choose another output_dir (if that process is gone, delete {self.path})"
        )

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self._acquire_file()
        for _ in range(3):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refuse(self._holder()) from None
            except OSError:  # this filesystem has no flock (some network or FUSE mounts)
                os.close(fd)
                return self._acquire_file()
            try:  # the holder may have removed the file between our open and our flock: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(self._me()).encode())
            self._fd, self.held = fd, True
            return self
        raise RunFolderError(f"{self.path}: could not take the lock (it keeps reappearing)")

    # -- without flock: the file is the lock, and a dead holder is recognised by its PID

    def _stale(self, holder: Optional[dict]) -> bool:
        if holder is None:  # empty or half-written: the writer died within its first write
            try:
                return time.time() - self.path.stat().st_mtime > 5.0
            except FileNotFoundError:
                return True
        if holder.get("host") != socket.gethostname():
            return False  # another machine's process: we cannot tell, so never steal it
        pid = int(holder.get("pid", -1))
        if pid <= 0 or not _alive(pid):
            return True
        return holder.get("proc_start") is not None and _proc_start(pid) != holder.get("proc_start")

    def _acquire_file(self) -> "RunLock":
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if self._stale(holder) and (holder or {}).get("pid") != os.getpid():
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise self._refuse(holder) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(self._me()))
            self.held = True
            return self
        raise RunFolderError(f"{self.path}: could not take the lock (it keeps reappearing)")

    def release(self) -> None:
        if not self.held:
            return
        holder = self._holder()
        if holder is None or holder.get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # before the unlock: a waiting process then finds a fresh file
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None
        self.held = False


# ----------------------------------------------------------------------------- the folder


def holds_run(folder: Path) -> bool:
    """True once a run has written its config (a start that failed before that, e.g. on a typo in a
    data path, leaves only run.json: no work to protect, and the retry must not need --overwrite)."""
    return any((Path(folder) / name).exists() for name in RUN_ARTIFACTS if name != RUN_FILE)


def read_run(folder: Path) -> Optional[dict]:
    try:
        return json.loads((Path(folder) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _ensure_dir(folder: Path, key: str) -> bool:
    """mkdir -p with a clear message; True when the folder was created now."""
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{key}: {folder} is a file, not a folder")
    existed = folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"{key}: cannot create {folder} ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunFolderError(f"{key}: {folder} is not writable")
    return not existed


def clean_leftovers(folder: Path) -> List[Path]:
    """Remove what a killed atomic write left behind (only ever called under the lock)."""
    removed = []
    for parent in (folder, folder / "checkpoints"):
        if not parent.is_dir():
            continue
        for p in parent.iterdir():
            if p.name.startswith((".tmp-", ".old-")) or p.name.endswith(".jsonl.tmp"):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def remove_named(folder: Path, names: Sequence[str]) -> None:
    """Remove exactly the files and folders `names` under `folder` (what a command wrote there)."""
    for name in names:
        p = Path(folder) / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def remove_run(folder: Path) -> None:
    remove_named(folder, RUN_ARTIFACTS)


@contextlib.contextmanager
def claim(
    folder: Path, *, resume: bool, overwrite: bool, log: Callable[[str], None], key: str = "output_dir"
) -> Iterator[dict]:
    """Take `folder` for a run: create it, lock it, refuse a folder that holds another run (unless
    resume/overwrite), clean leftovers. Yields the run record (run.json's content); the lock is
    released on exit, whatever happens."""
    folder = Path(folder)
    created = _ensure_dir(folder, key)
    lock = RunLock(folder).acquire()
    try:
        if not resume and holds_run(folder):
            if not overwrite:
                info = read_run(folder) or {}
                what = f"run {info['id']} started {info.get('started')}" if info.get("id") else "files of another run"
                raise RunFolderError(
                    f"{key}: {folder} already holds a run ({what}); continue it with "
                    f"`hawkeye-lite train --resume {folder}`, replace it with --overwrite, or choose another "
                    "folder (--set output_dir=...)"
                )
            log(f"--overwrite: removing the previous run in {folder}")
            remove_run(folder)
        for p in clean_leftovers(folder):
            log(f"removed {p.name}, left behind by an interrupted write")
        run = read_run(folder) if resume and holds_run(folder) else None
        if run is None:
            run = {"id": uuid.uuid4().hex[:12], "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            atomic_write_text(folder / RUN_FILE, json.dumps(run, indent=1) + "\n")
        yield run
    except BaseException:
        lock.release()
        if created:  # refused before anything was written: leave no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    else:
        lock.release()


def cut_metrics(path: Path, step: int, *, restart: bool, keep_sft: bool) -> int:
    """Drop the records a resume will write again: every step-tagged record after checkpoint
    `step`, or all of them when the run restarts from the beginning (no checkpoint), and the warm
    start's when it is redone. A line cut short by a kill goes too. Atomic; returns how many went."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        event = rec.get("event")
        if event == "sft":
            redo = not keep_sft
        elif event == "resume":
            redo = False
        else:
            redo = restart or rec.get("step", 0) > step
        if redo:
            dropped += 1
        else:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))
    return dropped
