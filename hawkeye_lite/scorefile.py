"""The output file of a scoring job (`hawkeye-lite score ... --out scores.csv`): one row per image,
appended as the job goes, so a job of hours survives whatever stops it, and the same command run
again continues it.

- **Format** by the name: `.csv` (a header line, then one row per image) or `.jsonl` (one JSON
  object per line). Columns: path, score, std, n_parsed, samples (the parsed ratings,
  space-separated in CSV), key (the pixels' content key), size and mtime_ns (the file when it
  was read), error (empty unless the image could not be read), and with `texts=True` the K
  completions (a JSON list in CSV). Scores are written in full precision; NaN is empty / null.
- **Appends are whole lines**: each batch's rows go out in one `os.write` on a file opened
  O_APPEND, then fsync. A `kill -9` or a power cut can leave at most a torn last line, which
  the next run cuts off (and says so) before appending.
- **One job at a time**: the file is locked (flock) while a job writes it.
- **Settings** (model, prompt/preset, K, seed, sampling, precision) are kept beside the file in
  `<file>.settings.json`. A run with other settings into the same file is refused (one line
  saying which differ) unless `overwrite`, which starts the file again.
- **Resume**: a row whose path, size and modification time match an input's means that input
  is done (its bytes are the ones that were scored: the content key is not recomputed, which
  would mean decoding every image again). A changed file is scored again and its newer row
  comes later in the file; readers take the last row of a path.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from .fsio import atomic_write_text, writing

FIELDS = ["path", "score", "std", "n_parsed", "samples", "key", "size", "mtime_ns", "error"]
FORMATS = (".csv", ".jsonl")


class ScoreFileError(ValueError):
    """The output file cannot be used as asked (one line, names the file): a user error."""


@dataclass
class Done:
    size: Optional[int]
    mtime_ns: Optional[int]
    ok: bool


@dataclass
class Opened:
    done: Dict[str, Done] = field(default_factory=dict)  # path -> its last row
    notes: List[str] = field(default_factory=list)


def check_format(path) -> Path:
    """The output file's path, when its name says a format this module writes."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ScoreFileError(f"--out {path}: must end in .csv or .jsonl")
    return path


def settings_path(path: Path) -> Path:
    return path.with_name(path.name + ".settings.json")


