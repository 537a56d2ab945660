"""Packaging and dispatch: kernels/ ships as hawkeye_lite.kernels; HAWKEYE_KERNELS picks the path."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from hawkeye_lite import kernels

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_kernels_into_the_package(tmp_path):
    # A regular (non-editable) install is a wheel: check that kernels/ lands in hawkeye_lite/kernels.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (whl,) = tmp_path.glob("hawkeye_lite-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for f in ("__init__.py", "reference.py", "fused_token_stats.py", "fused_policy_loss.py", "fused_advantages.py"):
        assert f"hawkeye_lite/kernels/{f}" in names
    assert not any(n.startswith("kernels/") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)


def test_kernels_import_outside_the_repo(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", "import hawkeye_lite.kernels as k; print(k.policy_loss.__module__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.stdout.strip() == "hawkeye_lite.kernels"


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "hawkeye_lite.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout


def test_backend_selection(monkeypatch):
    cpu = torch.zeros(1)
    monkeypatch.delenv("HAWKEYE_KERNELS", raising=False)
    assert kernels.backend(cpu) == "torch"
    monkeypatch.setenv("HAWKEYE_KERNELS", "torch")
    assert kernels.backend(cpu) == "torch"
    monkeypatch.setenv("HAWKEYE_KERNELS", "cuda-please")
    with pytest.raises(ValueError, match="HAWKEYE_KERNELS"):
        kernels.backend(cpu)
    monkeypatch.setenv("HAWKEYE_KERNELS", "triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        assert kernels.backend(cpu) == "triton"
    else:
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            kernels.backend(cpu)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="Triton on CPU tensors needs the interpreter")
def test_forced_triton_dispatch_runs_the_kernels(monkeypatch, gen):
    monkeypatch.setenv("HAWKEYE_KERNELS", "triton")
    h = torch.randn(6, 8, generator=gen)
    w = torch.randn(40, 8, generator=gen)
    tok = torch.randint(0, 40, (6,), generator=gen)
    out = kernels.token_stats(h.requires_grad_(), w, tok, h.detach() + 0.1)
    assert out.logp.grad_fn.__class__.__name__.startswith("_TokenStats")
    adv = kernels.group_advantages(torch.rand(2, 3), torch.rand(2, 3))
    loss, _ = kernels.policy_loss(out.logp.view(2, 3), None, None, adv.advantages[:, 0], torch.ones(2, 3))
    assert loss.grad_fn.__class__.__name__.startswith("_PolicyLoss")
    loss.backward()
    monkeypatch.setenv("HAWKEYE_KERNELS", "torch")
    ref = kernels.token_stats(h.detach(), w, tok, h.detach() + 0.1)
    torch.testing.assert_close(out.kl.detach(), ref.kl, rtol=1e-5, atol=1e-5)


def _pins(path: Path) -> dict:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_lowest_ci_leg_pins_exactly_the_declared_lower_bounds():
    """CI's second leg (constraints-lowest.txt) must test the lower bounds pyproject.toml declares:
    every runtime dependency has one, and the leg pins each at it (not above, not missing)."""
    import re

    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    lowest = _pins(root / "constraints-lowest.txt")
    declared = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(;.*)?", dep.strip())
        assert m, f"{dep!r}: every dependency declares a lower bound and nothing else"
        declared[m.group(1).lower().replace("_", "-")] = m.group(2)
    assert set(lowest) == set(declared), set(lowest) ^ set(declared)

    def norm(v):  # 6 == 6.0 == 6.0.0
        parts = [int(x) for x in v.split(".")]
        while parts and parts[-1] == 0:
            parts.pop()
        return parts

    for name, version in declared.items():
        assert norm(lowest[name]) == norm(version), (
            f"{name}: pyproject says >={version}, the lowest leg pins {lowest[name]}"
        )
