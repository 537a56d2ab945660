"""The Triton kernels compiled for a GPU (not the interpreter) at realistic shapes:
Qwen2.5 vocabulary 152,064, hidden 3,584, up to 8,192 tokens. Skipped without CUDA."""

import pytest
import torch

from hawkeye_lite.kernels import fused_token_stats as F
from hawkeye_lite.kernels import reference as R
from hawkeye_lite.kernels.fused_advantages import group_advantages as triton_group_advantages
from hawkeye_lite.kernels.fused_policy_loss import policy_loss as triton_policy_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

V, H = 152064, 3584


def _f64_rows(z, tok, zd, rows, g):
    """float64 reference (values and dlogits) on a subset of rows."""
    zz = z[rows].double().requires_grad_()
    out = R.token_stats_from_logits(zz, tok[rows], zd[rows].double())
    sum((o * gg[rows].double()).sum() for o, gg in zip(out, g)).backward()
    return [o.detach() for o in out], zz.grad


@pytest.mark.parametrize("N", [1, 1000, 8192])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_from_logits_full_vocab(N, dtype):
    gen = torch.Generator(device="cuda").manual_seed(N)
    z = (torch.randn(N, V, device="cuda", generator=gen) * 4).to(dtype)
    zd = (z.float() + torch.randn(N, V, device="cuda", generator=gen)).to(dtype)
    tok = torch.randint(0, V, (N,), device="cuda", generator=gen)
    g = [torch.randn(N, device="cuda", generator=gen) for _ in range(4)]
    zz = z.clone().requires_grad_()
    out = F.token_stats_from_logits(zz, tok, zd)
    sum((o * gg).sum() for o, gg in zip(out, g)).backward()
    assert torch.equal(zz.detach(), z)  # the caller's logits are untouched
    rows = torch.randperm(N, device="cuda", generator=gen)[:64]
    want, dz64 = _f64_rows(z, tok, zd, rows, g)
    for name, a, b in zip(("logp", "kl", "entropy", "entropy_deg"), out, want):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a[rows].double(), b, rtol=1e-5, atol=5e-5, msg=lambda m: f"{name}: {m}")
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-5)
    torch.testing.assert_close(zz.grad[rows].double(), dz64, **tol)


