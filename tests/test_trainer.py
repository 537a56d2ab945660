"""The trainer on the tiny model: a full step with every term on, vision-tower call counts,
exact resume, the NaN guard, Ctrl-C, and a short demo run through the CLI."""

import json
import math

import pytest
import torch

from hawkeye_lite.checkpoint import CHECKPOINTS, latest_checkpoint
from hawkeye_lite.config_loader import load_train_config
from hawkeye_lite.errors import TrainingError
from hawkeye_lite.schedules import gamma_at, lr_at
from hawkeye_lite.trainer import Trainer
from hawkeye_lite.trainset import batch_indices

PLOT_FILE = "plot.png"  # matplotlib is a dependency


def make_cfg(tiny, demo_dir, run_dir, *extra):
    return load_train_config(
        None,
        [
            f"output_dir={run_dir}",
            f"model.name_or_path={tiny}",
            "tiny_model.build=false",
            f"data.train=[demo:{demo_dir}]",
            "eval.before=false",
            "eval.after=false",
            "eval.max_images=6",
            "eval.samples=1",
            "optim.batch_size=2",
            "rollout.num_generations=3",
            "rollout.max_new_tokens=6",
            "optim.max_steps=4",
            "optim.warmup_steps=1",
            "optim.lr=1e-2",
            "checkpoint.every=0",
            "logging.progress=false",
            "logging.plot=false",
            "sft.steps=0",
            *extra,
        ],
    )


def lora_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters() if "lora_" in k}


def started(cfg, run_dir=None):
    t = Trainer(cfg, run_dir=run_dir)
    t.prepare()
    t.policy = t.load_policy(t.base)
    o = cfg.optim
    t.optimizer = t.make_optimizer(t.policy.trainable_parameters(), o.lr, o.betas, o.weight_decay)
    return t


# ----------------------------------------------------------------------------- schedules


def test_gamma_cosine_schedule():
    assert gamma_at(0.0, 1e-4, 5) == pytest.approx(1e-4)
    assert gamma_at(2.5, 1e-4, 5) == pytest.approx(0.5e-4)
    assert gamma_at(5.0, 1e-4, 5) == 0.0 and gamma_at(9.0, 1e-4, 5) == 0.0
    assert gamma_at(1.0, 1e-4, 5) > gamma_at(2.0, 1e-4, 5)


