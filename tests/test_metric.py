"""HawkeyeMetric / create_metric: the pyiqa-style metric over a Scorer, on the tiny model."""

import math

import numpy as np
import pytest
import torch
from _tiny import DEVICE, adapter_run, images, tiny_model_dir
from PIL import Image

from hawkeye_lite.images import ImageReadError
from hawkeye_lite.metric import HawkeyeMetric, create_metric, scoring_option_names
from hawkeye_lite.scorer import SCORE_MAX, SCORE_MIN, Scorer

K = 2  # samples per image
TOKENS = 8  # completion cap: the random model never stops on its own
OPTS = dict(samples=K, max_new_tokens=TOKENS)


def fake_parse(text):
    """A random model rarely writes a rating: read one from the text itself, so scores are numbers
    that depend on the sampled texts (and about 1 text in 4 gives none, so NaN scores happen)."""
    h = sum(map(ord, text)) * 2654435761 % 2**32
    return None if h % 4 == 0 else 1.0 + (h >> 8) % 401 / 100.0


def nan_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def random_seed(gen) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=gen))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def run_dir(tiny_dir, tmp_path_factory):
    return adapter_run(tiny_dir, tmp_path_factory, "metric-run")


@pytest.fixture(scope="module")
def scorer(run_dir):
    s = Scorer.from_pretrained(run_dir, device=DEVICE, max_new_tokens=TOKENS)
    s.parse = fake_parse
    return s


@pytest.fixture
def metric(scorer):
    return create_metric(scorer, **OPTS)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("metric-images")
    for i, im in enumerate(images(3, seed=5)):
        im.save(d / f"im{i}.png")
    return d


def test_batch_equals_scorer_and_each_row_alone(scorer, gen):
    seed = random_seed(gen)
    x = torch.rand(4, 3, 56, 84, generator=gen)
    metric = create_metric(scorer, seed=seed, batch_size=3, **OPTS)
    out = metric(x)
    assert not out.isnan().all(), "the test needs some parsed scores to compare"
    ref = torch.tensor([r.score for r in scorer.score(list(x.unbind(0)), seed=seed, **OPTS)], dtype=torch.float32)
    assert nan_equal(out, ref), (out, ref)
    for i in range(len(x)):
        alone = metric(x[i : i + 1])
        assert nan_equal(alone, out[i : i + 1]), (i, alone, out)
    # a different seed draws different answers: the comparison above can tell scores apart
    other = create_metric(scorer, seed=seed + 1, **OPTS)(x[:2])
    assert not nan_equal(other, out[:2])


def test_output_shape_dtype_device_std_and_attributes(metric, gen):
    x = torch.rand(3, 3, 56, 84, generator=gen)
    out = metric(x)
    assert out.shape == (3,) and out.dtype == torch.float32 and out.device == x.device
    finite = out[~out.isnan()]
    assert ((finite >= SCORE_MIN) & (finite <= SCORE_MAX)).all()
    results = metric.last_results
    assert len(results) == 3 and [r.source for r in results] == [f"images[{i}] (torch.Tensor)" for i in range(3)]
    assert nan_equal(out, torch.tensor([r.score for r in results]))
    assert metric.last_std.shape == (3,) and metric.last_std.dtype == torch.float32
    assert nan_equal(metric.last_std, torch.tensor([r.std for r in results], dtype=torch.float32))
    assert [len(r.texts) for r in results] == [K] * 3

    assert metric.score_range == (1.0, 5.0) == (SCORE_MIN, SCORE_MAX)
    assert metric.lower_better is False and metric.metric_mode == "NR" and metric.as_loss is False
    assert metric.options == OPTS and metric.scorer is not None
    # a torch module holding no parameters; .eval()/.to()/.train() change nothing
    assert isinstance(metric, torch.nn.Module) and list(metric.parameters()) == []
    assert metric.eval() is metric and metric.to("cpu") is metric and metric.train() is metric
    assert nan_equal(metric(x), out)
    assert "NR" in repr(metric) and "samples=2" in repr(metric)


