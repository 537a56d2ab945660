"""How a failure reaches the user: one line, and an exit code that says whose fault it was.

- 2: the input is wrong (a config key, a data file, a model folder, an image, a run folder in
  use): the line names the thing, and nothing already done is lost.
- 1: the work itself failed (a bug, a full disk, a run that diverged): the line names the error
  (for the machine's failures, the cause and the path: "no space left on device: PATH");
  `--debug` or HAWKEYE_DEBUG=1 shows the traceback.
- 130: interrupted (Ctrl-C); a training run stopped by a signal exits 128 + its number after
  its checkpoint (SIGTERM 143, SIGUSR1 138).
"""

from __future__ import annotations

import os


class UserError(ValueError):
    """Bad input found by the package itself (an option out of range, an output path that cannot
    be written): the message names the option or the file."""


class TrainingError(RuntimeError):
    """The run cannot go on (too many non-finite steps, bad resume folder, ...)."""


class DataFault(TrainingError):
    """A training image failed to decode and data.on_bad is fail: bad input, not a bug."""


def user_error_types() -> tuple:
    """The exception types that mean 'bad input' (imported lazily: they live next to their code)."""
    from .config import ConfigError
    from .data import DataError
    from .hub import HubError
    from .images import ImageReadError
    from .model import ModelLoadError
    from .report import SuiteError
    from .runfolder import RunFolderError
    from .scorefile import ScoreFileError

    return (
        UserError,
        ConfigError,
        DataError,
        HubError,
        ImageReadError,
        ModelLoadError,
        RunFolderError,
        ScoreFileError,
        SuiteError,
        DataFault,
    )


def debug_enabled(argv=()) -> bool:
    return "--debug" in list(argv) or os.environ.get("HAWKEYE_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def one_line(exc: BaseException) -> str:
    """The message on one line (multi-line messages are folded with ' | ')."""
    text = str(exc).strip() or type(exc).__name__
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


def classify(exc: BaseException) -> tuple:
    """(exit code, message line) for an exception that reached the command line."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    try:
        user = user_error_types()
    except Exception:  # an import failure must not hide the original error
        user = (UserError,)
    if isinstance(exc, user):
        return 2, f"error: {one_line(exc)}"
    from .fsio import CAUSES, WriteFailed, explain

    if isinstance(exc, WriteFailed):  # the machine: a full disk, a quota, a read-only folder
        return 1, f"error: {exc}"
    if isinstance(exc, OSError) and exc.errno in CAUSES and exc.filename:
        return 1, f"error: {CAUSES[exc.errno]}: {exc.filename}"
    failed = explain(exc, "")
    if failed is not None:  # a library lost the path on the way
        return 1, f"error: {failed.strerror} (while writing; --debug shows where)"
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename:
        # Another OS error on a file the user chose: name the file.
        return 1, f"error: {exc.filename}: {exc.strerror}"
    return 1, f"error: {type(exc).__name__}: {one_line(exc)} (run with --debug or HAWKEYE_DEBUG=1 for the traceback)"
