"""Label corruption for the noisy-label study (data/corrupt.py): a seeded fraction of the
training labels replaced by draws independent of the image; held-out labels never touched;
deterministic; reachable from a data spec (`corrupt=`, `corrupt_seed=`)."""

import random

import numpy as np
import pytest
from scipy import stats

from hawkeye_lite.data.corrupt import corrupt_labels, corrupted_ids
from hawkeye_lite.data.records import IQARecord


def records(n_train=200, n_test=60, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_train + n_test):
        mos = float(rng.uniform(1, 5))
        out.append(
            IQARecord(
                id=f"img{i:04d}",
                image=f"/x/{i}.png",
                mos=mos,
                mos_raw=(mos - 1) * 25,
                mos_range=(0.0, 100.0),
                dataset="t",
                split="train" if i < n_train else "test",
            )
        )
    return out


@pytest.mark.parametrize("rho", [0.0, 0.2, 0.4, 1.0])
def test_the_chosen_fraction_of_training_labels_changes_and_nothing_else(rho):
    seed = random.randrange(1000)
    print(f"corrupt_seed {seed}")
    recs = records()
    out, chosen = corrupt_labels(recs, rho, seed)
    assert len(chosen) == round(rho * 200) and chosen == corrupted_ids(recs, rho, seed)
    for a, b in zip(recs, out):
        if a.id in chosen:
            assert a.split == "train" and b.mos != a.mos and 1 <= b.mos <= 5
            assert b.mos_raw == pytest.approx((b.mos - 1) * 25)  # the raw value follows, on its own scale
            assert (b.image, b.split, b.dataset, b.std) == (a.image, a.split, a.dataset, a.std)
        else:
            assert b == a  # untouched, the held-out split above all
    assert all(b == a for a, b in zip(recs, out) if a.split == "test")


def test_deterministic_order_free_and_seeded():
    recs = records()
    out1, ch1 = corrupt_labels(recs, 0.3, 7)
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    out2, ch2 = corrupt_labels(shuffled, 0.3, 7)
    assert ch1 == ch2  # which images: a function of the ids, not of the order
    assert {r.id: r.mos for r in out1} == {r.id: r.mos for r in out2}  # and the same wrong labels
    _, ch3 = corrupt_labels(recs, 0.3, 8)
    assert ch3 != ch1
    # a larger fraction corrupts a superset (one permutation read further): the cells of a study nest
    assert corrupted_ids(recs, 0.2, 7) <= corrupted_ids(recs, 0.4, 7)


def test_the_replacements_are_uniform_and_independent_of_the_true_label():
    recs = records(n_train=4000, n_test=0, seed=3)
    out, chosen = corrupt_labels(recs, 0.5, 11)
    new = np.array([b.mos for b in out if b.id in chosen])
    old = np.array([a.mos for a in recs if a.id in chosen])
    p = stats.kstest(new, stats.uniform(loc=1, scale=4).cdf).pvalue
    r, p_corr = stats.spearmanr(new, old)
    print(f"KS p {p:.3g}, SRCC with the true label {r:.3f} (p {p_corr:.3g})")
    assert p > 1e-4 and abs(r) < 0.1


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="fraction"):
        corrupted_ids(records(), 1.5)


def test_data_specs_take_corrupt(tmp_path, demo_dir):
    from hawkeye_lite.config import ConfigError
    from hawkeye_lite.config_loader import load_train_config
    from hawkeye_lite.data import load_records
    from hawkeye_lite.data.demo import demo_records
    from hawkeye_lite.trainset import Dataset

    clean = demo_records(demo_dir)
    # the demo spec, as the trainer reads it
    cfg = load_train_config(None, [f"data.train=[demo:{demo_dir}?corrupt=0.25&corrupt_seed=3]"])
    data = Dataset.load(cfg, log=lambda m: None)
    truth = {r.id: r.mos for r in clean}
    changed = {r.id for r in data.train if r.mos != truth[r.id]}
    assert changed == corrupted_ids(clean, 0.25, 3) and len(changed) == round(0.25 * len(data.train))
    assert all(r.mos == truth[r.id] for r in data.eval)  # held-out untouched
    bad = load_train_config(None, [f"data.train=[demo:{demo_dir}?corupt=0.2]"])
    with pytest.raises(ConfigError, match="corupt"):
        Dataset.load(bad, log=lambda m: None)
    # any other spec, through load_records
    res = load_records(f"json:{demo_dir / 'demo.json'}?corrupt=0.5")
    by_id = {r.id: r for r in res.records}
    n_changed = sum(by_id[r.id].mos != pytest.approx(r.mos, abs=1e-5) for r in clean if r.split == "train")
    assert n_changed == round(0.5 * sum(r.split == "train" for r in res.records))
    assert "training labels replaced" in res.format()