def test_empty_batch(metric):
    out = metric(torch.zeros(0, 3, 56, 84))
    assert out.shape == (0,) and out.dtype == torch.float32
    assert metric.last_std.shape == (0,) and metric.last_results == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_scores_come_back_on_the_inputs_device(metric, gen):
    x = torch.rand(2, 3, 56, 84, generator=gen)
    out = metric(x.cuda())
    assert out.device.type == "cuda" and metric.last_std.device.type == "cuda"
    assert nan_equal(out.cpu(), metric(x))


def test_no_gradient_input_requiring_grad_is_detached(metric, scorer, gen):
    x = torch.rand(2, 3, 56, 84, generator=gen)
    plain = metric(x)
    out = metric(x.clone().requires_grad_())
    assert not out.requires_grad and nan_equal(out, plain)
    with pytest.raises(ValueError, match="no gradient"):
        metric.as_loss = True
    metric.as_loss = False  # pyiqa's default is fine
    with pytest.raises(ValueError, match="no gradient"):
        create_metric(scorer, as_loss=True)
    assert create_metric(scorer, as_loss=False).as_loss is False


def test_single_chw_tensor(metric, gen):
    x = torch.rand(2, 3, 56, 84, generator=gen)
    one = metric(x[1])
    assert one.shape == (1,) and len(metric.last_results) == 1 and metric.last_std.shape == (1,)
    assert nan_equal(one, metric(x)[1:])


def test_paths_lists_and_mixed_inputs(metric, scorer, files):
    paths = [files / f"im{i}.png" for i in range(3)]
    one = metric(str(paths[0]))
    assert one.shape == (1,) and one.device.type == "cpu" and metric.last_results[0].source == str(paths[0])
    assert nan_equal(metric(paths[0]), one)  # pathlib.Path
    many = metric([str(p) for p in paths])
    ref = scorer.score([str(p) for p in paths], **OPTS)
    assert nan_equal(many, torch.tensor([r.score for r in ref]))
    assert nan_equal(metric(tuple(paths)), many)
    # the same pixels as a path, a PIL image, a numpy array or a [0, 1] tensor score the same
    arrays = [np.array(Image.open(p).convert("RGB")) for p in paths]
    mixed = [str(paths[0]), Image.fromarray(arrays[1]), torch.from_numpy(arrays[2]).permute(2, 0, 1) / 255.0]
    assert nan_equal(metric(mixed), many)
    assert nan_equal(metric([arrays[0]]), many[:1])
    assert nan_equal(metric(arrays[0]), many[:1])  # one numpy image


def test_one_and_four_channels_are_read_like_the_scorer(metric, scorer, gen):
    for c in (1, 4):
        x = torch.rand(2, c, 56, 84, generator=gen)
        out = metric(x)
        ref = scorer.score(list(x.unbind(0)), **OPTS)
        assert out.shape == (2,) and nan_equal(out, torch.tensor([r.score for r in ref]))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda g: torch.rand(2, 2, 56, 84, generator=g), r"images\[0\] \(torch.Tensor\).*C in 1, 3, 4"),
        (lambda g: torch.rand(2, 5, 56, 84, generator=g), r"images\[0\].*C in 1, 3, 4"),
        (lambda g: torch.rand(56, 84, generator=g), r"input.*\[N, C, H, W\].*got shape \(56, 84\)"),
        (lambda g: torch.rand(1, 2, 3, 56, 84, generator=g), r"input.*got shape \(1, 2, 3, 56, 84\)"),
        (
            lambda g: torch.cat([torch.rand(1, 3, 8, 8, generator=g), torch.full((1, 3, 8, 8), 1.5)]),
            r"images\[1\].*\[0, 1\]",
        ),
        (lambda g: torch.cat([torch.rand(1, 3, 8, 8, generator=g), -torch.ones(1, 3, 8, 8)]), r"images\[1\].*\[0, 1\]"),
        (lambda g: torch.full((1, 3, 8, 8), float("nan")), r"images\[0\].*NaN"),
        (lambda g: torch.rand(3, 0, 84, generator=g), r"images\[0\].*no pixels"),
    ],
)
def test_bad_tensor_raises_naming_the_image(metric, gen, make, match):
    with pytest.raises(ImageReadError, match=match):
        metric(make(gen))


