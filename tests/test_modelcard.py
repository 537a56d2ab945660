"""Model cards in final/ and every checkpoint (written by a short training run, which also
reports to TensorBoard and draws its plot), loading the adapter the way the card says with plain
peft, and `hawkeye-lite push` up to the upload call (HfApi replaced: no network)."""

import json

import pytest
import yaml
from _tiny import tiny_model_dir
from typer.testing import CliRunner

from hawkeye_lite.cli import app
from hawkeye_lite.config import TrainConfig
from hawkeye_lite.config_loader import load_train_config
from hawkeye_lite.modelcard import render_model_card


def front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_metadata_and_sections():
    cfg = load_train_config(None, ["model.name_or_path=Qwen/Qwen2.5-VL-7B-Instruct", "sft.steps=0", "model.lora.r=64"])
    evals = [
        {
            "event": "eval",
            "tag": "after RL",
            "step": 120,
            "datasets": {"koniq": {"n": 2010, "srcc": 0.9123, "plcc": 0.9211, "plcc_fit": 0.93, "parse_rate": 1.0}},
        }
    ]
    text = render_model_card(
        cfg, base="Qwen/Qwen2.5-VL-7B-Instruct", step=120, total_steps=120, evals=evals, repo_id="me/hawkeye-koniq"
    )
    meta = front_matter(text)
    assert meta["base_model"] == "Qwen/Qwen2.5-VL-7B-Instruct" and meta["library_name"] == "peft"
    assert (
        "base_model:adapter:Qwen/Qwen2.5-VL-7B-Instruct" in meta["tags"]
        and meta["pipeline_tag"] == "image-text-to-text"
    )
    assert "# me/hawkeye-koniq" in text and "LoRA r=64" in text
    assert "| after RL | 120 | koniq | 2010 | 0.9123 | 0.9211 | 0.9300 | n/a | n/a | 1.0000 |" in text
    assert 'Scorer.from_pretrained("me/hawkeye-koniq")' in text
    assert 'PeftModel.from_pretrained(base, "me/hawkeye-koniq")' in text
    assert 'from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct"' in text
    # A local base (the warm-started model) is not Hub metadata, and the card says so.
    text = render_model_card(TrainConfig(), base="/runs/demo/sft-base", step=3)
    assert "base_model" not in front_matter(text) and "is a local folder" in text
    assert (
        "No held-out evaluation was run" in text
        and "100 label-free (the answer format with random ratings) warm-start steps" in text
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_dir):
    """A 2-step run with a checkpoint every step, the final eval, TensorBoard and the plot on."""
    from hawkeye_lite.trainer import Trainer

    tiny = tiny_model_dir(tmp_path_factory)
    demo = demo_dir
    run = tmp_path_factory.mktemp("run")
    cfg = load_train_config(
        None,
        [
            f"output_dir={run}",
            f"model.name_or_path={tiny}",
            "tiny_model.build=false",
            f"data.train=[demo:{demo}]",
            "eval.before=false",
            "eval.after=true",
            "eval.max_images=6",
            "eval.samples=1",
            "optim.batch_size=2",
            "rollout.num_generations=2",
            "rollout.max_new_tokens=6",
            "optim.max_steps=2",
            "optim.warmup_steps=1",
            "checkpoint.every=1",
            "checkpoint.keep_last=5",
            "logging.progress=false",
            "sft.steps=0",
            "logging.report_to=[tensorboard]",
        ],
    )
    import io

    Trainer(cfg, log_stream=io.StringIO()).run()
    return run, tiny


