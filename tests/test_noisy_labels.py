"""bench/noisy_labels.py: the AUROC against a brute-force count, the mechanism read from
per-image step records written by hand, and the plan of ablation commands."""

import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def nl():
    spec = importlib.util.spec_from_file_location("hawkeye_bench_noisy", ROOT / "bench" / "noisy_labels.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_auroc_is_the_pairwise_probability(nl):
    seed = random.randrange(10_000)
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    pos = np.round(rng.normal(0.3, 0.2, 40), 2)  # rounded: ties happen
    neg = np.round(rng.normal(0.2, 0.2, 70), 2)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert nl.auroc(pos, neg) == pytest.approx(brute, abs=1e-12)
    assert nl.auroc([1, 2], [0, 0]) == 1.0 and nl.auroc([0], [0]) == 0.5
    assert np.isnan(nl.auroc([], [1.0]))


def test_mechanism_reads_the_per_image_records(nl, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    steps = []
    for s in range(1, 9):
        ids = ["a", "b", "c", "d"]
        u = [0.5, 0.1, 0.4, 0.2] if s <= 2 else [0.1, 0.1, 0.1, 0.1]
        steps.append({"event": "step", "step": s, "images": {"id": ids, "u": u, "adv_abs": [1.0, 3.0, 1.0, 3.0]}})
    lines = [json.dumps(r) for r in steps] + ['{"event": "eval", "tag": "after RL"}', '{"torn']
    (run / "metrics.jsonl").write_text("\n".join(lines))
    m = nl.mechanism(run, corrupted={"a", "c"})
    assert m["auroc_early"] == 1.0  # steps 1-2: corrupted u 0.5, 0.4 above clean 0.1, 0.2
    assert m["auroc_late"] == 0.5  # all equal
    assert m["share_all"] == pytest.approx(0.25) and m["img_share_all"] == pytest.approx(0.5)
    assert nl.mechanism(tmp_path / "nothing", set()) == {}


def test_the_plan_runs_grpo_once_per_rho(nl):
    plan = nl.cells([0.0, 0.4], [0.2, 5.0], Path("OUT"))
    assert [(c["rho"], c["alpha"], c["variants"]) for c in plan] == [
        (0.0, 0.2, ["grpo", "+unc"]),
        (0.0, 5.0, ["+unc"]),
        (0.4, 0.2, ["grpo", "+unc"]),
        (0.4, 5.0, ["+unc"]),
    ]

    class A:
        data, corrupt_seed, config, seeds, jobs, steps, sets = "data/demo", 0, "configs/demo.yaml", 5, 2, None, []

    cmd = nl.ablation_command(plan[3], A)
    assert "data.train=[demo:data/demo?corrupt=0.4&corrupt_seed=0]" in cmd and "objective.alpha=5.0" in cmd
    assert "logging.per_image=true" in cmd and cmd[cmd.index("--out") + 1] == str(Path("OUT/rho0.4/a5"))


def test_shortcut_plan_and_loss_share(tmp_path):
    spec = importlib.util.spec_from_file_location("hawkeye_bench_shortcut", ROOT / "bench" / "shortcut.py")
    sc = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sc
    try:
        spec.loader.exec_module(sc)
        plan = sc.cells([1e-4, 1.0], Path("OUT"))
        assert [(c["gamma0"], c["variants"]) for c in plan] == [(1e-4, ["grpo", "+perc"]), (1.0, ["+perc"])]
        run = tmp_path / "r"
        run.mkdir()
        recs = [
            {"event": "step", "step": 1, "gamma": 0.5, "perception_kl": 0.2, "loss": -0.5},
            {"event": "step", "step": 2, "gamma": 0.5, "perception_kl": 0.6, "loss": 0.3},
            {"event": "step", "step": 3, "gamma": 0.0, "perception_kl": 9.0, "loss": 9.0},  # γ = 0: not counted
        ]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
        assert sc.loss_share(run) == pytest.approx((0.5 * 0.2 + 0.5 * 0.6) / 2 / ((0.5 + 0.3) / 2))
        assert sc.loss_share(tmp_path / "none") is None
    finally:
        sys.modules.pop(spec.name, None)


def test_a_run_with_no_parsable_answer_counts_as_ranking_nothing():
    spec = importlib.util.spec_from_file_location("hawkeye_bench_studies", ROOT / "bench" / "studies.py")
    st = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(st)
    assert st.scored({"srcc": None, "plcc": None, "parse_rate": 0.0}) == {
        "srcc": 0.0,
        "plcc": 0.0,
        "parse_rate": 0.0,
        "failed": 1.0,
    }
    ok = st.scored({"srcc": 0.6, "plcc": 0.7, "parse_rate": 0.99})
    assert ok["srcc"] == 0.6 and ok["failed"] == 0.0
    assert st.scored({"srcc": None, "plcc": None, "parse_rate": None})["srcc"] is None  # no evaluation: missing
