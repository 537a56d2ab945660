"""Runs that survive the machine (issue #25): pre-emption signals, damaged checkpoints, full
disks and other failed writes, durable writes.

- SIGTERM / SIGUSR1 / SIGINT stop a run like Ctrl-C in every phase: in a step, the step finishes
  and a checkpoint is written; in the warm start or an eval, the run stops at once; `--resume`
  then ends with the adapter of an uninterrupted run. A real `hawkeye-lite train` subprocess is
  sent SIGTERM; the phases are covered in-process (the handler runs in the test's main thread).
- A damaged newest checkpoint (cut short, emptied, garbled, a file missing, its manifest broken)
  is named in one line and the run resumes from the newest intact one; all damaged: exit 2.
- ENOSPC / EDQUOT / EROFS / EACCES from the writers (patched) and from a real 300 KB filesystem
  (a tmpfs mounted in a user namespace, where the machine allows it) end in one line naming the
  cause and the path, exit 1, no temporary folder left, the previous checkpoint intact.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hawkeye_lite import fsio
from hawkeye_lite.checkpoint import CHECKPOINTS, checkpoints
from hawkeye_lite.cli import app
from hawkeye_lite.config_loader import load_train_config
from hawkeye_lite.trainer import Trainer


def settings(tiny, demo_dir, run, *extra):
    return [
        f"output_dir={run}",
        f"model.name_or_path={tiny}",
        "tiny_model.build=false",
        f"data.train=[demo:{demo_dir}]",
        "eval.before=false",
        "eval.after=false",
        "eval.max_images=4",
        "eval.samples=1",
        "optim.batch_size=2",
        "rollout.num_generations=2",
        "rollout.max_new_tokens=5",
        "optim.max_steps=5",
        "optim.warmup_steps=1",
        "optim.lr=1e-2",
        "model.lora.dropout=0.2",  # the torch RNG matters: a resume must restore it too
        "checkpoint.every=1000",
        "logging.progress=false",
        "logging.plot=false",
        "sft.steps=0",
        *extra,
    ]


def cfg_of(tiny, demo_dir, run, *extra):
    return load_train_config(None, settings(tiny, demo_dir, run, *extra))


def adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "final" / "adapter_model.safetensors"))


def same_adapter(a: Path, b: Path) -> None:
    x, y = adapter(a), adapter(b)
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def straight(tiny, demo_dir, tmp_path_factory):
    """The uninterrupted run every interrupted one must end equal to."""
    run = tmp_path_factory.mktemp("straight") / "run"
    Trainer(cfg_of(tiny, demo_dir, run)).run()
    return run


def run_cli(*args):
    return CliRunner().invoke(app, list(args))


# ============================================================================ signals


def test_sigterm_to_a_real_run_loses_at_most_the_step_in_flight(tiny, demo_dir, tmp_path, straight):
    """`kill -TERM` on `hawkeye-lite train` (one process, checkpoint.every large): the step in
    flight finishes, a checkpoint is written, exit 143 with a line that says how to resume; the
    resumed run ends with the uninterrupted run's adapter."""
    run = tmp_path / "run"
    args = [a for s in settings(tiny, demo_dir, run) for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HAWKEYE_KERNELS": "torch"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hawkeye_lite", "train", *args], stderr=subprocess.PIPE, text=True, env=env
    )
    metrics, done = run / "metrics.jsonl", 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file():
            done = sum('"event": "step"' in line for line in metrics.read_text().splitlines())
            if done >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None and done >= 2, "the run ended or stalled before the signal"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    saved = checkpoints(run)
    assert len(saved) == 1, err[-2000:]
    step = int(saved[0].name.split("-")[1])
    assert step >= done  # at most the step in flight was lost: it finished and was saved
    assert f"stopped by SIGTERM at step {step} (checkpoint {saved[0]})" in err
    assert f"continue with: hawkeye-lite train --resume {run}" in err and "Traceback" not in err
    assert not list(run.glob(".tmp-*")) and not (run / ".lock").exists()
    res = Trainer(cfg_of(tiny, demo_dir, run), log_stream=open(os.devnull, "w")).run(resume=True)
    assert not res.interrupted and res.steps == 5
    same_adapter(run, straight)


