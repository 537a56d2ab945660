"""`logging.report_to`: the records reach TensorBoard (event files read back) and W&B (a stand-in
module recording the calls, and the real package in offline mode when installed); progress
output on a terminal and in a log file."""

import io
import json
import random
import sys
import time
import types

import pytest

from hawkeye_lite.config import ConfigError
from hawkeye_lite.config_loader import load_train_config
from hawkeye_lite.runlog import Logger, Progress, progress_callback
from hawkeye_lite.tracking import flatten


def step_record(step, rng):
    keys = (
        "reward",
        "reward_accuracy",
        "format_rate",
        "parse_rate",
        "uncertainty",
        "weight",
        "loss",
        "gamma",
        "lr",
        "grad_norm",
        "rollout_tok_s",
        "train_tok_s",
        "peak_mem_mb",
        "ref_kl",
        "perception_kl",
        "entropy",
    )
    rec = {"event": "step", "step": step, **{k: rng.uniform(0, 2) for k in keys}}
    rec["skipped_updates"] = 0
    return rec


def eval_record(step, rng):
    ds = {
        name: {"n": 6, "srcc": rng.uniform(-1, 1), "plcc": rng.uniform(-1, 1), "parse_rate": 1.0} for name in ("a", "b")
    }
    return {
        "event": "eval",
        "tag": "x",
        "step": step,
        "seconds": 1.5,
        "datasets": ds,
        "srcc": sum(d["srcc"] for d in ds.values()) / 2,
        "plcc": float("nan"),
    }


def records(seed):
    rng = random.Random(seed)
    recs = [{"event": "sft", "step": s, "loss": rng.uniform(0, 3), "lr": 1e-3, "time": 0.1 * s} for s in (1, 2, 3)]
    for step in (1, 2, 3, 4):
        recs.append(step_record(step, rng))
    recs.append(eval_record(4, rng))
    return recs


def test_flatten_namespaces_and_drops_non_numbers():
    rec = {
        "event": "eval",
        "tag": "after",
        "step": 3,
        "srcc": 0.5,
        "plcc": float("nan"),
        "ok": True,
        "datasets": {"koniq": {"srcc": 0.4, "n": 6}},
    }
    assert flatten(rec) == {
        "eval/step": 3.0,
        "eval/srcc": 0.5,
        "eval/datasets/koniq/srcc": 0.4,
        "eval/datasets/koniq/n": 6.0,
    }
    assert flatten({"event": "other", "x": 1}) == {}


def test_report_to_is_validated():
    assert load_train_config(None, ["logging.report_to=[tensorboard, wandb]"]).logging.report_to == (
        "tensorboard",
        "wandb",
    )
    with pytest.raises(ConfigError, match="logging.report_to: unknown tracker 'mlflow'"):
        load_train_config(None, ["logging.report_to=[mlflow]"])
    with pytest.raises(ConfigError, match="logging.report_to: names a tracker twice"):
        load_train_config(None, ["logging.report_to=[wandb, wandb]"])


def test_missing_tracker_package_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ConfigError, match=r"wandb needs the wandb package \(pip install 'hawkeye-lite\[wandb\]'\)"):
        Logger(tmp_path, progress=False, stream=io.StringIO(), report_to=["wandb"])


def test_tensorboard_event_files_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seed = random.randrange(2**31)
    print("seed", seed)
    recs = records(seed)
    log = Logger(tmp_path, progress=False, stream=io.StringIO(), report_to=["tensorboard"], config={"seed": seed})
    for r in recs:
        log.write(r)
    log.close()
    # metrics.jsonl holds the same records
    assert [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()][0] == recs[0]
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for r in recs:
        for tag, value in flatten(r).items():
            if tag.endswith("/step"):
                continue
            assert tag in tags, tag
            events = {e.step: e.value for e in acc.Scalars(tag)}
            assert events[r["step"]] == pytest.approx(value, rel=1e-6), tag  # float32 in the event file
    assert "eval/plcc" not in tags  # NaN is left out
    assert "train/reward" in tags and "sft/loss" in tags and "eval/datasets/a/srcc" in tags
    assert len(acc.Scalars("train/reward")) == 4


