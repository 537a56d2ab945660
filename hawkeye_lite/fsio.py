"""Writes that survive the machine, and failures that say what happened.

- `writing(path)`: any write under it that fails for a reason of the machine (a full disk, a
  quota, a read-only filesystem, missing permissions) raises `WriteFailed`, whose one line names
  the cause and the path ("no space left on device: RUN/checkpoints/step-000008/optimizer.pt").
  Libraries that lose the errno on the way (torch's zip writer: "unexpected pos"; safetensors:
  "os error 28") are recognised too.
- `atomic_dir(final, write)`: a folder written under a temporary name, its files and the folder
  fsynced, renamed into place, the parent fsynced; a manifest of its files (size + sha256) goes
  with it, so a reader can tell a damaged folder (`verify_manifest`). A failed write removes the
  temporary folder and leaves what was there before untouched.
- `atomic_write_text(path, text)`: the same for one small file.
- `check_free_space(folder, need)`: stop early, with the same kind of line, when a write of
  `need` bytes cannot fit.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Union

MANIFEST = "manifest.json"

CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class WriteFailed(OSError):
    """A write failed for a reason of the machine; str() is the one line for the user."""

    def __init__(self, code: int, path: Union[str, Path], detail: str = ""):
        super().__init__(code, CAUSES.get(code, os.strerror(code)), str(path))
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.strerror}: {self.filename}" + (f" ({self.detail})" if self.detail else "")


# torch's zip writer and safetensors report a full disk without an errno.
_OS_ERROR = re.compile(r"os error (\d+)|\[Errno (\d+)\]")
_SHORT_WRITE = ("unexpected pos", "inline_container", "file write failed", "no space left", "disk quota")


def _free_bytes(path: Path) -> Optional[int]:
    for p in [path, *path.parents]:
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def explain(exc: BaseException, path: Union[str, Path]) -> Optional[WriteFailed]:
    """The WriteFailed that `exc`, raised while writing `path`, really is; None when it is not a
    failure of the machine (a bug, bad input: those keep their own error)."""
    if isinstance(exc, WriteFailed):
        return exc
    code = exc.errno if isinstance(exc, OSError) else None
    where = Path(exc.filename) if isinstance(exc, OSError) and exc.filename else Path(path)
    if code is None:
        m = _OS_ERROR.search(str(exc))
        if m:
            code = int(m.group(1) or m.group(2))
    if code is None and any(s in str(exc).lower() for s in _SHORT_WRITE):
        free = _free_bytes(Path(path))
        if free is not None and free < 16 * 2**20:  # a short write on a (nearly) full filesystem
            code = errno.ENOSPC
    if code in CAUSES:
        return WriteFailed(code, where)
    return None


@contextlib.contextmanager
def writing(path: Union[str, Path]) -> Iterator[None]:
    """Turn a failed write under this block into WriteFailed naming `path` (or the file the OS named)."""
    try:
        yield
    except BaseException as e:
        failed = explain(e, path)
        if failed is not None and failed is not e:
            raise failed from e
        raise


@contextlib.contextmanager
def removed_on_failure(path: Union[str, Path]) -> Iterator[None]:
    """A temporary file that a failed write must not leave behind."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            Path(path).unlink()
        raise


def check_free_space(folder: Union[str, Path], need: int, what: str) -> None:
    """WriteFailed(ENOSPC) now, before anything is written, when `need` bytes do not fit."""
    free = _free_bytes(Path(folder))
    if free is not None and need > 0 and free < need:
        raise WriteFailed(
            errno.ENOSPC, folder, f"{what} needs about {_mib(need)}, {_mib(free)} free; free some space and resume"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def folder_size(folder: Union[str, Path]) -> int:
    total = 0
    for p in Path(folder).rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total


# ----------------------------------------------------------------------------- durability


def fsync_file(path: Union[str, Path]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Union[str, Path]) -> None:
    """Make a rename or a new file in `path` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the rename is then as durable as it gets
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            fsync_file(os.path.join(dirpath, name))
        fsync_dir(dirpath)


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    """`path` replaced by `text` in one step (temporary file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with writing(path):
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(path.parent)
    return path


def atomic_dir(final: Path, write: Callable[[Path], None], *, manifest: bool = True, durable: bool = True) -> Path:
    """Write a folder under a temporary name, then rename it into place: a crash never leaves a
    half-written folder under the real name, a power loss after the return never an empty one
    (`durable`: the files and folders are fsynced; off only to measure what that costs)."""
    final = Path(final)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(final):
            tmp.mkdir(parents=True)
            write(tmp)
            if manifest:
                write_manifest(tmp)
            if durable:
                _fsync_tree(tmp)
    except WriteFailed as e:
        shutil.rmtree(tmp, ignore_errors=True)
        # Name the file the user will look for, not the temporary folder it was written in.
        name = str(e.filename).replace(str(tmp), str(final), 1)
        raise WriteFailed(e.errno, name, e.detail) from e.__cause__
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    if durable:
        fsync_dir(final.parent)
    return final


# ----------------------------------------------------------------------------- manifests


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path) -> Dict[str, dict]:
    """MANIFEST: every file under `folder` with its size and sha256."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[p.relative_to(folder).as_posix()] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n", encoding="utf-8")
    return files


def verify_manifest(folder: Path) -> Optional[str]:
    """None when every file of the folder's manifest is there with its size and hash; else what is
    wrong, naming the file. A folder without a manifest (written before manifests) is not checked."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{MANIFEST} is unreadable ({type(e).__name__})"
    problems: List[str] = []
    for name, want in files.items():
        p = folder / name
        try:
            size = p.stat().st_size
        except OSError:
            problems.append(f"{name} is missing")
            continue
        if size != want["size"]:
            problems.append(f"{name} is {size} bytes, {want['size']} were written")
        elif _sha256(p) != want["sha256"]:
            problems.append(f"{name} does not match its checksum (damaged)")
    return "; ".join(problems) or None