def test_final_and_checkpoints_have_model_cards(trained):
    run, tiny = trained
    final = (run / "final" / "README.md").read_text()
    assert "[More Information Needed]" not in final  # PEFT's placeholder card is replaced
    assert front_matter(final)["library_name"] == "peft"
    ev = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in l][-1]
    srcc = ev["datasets"]["demo"]["srcc"]
    assert f"| after RL | 2 | demo | 6 | {srcc:.4f} |" in final or (
        srcc != srcc and "| after RL | 2 | demo | 6 | n/a |" in final
    )
    assert "RL step 2 of 2" in final and "this run's `final/`" in final
    ckpt = (run / "checkpoints" / "step-000001" / "README.md").read_text()
    assert "checkpoint `step-000001`" in ckpt and "RL step 1 of 2" in ckpt and "No held-out evaluation" in ckpt
    # the run also reported to TensorBoard and drew its PNG
    assert list((run / "tensorboard").glob("events.out.tfevents.*")) and (run / "plot.png").is_file()


def test_plain_peft_loads_the_adapter_as_the_card_says(trained):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    run, tiny = trained
    base_path = json.loads((run / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForImageTextToText.from_pretrained(base_path, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(run / "final"))
    from safetensors.torch import load_file

    saved = load_file(str(run / "final" / "adapter_model.safetensors"))
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(saved) == len(loaded) > 0
    one = next(iter(saved))
    match = [v for k, v in loaded.items() if k.replace(".default", "").endswith(one.split("base_model.model.", 1)[-1])]
    assert match and torch.equal(match[0], saved[one])


class FakeApi:
    calls = []

    def __init__(self, *a, **k):
        pass

    def create_repo(self, repo_id, **kw):
        FakeApi.calls.append(("create_repo", repo_id, kw))

    def create_commit(self, repo_id, operations, **kw):
        FakeApi.calls.append(("create_commit", repo_id, operations, kw))
        import types

        return types.SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")


def test_push_uploads_the_adapter_and_a_card_for_the_repo(trained, monkeypatch):
    import huggingface_hub

    run, _ = trained
    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    res = CliRunner().invoke(app, ["push", str(run), "--repo", "me/hawkeye-demo", "--private"])
    assert res.exit_code == 0, res.output
    assert "pushed to https://huggingface.co/me/hawkeye-demo/commit/abc" in res.output
    (_, repo, kw), (_, repo2, ops, ckw) = FakeApi.calls
    assert repo == repo2 == "me/hawkeye-demo" and kw["private"] is True and kw["exist_ok"] is True
    names = sorted(op.path_in_repo for op in ops)
    for needed in ("README.md", "adapter_config.json", "adapter_model.safetensors", "hawkeye.json", "config.yaml"):
        assert needed in names
    card = next(op for op in ops if op.path_in_repo == "README.md").path_or_fileobj
    card = card.decode() if isinstance(card, bytes) else card.read().decode()
    assert "# me/hawkeye-demo" in card and 'Scorer.from_pretrained("me/hawkeye-demo")' in card
    assert "local folder" in res.output  # the base is the run's local tiny model
    # a checkpoint goes up without its optimizer state
    FakeApi.calls = []
    res = CliRunner().invoke(app, ["push", str(run / "checkpoints" / "step-000001"), "--repo", "me/ck"])
    assert res.exit_code == 0, res.output
    names = [op.path_in_repo for op in FakeApi.calls[1][2]]
    assert "adapter_model.safetensors" in names and not any(n.startswith("training_state") for n in names)


def test_push_errors_are_one_line(trained, tmp_path, monkeypatch):
    import huggingface_hub

    run, _ = trained
    res = CliRunner().invoke(app, ["push", str(run), "--repo", "not a repo"])
    assert res.exit_code == 2 and "expected a hub id like user/name" in res.output
    res = CliRunner().invoke(app, ["push", str(tmp_path), "--repo", "me/x"])
    assert res.exit_code == 2 and "no adapter_config.json" in res.output

    class Refusing(FakeApi):
        def create_repo(self, repo_id, **kw):
            raise OSError("401 Unauthorized: token missing\nmore lines")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    res = CliRunner().invoke(app, ["push", str(run), "--repo", "me/x"])
    assert res.exit_code == 2 and "push to me/x failed: OSError: 401 Unauthorized: token missing" in res.output
    assert "Traceback" not in res.output and "more lines" not in res.output
