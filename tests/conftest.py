"""Shared test setup.

Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors, which must be
switched on before triton is first imported; with a GPU they are compiled and run on CUDA.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


@pytest.fixture(scope="session")
def triton_device() -> str:
    """Where the Triton path runs: the GPU when there is one, else the interpreter on CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def gen() -> torch.Generator:
    # Fresh random inputs every run, reproducible inside one test. The seed goes to captured
    # stdout, which pytest shows with a failure: a rare draw can then be replayed exactly.
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"gen seed: {seed}")
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny random Qwen2.5-VL on disk, built once per session (tests/_tiny.py)."""
    from _tiny import tiny_model_dir

    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """The generated demo dataset on disk, written once per session."""
    from hawkeye_lite.data import demo_records

    root = tmp_path_factory.mktemp("demo-data")
    demo_records(root)
    return root


@pytest.fixture(scope="module")
def policy(tiny):
    """A plain (fp32, unquantised) policy on the tiny model with a LoRA adapter that changes it."""
    from _tiny import model_config, perturb_lora

    from hawkeye_lite.config import LoRAConfig
    from hawkeye_lite.model import load_policy

    p = load_policy(model_config(tiny, quantization="none", lora=LoRAConfig(r=4, alpha=8, dropout=0.0)))
    perturb_lora(p, std=0.2)
    return p
