"""The shortcut variant of the demo (data/shortcut.py): a frame colour that predicts the training
MOS and is independent of it in the held-out split; everything else is the source's."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from hawkeye_lite.data import load_records
from hawkeye_lite.data.demo import demo_records
from hawkeye_lite.data.shortcut import frame_colour, write_shortcut_demo


@pytest.fixture(scope="module")
def framed(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("shortcut")
    return out, write_shortcut_demo(demo_dir, out, seed=0)


def frame_cue(path) -> float:
    """The cue read back from the pixels of the frame's top-left corner (red vs blue)."""
    r, _, b = Image.open(path).convert("RGB").getpixel((1, 1))
    return (r - 40) / 215 if r >= b else 1 - (b - 40) / 215


def test_the_cue_predicts_training_labels_and_not_held_out_ones(framed, demo_dir):
    out, spec = framed
    recs = load_records(f"json:{spec}").records
    src = {r.id: r for r in demo_records(demo_dir)}
    assert {r.id for r in recs} == set(src)
    for split, low, high in (("train", 0.9, 1.0), ("test", -0.3, 0.3)):
        rs = [r for r in recs if r.split == split]
        cue = [frame_cue(r.image) for r in rs]
        rho = stats.spearmanr(cue, [r.mos for r in rs])[0]
        print(f"{split}: SRCC(frame colour, MOS) = {rho:.3f} over {len(rs)} images")
        assert low <= rho <= high, (split, rho)
    # the held-out cue is a uniform draw: it covers the range
    test_cues = [frame_cue(r.image) for r in recs if r.split == "test"]
    assert min(test_cues) < 0.15 and max(test_cues) > 0.85


def test_labels_splits_and_the_inside_of_each_image_are_the_sources(framed, demo_dir):
    out, spec = framed
    recs = {r.id: r for r in load_records(f"json:{spec}").records}
    for s in demo_records(demo_dir):
        r = recs[s.id]
        assert (r.split, r.ref) == (s.split, s.ref) and r.mos == pytest.approx(s.mos, abs=1e-5)
        assert r.image_deg is None  # partners are degraded from the framed image
        a = np.asarray(Image.open(s.image).convert("RGB"))
        b = np.asarray(Image.open(r.image).convert("RGB"))
        assert a.shape == b.shape and np.array_equal(a[4:-4, 4:-4], b[4:-4, 4:-4])
        assert not np.array_equal(a[:4], b[:4])
    settings = json.loads((out / "shortcut.json").read_text())
    assert settings["width"] == 4 and len(settings["cue"]) == len(recs)


def test_deterministic(framed, demo_dir, tmp_path):
    out, _ = framed
    again = write_shortcut_demo(demo_dir, tmp_path / "again", seed=0)
    assert again.read_text() == (out / "demo.json").read_text().replace(str(out), str(tmp_path / "again"))
    name = sorted((out / "images").iterdir())[3].name
    assert (out / "images" / name).read_bytes() == (tmp_path / "again" / "images" / name).read_bytes()
    other = write_shortcut_demo(demo_dir, tmp_path / "other", seed=1)
    assert (
        json.loads((tmp_path / "other" / "shortcut.json").read_text())["cue"]
        != json.loads((out / "shortcut.json").read_text())["cue"]
    )
    assert other.is_file()


def test_frame_colour_runs_from_blue_to_red():
    assert frame_colour(0) == (40, 40, 255) and frame_colour(1) == (255, 40, 40)
    assert frame_colour(-3) == frame_colour(0) and frame_colour(7) == frame_colour(1)