def _signal_at(monkeypatch, where: str, when: int, signame: str = "SIGTERM", twice: bool = False):
    """Send `signame` to this process (the test's main thread handles it) on call `when` of
    Trainer.`where` — inside it, as a signal from outside would arrive."""
    real = getattr(Trainer, where)
    calls = []

    def patched(self, *a, **k):
        calls.append(1)
        if len(calls) == when:
            os.kill(os.getpid(), getattr(signal, signame))
            if twice:
                os.kill(os.getpid(), getattr(signal, signame))
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, where, patched)
    return calls


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1", "SIGINT"])
def test_each_signal_inside_a_step_finishes_it_and_checkpoints(
    signame, tiny, demo_dir, tmp_path, straight, monkeypatch
):
    run = tmp_path / "run"
    _signal_at(monkeypatch, "rl_step", 3, signame)
    res = Trainer(cfg_of(tiny, demo_dir, run)).run()
    assert res.interrupted and res.stopped_by == signame and res.steps == 3
    assert res.checkpoint == run / CHECKPOINTS / "step-000003" and res.checkpoint.is_dir()
    monkeypatch.undo()
    Trainer(cfg_of(tiny, demo_dir, run)).run(resume=True)
    same_adapter(run, straight)


def test_a_second_signal_stops_at_once_with_the_state_from_before_the_step(
    tiny, demo_dir, tmp_path, straight, monkeypatch
):
    run = tmp_path / "run"
    _signal_at(monkeypatch, "rl_step", 3, twice=True)
    res = Trainer(cfg_of(tiny, demo_dir, run)).run()
    assert res.interrupted and res.steps == 2  # step 3 abandoned, its starting state saved
    assert [c.name for c in checkpoints(run)] == ["step-000002"]
    monkeypatch.undo()
    Trainer(cfg_of(tiny, demo_dir, run)).run(resume=True)
    same_adapter(run, straight)


def test_a_signal_in_the_warm_start_or_an_eval_stops_at_once_and_resume_redoes_it(
    tiny, demo_dir, tmp_path, monkeypatch
):
    """Nothing is saved mid-warm-start or mid-eval (a resume redoes them), so the run stops at
    once; a warm start that had finished is reused."""
    extra = ("sft.steps=3", "sft.batch_size=2", "eval.before=true")
    straight = tmp_path / "straight"
    Trainer(cfg_of(tiny, demo_dir, straight, *extra)).run()

    run = tmp_path / "run"
    calls = _signal_at(monkeypatch, "load_policy", 1, "SIGUSR1")  # the warm start's first act
    res = Trainer(cfg_of(tiny, demo_dir, run, *extra)).run()
    assert res.interrupted and res.stopped_by == "SIGUSR1" and res.checkpoint is None and len(calls) == 1
    assert not (run / "sft-base").exists() and not checkpoints(run)
    monkeypatch.undo()
    _signal_at(monkeypatch, "evaluate", 1)  # eval before RL: the warm start is done and kept
    res = Trainer(cfg_of(tiny, demo_dir, run, *extra)).run(resume=True)
    assert res.interrupted and res.stopped_by == "SIGTERM" and (run / "sft-base").is_dir()
    monkeypatch.undo()
    out = open(os.devnull, "w")
    res = Trainer(cfg_of(tiny, demo_dir, run, *extra), log_stream=out).run(resume=True)
    assert not res.interrupted and res.steps == 5
    same_adapter(run, straight)


def test_checkpoints_by_time(tiny, demo_dir, tmp_path, monkeypatch):
    """checkpoint.every_minutes: a checkpoint when that long has passed since the last, whatever
    checkpoint.every says (the checkpoint clock advances 11 minutes at each reading: one per step,
    one after each checkpoint)."""
    import hawkeye_lite.runloop as runloop

    now = [0.0]

    def clock():
        now[0] += 660.0
        return now[0]

    monkeypatch.setattr(runloop, "_now", clock)
    run = tmp_path / "run"
    Trainer(cfg_of(tiny, demo_dir, run, "checkpoint.every_minutes=20", "checkpoint.keep_last=10")).run()
    steps = [int(c.name.split("-")[1]) for c in checkpoints(run)]
    assert steps == [2, 4, 5], steps  # 22 minutes after the start, 22 after that, and the last
    assert load_train_config(None, ["checkpoint.every_minutes=0"]).checkpoint.every_minutes == 0
    with pytest.raises(ValueError, match="checkpoint.every_minutes"):
        load_train_config(None, ["checkpoint.every_minutes=-1"])


