"""Nothing lost, nothing mixed, every error clear (issue #10).

Run folders (one run per folder, lock, --overwrite, resume diffs, metrics once per step,
leftovers), data faults mid-run, batch-invariant scoring (Scorer, eval, the trainer's held-out
evaluation), EXIF orientation everywhere an image is read, and the CLI's one-line errors.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from _tiny import images as tiny_images
from _tiny import model_config, perturb_lora
from PIL import Image
from typer.testing import CliRunner

from hawkeye_lite.checkpoint import CHECKPOINTS, latest_checkpoint
from hawkeye_lite.cli import app
from hawkeye_lite.config import ConfigError
from hawkeye_lite.config_loader import load_train_config
from hawkeye_lite.errors import DataFault
from hawkeye_lite.runfolder import LOCK_FILE, RunFolderError, RunLock, cut_metrics
from hawkeye_lite.trainer import Trainer
from hawkeye_lite.trainset import Dataset


def make_cfg(tiny, data, run_dir, *extra):
    return load_train_config(
        None,
        [
            f"output_dir={run_dir}",
            f"model.name_or_path={tiny}",
            "tiny_model.build=false",
            f"data.train=[{data}]",
            "eval.before=false",
            "eval.after=false",
            "eval.max_images=6",
            "eval.samples=1",
            "optim.batch_size=2",
            "rollout.num_generations=2",
            "rollout.max_new_tokens=4",
            "optim.max_steps=3",
            "optim.warmup_steps=1",
            "checkpoint.every=0",
            "logging.progress=false",
            "logging.plot=false",
            "sft.steps=0",
            *extra,
        ],
    )


def events(run_dir, kind=None):
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if kind is None or r["event"] == kind]


def run_cli(*args, env=None):
    return CliRunner().invoke(app, list(args), env=env)


# ============================================================================ run folders


def test_second_run_into_a_folder_is_refused_then_overwrite_replaces_it(tiny, demo_dir, tmp_path):
    run = tmp_path / "run"
    Trainer(make_cfg(tiny, f"demo:{demo_dir}", run, "optim.max_steps=1")).run()
    first_id = json.loads((run / "run.json").read_text())["id"]
    with pytest.raises(RunFolderError, match="already holds a run") as e:
        Trainer(make_cfg(tiny, f"demo:{demo_dir}", run, "optim.max_steps=2")).run()
    assert "--resume" in str(e.value) and "--overwrite" in str(e.value)
    assert len(events(run, "step")) == 1  # nothing of the refused run reached the folder
    (run / "notes.txt").write_text("mine")  # a user's file: --overwrite leaves it alone
    Trainer(make_cfg(tiny, f"demo:{demo_dir}", run, "optim.max_steps=2")).run(overwrite=True)
    assert [r["step"] for r in events(run, "step")] == [1, 2]
    assert json.loads((run / "run.json").read_text())["id"] != first_id
    assert (run / "notes.txt").read_text() == "mine"
    assert not (run / LOCK_FILE).exists()  # released


def test_cli_refuses_a_used_folder_with_exit_2(tiny, demo_dir, tmp_path):
    run = tmp_path / "run"
    Trainer(make_cfg(tiny, f"demo:{demo_dir}", run, "optim.max_steps=1")).run()
    res = run_cli(
        "train",
        "--set",
        f"output_dir={run}",
        "--set",
        f"model.name_or_path={tiny}",
        "--set",
        "tiny_model.build=false",
        "--set",
        f"data.train=[demo:{demo_dir}]",
    )
    assert res.exit_code == 2, res.output
    assert "already holds a run" in res.output and "Traceback" not in res.output
    assert len([l for l in res.output.splitlines() if l.startswith("error:")]) == 1


def test_lock_refuses_a_live_holder_and_is_free_once_it_dies(tmp_path):
    """The lock is the kernel's (flock): a live holder is refused by name; kill -9 frees it."""
    code = (
        "import sys, time; from pathlib import Path; from hawkeye_lite.runfolder import RunLock; "
        "RunLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"PID {holder.pid} on"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid  # left behind by kill -9
    lock = RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(RunFolderError, match="this process already runs in this folder"):
        RunLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
    # A lock file naming a live process that holds no lock on it (e.g. a PID of another container's
    # namespace, or a reused PID) does not block: only the kernel's lock counts.
    import socket

    (tmp_path / LOCK_FILE).write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "proc_start": "1", "started": "long ago"})
    )
    RunLock(tmp_path).acquire().release()