class FakeWandb(types.ModuleType):
    """The calls hawkeye_lite.tracking makes, recorded."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logged, self.metrics, self.finished = [], [], [], 0
        outer = self

        class Run:
            def define_metric(self, name, step_metric=None):
                outer.metrics.append((name, step_metric))

            def log(self, values):
                outer.logged.append(values)

            def finish(self):
                outer.finished += 1

        self._run = Run

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self._run()


def test_wandb_tracker_calls_with_a_stand_in_module(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    recs = records(0)
    for _attempt in (1, 2):  # the second Logger is a resumed run: same W&B run id
        log = Logger(tmp_path / "run", progress=False, stream=io.StringIO(), report_to=["wandb"], config={"seed": 0})
        for r in recs:
            log.write(r)
        log.close()
    run_id = (tmp_path / "run" / "wandb" / "run_id").read_text().strip()
    assert [i["id"] for i in fake.inits] == [run_id, run_id] and fake.inits[0]["resume"] == "allow"
    assert fake.inits[0]["dir"] == str(tmp_path / "run") and fake.inits[0]["config"] == {"seed": 0}
    assert fake.logged[: len(recs)] == [flatten(r) for r in recs] and fake.finished == 2
    assert ("train/*", "train/step") in fake.metrics and ("sft/*", "sft/step") in fake.metrics


def read_wandb_history(path):
    """History rows of a W&B offline run file: LevelDB-log framing (7-byte file header, 32 KiB
    blocks, records as crc32 / length / type + data, split across blocks as FIRST/MIDDLE/LAST)
    around wandb's protobuf `Record`s. Independent of the W&B code that wrote it."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, chunks, buf = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(payload)
        elif kind in (2, 3):
            buf += payload
        elif kind == 4:
            chunks.append(buf + payload)
            buf = b""
    rows = []
    for chunk in chunks:
        rec = pb.Record()
        rec.ParseFromString(chunk)
        if rec.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                    for i in rec.history.item
                    if not (i.key or "/".join(i.nested_key)).startswith("_")
                }
            )
    return rows


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    seed = random.randrange(2**31)
    print("seed", seed)
    recs = records(seed)
    log = Logger(tmp_path, progress=False, stream=io.StringIO(), report_to=["wandb"], config={"seed": seed})
    for r in recs:
        log.write(r)
    log.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir())
    run_id = (tmp_path / "wandb" / "run_id").read_text().strip()
    assert runs[0].name.endswith(run_id)
    # wandb's service process may still be writing the file when finish() returns
    deadline = time.time() + 30
    while len(rows := read_wandb_history(runs[0] / f"run-{run_id}.wandb")) < len(recs) and time.time() < deadline:
        time.sleep(0.5)
    assert len(rows) == len(recs)
    for row, rec in zip(rows, recs):
        assert row.keys() == flatten(rec).keys()
        assert all(row[k] == pytest.approx(v) for k, v in flatten(rec).items())


# ----------------------------------------------------------------------------- progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_plain_lines_in_a_log_file():
    out = io.StringIO()
    bar = Progress(20, "scoring", stream=out, lines=4, unit="img")
    for _ in range(20):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [l.split(" |")[0] for l in lines] == ["scoring 5/20", "scoring 10/20", "scoring 15/20", "scoring 20/20"]
    assert "ETA" in lines[0] and "ETA" not in lines[-1] and "\r" not in out.getvalue()


def test_progress_tqdm_bar_on_a_terminal():
    out = Tty()
    cb = progress_callback("degrading", stream=out)
    for done in (3, 6, 9):
        cb(done, 9)
    text = out.getvalue()
    assert "\r" in text and "degrading" in text and "9/9" in text and "img" in text


def test_logger_step_lines_and_bar(tmp_path):
    rng = random.Random(0)
    out = io.StringIO()
    log = Logger(tmp_path, every=2, progress=True, stream=out)
    for step in (1, 2, 3, 4):
        log.step(step_record(step, rng), total=4, started_step=0)
    log.close()
    lines = out.getvalue().splitlines()  # not a terminal: the step lines are the progress, no bar
    assert [l.split(" |")[0] for l in lines] == ["step    2/4", "step    4/4"]
    tty = Tty()
    log = Logger(tmp_path, every=4, progress=True, stream=tty)
    for step in (1, 2, 3, 4):
        if step == 2:
            log.info("hello")
        log.step(step_record(step, rng), total=4, started_step=0)
    log.close()
    text = tty.getvalue()
    assert "RL" in text and "4/4" in text and "\r" in text and "hello\n" in text and "step    4/4" in text
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 8


def test_warm_start_bar_from_the_sft_records(tmp_path):
    tty = Tty()
    log = Logger(tmp_path, progress=True, stream=tty, config={"sft": {"steps": 3}})
    for step in (1, 2, 3):
        log.write({"event": "sft", "step": step, "loss": 1.0 / step, "lr": 1e-3, "time": 0.0})
        if step == 2:
            log.info("sft    2/3 | loss 0.5")
    assert log.bar is None  # closed at the last step
    text = tty.getvalue()
    assert "warm start" in text and "3/3" in text and "sft    2/3 | loss 0.5\n" in text
    out = io.StringIO()  # a log file: no bar, the trainer's own lines only
    log = Logger(tmp_path, progress=True, stream=out, config={"sft": {"steps": 3}})
    for step in (1, 2, 3):
        log.write({"event": "sft", "step": step, "loss": 1.0, "lr": 1e-3, "time": 0.0})
    assert out.getvalue() == ""
