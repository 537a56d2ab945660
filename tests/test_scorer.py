"""Scorer on the tiny model: every input type, bad images, determinism, loading, CLI."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from _tiny import DEVICE, DTYPE, adapter_run, images, tiny_model_dir
from PIL import Image

import hawkeye_lite.rollout as rollout_module
from hawkeye_lite.scorer import ImageReadError, Scorer, ScoreResult, aggregate, to_rgb

K = 2  # samples per image
TOKENS = 6  # completion length cap: the random model never stops on its own


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def run_dir(tiny_dir, tmp_path_factory):
    return adapter_run(tiny_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def scorer(run_dir):
    return Scorer.from_pretrained(run_dir, device=DEVICE, max_new_tokens=TOKENS)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "rgb.png")
    Image.fromarray(rgb).save(d / "rgb.jpg", quality=90)
    Image.fromarray(rgb[:, :, 0]).save(d / "gray.png")
    Image.fromarray((rng.randint(0, 65536, (60, 80))).astype(np.uint16)).save(d / "gray16.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(d / "palette.png")
    Image.fromarray(np.dstack([rgb, np.full((60, 80), 128, np.uint8)])).save(d / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    (d / "not_an_image.jpg").write_bytes(b"this is text, not a JPEG")
    full = (d / "rgb.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 3])
    return d


def test_every_input_type_scores(scorer, files):
    inputs = [
        str(files / "rgb.png"),
        files / "rgb.jpg",  # pathlib.Path
        str(files / "gray.png"),
        str(files / "gray16.png"),
        str(files / "palette.png"),
        str(files / "rgba.png"),
        str(files / "cmyk.jpg"),
        images(1)[0],  # PIL RGB
        Image.open(files / "gray.png"),  # PIL L
        Image.new("RGBA", (50, 40), (10, 200, 30, 0)),
        np.random.RandomState(1).randint(0, 256, (40, 50, 3), dtype=np.uint8),  # numpy HxWxC uint8
        np.random.RandomState(2).randint(0, 256, (40, 50), dtype=np.uint8),  # numpy HxW
        np.random.RandomState(3).randint(0, 256, (40, 50, 4), dtype=np.uint8),  # numpy RGBA
        torch.rand(3, 40, 50),  # torch CxHxW float in [0, 1]
        torch.rand(1, 40, 50),  # torch grayscale
    ]
    results = scorer.score(inputs, samples=K, batch_size=6)
    assert len(results) == len(inputs)
    for _inp, r in zip(inputs, results):
        assert isinstance(r, ScoreResult) and r.ok and r.error is None
        assert len(r.texts) == K and r.n_parsed == len(r.samples)
        if r.n_parsed:
            assert 1.0 <= r.score <= 5.0 and r.std >= 0
        else:
            assert math.isnan(r.score) and math.isnan(r.std)
    assert results[0].source == str(files / "rgb.png")
    assert results[10].source == "images[10] (numpy.ndarray)"
    assert results[13].source == "images[13] (torch.Tensor)"


def test_conversions_are_faithful(files):
    # 16-bit: scaled to 8 bits, not clipped at 255
    img16 = Image.fromarray(np.full((4, 4), 32896, np.uint16))
    assert np.asarray(to_rgb(img16)).tolist()[0][0] == [128, 128, 128]
    assert np.asarray(to_rgb(np.full((4, 4, 3), 65535, np.uint16)))[0, 0].tolist() == [255, 255, 255]
    arr = np.asarray(to_rgb(str(files / "gray16.png")))
    assert arr.shape == (60, 80, 3) and arr.max() > 200 and arr.min() < 50
    # transparent pixels show as white, opaque ones keep their colour
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = [10, 20, 30, 255]
    out = np.asarray(to_rgb(rgba))
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 1].tolist() == [255, 255, 255]
    # palette -> its colours
    pal = Image.fromarray(np.full((3, 3, 3), [200, 10, 10], np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert np.asarray(to_rgb(pal))[1, 1].tolist() == [200, 10, 10]
    # torch CxHxW float: channel-first, [0, 1] -> [0, 255]
    t = torch.zeros(3, 2, 5)
    t[0] = 1.0
    t[2] = 0.5
    assert np.asarray(to_rgb(t))[1, 4].tolist() == [255, 0, 128]
    gray = np.asarray(to_rgb(np.array([[0, 255]], np.uint8)))
    assert gray.tolist() == [[[0, 0, 0], [255, 255, 255]]]
    for x in (to_rgb(str(files / "cmyk.jpg")), to_rgb(str(files / "palette.png"))):
        assert x.mode == "RGB"


@pytest.mark.parametrize(
    "bad,match",
    [
        ("not_an_image.jpg", "not_an_image.jpg: cannot read image"),
        ("truncated.jpg", "truncated.jpg: cannot read image"),
        ("missing.png", "missing.png: no such file"),
        (np.zeros((0, 10, 3), np.uint8), r"images\[1\].*no pixels"),
        (np.zeros((10, 10, 3), np.float32) + 3.0, r"images\[1\].*\[0, 1\]"),
        (np.zeros((10, 10, 2), np.uint8), r"images\[1\].*shape"),
        (torch.full((3, 8, 8), float("nan")), r"images\[1\].*NaN"),
        (12345, r"images\[1\].*unsupported input type int"),
    ],
)
def test_bad_image_raises_naming_it(scorer, files, bad, match):
    bad = str(files / bad) if isinstance(bad, str) else bad
    with pytest.raises(ImageReadError, match=match):
        scorer.score([images(1)[0], bad], samples=1)


def test_bad_image_skipped_others_still_scored(scorer, files):
    good = [images(2)[0], str(files / "rgb.png")]
    inputs = [good[0], str(files / "not_an_image.jpg"), good[1], str(files / "truncated.jpg")]
    results = scorer.score(inputs, samples=K, on_error="skip", seed=3)
    assert [r.ok for r in results] == [True, False, True, False]
    assert "not_an_image.jpg" in results[1].error and math.isnan(results[1].score) and results[1].texts == []
    assert results[0].texts and results[2].texts
    # the good images get what they get without the bad ones in the list
    alone = scorer.score(good, samples=K, seed=3)
    assert [r.texts for r in alone] == [results[0].texts, results[2].texts]
    with pytest.raises(ValueError, match="on_error"):
        scorer.score(good, on_error="ignore")


def test_same_seed_same_result(scorer):
    ims = images(3)
    a = scorer.score(ims, samples=3, seed=11)
    b = scorer.score(ims, samples=3, seed=11)
    c = scorer.score(ims, samples=3, seed=12)
    assert [r.texts for r in a] == [r.texts for r in b]
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]
    assert [r.texts for r in a] != [r.texts for r in c]


def test_stratified_scores_are_batch_invariant_and_their_own_draws(scorer):
    ims = images(4)
    whole = scorer.score(ims, samples=6, seed=3, batch_size=4, stratified=True)
    parts = scorer.score(ims, samples=6, seed=3, batch_size=3, stratified=True)
    alone = [scorer.score(im, samples=6, seed=3, stratified=True)[0] for im in ims]
    assert [r.texts for r in whole] == [r.texts for r in parts] == [r.texts for r in alone]
    iid = scorer.score(ims, samples=6, seed=3, batch_size=4)
    assert [r.texts for r in iid] != [r.texts for r in whole]
    # greedy has no randomness to stratify: the flag changes nothing there
    g0 = scorer.score(ims, samples=2, seed=3, temperature=0, stratified=True)
    assert [r.texts for r in g0] == [r.texts for r in scorer.score(ims, samples=2, seed=3, temperature=0)]


def test_single_image_input_and_batching(scorer):
    one = scorer.score(images(1)[0], samples=K, seed=0)
    assert len(one) == 1
    ims = images(5)
    small_batches = scorer.score(ims, samples=K, seed=0, batch_size=2, temperature=0)
    one_batch = scorer.score(ims, samples=K, seed=0, batch_size=5, temperature=0)
    # greedy: batching (and its padding) does not change the answers
    assert [r.texts for r in small_batches] == [r.texts for r in one_batch]


def test_results_follow_the_group_major_layout(scorer, monkeypatch):
    """Image i gets completions i*K .. i*K+K-1, aggregated as mean/std of the clamped ratings."""
    real = rollout_module.generate_rollouts
    answers = {0: ["<answer>2.0</answer>", "<answer>4.0</answer>"], 1: ["<answer>9</answer>", "nothing"], 2: ["x", "y"]}

    def fake(policy, imgs, *, num_generations, **kw):
        r = real(policy, imgs, num_generations=num_generations, max_new_tokens=1, seed=0)
        sizes = [im.size for im in imgs]
        r.texts = [t for size in sizes for t in answers[sizes_to_index[size]]]
        return r

    ims = [Image.new("RGB", (28 * (i + 2), 56)) for i in range(3)]
    sizes_to_index = {im.size: i for i, im in enumerate(ims)}
    monkeypatch.setattr(rollout_module, "generate_rollouts", fake)
    results = scorer.score(ims, samples=2)
    assert results[0].score == pytest.approx(3.0) and results[0].std == pytest.approx(1.0)
    assert results[0].samples == [2.0, 4.0] and results[0].n_parsed == 2
    assert results[1].score == 5.0 and results[1].samples == [5.0] and results[1].std == 0.0  # clamped
    assert math.isnan(results[2].score) and results[2].n_parsed == 0
    assert results[2].to_dict()["score"] is None
    json.dumps([r.to_dict() for r in results], allow_nan=False)


def test_aggregate():
    assert aggregate(["<answer>1</answer>", "<answer>3</answer>"]) == (2.0, 1.0, [1.0, 3.0])
    assert aggregate(["<answer>0.2</answer>"]) == (1.0, 0.0, [1.0])
    mean, std, values = aggregate(["junk"])
    assert math.isnan(mean) and math.isnan(std) and values == []


def test_from_pretrained_variants(run_dir, tiny_dir, tmp_path):
    # run folder (adapter in final/), reads prompt and settings from hawkeye.json
    s = Scorer.from_pretrained(run_dir, device=DEVICE)
    assert s.policy.has_adapter and s.prompt.name == "no_think"
    assert s.policy.config.lora.adapter_path == str(run_dir / "final")
    assert not s.policy.model.training and not s.policy.trainable_parameters()
    assert s.max_new_tokens == 512  # saved without a completion cap: the default
    # a saved completion cap becomes the default; an explicit one still wins
    s.policy.save_pretrained(tmp_path / "capped", prompt="think", max_new_tokens=7)
    assert json.loads((tmp_path / "capped" / "hawkeye.json").read_text())["max_new_tokens"] == 7
    assert Scorer.from_pretrained(tmp_path / "capped", device=DEVICE).max_new_tokens == 7
    assert Scorer.from_pretrained(tmp_path / "capped", device=DEVICE, max_new_tokens=9).max_new_tokens == 9
    # adapter folder directly, with overrides
    s = Scorer.from_pretrained(run_dir / "final", device=DEVICE, quantization="nf4", prompt="think")
    assert s.policy.config.quantization == "nf4" and s.prompt.name == "think"
    assert s.score(images(1), samples=1, max_new_tokens=2)[0].ok
    # full model folder: no adapter
    s = Scorer.from_pretrained(tiny_dir, device=DEVICE, dtype=DTYPE)
    assert not s.policy.has_adapter and s.prompt.name == "think"
    with pytest.raises(FileNotFoundError, match="nope"):
        Scorer.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        Scorer.from_pretrained(tmp_path / "empty")


def test_package_exports_scorer_lazily():
    code = "import sys, hawkeye_lite; assert 'torch' not in sys.modules; from hawkeye_lite import Scorer; print(Scorer.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "Scorer"


def test_cli_init_tiny_and_score(tmp_path, run_dir, files):
    from typer.testing import CliRunner

    from hawkeye_lite.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["init-tiny", str(tmp_path / "tiny"), "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "tiny" / "model.safetensors").is_file()

    args = [
        "score",
        "--model",
        str(run_dir),
        str(files / "rgb.png"),
        str(files / "gray.png"),
        "--samples",
        "2",
        "--max-new-tokens",
        "4",
        "--json",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["source"] for r in rows] == [str(files / "rgb.png"), str(files / "gray.png")]
    assert all(len(r["texts"]) == 2 and r["ok"] for r in rows)

    res = runner.invoke(app, args + ["--stratified"])  # the flag reaches the Scorer
    assert res.exit_code == 0, res.output
    strat = [json.loads(line)["texts"] for line in res.stdout.strip().splitlines()]
    api = Scorer.from_pretrained(run_dir, device=DEVICE, max_new_tokens=4).score(
        [str(files / "rgb.png"), str(files / "gray.png")], samples=2, stratified=True
    )
    assert strat == [r.texts for r in api]

    res = runner.invoke(
        app,
        [
            "score",
            "--model",
            str(run_dir),
            str(files / "not_an_image.jpg"),
            str(files / "rgb.png"),
            "--samples",
            "1",
            "--max-new-tokens",
            "2",
        ],
    )
    assert res.exit_code == 2
    assert "not_an_image.jpg\tfailed" in res.stdout and str(files / "rgb.png") in res.stdout

    res = runner.invoke(app, ["score", "--model", str(tmp_path / "missing"), str(files / "rgb.png")])
    assert res.exit_code == 2