# ============================================================================ damaged checkpoints


@pytest.fixture(scope="module")
def three(tiny, demo_dir, tmp_path_factory):
    """A run stopped after step 3 with a checkpoint after each step (copied by each test)."""
    run = tmp_path_factory.mktemp("three") / "run"
    res = Trainer(cfg_of(tiny, demo_dir, run, "checkpoint.every=1", "checkpoint.keep_last=5")).run(max_steps=3)
    assert res.steps == 3 and [c.name for c in checkpoints(run)] == ["step-000001", "step-000002", "step-000003"]
    return run


def _three_checkpoints(three, run):
    shutil.copytree(three, run)


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p: Path):
    p.write_bytes(b"")


def _garble(p: Path):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


DAMAGE = {
    "truncated adapter": ("adapter_model.safetensors", _truncate, "adapter_model.safetensors is"),
    "empty optimizer": ("training_state/optimizer.pt", _empty, "training_state/optimizer.pt is 0 bytes"),
    "garbled rng": (
        "training_state/rng.safetensors",
        _garble,
        "training_state/rng.safetensors does not match its checksum",
    ),
    "missing state": ("training_state/state.json", lambda p: p.unlink(), None),
    "missing adapter": ("adapter_model.safetensors", lambda p: p.unlink(), "adapter_model.safetensors is missing"),
    "broken manifest": ("manifest.json", lambda p: p.write_text("{"), "manifest.json is unreadable"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_is_named_and_the_newest_intact_one_used(
    kind, tiny, demo_dir, tmp_path, straight, three
):
    run = tmp_path / "run"
    _three_checkpoints(three, run)
    name, damage, said = DAMAGE[kind]
    damage(run / CHECKPOINTS / "step-000003" / name)
    log = tmp_path / "log.txt"
    with open(log, "w") as stream:
        res = Trainer(cfg_of(tiny, demo_dir, run), log_stream=stream).run(resume=True)
    text = log.read_text()
    assert res.steps == 5 and not res.interrupted
    if said is not None:  # (a checkpoint without its state.json is not one: it is passed over)
        assert f"checkpoint {run / CHECKPOINTS / 'step-000003'} is damaged: {said}" in text, text
        assert "resuming from step-000002, the newest intact checkpoint" in text
        assert (run / CHECKPOINTS / "damaged-step-000003").is_dir()  # kept for a look, out of keep_last's way
    assert "resumed from" in text and "step-000002 at step 2" in text
    same_adapter(run, straight)


def test_every_checkpoint_damaged_stops_with_exit_2_naming_them(tmp_path, three):
    run = tmp_path / "run"
    _three_checkpoints(three, run)
    for c in checkpoints(run):
        _truncate(c / "adapter_model.safetensors")
    res = run_cli("train", "--resume", str(run))
    assert res.exit_code == 2 and "Traceback" not in res.output
    line = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "every checkpoint is damaged (step-000003, step-000002, step-000001" in line[0]
    assert [c.name for c in checkpoints(run)] == ["step-000001", "step-000002", "step-000003"]  # nothing moved


def test_a_checkpoint_from_before_manifests_is_used_and_a_damaged_one_named(tmp_path, three):
    """Checkpoints written by earlier versions have no manifest: used as they are; if one cannot
    be read, the error names the checkpoint and the file."""
    run = tmp_path / "run"
    _three_checkpoints(three, run)
    for c in checkpoints(run):
        (c / fsio.MANIFEST).unlink()
    _truncate(run / CHECKPOINTS / "step-000003" / "adapter_model.safetensors")
    res = run_cli("train", "--resume", str(run))
    assert res.exit_code == 1 and "step-000003/adapter_model.safetensors: cannot be read" in res.output
    assert "Traceback" not in res.output


# ============================================================================ failed writes


@pytest.mark.parametrize(
    "code,cause",
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_a_failed_checkpoint_write_names_cause_and_path_and_keeps_the_last(
    code, cause, tiny, demo_dir, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    import safetensors.torch

    real, calls = safetensors.torch.save_file, []

    def failing(tensors, path, *a, **k):  # the RNG file of the second checkpoint
        if str(path).endswith("rng.safetensors"):  # (peft may bind this too, if imported after the patch)
            calls.append(path)
        if len(calls) == 2 and str(path).endswith("rng.safetensors"):
            raise OSError(code, os.strerror(code))  # no file name: the library lost it
        return real(tensors, path, *a, **k)

    monkeypatch.setattr("safetensors.torch.save_file", failing)
    with pytest.raises(fsio.WriteFailed) as e:
        Trainer(cfg_of(tiny, demo_dir, run, "checkpoint.every=1", "optim.max_steps=3")).run()
    want = f"{cause}: {run / CHECKPOINTS / 'step-000002' / 'training_state' / 'rng.safetensors'}"
    assert str(e.value) == want
    assert [c.name for c in checkpoints(run)] == ["step-000001"] and not fsio.verify_manifest(checkpoints(run)[0])
    assert not list((run / CHECKPOINTS).glob(".tmp-*"))
    from hawkeye_lite.errors import classify

    assert classify(e.value) == (1, f"error: {want}")


def test_torch_save_on_a_full_disk_is_reported_as_a_full_disk(tiny, demo_dir, tmp_path, monkeypatch):
    """torch's zip writer loses the errno ("unexpected pos"); on a full filesystem that is ENOSPC."""
    import shutil as sh

    run = tmp_path / "run"

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 220544 vs 220432")

    monkeypatch.setattr(torch, "save", full)
    real_usage = sh.disk_usage
    monkeypatch.setattr(fsio.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=4096))
    with pytest.raises(fsio.WriteFailed, match=r"^no space left on device: .*step-000001/training_state/optimizer.pt$"):
        Trainer(cfg_of(tiny, demo_dir, run, "checkpoint.every=1")).run()
    assert not checkpoints(run) and not list((run / CHECKPOINTS).glob(".tmp-*"))


def test_free_space_is_checked_before_a_checkpoint(tiny, demo_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_usage = shutil.disk_usage
    budget = {"free": 10**12}
    monkeypatch.setattr(fsio.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=budget["free"]))
    real_save, saves = Trainer.save_checkpoint, []

    def save(self, *a, **k):
        saves.append(self.step)
        if len(saves) == 2:
            budget["free"] = 1000  # the disk filled up since the first checkpoint
        return real_save(self, *a, **k)

    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    with pytest.raises(fsio.WriteFailed) as e:
        Trainer(cfg_of(tiny, demo_dir, run, "checkpoint.every=1", "optim.max_steps=3")).run()
    assert str(e.value).startswith(f"no space left on device: {run / CHECKPOINTS} (checkpoint step-000002 needs about")
    assert "free some space and resume" in str(e.value)
    assert [c.name for c in checkpoints(run)] == ["step-000001"] and not list((run / CHECKPOINTS).glob(".tmp-*"))


@pytest.mark.parametrize("what", ["metrics", "final", "plot", "config"])
def test_other_writes_of_a_run_name_cause_and_path(what, tiny, demo_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    target = {"metrics": "metrics.jsonl", "final": "final", "plot": "plot.png", "config": "config.yaml"}[what]
    real_open = open

    def ro(path, *a, **k):
        if target in str(path) and any(m in (a[0] if a else k.get("mode", "r")) for m in "wax"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    import builtins

    monkeypatch.setattr(builtins, "open", ro)
    extra = ("logging.plot=true",) if what == "plot" else ()
    with pytest.raises(fsio.WriteFailed, match=f"^read-only file system: .*{target}"):
        Trainer(cfg_of(tiny, demo_dir, run, "optim.max_steps=1", *extra)).run()
    assert not list(run.glob(".tmp-*")) and not list(run.glob(".*tmp*"))


def _in_a_small_namespace(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mkdir -p {tmp_path}/p && mount -t tmpfs -o size=64k tmpfs {tmp_path}/p"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a filesystem here: {probe.stderr.decode()[-200:]}")


def test_a_real_full_filesystem(tiny, demo_dir, tmp_path):
    """The run folder on a 300 KB tmpfs (mounted in a user namespace): the first checkpoint does
    not fit. One line naming the cause and a file, exit 1, no temporary folder left."""
    _in_a_small_namespace(tmp_path)
    run = tmp_path / "small" / "run"
    run.parent.mkdir()
    args = " ".join(f"--set '{s}'" for s in settings(tiny, demo_dir, run, "checkpoint.every=1"))
    script = f"mount -t tmpfs -o size=300k tmpfs {run.parent} && exec {sys.executable} -m hawkeye_lite train {args}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HAWKEYE_KERNELS": "torch"}
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 1 and len(errors) == 1, res.stderr[-2000:]
    assert errors[0].startswith(f"error: no space left on device: {run}"), errors
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("fs", ["read-only", "full"])
@pytest.mark.parametrize("command", ["demo-data", "degrade"])
def test_data_commands_on_a_read_only_or_full_filesystem(command, fs, demo_dir, tmp_path):
    """demo-data and degrade writing to a real read-only (remounted ro) or 64 KB tmpfs: one line
    naming the cause and a path under the output, no traceback; exit 2 when the output folder
    cannot even be created (nothing was started), exit 1 when the disk fills while writing."""
    _in_a_small_namespace(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = {
        "read-only": f"mount -t tmpfs tmpfs {mnt} && mount -o remount,ro {mnt}",
        "full": f"mount -t tmpfs -o size=64k tmpfs {mnt}",
    }[fs]
    cli = {
        "demo-data": f"demo-data --out {mnt}/demo --scenes 6 --per-scene 2",
        "degrade": f"degrade --data json:{demo_dir}/demo.json --out {mnt}/partners",
    }[command]
    script = f"{mount} && exec {sys.executable} -m hawkeye_lite {cli}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in res.stderr and len(errors) == 1, res.stderr[-2000:]
    if fs == "read-only":  # refused before any work: the output folder cannot be created
        assert res.returncode == 2 and f"{mnt}/" in errors[0] and "Read-only file system" in errors[0], errors
    else:  # found full while writing
        assert res.returncode == 1 and errors[0].startswith(f"error: no space left on device: {mnt}/"), errors


# ============================================================================ durable writes


def test_atomic_dir_fsyncs_files_folder_and_parent_and_writes_a_manifest(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def write(d: Path):
        (d / "a.bin").write_bytes(b"x" * 100)
        (d / "sub").mkdir()
        (d / "sub" / "b.txt").write_text("b")

    out = fsio.atomic_dir(tmp_path / "ck", write)
    tmp = f".tmp-ck-{os.getpid()}"
    for name in ("a.bin", "sub/b.txt", fsio.MANIFEST, "sub", ""):
        assert str(tmp_path / tmp / name).rstrip("/") in synced, (name, synced)
    assert str(tmp_path) in synced  # the rename itself
    files = json.loads((out / fsio.MANIFEST).read_text())["files"]
    assert files["a.bin"]["size"] == 100 and set(files) == {"a.bin", "sub/b.txt"}
    assert fsio.verify_manifest(out) is None
    (out / "sub" / "b.txt").write_text("c")
    assert fsio.verify_manifest(out) == "sub/b.txt does not match its checksum (damaged)"


def test_explain_maps_library_errors_and_leaves_others_alone(tmp_path):
    assert str(fsio.explain(OSError(errno.ENOSPC, "x"), tmp_path / "f")) == f"no space left on device: {tmp_path / 'f'}"
    assert fsio.explain(RuntimeError("safetensors: No space left on device (os error 28)"), "p").errno == errno.ENOSPC
    assert fsio.explain(OSError(errno.EDQUOT, "q", "/a/b"), "ignored").filename == "/a/b"
    # a short write on a disk with room is a bug, not a full disk; other errors are left alone
    assert fsio.explain(RuntimeError("unexpected pos 1 vs 2"), tmp_path) is None
    assert fsio.explain(ValueError("bad"), tmp_path) is None
    assert fsio.explain(OSError(errno.ENOENT, "no"), tmp_path) is None