def file_state(path: str) -> Tuple[Optional[int], Optional[int]]:
    """(size, mtime_ns) of a file, (None, None) when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


class ScoreFile:
    """An output file of scored rows. `open()` checks or writes the settings, repairs a torn
    last line and returns what is already done; `append(rows)` writes a batch of rows."""

    def __init__(self, path, settings: dict, *, overwrite: bool = False, texts: bool = False):
        self.path = check_format(path)
        self.kind = self.path.suffix.lower()
        self.settings = settings
        self.overwrite = overwrite
        self.fields = FIELDS + (["texts"] if texts else [])
        self.fd: Optional[int] = None

    # --- opening

    def open(self) -> Opened:
        """Take the file (one job at a time: an exclusive lock, released when this process ends
        however it ends), then continue it or start it."""
        opened = Opened()
        side = settings_path(self.path)
        if self.path.is_dir():
            raise ScoreFileError(f"--out {self.path}: is a folder")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with writing(self.path):
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._lock()
            if os.fstat(self.fd).st_size > 0 and not self.overwrite:
                self._check_settings(side)
                opened.notes += self._repair()
                opened.done = self._read_done()
            else:
                if os.fstat(self.fd).st_size > 0:
                    opened.notes.append(f"{self.path}: started again (--overwrite)")
                # Settings first: a job stopped between the two leaves an empty file, which the next
                # run starts afresh; never rows without their settings.
                with writing(self.path):
                    os.ftruncate(self.fd, 0)
                atomic_write_text(side, json.dumps({"settings": self.settings, "fields": self.fields}, indent=1) + "\n")
                self.append([], header=True)
        except BaseException:
            self.close()
            raise
        return opened

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (two jobs into one file are then the user's to avoid)
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ScoreFileError(
                f"--out {self.path}: another job is writing it now; wait for it, or use another --out"
            ) from None
        except OSError:  # a filesystem without locks (some network mounts): go on unlocked
            pass

    def _header(self) -> str:
        return self._csv_line(self.fields) if self.kind == ".csv" else ""

    def _check_settings(self, side: Path) -> None:
        if not side.is_file():
            raise ScoreFileError(
                f"--out {self.path}: exists, but not as a hawkeye-lite score file ({side.name} is missing); "
                "use another --out, or --overwrite to replace it"
            )
        try:
            saved = json.loads(side.read_text(encoding="utf-8"))
            theirs, fields = saved["settings"], saved["fields"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ScoreFileError(f"{side}: not a settings file this command wrote ({exc})") from None
        differ = [
            f"{k} {_show(self.settings.get(k))} here, {_show(theirs.get(k))} there"
            for k in sorted(set(self.settings) | set(theirs))
            if self.settings.get(k) != theirs.get(k)
        ]
        if differ:
            raise ScoreFileError(
                f"--out {self.path}: was scored with other settings ({'; '.join(differ)}); "
                "use another --out, or --overwrite to start it again"
            )
        if fields != self.fields:
            raise ScoreFileError(
                f"--out {self.path}: has the columns {', '.join(fields)}; this run writes "
                f"{', '.join(self.fields)} (--texts differs?); use another --out or --overwrite"
            )

    def _repair(self) -> List[str]:
        """Cut a torn last line (a write cut short by kill -9, a crash, a full disk)."""
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            back = min(size, 1 << 16)
            while True:
                f.seek(size - back)
                tail = f.read(back)
                if tail.endswith(b"\n"):
                    return []
                cut = tail.rfind(b"\n")
                if cut >= 0 or back == size:
                    break
                back = min(size, back * 4)
        keep = size - back + cut + 1 if cut >= 0 else 0
        with writing(self.path):
            os.ftruncate(self.fd, keep)
        if keep == 0:
            self.append([], header=True)
        return [
            f"{self.path}: cut a torn last line ({size - keep} bytes, an interrupted write); its image is scored again"
        ]

    def _read_done(self) -> Dict[str, Done]:
        done: Dict[str, Done] = {}
        for n, row in _raw_rows(self.path, self.fields):
            if not isinstance(row, dict) or not row.get("path"):
                raise ScoreFileError(f"{self.path}:{n}: not a row this command wrote; fix it or use --overwrite")
            done[row["path"]] = Done(_int(row.get("size")), _int(row.get("mtime_ns")), not row.get("error"))
        return done

    # --- writing

    def append(self, rows: Sequence[dict], *, sync: bool = True, header: bool = False) -> None:
        """One write of whole lines (in the file as soon as this returns: a killed process loses
        nothing written), then, with `sync`, fsync (a power cut loses nothing written either).
        A write cut short leaves a torn last line, which the next open() removes."""
        data = ((self._header() if header else "") + "".join(self._line(row) for row in rows)).encode("utf-8")
        with writing(self.path):
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
            if sync:
                os.fsync(self.fd)

    def _line(self, row: dict) -> str:
        if self.kind == ".jsonl":
            return json.dumps({k: row.get(k) for k in self.fields}, ensure_ascii=False, allow_nan=False) + "\n"
        values = []
        for k in self.fields:
            v = row.get(k)
            if k == "samples":
                v = " ".join(repr(x) for x in v or [])
            elif k == "texts":  # JSON keeps a completion's newlines escaped: one row, one line
                v = json.dumps(v or [], ensure_ascii=False)
            elif k == "error" and v:
                v = " ".join(str(v).split())
            values.append("" if v is None else v)
        return self._csv_line(values)

    @staticmethod
    def _csv_line(values) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        return buf.getvalue()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def row_of(result, size: Optional[int], mtime_ns: Optional[int]) -> dict:
    """A ScoreResult (hawkeye_lite.scorer) as a row of the file."""

    def num(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

    return {
        "path": result.source,
        "score": num(result.score),
        "std": num(result.std),
        "n_parsed": result.n_parsed if result.ok else None,
        "samples": list(result.samples),
        "key": result.key,
        "size": size,
        "mtime_ns": mtime_ns,
        "error": result.error,
        "texts": list(result.texts),
    }


def read_rows(path) -> List[dict]:
    """The rows of a score file, last row of each path winning, in file order (scores as floats,
    None when empty). For users' scripts and the tests."""
    path = Path(path)
    rows: Dict[str, dict] = {}
    for _, row in _raw_rows(path):
        if path.suffix.lower() == ".csv":  # CSV holds strings: back to the values JSONL holds
            for k in ("score", "std"):
                row[k] = float(row[k]) if row[k] else None
            row["samples"] = [float(x) for x in row["samples"].split()]
            for k in ("n_parsed", "size", "mtime_ns"):
                row[k] = _int(row[k])
            row["error"] = row["error"] or None
            if "texts" in row:
                row["texts"] = json.loads(row["texts"])
        rows.pop(row["path"], None)
        rows[row["path"]] = row
    return list(rows.values())


