"""Scoring collections: `Scorer.score_iter` (background preparation, grouped batches, repeats
scored once) against `Scorer.score`, and `hawkeye-lite score ... --out FILE` (appended rows,
settings kept beside the file, torn lines cut, resumed after SIGTERM and kill -9)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import DEVICE, adapter_run
from PIL import Image
from typer.testing import CliRunner

from hawkeye_lite.cli import app
from hawkeye_lite.scorefile import read_rows
from hawkeye_lite.scorer import ImageReadError, Scorer, _group, _Prepared

TOKENS = 6
OPTS = ["--samples", "2", "--max-new-tokens", str(TOKENS), "--batch-size", "3"]


@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    return adapter_run(tiny, tmp_path_factory)


@pytest.fixture(scope="module")
def scorer(run_dir):
    return Scorer.from_pretrained(run_dir, device=DEVICE, max_new_tokens=TOKENS)


def write_images(folder: Path, n: int, seed: int) -> list:
    """n PNG/JPEG files of mixed sizes (so visual-token counts differ), one repeated twice."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(40, 140)), int(rng.integers(40, 140))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        p = folder / f"im{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


def same(a, b) -> bool:
    def eq(x, y):
        return (math.isnan(x) and math.isnan(y)) if isinstance(x, float) and math.isnan(x) else x == y

    return (
        a.source == b.source
        and eq(a.score, b.score)
        and eq(a.std, b.std)
        and a.samples == b.samples
        and a.texts == b.texts
        and a.ok == b.ok
        and a.key == b.key
    )


# ============================================================================ score_iter


@pytest.mark.parametrize("workers,lookahead,batch", [(0, None, 3), (2, None, 3), (2, 7, 2), (1, 3, 5)])
def test_score_iter_is_score_image_for_image(scorer, tmp_path, gen, workers, lookahead, batch):
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    print(f"image seed {seed}")
    paths = write_images(tmp_path, 9, seed)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    inputs = [*paths[:4], str(tmp_path / "broken.jpg"), *paths[4:], paths[2]]  # a bad one and a repeat
    ref = scorer.score(inputs, samples=2, batch_size=4, on_error="skip", workers=0, seed=seed)
    got = list(
        scorer.score_iter(iter(inputs), samples=2, batch_size=batch, workers=workers, lookahead=lookahead, seed=seed)
    )
    assert [r.source for r in got] == inputs  # input order
    assert all(same(a, b) for a, b in zip(got, ref)), [(a.source, a.samples, b.samples) for a, b in zip(got, ref)]
    assert not got[4].ok and "broken.jpg" in got[4].error
    # and each equals the image scored alone (results never depend on batching)
    alone = scorer.score([paths[5]], samples=2, seed=seed)[0]
    assert same(alone, got[6])


def test_repeats_are_scored_once_and_copied(scorer, tmp_path, monkeypatch):
    paths = write_images(tmp_path / "a", 4, seed=1)
    copy = tmp_path / "copy.png"
    Image.open(paths[1]).save(copy)  # other bytes on disk (PNG of a JPEG's pixels)? same pixels
    generated = []
    real = Scorer._generate

    def counting(self, chunk, **kw):
        generated.extend(item.name for item in chunk)
        return real(self, chunk, **kw)

    monkeypatch.setattr(Scorer, "_generate", counting)
    inputs = [paths[0], paths[1], paths[2], str(copy), paths[3], paths[1]]
    got = list(scorer.score_iter(inputs, samples=2, batch_size=2))
    assert sorted(generated) == sorted(paths)  # the copy and the repeat never generated
    for i in (3, 5):
        assert got[i].source == inputs[i] and got[i].samples == got[1].samples and got[i].texts == got[1].texts
        assert got[i].key == got[1].key
    got[3].texts.append("x")  # a copy, not the same list
    assert got[1].texts != got[3].texts


def test_score_iter_reads_its_input_lazily(scorer, tmp_path):
    paths = write_images(tmp_path, 12, seed=2)
    pulled = []

    def source():
        for p in paths:
            pulled.append(p)
            yield p

    it = scorer.score_iter(source(), samples=1, batch_size=2, lookahead=2, workers=1)
    first = next(it)
    assert first.source == paths[0] and len(pulled) <= 6  # a window and what is being prepared, not all 12
    assert len(list(it)) == 11
    it.close()


def test_on_error_raise_stops_at_the_bad_input(scorer, tmp_path):
    paths = write_images(tmp_path, 3, seed=3)
    bad = tmp_path / "missing.png"
    it = scorer.score_iter([paths[0], str(bad), paths[1]], samples=1, batch_size=1, on_error="raise", lookahead=1)
    with pytest.raises(ImageReadError, match="missing.png"):
        list(it)
    with pytest.raises(ImageReadError, match="missing.png"):  # score checks every image before scoring
        scorer.score([paths[0], str(bad)], samples=1)


def test_group_takes_the_oldest_and_its_nearest_token_counts():
    pending = [_Prepared(i, f"p{i}", tokens=t) for i, t in enumerate([50, 400, 60, 390, 55, 1000])]
    chunk = _group(pending, 3)
    assert [c.index for c in chunk] == [0, 2, 4] and [p.index for p in pending] == [1, 3, 5]
    chunk = _group(pending, 2)
    assert [c.index for c in chunk] == [1, 3] and [p.index for p in pending] == [5]


# ============================================================================ the CLI with --out


def cli(*args):
    return CliRunner().invoke(app, ["score", *map(str, args)])


def rows_by_path(path):
    rows = read_rows(path)
    assert len({r["path"] for r in rows}) == len(rows)
    return {r["path"]: r for r in rows}


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_folder_list_and_data_into_a_file_then_resume(run_dir, tmp_path, kind):
    folder = tmp_path / "photos"
    paths = write_images(folder / "sub", 5, seed=4)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    extra = write_images(tmp_path / "other", 2, seed=5)
    listed = tmp_path / "list.txt"
    listed.write_text(f"# two more\n{extra[0]}\n\n{extra[1]}\n")
    out = tmp_path / f"scores.{kind}"
    res = cli(folder, f"@{listed}", "--model", run_dir, "--out", out, "--texts", *OPTS)
    assert res.exit_code == 2, res.output  # one image could not be read
    rows = rows_by_path(out)
    assert set(rows) == {*paths, str(folder / "broken.png"), *extra}
    assert rows[str(folder / "broken.png")]["error"] and rows[paths[0]]["error"] is None
    assert "8 images: 8 scored now, 0 earlier; 1 could not be read" in res.output
    # what the file says is what Scorer.score says
    ref = Scorer.from_pretrained(run_dir, max_new_tokens=TOKENS).score(paths + extra, samples=2, seed=0)
    for r in ref:
        assert rows[r.source]["samples"] == r.samples and rows[r.source]["texts"] == r.texts
        assert rows[r.source]["key"] == r.key

    again = cli(folder, f"@{listed}", "--model", run_dir, "--out", out, "--texts", *OPTS)
    assert again.exit_code == 2 and "0 scored now, 8 earlier; 1 could not be read" in again.output
    assert rows_by_path(out) == rows

    # a changed image is scored again; its newer row wins
    Image.new("RGB", (64, 48), (200, 10, 10)).save(paths[1] if paths[1].endswith("png") else paths[1], quality=95)
    os.utime(paths[1], ns=(time.time_ns(), time.time_ns() + 10**9))
    third = cli(folder, f"@{listed}", "--model", run_dir, "--out", out, "--texts", *OPTS)
    assert "1 scored now, 7 earlier" in third.output
    assert rows_by_path(out)[paths[1]]["key"] != rows[paths[1]]["key"]


def test_other_settings_into_the_same_file_are_refused(run_dir, tmp_path):
    paths = write_images(tmp_path / "p", 2, seed=6)
    out = tmp_path / "s.csv"
    assert cli(*paths, "--model", run_dir, "--out", out, *OPTS).exit_code == 0
    before = out.read_text()
    res = cli(*paths, "--model", run_dir, "--out", out, *OPTS, "--seed", "7")
    assert res.exit_code == 2
    line = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert line == [
        f"error: --out {out}: was scored with other settings (seed 7 here, 0 there); "
        "use another --out, or --overwrite to start it again"
    ]
    assert out.read_text() == before  # nothing lost
    res = cli(*paths, "--model", run_dir, "--out", out, *OPTS, "--texts")
    assert res.exit_code == 2 and "--texts differs" in res.output
    res = cli(*paths, "--model", run_dir, "--out", out, *OPTS, "--seed", "7", "--overwrite")
    assert res.exit_code == 0 and "2 scored now, 0 earlier" in res.output
    import fcntl

    with open(out, "a") as held:  # another job holds the file
        fcntl.flock(held, fcntl.LOCK_EX)
        res = cli(*paths, "--model", run_dir, "--out", out, *OPTS, "--seed", "7")
    assert res.exit_code == 2 and "another job is writing it now" in res.output
    out.write_text("")  # stopped between the settings and the header: starts afresh
    res = cli(*paths, "--model", run_dir, "--out", out, *OPTS)
    assert res.exit_code == 0 and "2 scored now, 0 earlier" in res.output
    (tmp_path / "plain.csv").write_text("a,b\n1,2\n")
    res = cli(*paths, "--model", run_dir, "--out", tmp_path / "plain.csv", *OPTS)
    assert res.exit_code == 2 and "not as a hawkeye-lite score file" in res.output
    res = cli(*paths, "--model", run_dir, "--out", tmp_path / "s.txt", *OPTS)
    assert res.exit_code == 2 and "must end in .csv or .jsonl" in res.output
    res = cli(*paths, "--model", run_dir, "--out", out, "--json", *OPTS)
    assert res.exit_code == 2 and "--json" in res.output
    res = cli(tmp_path / "nowhere", "--model", run_dir, "--out", out, *OPTS)
    assert res.exit_code == 2 and "nowhere" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_torn_last_line_is_cut_and_its_image_scored_again(run_dir, tmp_path, kind):
    paths = write_images(tmp_path / "p", 4, seed=7)
    out = tmp_path / f"s.{kind}"
    assert cli(*paths, "--model", run_dir, "--out", out, *OPTS).exit_code == 0
    whole = rows_by_path(out)
    text = out.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    out.write_text(text[: len(text) - len(last) // 2 - 1])  # the last row cut in the middle
    res = cli(*paths, "--model", run_dir, "--out", out, *OPTS)
    assert res.exit_code == 0 and "cut a torn last line" in res.output and "1 scored now, 3 earlier" in res.output
    assert rows_by_path(out) == whole and len(out.read_text().splitlines()) == len(text.splitlines())


def test_kill_9_and_sigterm_in_a_folder_job_then_resume(run_dir, tmp_path):
    """A job stopped by SIGTERM, then by kill -9, then run to the end: exactly one row per image,
    the same rows as an uninterrupted job's."""
    paths = write_images(tmp_path / "photos", 30, seed=8)
    args = ["score", str(tmp_path / "photos"), "--model", str(run_dir), "--texts", *OPTS, "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HAWKEYE_KERNELS": "torch"}
    ref = tmp_path / "straight.csv"
    done = subprocess.run(
        [sys.executable, "-m", "hawkeye_lite", *args, "--out", str(ref)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "stopped.csv"
    for how in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen(
            [sys.executable, "-m", "hawkeye_lite", *args, "--out", str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        start = len(read_rows(out)) if out.exists() else 0
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and len(out.read_text().splitlines()) - 1 >= start + 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(how)
        _, err = proc.communicate(timeout=120)
        if how == signal.SIGTERM:
            assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
            assert "run the same command again to continue" in err and "Traceback" not in err
        else:
            assert proc.returncode == -signal.SIGKILL
        assert start + 4 <= len(read_rows(out)) < len(paths)
    final = subprocess.run(
        [sys.executable, "-m", "hawkeye_lite", *args, "--out", str(out)], env=env, capture_output=True, text=True
    )
    assert final.returncode == 0, final.stderr[-2000:]
    got, want = rows_by_path(out), rows_by_path(ref)
    assert len(out.read_text().splitlines()) == 1 + len(paths)  # no row twice
    strip = ("size", "mtime_ns")
    assert {p: {k: v for k, v in r.items() if k not in strip} for p, r in got.items()} == {
        p: {k: v for k, v in r.items() if k not in strip} for p, r in want.items()
    }
    assert json.loads((tmp_path / "stopped.csv.settings.json").read_text())["settings"]["samples"] == 2