def test_missing_or_unreadable_file_raises_naming_it(metric, files, tmp_path, monkeypatch):
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        metric(str(missing))
    (tmp_path / "text.jpg").write_bytes(b"not a JPEG")
    called = []
    monkeypatch.setattr("hawkeye_lite.rollout.generate_rollouts", lambda *a, **k: called.append(1))
    with pytest.raises(ImageReadError, match="text.jpg: cannot read image"):
        metric([str(files / "im0.png"), str(tmp_path / "text.jpg")])
    assert called == []  # checked before anything is scored


def test_unparsed_answers_score_nan(metric, scorer, gen, monkeypatch):
    monkeypatch.setattr(scorer, "parse", lambda text: None)
    out = metric(torch.rand(2, 3, 56, 84, generator=gen))
    assert out.isnan().all() and metric.last_std.isnan().all()
    assert [r.n_parsed for r in metric.last_results] == [0, 0]


def test_scoring_options_are_checked_by_name(scorer, tmp_path):
    names = scoring_option_names()
    assert {"samples", "temperature", "top_p", "top_k", "max_new_tokens", "seed", "batch_size", "stratified"} <= set(
        names
    )
    assert not {"self", "images", "on_error", "stream_keys"} & set(names)
    with pytest.raises(TypeError, match="'temprature'"):
        create_metric(scorer, temprature=0.5)
    for reserved in ("on_error", "stream_keys"):
        with pytest.raises(TypeError, match=reserved):
            create_metric(scorer, **{reserved: None})
    with pytest.raises(TypeError, match="'images'"):
        HawkeyeMetric(scorer, images=[])
    # checked before loading: a bad option on a bad path is a TypeError, not a load error
    with pytest.raises(TypeError, match="'bogus'"):
        create_metric(tmp_path / "no-such-model", bogus=1)


def test_create_metric_with_a_scorer_uses_it(scorer, monkeypatch):
    def no_reload(*args, **kwargs):
        raise AssertionError("create_metric reloaded the model")

    monkeypatch.setattr(Scorer, "from_pretrained", no_reload)
    m = create_metric(scorer, samples=3, seed=4)
    assert m.scorer is scorer and m.options == {"samples": 3, "seed": 4}
    m = create_metric(scorer, max_new_tokens=5)
    assert m.scorer is scorer and m.options == {"max_new_tokens": 5}  # a scoring option for a loaded Scorer
    with pytest.raises(ValueError, match="device, preset apply when loading"):
        create_metric(scorer, device="cpu", preset="think")


def test_create_metric_from_a_path_passes_only_given_options(scorer, monkeypatch):
    calls = []

    def fake(path, **kwargs):
        calls.append((path, kwargs))
        return scorer

    monkeypatch.setattr(Scorer, "from_pretrained", fake)
    m = create_metric("some/run", samples=2)
    assert m.scorer is scorer and calls[-1] == ("some/run", {}) and m.options == {"samples": 2}
    create_metric("some/run", device="cpu", quantization="nf4", preset="think", max_new_tokens=7, seed=1)
    assert calls[-1] == ("some/run", {"device": "cpu", "quantization": "nf4", "preset": "think", "max_new_tokens": 7})


def test_create_metric_loads_a_run(run_dir, files):
    m = create_metric(run_dir, device=DEVICE, max_new_tokens=TOKENS, samples=K)
    assert isinstance(m.scorer, Scorer) and m.scorer.max_new_tokens == TOKENS and m.options == {"samples": K}
    out = m(str(files / "im0.png"))
    assert out.shape == (1,) and len(m.last_results[0].texts) == K
    # the real parser on a random model: a number in range or NaN
    assert math.isnan(out.item()) or SCORE_MIN <= out.item() <= SCORE_MAX
