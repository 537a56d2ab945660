"""bench/ablation.py: the statistics (against numpy / scipy and cases known exactly), the tables
with missing metrics, the run plan (overrides, the γ run shared with `both`), the states of run
folders made by hand (no model), and one tiny end-to-end ablation on the tiny model."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def ab():
    spec = importlib.util.spec_from_file_location("hawkeye_bench_ablation", ROOT / "bench" / "ablation.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


# ----------------------------------------------------------------------------- statistics


def test_mean_std_match_numpy_and_skip_missing(ab):
    x = [0.71, 0.69, 0.705, 0.66, 0.7]
    n, mean, std = ab.mean_std(x + [None, float("nan"), "x", True])
    assert n == 5
    assert mean == pytest.approx(np.mean(x), abs=1e-15)
    assert std == pytest.approx(np.std(x, ddof=1), abs=1e-15)
    assert ab.mean_std([0.5])[:2] == (1, 0.5) and math.isnan(ab.mean_std([0.5])[2])  # one seed: no spread
    n, mean, std = ab.mean_std([None])
    assert n == 0 and math.isnan(mean) and math.isnan(std)


def test_paired_differences_pair_by_seed(ab):
    d = ab.paired_differences({0: 0.7, 1: 0.6, 2: None, 4: 0.5}, {0: 0.65, 1: 0.62, 2: 0.6, 3: 0.6})
    assert d == pytest.approx({0: 0.05, 1: -0.02})  # seed 2 unmeasured, 3 and 4 unpaired


def test_bootstrap_all_equal_is_that_point(ab):
    lo, hi = ab.bootstrap_ci([0.013] * 5)
    assert lo == pytest.approx(0.013, abs=1e-15) and hi == pytest.approx(0.013, abs=1e-15)


def test_bootstrap_of_two_values_is_their_range(ab):
    # Resampling {a, b} gives a, (a+b)/2, b with probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5%
    # quantiles of 10,000 resampled means are a and b exactly (each end holds ~25% of the mass).
    lo, hi = ab.bootstrap_ci([0.02, -0.01], seed=3)
    assert (lo, hi) == (-0.01, 0.02)


def test_bootstrap_fewer_than_two_values_is_undefined(ab):
    assert all(math.isnan(v) for v in ab.bootstrap_ci([0.1]))
    assert all(math.isnan(v) for v in ab.bootstrap_ci([]))


def _scipy_rng(fn, gen):
    # scipy 1.15 named the generator `rng`; the lowest scipy we allow (1.11) calls it `random_state`.
    import inspect

    return {"rng" if "rng" in inspect.signature(fn).parameters else "random_state": gen}


def test_bootstrap_matches_scipy_percentile(ab):
    from scipy.stats import bootstrap

    rng = np.random.default_rng(7)
    for n in (5, 8):
        d = rng.normal(0.01, 0.02, size=n)
        lo, hi = ab.bootstrap_ci(d, seed=0)
        ref = bootstrap(
            (d,),
            np.mean,
            n_resamples=10_000,
            confidence_level=0.95,
            method="percentile",
            **_scipy_rng(bootstrap, np.random.default_rng(12345)),
        ).confidence_interval
        # Two independent Monte-Carlo estimates of the same quantiles: the standard error of a
        # 2.5% quantile of 10,000 draws is ~0.03 bootstrap-sd, so 0.15 sd is ~4 sigma.
        sd = d.std(ddof=0) / math.sqrt(n)
        assert lo == pytest.approx(ref.low, abs=0.15 * sd)
        assert hi == pytest.approx(ref.high, abs=0.15 * sd)
    # Reproducible: the same seed gives the same interval, another seed a (slightly) different one.
    assert ab.bootstrap_ci(d, seed=0) == ab.bootstrap_ci(d, seed=0)
    assert ab.bootstrap_ci(d, seed=0) != ab.bootstrap_ci(d, seed=1)


def test_parse_gammas(ab):
    assert ab.parse_gammas("0,1e-4,1e-2,1") == [0.0, 1e-4, 1e-2, 1.0]
    assert ab.parse_gammas("none") == [] and ab.parse_gammas("") == []
    for bad in ("0,x", "-1", "1e-4,0.0001", "nan"):
        with pytest.raises(ValueError, match="--gammas"):
            ab.parse_gammas(bad)
    assert [ab.gamma_label(g) for g in (0.0, 1e-4, 0.01, 1.0)] == ["0", "0.0001", "0.01", "1"]


def test_summarise_and_table_with_missing_metrics(ab):
    rows = {
        "grpo": {0: {"srcc": 0.70, "plcc": 0.77}, 1: {"srcc": 0.68, "plcc": 0.76}, 2: {"srcc": 0.69, "plcc": 0.78}},
        "both": {
            0: {"srcc": 0.71, "plcc": 0.78, "pkl": 2e-5},
            1: {"srcc": 0.70, "plcc": None, "pkl": 4e-5},
            2: {"srcc": 0.69, "plcc": 0.79},
        },
        "+unc": {0: {"srcc": 0.72}},
    }
    s = ab.summarise(rows, rows["grpo"], seed=0)
    both = s["both"]
    assert both["metrics"]["srcc"]["n"] == 3 and both["metrics"]["plcc"]["n"] == 2
    assert both["metrics"]["pkl"]["mean"] == pytest.approx(3e-5)
    assert both["delta"]["srcc"]["mean"] == pytest.approx(np.mean([0.01, 0.02, 0.0]))
    assert both["delta"]["plcc"]["seeds"] == [0, 2]
    assert s["grpo"]["delta"] == {}  # the baseline has no difference to itself
    assert s["+unc"]["delta"]["srcc"]["n"] == 1 and math.isnan(s["+unc"]["delta"]["srcc"]["lo"])
    table = ab.markdown_table(s, "variant")
    lines = table.splitlines()
    assert lines[0].startswith(
        "| variant | seeds | SRCC | PLCC | ΔSRCC vs grpo [95% CI] | ΔPLCC vs grpo [95% CI] | sens |"
    )
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    grpo, both_line, unc = lines[2:]
    assert "| baseline | baseline |" in grpo and grpo.endswith("| — | — | — | — | — |")  # no mechanism metrics
    assert "0.7000 ± 0.0100" in both_line and "(n=2)" in both_line  # PLCC measured in 2 of 3 seeds
    assert "+0.0100 [" in both_line and "3.00e-05 ± 1.41e-05 (n=2)" in both_line
    assert "| +unc | 1 | 0.7200 | — | +0.0200 (1 seed) | — |" in unc
    # No baseline at all (grpo not run): every difference is missing, nothing fails.
    no_base = ab.markdown_table(ab.summarise({"both": rows["both"]}, None), "variant")
    assert no_base.splitlines()[2].split(" | ")[4:6] == ["—", "—"]


def test_eval_metrics_read_what_is_there(ab, tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(
            [
                json.dumps({"event": "eval", "tag": "before RL", "srcc": 0.5, "plcc": 0.6, "datasets": {}}),
                json.dumps({"event": "step", "step": 1}),
                json.dumps(
                    {
                        "event": "eval",
                        "tag": "after RL",
                        "srcc": float("nan"),
                        "plcc": 0.7,
                        "sens": 0.1,
                        "datasets": {"a": {"pkl": 1.0}, "b": {"pkl": 3.0, "score_std": 0.2}},
                    }
                ),
                '{"event": "eval", "tag": "after',
                "",
            ]
        )
    )  # a line cut short by a kill
    before, after = ab.read_evals(tmp_path)
    assert before["srcc"] == 0.5 and after["plcc"] == 0.7
    m = ab.eval_metrics(after)
    assert m["srcc"] is None and m["plcc"] == 0.7 and m["sens"] == 0.1
    assert m["pkl"] == 2.0  # every dataset has it: their mean, as the trainer does for srcc
    assert m["score_std"] is None and m["pkl_all"] is None  # one dataset lacks it / nobody has it
    assert ab.eval_metrics(None) == dict.fromkeys(ab.METRICS + ("parse_rate",))


def test_a_collapsed_run_counts_as_srcc_zero_not_as_missing(ab):
    """A constant answer parses (parse_rate > 0) but has undefined SRCC/PLCC: it must weigh in the
    variant's mean as 0 rather than drop out and leave only the runs that learned."""
    collapsed = {
        "event": "eval",
        "tag": "after RL",
        "srcc": float("nan"),
        "plcc": float("nan"),
        "parse_rate": 1.0,
        "score_std": 0.0,
    }
    learned = {"event": "eval", "tag": "after RL", "srcc": 0.6, "plcc": 0.5, "parse_rate": 0.98}
    unparsed = {"event": "eval", "tag": "after RL", "srcc": float("nan"), "plcc": float("nan"), "parse_rate": 0.0}
    m = ab.eval_metrics(collapsed)
    assert m["srcc"] == 0.0 and m["plcc"] == 0.0 and m["collapsed"] == 1.0
    assert ab.eval_metrics(learned)["collapsed"] == 0.0 and ab.eval_metrics(learned)["srcc"] == 0.6
    assert ab.eval_metrics(unparsed)["srcc"] is None  # nothing parsed: missing, not a constant
    rows = {"both": {0: ab.eval_metrics(learned), 1: m}}
    summary = ab.summarise(rows, None)
    assert summary["both"]["metrics"]["srcc"]["n"] == 2
    assert summary["both"]["metrics"]["srcc"]["mean"] == pytest.approx(0.3)
    assert summary["both"]["metrics"]["collapsed"]["mean"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- the plan


def plan(ab, out, **kw):
    args = dict(
        base=str(out / "warm" / "sft-base"),
        seeds=[0, 1],
        variants=list(ab.VARIANTS),
        gammas=[0.0, 1e-4, 1e-2, 1.0],
        steps=None,
        sets=[],
    )
    args.update(kw)
    return ab.plan_runs(str(DEMO), out, **args)


def test_plan_runs_overrides_and_shared_gamma_run(ab, tmp_path):
    runs = plan(ab, tmp_path, steps=7, sets=["optim.lr=3e-4", "seed=9"])
    names = [r.name for r in runs]
    # Seed-major; γ0 = 1e-4 is the config's gamma0, so it is `both`, not a fifth run per seed.
    assert names == [
        "grpo-seed0",
        "unc-seed0",
        "perc-seed0",
        "both-seed0",
        "both-g0-seed0",
        "both-g0.01-seed0",
        "both-g1-seed0",
        "grpo-seed1",
        "unc-seed1",
        "perc-seed1",
        "both-seed1",
        "both-g0-seed1",
        "both-g0.01-seed1",
        "both-g1-seed1",
    ]
    by = {r.name: r for r in runs}
    assert by["both-seed0"].rows == [("variants", "both"), ("gamma", "0.0001")]
    assert by["both-g0-seed1"].rows == [("gamma", "0")]
    for r in runs:
        c = r.config
        assert c["model"]["name_or_path"] == str(tmp_path / "warm" / "sft-base")  # one fixed base
        assert c["tiny_model"]["build"] is False and c["sft"]["steps"] == 0
        assert c["seed"] == r.seed  # the RL seed wins over the user's seed=9 (which seeds the base)
        assert c["optim"]["max_steps"] == 7 and c["optim"]["lr"] == 3e-4
        assert c["output_dir"] == str(tmp_path / "runs" / r.name) and r.dir == tmp_path / "runs" / r.name
    flags = {
        n: (by[n].config["objective"]["use_uncertainty"], by[n].config["objective"]["perception"]["enabled"])
        for n in ("grpo-seed0", "unc-seed0", "perc-seed0", "both-seed0")
    }
    assert flags == {
        "grpo-seed0": (False, False),
        "unc-seed0": (True, False),
        "perc-seed0": (False, True),
        "both-seed0": (True, True),
    }
    assert [by[f"both-g{g}-seed0"].config["objective"]["perception"]["gamma0"] for g in ("0", "0.01", "1")] == [
        0,
        0.01,
        1,
    ]


def test_plan_shares_whichever_gamma_equals_the_configs(ab, tmp_path):
    runs = plan(ab, tmp_path, seeds=[0], sets=["objective.perception.gamma0=1e-2"])
    by = {r.name: r for r in runs}
    assert "both-g0.01-seed0" not in by and "both-g0.0001-seed0" in by
    assert by["both-seed0"].rows == [("variants", "both"), ("gamma", "0.01")]
    # Without a sweep, and with a subset of variants:
    assert [r.name for r in plan(ab, tmp_path, variants=["grpo", "both"], gammas=[], seeds=[0])] == [
        "grpo-seed0",
        "both-seed0",
    ]


def test_plan_rejects_a_bad_override_before_any_work(ab, tmp_path):
    from hawkeye_lite.config import ConfigError

    with pytest.raises(ConfigError, match="optim.lrr"):
        plan(ab, tmp_path, sets=["optim.lrr=1"])
    assert ab.main(["--config", str(DEMO), "--out", str(tmp_path / "o"), "--set", "optim.lrr=1"]) == 2
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- run folders by hand


def fake_run(run, *, after=None, before=None, final=True, checkpoint=False, config=None):
    """A run folder as the trainer leaves it, written by hand (no model)."""
    d = run.dir
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.json").write_text('{"id": "fake"}')
    (d / "config.yaml").write_text(yaml.safe_dump(config or run.config, sort_keys=False))
    lines = []
    if before is not None:
        lines.append({"event": "eval", "tag": "before RL", "step": 0, **before})
    lines.append({"event": "step", "step": 1, "reward": 1.0})
    if after is not None:
        lines.append({"event": "eval", "tag": "after RL", "step": 1, **after})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if checkpoint:
        st = d / "checkpoints" / "step-000001" / "training_state"
        st.mkdir(parents=True)
        (st / "state.json").write_text('{"step": 1}')
    if final:
        (d / "final").mkdir()


def test_run_states(ab, tmp_path):
    runs = {r.name: r for r in plan(ab, tmp_path, seeds=[0], gammas=[])}
    fake_run(runs["grpo-seed0"], after={"srcc": 0.7, "plcc": 0.8})
    fake_run(runs["unc-seed0"], final=False, checkpoint=True)  # killed mid-run
    fake_run(runs["perc-seed0"], final=False)  # killed before its first checkpoint
    other = json.loads(json.dumps(runs["both-seed0"].config))
    other["optim"]["lr"] = 5e-4
    other["logging"]["every"] = 7  # logging keys do not change a run's numbers
    fake_run(runs["both-seed0"], after={"srcc": 0.7}, config=other)
    states = {n: ab.run_state(r) for n, r in runs.items()}
    assert states["grpo-seed0"] == ("done", "")
    assert states["unc-seed0"] == ("resume", "")
    assert states["perc-seed0"][0] == "restart"
    assert states["both-seed0"][0] == "changed" and "optim.lr" in states["both-seed0"][1]
    assert "logging" not in states["both-seed0"][1]
    # A final/ without the "after" eval in the log is not finished.
    runs["grpo-seed0"].dir.joinpath("metrics.jsonl").write_text("")
    assert ab.run_state(runs["grpo-seed0"])[0] == "restart"
    assert ab.train_command(runs["unc-seed0"], "resume", str(DEMO))[-3:] == [
        "train",
        "--resume",
        str(runs["unc-seed0"].dir),
    ]
    cmd = ab.train_command(runs["perc-seed0"], "restart", str(DEMO))
    assert cmd[-1] == "--overwrite" and "seed=0" in cmd and ["--config", str(DEMO)] == cmd[cmd.index("--config") :][:2]
    # main refuses the changed folder before any work, naming it.
    assert ab.main(["--config", str(DEMO), "--out", str(tmp_path), "--seeds", "1", "--gammas", "none"]) == 2


def fake_warm_start(ab, out, sets):
    """OUT/warm/sft-base with the settings the ablation's warm start would record (no model)."""
    from hawkeye_lite.runfolder import write_settings
    from hawkeye_lite.warmstart import sft_settings

    base = out / "warm" / "sft-base"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    write_settings(base, sft_settings(ab.warm_config(str(DEMO), out, sets)))


def test_finished_runs_are_not_rerun_and_make_the_tables(ab, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sets = [f"model.name_or_path={tmp_path / 'no-model'}", "tiny_model.build=false"]
    fake_warm_start(ab, tmp_path / "out", sets)
    runs = plan(
        ab,
        tmp_path / "out",
        base=str((tmp_path / "out" / "warm" / "sft-base").resolve()),
        seeds=[0, 1, 2],
        variants=["grpo", "both"],
        gammas=[0.0, 1e-4],
        sets=sets,
    )
    after = {
        ("grpo", 0): 0.70,
        ("grpo", 1): 0.68,
        ("grpo", 2): 0.69,
        ("both", 0): 0.72,
        ("both", 1): 0.69,
        ("both", 2): 0.70,
        ("both-g0", 0): 0.71,
        ("both-g0", 1): 0.70,
        ("both-g0", 2): 0.69,
    }
    for r in runs:
        slug = r.name.rsplit("-seed", 1)[0]
        extra = {"sens": 0.3, "pkl": 1e-4} if slug == "both" else {}
        fake_run(r, before={"srcc": 0.7, "plcc": 0.78}, after={"srcc": after[slug, r.seed], "plcc": 0.8, **extra})
    monkeypatch.setattr(ab.subprocess, "Popen", lambda *a, **k: pytest.fail("a finished run was started again"))
    argv = [
        "--config",
        str(DEMO),
        "--out",
        str(tmp_path / "out"),
        "--seeds",
        "3",
        "--variants",
        "grpo",
        "both",
        "--gammas",
        "0,1e-4",
        "--jobs",
        "2",
        "--bootstrap-seed",
        "5",
    ] + sum((["--set", s] for s in sets), [])
    assert ab.main(argv) == 0
    printed = capsys.readouterr().out
    assert "warm start: reusing" in printed and "9 done" in printed
    assert "numpy Generator seed 5" in printed and "machine: " in printed and "command: bench/ablation.py" in printed
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert md in printed
    assert (
        "| warm start (before RL; all runs) | 6 | 0.7000 ± 0.0000 | 0.7800 ± 0.0000 | — |" in md
    )  # the six runs' identical before-RL evals
    both = next(line for line in md.splitlines() if line.startswith("| both |"))
    assert "| both | 3 | 0.7033 ± 0.0153 |" in both and "+0.0133 [" in both and "| 0.3000 ± 0.0000 |" in both
    g0 = next(line for line in md.splitlines() if line.startswith("| 0 |"))
    assert "| 0 | 3 | 0.7000 ± 0.0100 |" in g0 and "+0.0100 [" in g0
    assert "| 0.0001 | 3 | 0.7033 ± 0.0153 |" in md  # the `both` runs themselves
    data = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert data["bootstrap"] == {"seed": 5, "resamples": 10000, "level": 0.95, "method": "percentile"}
    assert len(data["runs"]) == 9 and all(r["state"] == "done" for r in data["runs"])
    d = data["tables"]["variants"]["summary"]["both"]["delta"]["srcc"]
    lo, hi = ab.bootstrap_ci([0.02, 0.01, 0.01], seed=5)
    assert d["mean"] == pytest.approx(0.04 / 3) and (d["lo"], d["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert data["tables"]["variants"]["summary"]["grpo"]["metrics"]["sens"] == {"n": 0, "mean": None, "std": None}


def test_a_new_warm_start_under_old_runs_is_refused(ab, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = [f"model.name_or_path={tmp_path / 'no-model'}", "tiny_model.build=false"]
    runs = plan(
        ab,
        tmp_path / "out",
        base=str((tmp_path / "out" / "warm" / "sft-base").resolve()),
        seeds=[0],
        variants=["grpo"],
        gammas=[],
        sets=sets,
    )
    fake_run(runs[0], after={"srcc": 0.7})
    # No OUT/warm/sft-base (deleted, or another config's): a new one would not be these runs' base.
    assert (
        ab.main(
            [
                "--config",
                str(DEMO),
                "--out",
                str(tmp_path / "out"),
                "--seeds",
                "1",
                "--variants",
                "grpo",
                "--gammas",
                "none",
            ]
            + sum((["--set", s] for s in sets), [])
        )
        == 2
    )


# ----------------------------------------------------------------------------- end to end


def test_tiny_ablation_end_to_end(ab, tiny, demo_dir, tmp_path, capsys):
    out = tmp_path / "abl"
    sets = [
        f"model.name_or_path={tiny}",
        "tiny_model.build=false",
        f"data.train=[demo:{demo_dir}]",
        "sft.steps=2",
        "sft.batch_size=2",
        "optim.batch_size=2",
        "optim.warmup_steps=0",
        "rollout.num_generations=2",
        "rollout.max_new_tokens=6",
        "eval.samples=2",
        "eval.max_images=4",
        "logging.plot=false",
        "checkpoint.every=0",
        "data.check_images=none",
    ]
    argv = [
        "--config",
        str(DEMO),
        "--out",
        str(out),
        "--seeds",
        "1",
        "--variants",
        "grpo",
        "both",
        "--gammas",
        "1e-4",
        "--steps",
        "1",
        "--jobs",
        "2",
    ] + sum((["--set", s] for s in sets), [])
    assert ab.main(argv) == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert "warm start: built" in printed and "2 to start" in printed
    assert (out / "warm" / "sft-base" / "config.json").is_file()
    for name in ("grpo-seed0", "both-seed0"):
        run = out / "runs" / name
        assert (run / "final").is_dir() and ab.finished(run), (out / "logs" / f"{name}.log").read_text()
        assert (out / "logs" / f"{name}.log").is_file()
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["model"]["name_or_path"] == str((out / "warm" / "sft-base").resolve()) and cfg["sft"]["steps"] == 0
        base = json.loads((run / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert base.endswith("sft-base")  # the reference of the KL term is the shared warm start
    assert not (out / "runs" / "both-g0.0001-seed0").exists()  # the γ0 = 1e-4 row is the `both` run
    data = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in data["runs"]] == ["grpo-seed0", "both-seed0"]
    assert all(r["finished"] and r["seconds"] > 0 for r in data["runs"])
    # The same base and evaluation seed: the runs' before-RL evaluations agree exactly.
    assert data["runs"][0]["before"] == data["runs"][1]["before"]
    assert "| 0.0001 | 1 |" in (out / "ablation.md").read_text()
    # Again: nothing is rerun.
    assert ab.main(argv) == 0
    assert "2 done" in capsys.readouterr().out
