import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hawkeye_lite.cli import app
from hawkeye_lite.data import load_records
from hawkeye_lite.data.degrade import (
    KINDS,
    Degrader,
    DegradeRecipe,
    StageParams,
    apply_one,
    degrade,
    degrade_records,
    record_rng,
)


def scene(seed=0, size=64) -> Image.Image:
    """Smooth gradient + sharp square: has both flat areas (noise shows) and edges (blur shows)."""
    y, x = np.mgrid[0:size, 0:size]
    a = np.stack([x * 2, y * 2, (x + y)], -1).astype(np.float32) + 40
    a[16:48, 16:48] = [230, 200, 60]
    a += np.random.default_rng(seed).integers(0, 3, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def arr(im):
    return np.asarray(im, dtype=np.float32)


def edge_strength(im):
    """The steepest step in the image: the square's edge, flattened by blur."""
    g = arr(im).mean(-1)
    return float(max(np.abs(np.diff(g, axis=0)).max(), np.abs(np.diff(g, axis=1)).max()))


def test_each_degradation_does_what_it_says():
    img = scene()
    rng = np.random.default_rng(0)
    p = StageParams()
    noisy = apply_one(img, "noise", p, rng)
    resid = arr(noisy) - arr(img)
    assert 35 < resid.std() < 45  # sigma 45, a little less after clipping to 0-255
    assert edge_strength(apply_one(img, "blur", p, rng)) < 0.5 * edge_strength(img)
    jp = apply_one(img, "jpeg", p, rng)
    assert jp.size == img.size and np.abs(arr(jp) - arr(img)).mean() > 3
    dark = apply_one(img, "darken", p, rng)
    assert arr(dark).mean() == pytest.approx(0.6 * arr(img).mean(), rel=0.02)
    with pytest.raises(ValueError, match="unknown degradation"):
        apply_one(img, "swirl", p, rng)


def test_deterministic_per_seed_and_record():
    img = scene()
    a, ka = degrade(img, "rec-1", seed=3)
    b, kb = degrade(img.copy(), "rec-1", seed=3)
    assert ka == kb and np.array_equal(arr(a), arr(b))
    # the generator depends only on (seed, key)
    assert record_rng(3, "rec-1").integers(1 << 30) == record_rng(3, "rec-1").integers(1 << 30)
    outs = {degrade(img, f"rec-{i}", seed=3)[1][0] for i in range(40)}
    assert outs == set(KINDS)  # every kind gets picked
    noise_only = DegradeRecipe(kinds=("noise",))
    x1, _ = degrade(img, "r", seed=1, recipe=noise_only)
    x2, _ = degrade(img, "r", seed=2, recipe=noise_only)
    assert not np.array_equal(arr(x1), arr(x2))  # another seed, another noise field
    assert np.array_equal(arr(Degrader(seed=1, recipe=noise_only)(img, "r")), arr(x1))


def test_second_stage_applies_a_different_kind_with_stronger_params():
    img = scene()
    rec = DegradeRecipe(second_stage=True)
    for i in range(20):
        _, kinds = degrade(img, f"k{i}", seed=0, recipe=rec)
        assert len(kinds) == 2 and kinds[0] != kinds[1]
    # darken then darken is impossible; darken (0.6) then noise: stronger than one stage
    two = DegradeRecipe(kinds=("darken", "blur"), second_stage=True)
    out, kinds = degrade(img, "x", seed=0, recipe=two)
    assert set(kinds) == {"darken", "blur"}
    factor = 0.6 if kinds[0] == "darken" else 0.5
    assert arr(out).mean() == pytest.approx(factor * arr(img).mean(), rel=0.05)
    with pytest.raises(ValueError, match="at least two"):
        DegradeRecipe(kinds=("noise",), second_stage=True)
    with pytest.raises(ValueError, match="subset"):
        DegradeRecipe(kinds=("noise", "swirl"))
    r = DegradeRecipe.from_dict({"second_stage": True, "first": {"noise_sigma": 10}, "second": {"darken": 0.3}})
    assert r.first.noise_sigma == 10 and r.second.darken == 0.3 and r.second.noise_sigma == 65


def _digest(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _dataset(tmp_path, n=6):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):
        scene(i).save(src / f"im{i}.png")
    (src / "data.json").write_text(
        json.dumps([{"id": f"im{i}", "images": [f"im{i}.png"], "gt_score": 1 + i * 0.5} for i in range(n)])
    )
    return load_records(f"json:{src / 'data.json'}").records


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_offline_files_are_byte_identical_per_seed(tmp_path, fmt):
    recs = _dataset(tmp_path)
    degrade_records(recs, tmp_path / "a", seed=5, fmt=fmt, recipe=DegradeRecipe(second_stage=True))
    degrade_records(recs, tmp_path / "b", seed=5, fmt=fmt, recipe=DegradeRecipe(second_stage=True))
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert len(da) == len(recs) + 2 and da == db
    # re-running into the same folder rewrites the same bytes
    degrade_records(recs, tmp_path / "a", seed=5, fmt=fmt, recipe=DegradeRecipe(second_stage=True))
    assert _digest(tmp_path / "a") == da
    degrade_records(recs, tmp_path / "c", seed=6, fmt=fmt, recipe=DegradeRecipe(second_stage=True))
    dc = _digest(tmp_path / "c")
    assert any(dc[k] != da[k] for k in da if k.startswith("images/"))


def test_degrade_command_writes_partner_json(tmp_path):
    recs = _dataset(tmp_path, n=4)
    out = tmp_path / "pairs"
    res = CliRunner().invoke(app, ["degrade", "--data", f"json:{tmp_path / 'src' / 'data.json'}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "data.json").read_text())
    assert len(data) == 4 and all(d["image_deg"].startswith("images/") for d in data)
    back = load_records(f"json:{out / 'data.json'}").records
    assert {r.id for r in back} == {r.id for r in recs}
    for r in back:
        assert r.image_deg and Path(r.image_deg).is_file()
        assert Image.open(r.image_deg).size == Image.open(r.image).size
        assert not np.array_equal(arr(Image.open(r.image_deg).convert("RGB")), arr(Image.open(r.image).convert("RGB")))
    meta = json.loads((out / "degrade_meta.json").read_text())
    assert meta["seed"] == 0 and len(meta["degradations"]) == 4