def _raw_rows(path: Path, fields: Optional[List[str]] = None) -> Iterator[Tuple[int, dict]]:
    """(line number, row as written) of a score file; `fields`: the CSV header it must have."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.reader(f)
            header = next(reader, None) or []
            if fields is not None and header != fields:
                raise ScoreFileError(f"{path}:1: header is not {','.join(fields)}")
            for values in reader:
                yield reader.line_num, dict(zip(header, values))
        else:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield n, _json_row(path, n, line)


def _json_row(path: Path, n: int, line: str):
    try:
        return json.loads(line)
    except ValueError:
        raise ScoreFileError(f"{path}:{n}: not a JSON row; fix it or use --overwrite") from None


def _int(v) -> Optional[int]:
    return None if v in (None, "") else int(v)


def _show(v) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


# ----------------------------------------------------------------------------- a scoring job


@dataclass
class JobResult:
    total: int  # inputs
    earlier: int  # found done in the file
    scored: int  # rows written now
    failed: int  # inputs whose row (now or earlier) says they could not be read
    notes: List[str] = field(default_factory=list)


def model_fingerprint(scorer) -> str:
    """What identifies the weights a Scorer runs: the adapter file's sha256 (a retrained adapter in
    the same folder is another model), else the base folder's config.json and weight files' sizes,
    else the hub id."""
    import hashlib

    cfg = scorer.policy.config
    h = hashlib.sha256()
    adapter = Path(cfg.lora.adapter_path) if cfg.lora is not None and cfg.lora.adapter_path else None
    if adapter is not None and (adapter / "adapter_model.safetensors").is_file():
        with open(adapter / "adapter_model.safetensors", "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        return "adapter:" + h.hexdigest()[:16]
    base = Path(cfg.name_or_path)
    if base.is_dir():
        if (base / "config.json").is_file():
            h.update((base / "config.json").read_bytes())
        for w in sorted(base.glob("*.safetensors")) + sorted(base.glob("*.bin")):
            h.update(f"{w.name}:{w.stat().st_size};".encode())
        return "folder:" + h.hexdigest()[:16]
    return "hub:" + str(cfg.name_or_path)


def score_to_file(scorer, paths: Sequence[str], out: ScoreFile, *, progress=None, **options) -> JobResult:
    """Score `paths` into `out` (opened here): skip what it already holds, append every result as
    it comes (fsync once per batch), count failures. `options` go to Scorer.score_iter."""
    opened = out.open()
    try:
        todo, earlier, failed = [], 0, 0
        states = {}
        for p in paths:
            state = file_state(p)
            row = opened.done.get(p)
            if row is not None and (row.size, row.mtime_ns) == state and state[0] is not None:
                earlier += 1
                failed += not row.ok
            else:
                todo.append(p)
                states[p] = state
        if progress is not None:
            progress = progress(len(todo))
        every = max(1, int(options.get("batch_size", 8)))
        scored = 0
        for result in scorer.score_iter(todo, **options):
            size, mtime = states[result.source]
            out.append([row_of(result, size, mtime)], sync=(scored + 1) % every == 0)
            scored += 1
            failed += not result.ok
            if progress is not None:
                progress.update(1)
        out.append([], sync=True)
        return JobResult(len(paths), earlier, scored, failed, opened.notes)
    finally:
        out.close()
