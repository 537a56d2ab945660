"""Mechanism metrics (hawkeye_lite/mechanism.py): each pure piece against an independent
computation (float64 numpy KL, a regex on the decoded text, numpy std), the Scorer's
stream_keys, and one Trainer.evaluate on a briefly warm-started tiny model."""

import io
import json
import math
import random
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from _tiny import DEVICE, images
from scipy.special import log_softmax
from scipy.stats import spearmanr

from hawkeye_lite.config import ConfigError
from hawkeye_lite.config_loader import load_train_config
from hawkeye_lite.data import demo_records
from hawkeye_lite.data.records import IQARecord
from hawkeye_lite.evaluate import Prediction, evaluate
from hawkeye_lite.images import content_key, mix_seed
from hawkeye_lite.mechanism import (
    ImageMechanism,
    answer_token_mask,
    eval_fields,
    load_pairs,
    partner_sensitivity,
    rating_kl,
    score_spread,
    seed_spread,
    summarize,
    token_kl,
)
from hawkeye_lite.trainer import Trainer
from hawkeye_lite.trainset import Partners


def seeded():
    seed = random.randrange(2**31)
    print("seed", seed)
    return seed


# ============================================================================ the KL


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.6])
def test_token_kl_is_the_float64_kl_at_masked_positions(temperature):
    rng = np.random.default_rng(seeded())
    S, T, H, V = 3, 7, 8, 50
    hidden = rng.normal(size=(S, T, H))
    hidden_deg = hidden + rng.normal(scale=0.5, size=(S, T, H))
    hidden_deg[0] = hidden[0]  # same input -> KL 0
    weight = rng.normal(size=(V, H))
    ids = rng.integers(0, V, size=(S, T))
    mask = (rng.random((S, T)) < 0.7).astype(np.int64)
    mask[:, 0] = 1
    f = lambda a: torch.tensor(a, dtype=torch.float32)
    got = (
        token_kl(
            f(hidden),
            f(hidden_deg),
            f(weight),
            torch.tensor(ids),
            torch.tensor(mask),
            temperature=temperature,
            chunk_size=4,
        )
        .double()
        .numpy()
    )  # several chunks
    # independent: float64 log-softmax of the logits the fp32 inputs stand for
    h, hd, w = (np.asarray(f(a), dtype=np.float64) for a in (hidden, hidden_deg, weight))
    lp = log_softmax(h @ w.T / temperature, axis=-1)
    lq = log_softmax(hd @ w.T / temperature, axis=-1)
    ref = (np.exp(lp) * (lp - lq)).sum(-1) * mask
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    assert (got[mask == 0] == 0).all() and np.abs(got[0]).max() < 1e-6 and (got >= -1e-7).all()
    assert ref[1:][mask[1:] == 1].mean() > 0.05  # the other rows do differ: the check means something


def test_rating_kl_means_over_rating_tokens_else_all_tokens():
    rng = np.random.default_rng(seeded())
    S, T = 5, 9
    kl = rng.random((S, T))
    mask = np.zeros((S, T), dtype=bool)
    answer = np.zeros((S, T), dtype=bool)
    for i in range(S):
        n = rng.integers(1, T + 1)
        mask[i, :n] = True
        if i % 2 == 0 and n >= 3:
            a = rng.integers(0, n - 1)
            answer[i, a : a + 2] = True
    got = rating_kl(torch.tensor(kl), torch.tensor(answer), torch.tensor(mask.astype(np.int64))).numpy()
    for i in range(S):
        pick = answer[i] if answer[i].any() else mask[i]
        assert got[i] == pytest.approx(kl[i][pick].mean(), rel=1e-12)


# ============================================================================ rating tokens


ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)  # the test's own reading of "the rating"


class CharTokenizer:
    """One character per token (id = code point); id 0 is a special token that decodes to ''."""

    def decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=False):
        return "".join(chr(i) for i in ids if i != 0)