def test_lr_schedule():
    kw = dict(lr=1.0, warmup=2, min_ratio=0.0)
    assert [lr_at(s, 10, schedule="constant", **kw) for s in (0, 1, 5)] == [0.5, 1.0, 1.0]
    assert lr_at(2, 10, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_at(10, 10, schedule="cosine", **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(6, 10, schedule="linear", **kw) == pytest.approx(0.5)


def test_data_order_is_a_function_of_seed_and_step():
    a = [batch_indices(10, s, 0, batch_size=4, grad_accum=1, seed=0) for s in range(5)]
    assert a == [batch_indices(10, s, 0, batch_size=4, grad_accum=1, seed=0) for s in range(5)]
    first_epoch = sum(a, [])[:10]
    assert sorted(first_epoch) == list(range(10))  # every image once per epoch
    assert a != [batch_indices(10, s, 0, batch_size=4, grad_accum=1, seed=1) for s in range(5)]


# ----------------------------------------------------------------------------- one step


def test_full_step_every_term_on(tiny, demo_dir, tmp_path):
    cfg = make_cfg(
        tiny,
        demo_dir,
        tmp_path / "run",
        "objective.beta=0.1",
        "objective.perception.gamma0=0.05",
        "objective.perception.eta1=0.01",
        "objective.perception.eta2=0.01",
        "objective.perception.degraded_grad=true",
        "optim.mu=2",
        "optim.grad_accum=2",
        "model.lora.dropout=0.1",
    )
    t = started(cfg)
    with torch.no_grad():  # a non-zero adapter, so the reference (adapter off) differs from the policy
        for name, p in t.policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    before = lora_state(t)
    rec = t.rl_step()
    after = lora_state(t)
    assert rec["step"] == 1 and rec["skipped_updates"] == 0
    for key in (
        "reward",
        "reward_accuracy",
        "reward_format",
        "reward_repetition",
        "format_rate",
        "parse_rate",
        "uncertainty",
        "weight",
        "adv_std",
        "clip_frac",
        "clip_frac_low",
        "clip_frac_high",
        "ref_kl",
        "perception_kl",
        "entropy",
        "entropy_deg",
        "gamma",
        "lr",
        "grad_norm",
        "rollout_tok_s",
        "train_tok_s",
        "peak_mem_mb",
        "loss",
    ):
        assert key in rec and math.isfinite(rec[key]), key
    assert rec["ref_kl"] > 0 and rec["perception_kl"] > 0 and rec["gamma"] == pytest.approx(0.05)
    assert rec["grad_norm"] > 0
    assert any(not torch.equal(before[k], after[k]) for k in before), "the adapter did not move"


def test_vision_tower_runs_once_per_image_per_step(tiny, demo_dir, tmp_path):
    cfg = make_cfg(tiny, demo_dir, tmp_path / "run", "objective.beta=0.04", "optim.mu=2")
    t = started(cfg)
    calls = []

    def count(module, args, kwargs, out):
        grid = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
        calls.append(grid.shape[0])  # images in this call

    hook = t.policy.backbone.visual.register_forward_hook(count, with_kwargs=True)
    try:
        t.rl_step()
    finally:
        hook.remove()
    # Rollouts (G=3), the reference pass, the degraded pass and two policy updates, yet the tower
    # ran twice: once on the 2 originals, once on their 2 degraded partners.
    assert calls == [2, 2]


def test_beta_zero_skips_the_reference_pass(tiny, demo_dir, tmp_path):
    cfg = make_cfg(tiny, demo_dir, tmp_path / "run", "objective.beta=0", "objective.perception.enabled=false")
    t = started(cfg)
    entered = []
    original = type(t.policy).reference

    def spy(self):
        entered.append(1)
        return original(self)

    type(t.policy).reference = spy
    try:
        rec = t.rl_step()
    finally:
        type(t.policy).reference = original
    assert entered == [] and "ref_kl" not in rec and "perception_kl" not in rec


# ----------------------------------------------------------------------------- resume, NaN, Ctrl-C


def test_resume_is_exact(tiny, demo_dir, tmp_path):
    # LoRA dropout on: the restored torch RNG matters, not only the weights and the optimizer.
    extra = ("model.lora.dropout=0.2", "optim.max_steps=4", "checkpoint.keep_last=1")
    straight = Trainer(make_cfg(tiny, demo_dir, tmp_path / "a", *extra))
    straight.run()
    split = Trainer(make_cfg(tiny, demo_dir, tmp_path / "b", *extra))
    res = split.run(max_steps=2)
    assert res.steps == 2 and latest_checkpoint(tmp_path / "b").name == "step-000002"
    resumed = Trainer(make_cfg(tiny, demo_dir, tmp_path / "b", *extra))
    res = resumed.run(resume=True)
    assert res.steps == 4
    a, b = lora_state(straight), lora_state(resumed)
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # keep_last=1: only the newest checkpoint stays; the final adapter is saved.
    assert [p.name for p in (tmp_path / "b" / CHECKPOINTS).iterdir()] == ["step-000004"]
    assert (tmp_path / "b" / "final" / "adapter_model.safetensors").is_file()


def test_nan_loss_is_skipped_and_stops_the_run(tiny, demo_dir, tmp_path, monkeypatch):
    import hawkeye_lite.update as update_mod

    cfg = make_cfg(tiny, demo_dir, tmp_path / "run", "optim.max_bad_steps=2", "objective.perception.enabled=false")
    t = started(cfg)
    real = update_mod.policy_loss_from_hidden

    def nan_loss(*args, **kw):
        loss, metrics = real(*args, **kw)
        return loss * float("nan"), metrics

    monkeypatch.setattr(update_mod, "policy_loss_from_hidden", nan_loss)
    before = lora_state(t)
    rec = t.rl_step()
    assert rec["skipped_updates"] == 1 and t.bad_streak == 1
    after = lora_state(t)
    assert all(torch.equal(before[k], after[k]) for k in before), "a NaN step reached the weights"
    with pytest.raises(TrainingError, match="2 consecutive"):
        t.rl_step()
    # a good step resets the count
    monkeypatch.setattr(update_mod, "policy_loss_from_hidden", real)
    t.bad_streak = 1
    t.rl_step()
    assert t.bad_streak == 0


def test_ctrl_c_writes_a_checkpoint(tiny, demo_dir, tmp_path, monkeypatch):
    cfg = make_cfg(tiny, demo_dir, tmp_path / "run")
    t = Trainer(cfg)
    real = Trainer.rl_step
    calls = []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "rl_step", interrupted)
    res = t.run()
    assert res.interrupted and res.steps == 1
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.name == "step-000001"
    state = json.loads((ckpt / "training_state" / "state.json").read_text())
    assert state["step"] == 1
    # Checkpoints are loadable without pickle: optimizer with weights_only, RNG as safetensors.
    torch.load(ckpt / "training_state" / "optimizer.pt", weights_only=True)


# ----------------------------------------------------------------------------- the demo, end to end


def test_demo_cli_few_steps(tiny, demo_dir, tmp_path):
    from typer.testing import CliRunner

    from hawkeye_lite.cli import app
    from hawkeye_lite.scorer import Scorer

    run = tmp_path / "demo"
    args = [
        "train",
        "--set",
        f"output_dir={run}",
        "--set",
        f"model.name_or_path={tmp_path / 'tiny'}",
        "--set",
        f"data.train=[demo:{demo_dir}]",
        "--set",
        "sft.steps=4",
        "--set",
        "sft.batch_size=4",
        "--set",
        "optim.max_steps=2",
        "--set",
        "optim.batch_size=2",
        "--set",
        "rollout.num_generations=2",
        "--set",
        "rollout.max_new_tokens=12",
        "--set",
        "eval.samples=1",
        "--set",
        "eval.max_images=6",
        "--set",
        "logging.progress=false",
        "--set",
        "tiny_model.vision_pretrain_steps=3",
    ]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "before" in out.output and "after" in out.output
    # The demo says what it shows: a label-free start, then before/after and where the curves are.
    assert "the model has never seen a quality label; RL will teach it from the reward" in out.output
    closing = [line for line in out.output.splitlines() if line.startswith("RL took held-out SRCC on demo from ")]
    assert len(closing) == 1 and closing[0].endswith(str(run / PLOT_FILE)), out.output
    for path in (
        "config.yaml",
        "metrics.jsonl",
        "sft-base/config.json",
        "final/adapter_model.safetensors",
        "final/adapter_config.json",
        "final/hawkeye.json",
        PLOT_FILE,
    ):
        assert (run / path).exists(), path
    events = [json.loads(l)["event"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert events.count("step") == 2 and events.count("eval") == 2 and events.count("sft") == 4
    # The adapter's base is the warm-started model, and the Scorer loads the run.
    base = json.loads((run / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base.endswith("sft-base")
    # The completion cap it was trained with travels with the adapter and is the Scorer's default.
    assert json.loads((run / "final" / "hawkeye.json").read_text())["max_new_tokens"] == 12
    scorer = Scorer.from_pretrained(run / "final")
    assert scorer.max_new_tokens == 12
    result = scorer.score([str(sorted((demo_dir / "images").glob("*.png"))[0])], samples=1)
    assert len(result) == 1 and result[0].ok
    # A bad override fails before any work, naming the key.
    out = CliRunner().invoke(app, ["train", "--set", "optim.lrr=1"])
    assert out.exit_code == 2 and "optim.lrr" in out.output


def test_sigint_finishes_the_step_then_checkpoints(tiny, demo_dir, tmp_path, monkeypatch):
    import os
    import signal

    cfg = make_cfg(tiny, demo_dir, tmp_path / "run")
    t = Trainer(cfg)
    real = Trainer.rl_step
    calls = []

    def ctrl_c_during_step_two(self):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, in the middle of the step
        return real(self)

    monkeypatch.setattr(Trainer, "rl_step", ctrl_c_during_step_two)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under `nohup ... &`
    res = t.run()
    assert res.interrupted and res.steps == 2 and len(calls) == 2
    assert latest_checkpoint(tmp_path / "run").name == "step-000002"
    assert not (tmp_path / "run" / "final").exists()
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_only_a_label_free_start_is_announced_as_one():
    from hawkeye_lite.config_loader import load_train_config
    from hawkeye_lite.runloop import label_free

    assert label_free(load_train_config(None, []))  # the demo: tiny model, format-only warm start
    assert label_free(load_train_config(None, ["sft.steps=0"]))
    assert not label_free(load_train_config(None, ["sft.target=mos"]))  # configs/demo-sft.yaml
    assert not label_free(load_train_config(None, ["tiny_model.build=false"]))  # a real checkpoint knows things


@pytest.mark.parametrize("use_uncertainty", [True, False])
def test_per_image_records_name_each_images_uncertainty_and_weight(tiny, demo_dir, tmp_path, use_uncertainty):
    """logging.per_image: the step record lists the step's images (those step_records picks) with
    their u, w = exp(-alpha u) (1 without uncertainty weighting) and their group's |advantages|."""
    import math

    from hawkeye_lite.config_loader import load_train_config
    from hawkeye_lite.trainer import Trainer
    from hawkeye_lite.trainset import step_records

    run = tmp_path / "run"
    cfg = load_train_config(
        None,
        [
            f"output_dir={run}",
            f"model.name_or_path={tiny}",
            "tiny_model.build=false",
            f"data.train=[demo:{demo_dir}?corrupt=0.5]",
            "eval.before=false",
            "eval.after=false",
            "eval.every=0",
            "optim.batch_size=3",
            "rollout.num_generations=4",
            "rollout.max_new_tokens=8",
            "optim.max_steps=2",
            "sft.steps=0",
            "objective.alpha=2.0",
            f"objective.use_uncertainty={str(use_uncertainty).lower()}",
            "logging.per_image=true",
            "logging.progress=false",
            "logging.plot=false",
        ],
    )
    t = Trainer(cfg)
    t.run()
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s["event"] == "step"]
    assert len(steps) == 2
    for i, rec in enumerate(steps):
        im = rec["images"]
        assert im["id"] == [r.id for r in step_records(t.data.train, i, cfg)[0]]
        assert set(im) == {"id", "u", "w", "reward_acc", "adv_abs"} and all(len(v) == 3 for v in im.values())
        for u, w in zip(im["u"], im["w"]):
            assert 0.0 <= u <= 1.0
            assert w == pytest.approx(math.exp(-2.0 * u) if use_uncertainty else 1.0, rel=1e-6)
        assert rec["uncertainty"] == pytest.approx(sum(im["u"]) / 3, rel=1e-6)
        assert all(a >= 0 for a in im["adv_abs"])
