"""Training configuration: YAML + --set overrides, type coercion, and errors that name the key."""

from pathlib import Path

import pytest

from hawkeye_lite.config import ConfigError, TrainConfig
from hawkeye_lite.config_loader import dump_train_config, load_train_config, train_config_from_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_demo_yaml_is_the_builtin_default():
    # `hawkeye-lite train` with no --config uses the dataclass defaults; configs/demo.yaml must say the same.
    assert load_train_config(CONFIGS / "demo.yaml") == TrainConfig()


@pytest.mark.parametrize("name", ["qwen2.5-vl-7b-koniq.yaml", "qwen2.5-vl-3b-koniq.yaml"])
def test_paper_configs_load(name):
    cfg = load_train_config(CONFIGS / name)
    assert cfg.model.quantization == "nf4"
    assert cfg.objective.alpha == 0.2 and cfg.objective.eps_high == 0.28
    assert cfg.objective.perception.gamma0 == 1e-4 and cfg.objective.perception.kl_zero_epoch == 5
    assert cfg.optim.max_grad_norm == 0.1 and cfg.optim.warmup_steps == 50 and cfg.optim.schedule == "cosine"
    assert cfg.sft.steps == 0


def test_overrides_are_coerced_to_field_types():
    cfg = load_train_config(
        None,
        [
            "optim.lr=1e-4",  # PyYAML reads this as a string; the float field takes it
            "rollout.num_generations=4",
            "objective.perception.degradation.kinds=[noise, blur]",
            "model.lora.r=8",
            "optim.max_steps=null",
            "optim.epochs=2",
            "objective.scale_rewards=false",
            "eval.max_images=none",
        ],
    )
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.rollout.num_generations == 4
    assert cfg.objective.perception.degradation.kinds == ("noise", "blur")
    assert cfg.model.lora.r == 8 and cfg.model.lora.alpha == 32  # the rest of the section keeps its default
    assert cfg.optim.max_steps is None and cfg.optim.epochs == 2.0
    assert cfg.objective.scale_rewards is False


def test_resolved_config_round_trips():
    import yaml

    cfg = load_train_config(None, ["optim.lr=3e-4", "objective.loss_type=dapo"])
    assert train_config_from_dict(yaml.safe_load(dump_train_config(cfg))) == cfg


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.lrr=1", "optim.lrr"),
        ("nonsense=1", "nonsense"),
        ("objective.perception.eta2=0.01", "objective.perception.eta2"),  # no gradient without degraded_grad
        ("rollout.num_generations=1", "rollout.num_generations"),
        ("optim.lr=fast", "optim.lr"),
        ("model.lora.r=0", "model.lora.r"),
        ("model.quantization=int8", "model.quantization"),
        ("objective.loss_type=ppo", "objective.loss_type"),
        ("optim.max_steps=null", "optim.max_steps"),  # neither steps nor epochs
        ("optim.lr.x=1", "optim.lr.x"),
        ("reward.require_think=true", "reward.require_think"),  # would punish the answer no_think asks for
        ("objective.use_uncertainty=maybe", "objective.use_uncertainty"),
        ("model.lora=null", "objective.beta"),  # no adapter -> no reference policy
    ],
)
def test_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_train_config(None, [override])
    assert str(e.value).startswith(key + ":"), str(e.value)


def test_combination_errors():
    with pytest.raises(ConfigError, match="^sft.steps:"):
        load_train_config(None, ["sft.steps=10", "model.quantization=nf4"])
    with pytest.raises(ConfigError, match="^optim.optimizer:"):
        load_train_config(None, ["optim.optimizer=adamw_8bit", "model.device=cpu"])
    # eta2 is fine once the degraded pass has a gradient
    cfg = load_train_config(None, ["objective.perception.eta2=0.01", "objective.perception.degraded_grad=true"])
    assert cfg.objective.perception.eta2 == 0.01


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-4\n  warmup: 5\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(bad)
    assert str(bad) in str(e.value) and "optim.warmup" in str(e.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_train_config(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "missing.yaml")