def test_answer_mask_char_tokenizer_is_the_regex_span():
    texts = [
        "<think>a</think><answer>3.42</answer>",
        "<answer>1</answer> then <answer>4.5</answer> tail",
        "<answer>2.0",
        "<answer></answer>",
        "<ANSWER> 5 </ANSWER>",
        "no answer at all",
        "<answer>\n2\n</answer>x",
    ]
    width = max(map(len, texts)) + 3
    ids = torch.zeros(len(texts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, t in enumerate(texts):
        ids[i, : len(t)] = torch.tensor([ord(c) for c in t])
        mask[i, : len(t) + 1] = 1  # + the stop token (id 0), then padding
    got = answer_token_mask(CharTokenizer(), ids, mask)
    for i, t in enumerate(texts):
        spans = [m.span(1) for m in ANSWER.finditer(t)]
        want = torch.zeros(width, dtype=torch.bool)
        if spans and spans[-1][0] < spans[-1][1]:
            want[spans[-1][0] : spans[-1][1]] = True
        assert torch.equal(got[i], want), t
    assert got[0].sum() == 4 and got[1].sum() == 3 and not got[2].any() and not got[3].any() and got[4].sum() == 3


def test_answer_mask_bpe_tokenizer_matches_brute_force_offsets(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny))
    rng = random.Random(seeded())
    pieces = [
        "<think> The image is sharp. </think>",
        " blurry ",
        "quality",
        "<answer>",
        "</answer>",
        "3.42",
        "4.00",
        " 2.5 ",
        "noisy",
        "<answer>1.25</answer>",
        ">",
        "<",
        "é",
    ]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) for _ in range(40)]
    texts += [
        "<think> ok </think><answer>3.42</answer>",
        "<answer>4.87</answer>",
        "<answer>é</answer>",
        "<answer>2é</answer>",
    ]  # a 2-byte character inside the answer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    seqs = [tok(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]
    width = max(map(len, seqs)) + 2
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    got = answer_token_mask(tok, ids, mask)
    found = 0
    for i, s in enumerate(seqs):
        # brute force: every token's character span from all prefix decodes, then the regex
        dec = lambda k: tok.decode(s[:k], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        text = dec(len(s))
        spans = [m.span(1) for m in ANSWER.finditer(text)]
        want = torch.zeros(width, dtype=torch.bool)
        if spans and spans[-1][0] < spans[-1][1]:
            a, b = spans[-1]
            for k in range(len(s)):
                s_k, e_k = len(dec(k)), len(dec(k + 1))
                # a token completing a split character is zero-width: it belongs to that character
                want[k] = (s_k < b and e_k > a) or (s_k == e_k and a < s_k <= b)
            inner = text[a:b]
            assert inner in tok.decode(ids[i][got[i]].tolist(), clean_up_tokenization_spaces=False)
            found += 1
        assert torch.equal(got[i], want), (
            texts[i],
            got[i].nonzero().flatten().tolist(),
            want.nonzero().flatten().tolist(),
        )
    assert found >= 5  # enough completions with a rating for the comparison to mean something


# ============================================================================ sensitivity, spreads


def test_sensitivity_with_a_fake_score_is_the_known_drop(demo_dir):
    """Score = 1 + 4 * mean brightness; the partner is the darkening (factor 0.6): the drop is
    known, 4 * 0.4 * brightness; a row that failed in the eval, or whose partner fails, is left out."""
    cfg = load_train_config(None, [f"data.train=[demo:{demo_dir}]", "objective.perception.degradation.kinds=[darken]"])
    partners = Partners(cfg)
    recs = [r for r in demo_records(demo_dir) if r.split == "test"][:6]
    score_of = lambda im: 1.0 + 4.0 * float(np.asarray(im, dtype=np.float64).mean()) / 255.0
    from hawkeye_lite.data import load_image

    originals = [load_image(r) for r in recs]
    rows = [(r, Prediction(score=score_of(im))) for r, im in zip(recs, originals)]
    rows[1] = (recs[1], Prediction(error="unreadable"))  # the eval could not read it
    rows[2] = (recs[2], Prediction())  # nothing parsed: NaN score
    bad_id = recs[3].id

    def partner(rec, image):
        if rec.id == bad_id:
            raise OSError("partner file missing")
        return partners(rec, image)

    pairs = load_pairs(rows, partner)
    assert [c[0].id for c in pairs] == [recs[i].id for i in (0, 2, 4, 5)]
    seen_keys = []

    def fake_score(imgs, keys):
        seen_keys.extend(keys)
        return [score_of(im) for im in imgs]

    sens = partner_sensitivity(pairs, fake_score)
    assert seen_keys == [content_key(originals[i]) for i in (0, 2, 4, 5)]  # the originals' streams
    assert math.isnan(sens[1])
    for s, i in zip([sens[0], sens[2], sens[3]], (0, 4, 5)):
        brightness = np.asarray(originals[i], dtype=np.float64).mean() / 255.0
        assert s == pytest.approx(4.0 * 0.4 * brightness, abs=4.0 / 255.0)  # rounding of the darkened pixels
        assert s > 0
    ims = [ImageMechanism("demo", s, 0.0, 0.0, 1) for s in sens]
    assert summarize(ims)["demo"]["sens"] == pytest.approx(np.nanmean(sens), rel=1e-12)


def test_seed_spread_and_score_spread_against_numpy():
    rng = np.random.default_rng(seeded())
    v = list(rng.random(5))
    mean, std = seed_spread(v)
    assert mean == pytest.approx(np.mean(v), rel=1e-12) and std == pytest.approx(np.std(v, ddof=1), rel=1e-12)
    one = seed_spread([0.7])
    assert one[0] == 0.7 and math.isnan(one[1])
    preds = [Prediction(std=float(s)) for s in rng.random(4)] + [Prediction(), Prediction(std=0.3, error="x")]
    assert score_spread(preds) == pytest.approx(np.mean([p.std for p in preds[:4]]), rel=1e-12)


def _records(n_per, datasets=("a", "b")):
    return [
        IQARecord(f"{d}{i}", f"/img/{d}{i}.png", 1 + 4 * i / n_per, 0.0, (0, 1), d, "test")
        for d in datasets
        for i in range(n_per)
    ]


def test_eval_fields_per_dataset_and_top_level():
    rng = np.random.default_rng(seeded())
    recs = _records(8)
    noise = {s: {r.image: rng.normal(scale=1.0) for r in recs} for s in range(3)}
    spreads = {r.image: float(rng.random()) for r in recs}
    by_image = {r.image: r for r in recs}

    def fn(seed):
        return lambda paths: [Prediction(score=by_image[p].mos + noise[seed][p], std=spreads[p]) for p in paths]

    reports = [evaluate(recs, fn(s), batch_size=3) for s in range(3)]
    ims = [
        ImageMechanism(
            r.dataset, float(rng.normal()), float(rng.random()), float(rng.random() * 5), int(rng.integers(1, 9))
        )
        for r in recs
    ]
    per_ds, top = eval_fields(reports, ims)
    for d in ("a", "b"):
        sub = [r for r in recs if r.dataset == d]
        srcc = [spearmanr([r.mos for r in sub], [r.mos + noise[s][r.image] for r in sub])[0] for s in range(3)]
        assert per_ds[d]["srcc_std"] == pytest.approx(np.std(srcc, ddof=1), rel=1e-9)
        assert per_ds[d]["srcc_mean"] == pytest.approx(np.mean(srcc), rel=1e-9)
        assert per_ds[d]["score_std"] == pytest.approx(np.mean([spreads[r.image] for r in sub]), rel=1e-12)
        mine = [m for m in ims if m.dataset == d]
        assert per_ds[d]["pkl_all"] == pytest.approx(sum(m.kl_sum for m in mine) / sum(m.kl_tokens for m in mine))
        assert per_ds[d]["pkl"] == pytest.approx(np.mean([m.pkl for m in mine]))
        assert per_ds[d]["n_mechanism"] == 8
    for k in ("srcc_std", "plcc_std", "srcc_mean", "score_std", "sens", "pkl", "pkl_all"):
        assert top[k] == pytest.approx((per_ds["a"][k] + per_ds["b"][k]) / 2, rel=1e-12), k
    # one seed, mechanism off: no per-dataset spread, NaN std at the top, no mechanism keys at all
    per_ds, top = eval_fields(reports[:1], None)
    assert "srcc_std" not in per_ds["a"] and "sens" not in per_ds["a"] and "sens" not in top and "pkl" not in top
    assert math.isnan(top["srcc_std"]) and math.isnan(top["plcc_std"])
    assert top["srcc_mean"] == pytest.approx(np.mean([d.metrics.srcc for d in reports[0].datasets]), rel=1e-12)


def test_config_keys_are_validated():
    assert load_train_config(None, ["eval.repeats=3"]).eval.repeats == 3
    for bad in ("eval.repeats=0", "eval.mechanism_samples=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_train_config(None, [bad])


# ============================================================================ the Scorer's streams


def test_stream_keys_and_the_eval_first_samples(policy):
    """A partner scored with its original's key draws the original's streams; the mechanism's
    m fresh completions are the eval's first m samples (rows keyed by (seed, g) only)."""
    from hawkeye_lite.rollout import generate_rollouts
    from hawkeye_lite.scorer import Scorer

    a, b = images(2, seed=1)
    scorer = Scorer(policy, prompt="no_think", max_new_tokens=6)
    kw = dict(samples=3, temperature=1.0, seed=5)
    plain = scorer.score([a], **kw)[0]
    assert scorer.score([a], stream_keys=[content_key(a)], **kw)[0].texts == plain.texts
    keyed = scorer.score([b], stream_keys=[content_key(a)], **kw)[0]
    ro = generate_rollouts(
        policy, [b], num_generations=3, max_new_tokens=6, seeds=[mix_seed(5, content_key(a))], prompt="no_think"
    )
    assert keyed.texts == ro.texts
    assert keyed.texts != scorer.score([b], **kw)[0].texts  # the key does change the streams
    first = generate_rollouts(
        policy, [a], num_generations=2, max_new_tokens=6, seeds=[mix_seed(5, content_key(a))], prompt="no_think"
    )
    assert first.texts == plain.texts[:2]
    with pytest.raises(ValueError, match="stream_keys"):
        scorer.score([a, b], stream_keys=[1], **kw)


# ============================================================================ end to end


@pytest.fixture(scope="module")
def warm(tiny, demo_dir, tmp_path_factory):
    """A Trainer whose policy answers in the format: a label-free warm start (60 steps, ~3 s on
    one core) — the random tiny model parses nothing, so sens and SRCC would be NaN without it."""
    run = tmp_path_factory.mktemp("mech-run")
    cfg = load_train_config(
        None,
        [
            f"output_dir={run}",
            f"model.name_or_path={tiny}",
            "tiny_model.build=false",
            f"data.train=[demo:{demo_dir}]",
            f"model.device={DEVICE}",
            "rollout.prompt=no_think",
            "reward.require_think=false",
            "rollout.max_new_tokens=10",
            "sft.steps=60",
            "sft.lr=1e-2",
            "sft.batch_size=4",
            "sft.warmup_steps=2",
            "sft.target=format",
            "eval.max_images=5",
            "eval.samples=4",
            "eval.mechanism_samples=2",
            "eval.batch_size=3",
            "optim.batch_size=2",
            "rollout.num_generations=2",
            "logging.progress=false",
            "logging.plot=false",
            "checkpoint.every=0",
        ],
    )
    stream = io.StringIO()
    t = Trainer(cfg, run_dir=run, log_stream=stream)
    t.prepare()
    t.base = t.warm_start()
    t.policy = t.load_policy(t.base)
    return t, stream


def with_eval(t, **kw):
    t.cfg = replace(t.cfg, eval=replace(t.cfg.eval, **kw))


def test_trainer_evaluate_logs_the_mechanism_metrics(warm):
    t, stream = warm
    with_eval(t, mechanism=True, repeats=1)
    out = t.evaluate("mech")
    print({k: v for k, v in out.items() if k != "datasets"})
    for k in ("srcc", "sens", "pkl", "pkl_all", "score_std", "srcc_mean"):
        assert math.isfinite(out[k]), k
    assert out["pkl"] >= 0 and out["pkl_all"] >= 0 and out["score_std"] >= 0
    assert out["srcc_mean"] == out["srcc"] and math.isnan(out["srcc_std"]) and math.isnan(out["plcc_std"])
    d = out["datasets"]["demo"]
    assert d["n_mechanism"] == 5 and d["sens"] == out["sens"] and d["pkl"] == out["pkl"]
    assert "sens" in stream.getvalue().splitlines()[-1] and "pKL" in stream.getvalue().splitlines()[-1]
    logged = [json.loads(l) for l in (t.run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert logged["event"] == "eval" and logged["sens"] == out["sens"] and logged["pkl_all"] == out["pkl_all"]
    # the same again is the same (per-image streams): mechanism numbers are reproducible
    again = t.evaluate("mech again")
    assert again["sens"] == out["sens"] and again["pkl"] == out["pkl"]

    with_eval(t, mechanism=False)
    off = t.evaluate("off")
    assert not {"sens", "pkl", "pkl_all", "mechanism_seconds"} & set(off) and "sens" not in off["datasets"]["demo"]
    assert off["srcc"] == out["srcc"] and off["score_std"] == out["score_std"]  # the scoring itself is untouched
    assert "pKL" not in stream.getvalue().splitlines()[-1]

    with_eval(t, mechanism=False, repeats=3)
    rep = t.evaluate("repeats")
    assert rep["srcc"] == out["srcc"] and rep["plcc"] == out["plcc"]  # still eval.seed's numbers
    assert math.isfinite(rep["srcc_std"]) and math.isfinite(rep["plcc_std"]) and rep["srcc_std"] >= 0
    assert math.isfinite(rep["srcc_mean"]) and "srcc_std" in rep["datasets"]["demo"]


def test_plot_draws_the_mechanism_series(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import hawkeye_lite.plot as plot_module

    recs = [{"event": "step", "step": s, "perception_kl": 0.1 * s} for s in (1, 2, 3)]
    recs += [
        {"event": "eval", "step": s, "srcc": 0.5, "sens": 0.2 + s, "pkl": 0.01 * s, "pkl_all": float("nan")}
        for s in (0, 3)
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    series = plot_module.read_series(tmp_path)
    assert series["eval/sens"] == [(0.0, 0.2), (3.0, 3.2)] and "eval/pkl_all" not in series  # NaN left out
    drawn = {}
    real = plot_module._pyplot()
    orig = real.subplots

    def spy(*a, **k):
        drawn["fig"], axes = orig(*a, **k)
        return drawn["fig"], axes

    monkeypatch.setattr(real, "subplots", spy)
    plot_module.plot_run(tmp_path)
    lines = {l.get_label(): l for ax in drawn["fig"].axes for l in ax.get_lines()}
    assert list(lines["sens"].get_data()[1]) == [0.2, 3.2]
    assert list(lines["pkl (held-out, rating tokens)"].get_data()[0]) == [0, 3]


def test_measure_is_a_function_of_each_image_alone(warm):
    """What the sharded torchrun evaluation relies on: measured in other batch sizes, or in two
    shards, every image's numbers are identical to the bit."""
    from hawkeye_lite.evaluate import scorer_fn
    from hawkeye_lite.mechanism import measure
    from hawkeye_lite.scorer import Scorer

    t, _ = warm
    e = t.cfg.eval
    scorer = Scorer(t.policy, prompt=t.cfg.rollout.prompt, max_new_tokens=t.cfg.rollout.max_new_tokens)
    rows = evaluate(t.data.eval, scorer_fn(scorer, samples=e.samples, temperature=e.temperature, seed=e.seed)).rows
    kw = dict(samples=e.samples, temperature=e.temperature, seed=e.seed, mechanism_samples=e.mechanism_samples)
    whole = measure(scorer, rows, t.partners, batch_size=5, **kw)
    assert len(whole) == 5 and any(math.isfinite(m.sens) for m in whole)
    assert measure(scorer, rows, t.partners, batch_size=2, **kw) == whole
    assert (
        measure(scorer, rows[:2], t.partners, batch_size=3, **kw)
        + measure(scorer, rows[2:], t.partners, batch_size=3, **kw)
        == whole
    )
