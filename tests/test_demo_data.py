import hashlib
import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from hawkeye_lite.cli import app
from hawkeye_lite.data import load_records
from hawkeye_lite.data.demo import DemoConfig, demo_mos, demo_records, generate_demo

SMALL = DemoConfig(n_scenes=12, per_scene=5, seed=0)


def arr(im):
    return np.asarray(im, dtype=np.float32)


def test_default_demo_shape_splits_and_mos_formula():
    samples = generate_demo()
    assert 300 <= len(samples) <= 500
    assert {s.kind for s in samples} == {"pristine", "noise", "blur", "jpeg", "darken"}
    for s in samples:
        assert 56 <= s.image.width <= 112 and 56 <= s.image.height <= 112 and s.image.mode == "RGB"
        assert (s.mos, s.std) == pytest.approx(demo_mos(s.severity))
        assert 1.2 - 1e-9 <= s.mos <= 4.8 + 1e-9
    train = {s.scene for s in samples if s.split == "train"}
    test = {s.scene for s in samples if s.split == "test"}
    assert train and test and not (train & test), "a scene is in both splits"
    assert len(test) == 16  # 25% of 64 scenes
    # MOS of the test split spans the scale (SRCC needs spread), types balanced over severities
    mos_test = [s.mos for s in samples if s.split == "test"]
    assert min(mos_test) < 1.6 and max(mos_test) == pytest.approx(4.8)
    for kind in ("noise", "blur", "jpeg", "darken"):
        sev = [s.severity for s in samples if s.kind == kind]
        assert len(sev) > 60 and min(sev) < 0.2 and max(sev) > 0.8
    assert (
        demo_mos(0) == (4.8, 0.3)
        and demo_mos(1) == pytest.approx((1.2, 0.3))
        and demo_mos(0.5)[1] == pytest.approx(0.5)
    )


def test_deterministic_for_a_seed():
    a, b = generate_demo(SMALL), generate_demo(SMALL)
    assert [s.id for s in a] == [s.id for s in b]
    assert all(np.array_equal(arr(x.image), arr(y.image)) for x, y in zip(a, b))
    c = generate_demo(DemoConfig(n_scenes=12, per_scene=5, seed=1))
    assert not all(np.array_equal(arr(x.image), arr(y.image)) for x, y in zip(a, c) if x.image.size == y.image.size)


def test_quality_signal_is_visible_in_pixels():
    """The MOS must be learnable from pixels: per distortion type, a simple full-reference
    measure of damage rises with severity (so MOS falls), across different scenes."""
    samples = generate_demo(DemoConfig(n_scenes=24, per_scene=8, seed=2))
    ref = {s.scene: s.image for s in samples if s.kind == "pristine"}

    def damage(s):
        a, r = arr(s.image), arr(ref[s.scene])
        if s.kind == "darken":
            return float(r.mean() - a.mean())
        return float(np.sqrt(((a - r) ** 2).mean()))

    for kind in ("noise", "blur", "jpeg", "darken"):
        group = [s for s in samples if s.kind == kind]
        rho = spearmanr([damage(s) for s in group], [s.mos for s in group])[0]
        assert rho < -0.7, f"{kind}: damage vs MOS spearman {rho:.2f}"
    # and the scenes themselves are varied (not one image repeated)
    means = [arr(im).mean(axis=(0, 1)) for im in ref.values()]
    assert np.std(np.array(means), axis=0).mean() > 10


def _digest(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_demo_data_command_writes_readable_identical_files(tmp_path):
    runner = CliRunner()
    for out in ("a", "b"):
        res = runner.invoke(app, ["demo-data", "--out", str(tmp_path / out), "--scenes", "8", "--per-scene", "3"])
        assert res.exit_code == 0, res.output
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    d = tmp_path / "a"
    data = json.loads((d / "demo.json").read_text())
    assert len(data) == 8 * 4 and {"id", "images", "gt_score", "split"} <= set(data[0])
    assert data[0]["images"][0].startswith("images/")
    res = load_records(f"json:{d / 'demo.json'}")
    assert not res.bad and len(res.records) == 32 and res.records[0].dataset == "demo"
    assert {r.split for r in res.records} == {"train", "test"}
    assert len(load_records(f"json:{d / 'test.json'}").records) == sum(r.split == "test" for r in res.records)
    meta = json.loads((d / "meta.json").read_text())
    assert "4.8 - 3.6*s" in meta["mos_formula"] and meta["n_images"] == 32


def test_demo_records_generates_once_and_regenerates_on_config_change(tmp_path):
    recs = demo_records(tmp_path / "demo", SMALL)
    assert len(recs) == 12 * 6
    stamp = (tmp_path / "demo" / "demo.json").stat().st_mtime_ns
    again = demo_records(tmp_path / "demo", SMALL)
    assert (tmp_path / "demo" / "demo.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert [(r.id, r.split, r.mos, r.ref) for r in again] == [(r.id, r.split, r.mos, r.ref) for r in recs]
    test = demo_records(tmp_path / "demo", SMALL, split="test")
    assert test and all(r.split == "test" for r in test)
    bigger = demo_records(tmp_path / "demo", DemoConfig(n_scenes=14, per_scene=5))
    assert len(bigger) == 14 * 6
    with pytest.raises(ValueError):
        DemoConfig(n_scenes=1)