def test_lock_without_flock_falls_back_to_the_pid_file(tmp_path, monkeypatch):
    """On a filesystem without flock the file itself is the lock: a live holder is refused, a dead
    one (or a reused PID: another start time) is stale and taken over."""
    import errno
    import fcntl
    import socket

    from hawkeye_lite.runfolder import _proc_start

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_FILE).write_text(
            json.dumps(
                {
                    "pid": sleeper.pid,
                    "host": socket.gethostname(),
                    "proc_start": _proc_start(sleeper.pid),
                    "started": "then",
                }
            )
        )
        with pytest.raises(RunFolderError, match=f"PID {sleeper.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = RunLock(tmp_path).acquire()  # the holder is gone: stale, taken over
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "proc_start": "1", "started": "long ago"})
    )
    RunLock(tmp_path).acquire().release()  # a reused PID: another start time


def test_two_runs_at_once_into_one_folder(tiny, demo_dir, tmp_path):
    """A real second process while the first holds the folder: refused at once, naming it."""
    run = tmp_path / "run"
    cfg = make_cfg(tiny, f"demo:{demo_dir}", run, "optim.max_steps=1")
    code = (
        "import sys; from hawkeye_lite.runfolder import claim; from pathlib import Path\n"
        "with claim(Path(sys.argv[1]), resume=False, overwrite=False, log=print):\n"
        "    print('HELD', flush=True); sys.stdin.readline()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "HELD"
        t0 = time.time()
        with pytest.raises(RunFolderError, match=f"in use by another hawkeye-lite run \\(PID {holder.pid}"):
            Trainer(cfg).run()
        assert time.time() - t0 < 10  # at once, not after training
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    assert holder.returncode == 0


def test_resume_prints_changes_and_metrics_hold_each_step_once(tiny, demo_dir, tmp_path):
    from io import StringIO

    run = tmp_path / "run"
    extra = ("optim.max_steps=4", "checkpoint.every=2", "checkpoint.keep_last=3", "optim.lr=1e-4")
    Trainer(make_cfg(tiny, f"demo:{demo_dir}", run, *extra)).run(max_steps=3)
    # a crash after step 3: its checkpoint never made it, the metrics did; a killed write left a temp folder
    shutil.rmtree(run / CHECKPOINTS / "step-000003")
    (run / ".tmp-sft-base-99999").mkdir()
    (run / CHECKPOINTS / ".tmp-step-000004-99999").mkdir()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"event": "step", "st')  # a line cut short by kill -9
    stream = StringIO()
    cfg = make_cfg(tiny, f"demo:{demo_dir}", run, *extra, "optim.lr=5e-5")
    res = Trainer(cfg, log_stream=stream).run(resume=True)
    log = stream.getvalue()
    assert res.steps == 4
    assert "resume: optim.lr changed 0.0001 -> 5e-05" in log
    assert [r["step"] for r in events(run, "step")] == [1, 2, 3, 4]
    assert not (run / ".tmp-sft-base-99999").exists() and not (run / CHECKPOINTS / ".tmp-step-000004-99999").exists()
    resumes = events(run, "resume")
    assert resumes[-1]["step"] == 2 and resumes[-1]["changes"] == {"optim.lr": [0.0001, 5e-05]}
    # a finished run: resuming it does nothing and says so
    stream = StringIO()
    res = Trainer(cfg, log_stream=stream).run(resume=True)
    assert res.steps == 4 and "nothing to do" in stream.getvalue()
    assert [r["step"] for r in events(run, "step")] == [1, 2, 3, 4]


def test_resume_refuses_model_changes_with_checkpoints(tiny, demo_dir, tmp_path):
    run = tmp_path / "run"
    Trainer(make_cfg(tiny, f"demo:{demo_dir}", run, "checkpoint.every=1")).run(max_steps=1)
    with pytest.raises(RunFolderError, match="model.lora.r 16 -> 8"):
        Trainer(make_cfg(tiny, f"demo:{demo_dir}", run, "model.lora.r=8", "model.lora.alpha=16")).run(resume=True)


def test_cut_metrics_unit(tmp_path):
    path = tmp_path / "metrics.jsonl"
    recs = [
        {"event": "sft", "step": 1},
        {"event": "eval", "step": 0},
        {"event": "step", "step": 1},
        {"event": "step", "step": 2},
        {"event": "eval", "step": 2},
        {"event": "step", "step": 3},
        {"event": "data_fault", "step": 3},
        {"event": "resume", "step": 0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"event": "st')
    assert cut_metrics(path, 2, restart=False, keep_sft=True) == 3
    assert [(r["event"], r["step"]) for r in map(json.loads, path.read_text().splitlines())] == [
        ("sft", 1),
        ("eval", 0),
        ("step", 1),
        ("step", 2),
        ("eval", 2),
        ("resume", 0),
    ]
    assert cut_metrics(path, 0, restart=True, keep_sft=False) == 5
    assert [r["event"] for r in map(json.loads, path.read_text().splitlines())] == ["resume"]


def test_warm_start_is_reused_only_with_the_same_settings(tiny, demo_dir, tmp_path):
    from io import StringIO

    run = tmp_path / "run"
    sft = ("sft.steps=2", "sft.batch_size=2", "optim.max_steps=1", "checkpoint.every=0")
    Trainer(make_cfg(tiny, f"demo:{demo_dir}", run, *sft)).run()
    # no checkpoint yet, as after a crash during RL: a resume with another sft.lr rebuilds sft-base
    shutil.rmtree(run / CHECKPOINTS)
    shutil.rmtree(run / "final")
    before = (run / "sft-base" / "model.safetensors").read_bytes()
    stream = StringIO()
    Trainer(make_cfg(tiny, f"demo:{demo_dir}", run, *sft, "sft.lr=1e-3"), log_stream=stream).run(resume=True)
    assert "warm start: rebuilding" in stream.getvalue() and "sft.lr 0.003 -> 0.001" in stream.getvalue()
    assert (run / "sft-base" / "model.safetensors").read_bytes() != before
    assert len(events(run, "sft")) == 2  # the old warm start's records went with it
    # same settings: reused
    shutil.rmtree(run / CHECKPOINTS)
    shutil.rmtree(run / "final")
    stream = StringIO()
    Trainer(make_cfg(tiny, f"demo:{demo_dir}", run, *sft, "sft.lr=1e-3"), log_stream=stream).run(resume=True)
    assert "warm start: reusing" in stream.getvalue() and len(events(run, "sft")) == 2


def test_tiny_model_with_other_settings_is_not_reused(tmp_path):
    from hawkeye_lite.runfolder import write_settings
    from hawkeye_lite.tiny_model import tiny_settings

    cfg = load_train_config(None, [f"output_dir={tmp_path / 'run'}", f"model.name_or_path={tmp_path / 'shared-tiny'}"])
    (tmp_path / "shared-tiny").mkdir()
    write_settings(tmp_path / "shared-tiny", {"tiny_model": {**tiny_settings(cfg)["tiny_model"], "hidden_size": 32}})
    with pytest.raises(ConfigError, match="tiny_model.hidden_size 32 -> 64"):
        Trainer(cfg).prepare()


def test_output_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    res = run_cli("train", "--set", f"output_dir={tmp_path / 'f'}")
    assert res.exit_code == 2 and "is a file, not a folder" in res.output and "Traceback" not in res.output


# ============================================================================ data faults mid-run


def corrupt_copy(demo_dir, tmp_path):
    """A copy of the demo data (JSON + images) whose files we may damage after loading."""
    dst = tmp_path / "data"
    shutil.copytree(demo_dir, dst)
    return dst


def test_truncated_image_mid_run_is_reported_counted_and_replaced(tiny, demo_dir, tmp_path):
    data = corrupt_copy(demo_dir, tmp_path)
    run = tmp_path / "run"
    t = Trainer(make_cfg(tiny, f"json:{data / 'train.json'}", run, "data.check_images=header", "optim.max_steps=3"))
    t.data = Dataset.load(t.cfg, print)  # loaded (header check passes), then files go bad, as hours into a run
    from hawkeye_lite.trainset import batch_indices

    first = [t.data.train[i] for i in batch_indices(len(t.data.train), 0, 0, batch_size=2, grad_accum=1, seed=0)]
    raw = open(first[0].image, "rb").read()
    open(first[0].image, "wb").write(raw[: len(raw) // 3])
    res = t.run()
    assert res.steps == 3
    faults = events(run, "data_fault")
    assert len(faults) == 1 and faults[0]["id"] == first[0].id and "truncated" in faults[0]["error"]
    assert first[0].image in faults[0]["error"] and "train.json" in faults[0]["error"]  # file and line
    assert [r["data_faults"] for r in events(run, "step")] == [1, 0, 0]


def test_deleted_image_and_bad_held_out_image_mid_run(tiny, demo_dir, tmp_path):
    data = corrupt_copy(demo_dir, tmp_path)
    run = tmp_path / "run"
    t = Trainer(
        make_cfg(
            tiny,
            f"json:{data / 'demo.json'}",
            run,
            "data.check_images=header",
            "optim.max_steps=2",
            "eval.after=true",
            "eval.samples=1",
        )
    )
    t.data = Dataset.load(t.cfg, print)
    from hawkeye_lite.trainset import batch_indices

    first = [t.data.train[i] for i in batch_indices(len(t.data.train), 1, 0, batch_size=2, grad_accum=1, seed=0)]
    os.remove(first[1].image)  # deleted between loading and step 2
    open(t.data.eval[0].image, "wb").write(b"")  # a held-out image emptied
    res = t.run()
    assert res.steps == 2 and res.eval_after is not None
    faults = events(run, "data_fault")
    assert [f["id"] for f in faults] == [first[1].id] and "no such file" in faults[0]["error"]
    assert [r["data_faults"] for r in events(run, "step")] == [0, 1]
    ev = events(run, "eval")[-1]
    assert ev["datasets"]["demo"]["n"] == 6 and ev["datasets"]["demo"]["n_failed"] == 1


def test_on_bad_fail_stops_cleanly_with_a_checkpoint(tiny, demo_dir, tmp_path):
    data = corrupt_copy(demo_dir, tmp_path)
    run = tmp_path / "run"
    t = Trainer(make_cfg(tiny, f"json:{data / 'train.json'}", run, "data.on_bad=fail", "data.check_images=header"))
    t.data = Dataset.load(t.cfg, print)
    for r in t.data.train:  # every image from now on is damaged
        open(r.image, "wb").write(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataFault, match="data.on_bad: fail"):
        t.run()
    assert latest_checkpoint(run).name == "step-000000"  # what was learnt (nothing yet) is kept
    assert not (run / LOCK_FILE).exists()


def test_cli_data_errors_are_one_line_exit_2(tiny, demo_dir, tmp_path):
    data = corrupt_copy(demo_dir, tmp_path)
    bad = json.loads((data / "train.json").read_text())
    open(data / bad[3]["images"][0], "wb").write(b"not an image")
    base = [
        "train",
        "--set",
        f"model.name_or_path={tiny}",
        "--set",
        "tiny_model.build=false",
        "--set",
        f"output_dir={tmp_path / 'run'}",
    ]  # the same folder each time: a failed start leaves no run
    for spec, extra, expect in [
        (f"json:{tmp_path / 'missing.json'}", [], "missing.json"),
        (f"json:{data / 'train.json'}", ["--set", "data.on_bad=fail"], bad[3]["images"][0].split("/")[-1]),
        (f"cvs:{data / 'train.json'}", [], "cvs"),
    ]:
        res = run_cli(*base, "--set", f"data.train=[{spec}]", *extra)
        assert res.exit_code == 2, res.output
        lines = [l for l in res.output.splitlines() if l.startswith("error:")]
        assert len(lines) == 1 and expect in lines[0] and "Traceback" not in res.output, res.output


# ============================================================================ batch-invariant scoring


@pytest.fixture(scope="module")
def scorer(tiny):
    from hawkeye_lite.config import LoRAConfig
    from hawkeye_lite.model import load_policy
    from hawkeye_lite.scorer import Scorer

    policy = load_policy(model_config(tiny, quantization="none", lora=LoRAConfig(r=4, alpha=8, dropout=0.0)))
    perturb_lora(policy, std=0.3, seed=1)
    policy.model.eval()
    return Scorer(policy, max_new_tokens=10)


def test_score_is_a_function_of_the_image(scorer):
    ims = tiny_images(7, seed=3)
    ref = [r.texts for r in scorer.score(ims, samples=3, seed=5, batch_size=7)]
    assert len({tuple(t) for t in ref}) > 1  # the images do get different answers
    alone = [scorer.score([im], samples=3, seed=5)[0].texts for im in ims]
    assert alone == ref
    for bs in (1, 3, 8):
        assert [r.texts for r in scorer.score(ims, samples=3, seed=5, batch_size=bs)] == ref, bs
    perm = [4, 0, 6, 2, 1, 5, 3]
    assert [r.texts for r in scorer.score([ims[i] for i in perm], samples=3, seed=5, batch_size=3)] == [
        ref[i] for i in perm
    ]
    dup = scorer.score([ims[2], ims[0], ims[2]], samples=3, seed=5, batch_size=3)
    assert dup[0].texts == dup[2].texts == ref[2] and dup[1].texts == ref[0]
    # a path, a PIL image and a numpy array of the same pixels are the same image
    assert scorer.score([np.asarray(ims[1])], samples=3, seed=5)[0].texts == ref[1]
    # another seed, other answers
    assert [r.texts for r in scorer.score(ims, samples=3, seed=6)] != ref


def test_eval_is_batch_invariant(scorer, demo_dir):
    from hawkeye_lite.data import demo_records
    from hawkeye_lite.evaluate import evaluate, scorer_fn

    recs = demo_records(demo_dir, split="test")[:9]
    runs = []
    for bs, order in ((1, recs), (4, recs), (9, list(reversed(recs)))):
        rep = evaluate(order, scorer_fn(scorer, samples=2, seed=3), batch_size=bs)
        runs.append({r.id: (p.score, p.text) for r, p in rep.rows})
    assert runs[0] == runs[1] == runs[2]


def test_trainer_held_out_eval_is_batch_invariant(tiny, demo_dir, tmp_path, monkeypatch):
    from hawkeye_lite.scorer import Scorer

    seen = {}
    real = Scorer.score

    def recording(self, images, **kw):
        out = real(self, images, **kw)
        for r in out:
            seen.setdefault("all", {}).setdefault(r.source, []).append(r.texts)
        return out

    monkeypatch.setattr(Scorer, "score", recording)
    texts = []
    for bs in (1, 5):
        seen.clear()
        cfg = make_cfg(
            tiny,
            f"demo:{demo_dir}",
            tmp_path / f"r{bs}",
            f"eval.batch_size={bs}",
            "eval.samples=2",
            "rollout.max_new_tokens=8",
            "eval.mechanism=false",
        )  # its own invariance: test_mechanism
        t = Trainer(cfg)
        t.run_dir.mkdir()
        t.data = Dataset.load(cfg, print)
        t.policy = t.load_policy(t.base)
        perturb_lora(t.policy, std=0.3, seed=2)
        t.evaluate("x")
        texts.append(dict(seen["all"]))
    assert len(texts[0]) == 6 and texts[0] == texts[1]


# ============================================================================ EXIF orientation


def _oriented(tmp_path, orientation: int, fmt: str):
    """An asymmetric image stored as the sensor grid + EXIF tag; returns (path, upright pixels)."""
    from PIL import ImageOps

    upright = np.zeros((24, 40, 3), np.uint8)
    upright[:8, :10] = (255, 0, 0)  # red top-left corner
    upright[-6:, -15:] = (0, 0, 255)  # blue bottom-right
    upright[8:, :4] = (0, 200, 0)
    up = Image.fromarray(upright)
    # the stored grid is what, turned by the tag, gives `up`: invert each transform
    inverse = {
        1: None,
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    stored = up if inverse is None else up.transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.{fmt}"
    stored.save(path, exif=exif, **({"quality": 95} if fmt == "jpg" else {}))
    # check the test itself with PIL's own transpose
    with Image.open(path) as im:
        diff = np.abs(np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(int) - upright)
        assert (diff.max() == 0) if fmt == "png" else (diff.mean() < 8)
    return path, upright


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_everywhere(tmp_path, orientation):
    from hawkeye_lite.data import load_image, load_records
    from hawkeye_lite.data.degrade import degrade
    from hawkeye_lite.scorer import to_rgb

    path, upright = _oriented(tmp_path, orientation, "png")
    expect = upright
    assert np.array_equal(np.asarray(to_rgb(str(path))), expect)  # Scorer: a path
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(to_rgb(im)), expect)  # Scorer: a PIL image opened by the user
    assert np.array_equal(np.asarray(load_image(str(path))), expect)  # datasets
    (tmp_path / "d.json").write_text(json.dumps([{"id": "x", "images": [path.name], "gt_score": 3.0}]))
    rec = load_records(f"json:{tmp_path / 'd.json'}").records[0]
    assert np.array_equal(np.asarray(load_image(rec)), expect)
    a, _ = degrade(str(path), "x", seed=1)  # degrade reads the file upright
    b, _ = degrade(Image.fromarray(expect), "x", seed=1)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    jpg, _ = _oriented(tmp_path, orientation, "jpg")  # and a phone-style JPEG
    got = np.asarray(to_rgb(str(jpg))).astype(int)
    assert got.shape == expect.shape and np.abs(got - expect).mean() < 8


# ============================================================================ CLI errors


def test_user_errors_are_one_line_exit_2(tiny, tmp_path, monkeypatch):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(img)
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    cases = [
        (["score", "--model", "runs/dmeo/final", str(img)], "runs/dmeo/final"),
        (["score", "--model", "runs/dmeo", str(img)], "runs/dmeo"),
        (["score", "--model", str(tmp_path / "notamodel"), str(img)], "notamodel"),
        (["score", "--model", str(tiny), "--samples", "0", str(img)], "--samples"),
        (["score", "--model", str(tiny), "--batch-size", "0", str(img)], "--batch-size"),
        (
            ["degrade", "--data", f"json:{tmp_path / 'x.json'}", "--out", str(tmp_path / "o"), "--split", "bogus"],
            "--split",
        ),
        (["eval", "--model", str(tiny), "--data", f"json:{tmp_path / 'x.json'}", "--csv", str(tmp_path)], "--csv"),
        (["eval", "--model", str(tiny), "--data", f"json:{tmp_path / 'x.json'}"], "x.json"),
        (["train", "--set", "optim.lrr=1"], "optim.lrr"),
        (["train", "--resume", str(tmp_path / "nope")], "nope"),
        (["plot", str(tmp_path)], "metrics log"),
        (["nosuchcommand"], "nosuchcommand"),
        (["score", str(img)], "--model"),
    ]
    for args, needle in cases:
        res = run_cli(*args)
        errors = [l for l in res.output.splitlines() if l.startswith("error:")]
        assert res.exit_code == 2, (args, res.output)
        assert len(errors) == 1 and needle in errors[0], (args, res.output)
        assert "Traceback" not in res.output, args


def test_offline_hub_id_is_named(tiny, tmp_path, monkeypatch):
    import transformers

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(img)
    monkeypatch.chdir(tmp_path)
    res = run_cli("score", "--model", "SomeOrg/Some-Model", str(img))
    assert (
        res.exit_code == 2
        and "SomeOrg/Some-Model: not a local folder, and not loadable as a hub model id" in res.output
    )


def test_work_failures_exit_1_and_debug_shows_the_traceback(monkeypatch, tmp_path):
    import hawkeye_lite.trainer as trainer_mod

    def boom(*a, **k):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(trainer_mod, "train", boom)
    res = run_cli("train")
    assert res.exit_code == 1 and "error: RuntimeError: the disk caught fire" in res.output
    assert "--debug" in res.output and "Traceback" not in res.output
    res = run_cli("--debug", "train")
    assert res.exit_code == 1 and isinstance(res.exception, RuntimeError)  # re-raised: the traceback is shown
    res = run_cli("train", env={"HAWKEYE_DEBUG": "1"})
    assert isinstance(res.exception, RuntimeError)


def test_eval_csv_checked_before_work_and_results_printed_first(tmp_path, monkeypatch):
    """An unwritable --csv fails before loading anything; a write failure after scoring still
    leaves the metrics on stdout."""
    import types

    import hawkeye_lite.evaluate as ev
    from hawkeye_lite.data import write_demo
    from hawkeye_lite.data.demo import DemoConfig

    recs = write_demo(tmp_path / "demo", DemoConfig(n_scenes=4, per_scene=2))

    class StandIn:
        @classmethod
        def from_pretrained(cls, *a, **k):
            return cls()

        def score(self, paths, **kw):
            truth = {r.image: r.mos for r in recs}
            return [
                types.SimpleNamespace(score=truth[p], std=0.0, samples=[truth[p]], texts=["t"], n_parsed=1, ok=True)
                for p in paths
            ]

    monkeypatch.setitem(sys.modules, "hawkeye_lite.scorer", types.SimpleNamespace(Scorer=StandIn))
    monkeypatch.setattr(
        ev.EvalReport,
        "write_csv",
        lambda self, path: (_ for _ in ()).throw(OSError(28, "No space left on device", str(path))),
    )
    res = run_cli(
        "eval",
        "--model",
        str(tmp_path),
        "--data",
        f"json:{tmp_path / 'demo' / 'demo.json'}",
        "--split",
        "all",
        "--csv",
        str(tmp_path / "out" / "p.csv"),
    )
    assert res.exit_code == 1
    assert "SRCC" in res.stdout  # the table came out before the failing file
    assert "error: no space left on device: " in res.output and "p.csv" in res.output  # the cause, then the path
    assert "Traceback" not in res.output


def test_degrade_and_demo_data_refuse_a_non_empty_folder(tmp_path):
    out = tmp_path / "demo"
    res = run_cli("demo-data", "--out", str(out), "--scenes", "3", "--per-scene", "1")
    assert res.exit_code == 0, res.output
    n_before = len(list((out / "images").iterdir()))
    res = run_cli("demo-data", "--out", str(out), "--scenes", "2", "--per-scene", "1")
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = run_cli("demo-data", "--out", str(out), "--scenes", "2", "--per-scene", "1", "--overwrite")
    assert res.exit_code == 0, res.output
    assert len(list((out / "images").iterdir())) == 4 < n_before  # old images gone with the old index
    deg = tmp_path / "deg"
    deg.mkdir()
    (deg / "mine.txt").write_text("x")
    res = run_cli("degrade", "--data", f"json:{out / 'demo.json'}", "--out", str(deg))
    assert res.exit_code == 2 and "not empty" in res.output
    res = run_cli("degrade", "--data", f"json:{out / 'demo.json'}", "--out", str(deg), "--overwrite")
    assert res.exit_code == 2 and "mine.txt" in res.output  # never deletes what it did not write
    res = run_cli("degrade", "--data", f"json:{out / 'demo.json'}", "--out", str(tmp_path / "deg2"))
    assert res.exit_code == 0, res.output
    res = run_cli(
        "degrade",
        "--data",
        f"json:{out / 'demo.json'}",
        "--out",
        str(tmp_path / "deg2"),
        "--overwrite",
        "--split",
        "test",
    )
    assert res.exit_code == 0, res.output
    index = json.loads((tmp_path / "deg2" / "data.json").read_text())
    assert len(list((tmp_path / "deg2" / "images").iterdir())) == len(index)


# ============================================================================ --set lists


@pytest.mark.parametrize(
    "value,expect",
    [
        ("[csv:F?path=a&mos=b]", ("csv:F?path=a&mos=b",)),
        ("[csv:F?path=a&mos=b, koniq:/d?split=test]", ("csv:F?path=a&mos=b", "koniq:/d?split=test")),
        ("csv:F?range=0,100", ("csv:F?range=0,100",)),
        ("[csv:F?range=0,100&mos=m, koniq:/x]", ("csv:F?range=0,100&mos=m", "koniq:/x")),
        ("[\"json:a b.json\", 'json:c.json']", ("json:a b.json", "json:c.json")),
    ],
)
def test_set_list_syntax_with_spec_options(value, expect):
    assert load_train_config(None, [f"data.train={value}"]).data.train == expect


def test_set_list_errors_name_the_key():
    with pytest.raises(ConfigError, match="data.train"):
        load_train_config(None, ['data.train=["x"'])
    res = run_cli("train", "--set", "data.train=[a, b")
    assert res.exit_code == 2 and "data.train" in res.output and "Traceback" not in res.output
