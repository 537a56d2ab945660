"""Shared test setup.

Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors, which must be
switched on before triton is first imported; with a GPU they are compiled and run on CUDA.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs one worker per core (pyproject: -n auto): one thread each, or the workers'
    # thread pools fight over the cores (measured: 378 s with torch's default threads, 199 s
    # with one). Subprocesses the tests start inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

import shutil

import pytest


def pytest_configure(config):
    # The suite writes ~150k small files (stub images for the real datasets' label files, models,
    # checkpoints). On tmpfs that costs seconds instead of ~30 s of disk waits on these machines,
    # so the temporary folders go to /dev/shm when it has room and the user chose no place.
    # (tmp_path_retention_policy = "failed" in pyproject.toml keeps only failed tests' folders.)
    if config.option.basetemp is None and "PYTEST_DEBUG_TEMPROOT" not in os.environ:
        shm = "/dev/shm"
        if os.path.isdir(shm) and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 * 2**30:
            os.environ["PYTEST_DEBUG_TEMPROOT"] = shm


# The files whose tests start Python subprocesses (each pays ~10 s of torch/transformers/peft
# imports) are handed out first, so the parallel workers do not end on one long file while the
# other sits idle.
SLOW_FIRST = ("test_distributed.py", "test_ablation.py", "test_datasets_real.py", "test_model.py", "test_package.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.nodeid.split("::")[0].rsplit("/", 1)[-1] not in SLOW_FIRST)  # stable sort


@pytest.fixture(scope="session")
def triton_device() -> str:
    """Where the Triton path runs: the GPU when there is one, else the interpreter on CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def gen() -> torch.Generator:
    # Fresh random inputs every run, reproducible inside one test. The seed goes to captured
    # stdout, which pytest shows with a failure: a rare draw can then be replayed exactly.
    # HAWKEYE_TEST_SEED=N replays a printed seed.
    seed = int(os.environ.get("HAWKEYE_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
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