@pytest.mark.parametrize("N", [4096, 8192])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_token_stats_realistic(N, dtype):
    gen = torch.Generator(device="cuda").manual_seed(N + 1)
    h = torch.randn(N, H, device="cuda", generator=gen).to(dtype)
    w = (torch.randn(V, H, device="cuda", generator=gen) * H**-0.5 * 3).to(dtype)
    hd = (h.float() + 0.3 * torch.randn(N, H, device="cuda", generator=gen)).to(dtype)
    tok = torch.randint(0, V, (N,), device="cuda", generator=gen)
    g = [torch.randn(N, device="cuda", generator=gen) for _ in range(4)]
    res = []
    for fn in (F.token_stats, R.token_stats):  # same logits helper: same inputs to the math
        hh = h.clone().requires_grad_()
        hdd = hd.clone().requires_grad_()
        out = fn(hh, w, tok, hdd)
        sum((o * gg).sum() for o, gg in zip(out, g)).backward()
        res.append(([o.detach() for o in out], hh.grad, hdd.grad))
        del out, hh, hdd
    (a, dh_a, dhd_a), (b, dh_b, dhd_b) = res
    for name, x, y in zip(("logp", "kl", "entropy", "entropy_deg"), a, b):
        assert torch.isfinite(x).all(), name
        torch.testing.assert_close(x, y, rtol=1e-4, atol=2e-4, msg=lambda m: f"{name}: {m}")
    tol = dict(rtol=1e-3, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(dh_a.float(), dh_b.float(), **tol)
    torch.testing.assert_close(dhd_a.float(), dhd_b.float(), **tol)
    # Against float64 math on a few rows: only the logits' rounding separates them.
    rows = torch.arange(0, N, N // 16, device="cuda")
    exact = R.token_stats(h[rows].double(), w.double(), tok[rows], hd[rows].double())
    for name, x, y in zip(("logp", "kl", "entropy", "entropy_deg"), a, exact):
        torch.testing.assert_close(
            x[rows].double(), y, rtol=1e-3, atol=5e-3 if dtype == torch.bfloat16 else 1e-4, msg=lambda m: f"{name}: {m}"
        )


def test_token_stats_memory_is_bounded():
    N, chunk = 4096, 512
    h = torch.randn(N, H, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    hd = torch.randn(N, H, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(V, H, device="cuda", dtype=torch.bfloat16) * H**-0.5
    tok = torch.randint(0, V, (N,), device="cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = F.token_stats(h, w, tok, hd, chunk_size=chunk)
    (out.logp.sum() + out.kl.sum() + out.entropy.sum()).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    chunk_fp32 = chunk * V * 4
    # p and p~ logits of one chunk (fp32) and one bf16 dz; the full [N, V] fp32 logits would be 16x one chunk.
    assert extra < 3 * chunk_fp32, f"peak extra {extra / 2**20:.0f} MiB vs chunk {chunk_fp32 / 2**20:.0f} MiB"


def test_policy_loss_and_advantages_on_gpu():
    gen = torch.Generator().manual_seed(3)
    S, T = 64, 256
    lp = -torch.rand(S, T, generator=gen, dtype=torch.float64) * 3
    old = lp + 0.4 * torch.randn(S, T, generator=gen, dtype=torch.float64)
    ref = lp + 0.3 * torch.randn(S, T, generator=gen, dtype=torch.float64)
    adv = torch.randn(S, generator=gen, dtype=torch.float64)
    mask = torch.rand(S, T, generator=gen) > 0.2
    klp = torch.rand(S, T, generator=gen, dtype=torch.float64)
    outs = []
    for fn, dev, dt in ((triton_policy_loss, "cuda", torch.float32), (R.policy_loss, "cpu", torch.float64)):
        x = lp.to(dev, dt).requires_grad_()
        k = klp.to(dev, dt).requires_grad_()
        loss, m = fn(x, old.to(dev, dt), ref.to(dev, dt), adv.to(dev, dt), mask.to(dev), kl_perception=k, gamma=0.1)
        gx, gk = torch.autograd.grad(loss, [x, k])
        outs.append((loss.item(), gx.cpu().double(), gk.cpu().double(), m))
    (l1, g1, k1, m1), (l2, g2, k2, m2) = outs
    assert l1 == pytest.approx(l2, rel=1e-5)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(k1, k2, rtol=1e-5, atol=1e-8)
    assert m1 == pytest.approx(m2, rel=1e-5, abs=1e-7)

    r = torch.rand(1024, 16, generator=gen)
    s = torch.rand(1024, 16, generator=gen) * 4 + 1
    s[torch.rand(1024, 16, generator=gen) < 0.3] = float("nan")
    got = triton_group_advantages(r.cuda(), s.cuda())
    want = R.group_advantages(r.double(), s.double())
    for x, y in zip(got, want):
        torch.testing.assert_close(x.cpu().double(), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_objective_realistic(dtype):
    from hawkeye_lite.kernels.fused_objective import policy_loss_from_hidden as fused

    S, T = 16, 256
    gen = torch.Generator(device="cuda").manual_seed(7)
    h = torch.randn(S, T, H, device="cuda", generator=gen).to(dtype)
    hd = (h.float() + 0.3 * torch.randn(S, T, H, device="cuda", generator=gen)).to(dtype)
    w = (torch.randn(V, H, device="cuda", generator=gen) * H**-0.5 * 3).to(dtype)
    tok = torch.randint(0, V, (S, T), device="cuda", generator=gen)
    mask = torch.rand(S, T, device="cuda", generator=gen) > 0.2
    adv = torch.randn(S, device="cuda", generator=gen)
    with torch.no_grad():
        cur = R.token_stats(h.reshape(S * T, H), w, tok.reshape(-1)).logp.view(S, T)
    old = cur + 0.3 * torch.randn(S, T, device="cuda", generator=gen)
    ref = cur + 0.2 * torch.randn(S, T, device="cuda", generator=gen)
    kw = dict(gamma=0.5, eta1=0.05, eta2=0.05)
    res = []
    for fn in (fused, R.policy_loss_from_hidden):
        hh = h.clone().requires_grad_()
        hdd = hd.clone().requires_grad_()
        loss, metrics = fn(hh, w, tok, adv, mask, old, ref, hdd, **kw)
        loss.backward()
        res.append((loss.item(), hh.grad.float(), hdd.grad.float(), metrics))
    (l1, g1, gd1, m1), (l2, g2, gd2, m2) = res
    assert l1 == pytest.approx(l2, rel=1e-4, abs=1e-5)
    tol = dict(rtol=1e-3, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-4)
    torch.testing.assert_close(g1, g2, **tol)
    torch.testing.assert_close(gd1, gd2, **tol)
    for k in m2:
        assert m1[k] == pytest.approx(m2[k], rel=1e-3, abs=1e-5), k
