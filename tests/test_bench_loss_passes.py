"""bench/loss_passes.py on its tiny preset, on the CPU: both ways of running the loss passes are
timed and must agree (hidden states and LoRA gradients), and the report says so."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_loss_passes_bench_runs_and_both_ways_agree(tmp_path):
    spec = importlib.util.spec_from_file_location("hawkeye_bench_loss_passes", ROOT / "bench" / "loss_passes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(
        [
            "--preset",
            "tiny",
            "--images",
            "2",
            "--generations",
            "3",
            "--tokens",
            "5",
            "--repeats",
            "1",
            "--json",
            str(tmp_path / "r.json"),
            "--markdown",
            str(tmp_path / "r.md"),
        ]
    )
    assert out["hidden_max_abs_diff"] < 1e-4
    assert out["grad_rel_diff"] < 1e-4
    assert set(out["seconds"]) == {"no_grad_repeated", "no_grad_shared", "grad_repeated", "grad_shared"}
    assert all(v > 0 for v in out["seconds"].values())
    assert json.loads((tmp_path / "r.json").read_text())["prompt_tokens"] == out["prompt_tokens"] > 0
    assert "shared prefix" in (tmp_path / "r.md").read_text()
