"""token_stats / token_stats_from_logits: both paths against float64 autograd of the
reference, and the reference against scipy's independent definitions."""

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from hawkeye_lite import kernels
from hawkeye_lite.kernels import fused_token_stats as F
from hawkeye_lite.kernels import reference as R

INF = float("inf")


def _logits(N, V, gen, scale=3.0, dtype=torch.float32):
    z = torch.randn(N, V, generator=gen, dtype=torch.float64) * scale
    zd = z + torch.randn(N, V, generator=gen, dtype=torch.float64) * scale / 2
    return z.to(dtype), zd.to(dtype), torch.randint(0, V, (N,), generator=gen)


def _grads(N, gen, k=4):
    return [torch.randn(N, generator=gen, dtype=torch.float64) for _ in range(k)]


def _run(fn, z, tok, zd, T, gouts, which, device):
    """Forward on `device`, backward from sum(g * out) over the selected outputs; returns
    (outputs, dz, dzd) as float64 on CPU."""
    z = z.detach().to(device).requires_grad_()
    zd = zd.detach().to(device).requires_grad_() if zd is not None else None
    out = fn(z, tok.to(device), zd, temperature=T)
    loss = sum(
        (o * g.to(device, o.dtype)).sum() for i, (o, g) in enumerate(zip(out, gouts)) if i in which and o is not None
    )
    loss.backward()
    cpu = lambda t: None if t is None else t.detach().cpu().double()
    return [cpu(o) for o in out], cpu(z.grad), cpu(zd.grad) if zd is not None else None


# ------------------------------------------------------------- the reference vs scipy


@pytest.mark.parametrize("T", [1.0, 0.7])
def test_reference_matches_scipy(T, gen):
    z, zd, tok = _logits(5, 300, gen, dtype=torch.float64)
    out = R.token_stats_from_logits(z, tok, zd, temperature=T)
    lp = scipy.special.log_softmax(z.numpy() / T, axis=-1)
    lq = scipy.special.log_softmax(zd.numpy() / T, axis=-1)
    p, q = np.exp(lp), np.exp(lq)
    np.testing.assert_allclose(out.logp.numpy(), lp[np.arange(5), tok.numpy()], rtol=1e-12)
    np.testing.assert_allclose(out.kl.numpy(), scipy.special.rel_entr(p, q).sum(-1), rtol=1e-10)
    np.testing.assert_allclose(out.entropy.numpy(), scipy.stats.entropy(p, axis=-1), rtol=1e-10)
    np.testing.assert_allclose(out.entropy_deg.numpy(), scipy.stats.entropy(q, axis=-1), rtol=1e-10)


def test_reference_gradients_gradcheck(gen):
    z, zd, tok = _logits(3, 11, gen, dtype=torch.float64)
    z.requires_grad_()
    zd.requires_grad_()
    # Finite differences see every dependence, so check p's side with p~ fixed and p~'s side
    # through H(p~) only: inside the KL, p~ is a constant by design.
    assert torch.autograd.gradcheck(lambda a: R.token_stats_from_logits(a, tok, zd.detach(), temperature=0.9), (z,))
    assert torch.autograd.gradcheck(lambda b: R.token_stats_from_logits(z.detach(), tok, b, temperature=0.9)[3], (zd,))


# ------------------------------------------------------------- logits-level Triton kernel


@pytest.mark.parametrize("N,V", [(1, 1000), (37, 1000), (37, 4099), (5, 50257)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T", [1.0, 0.6])
def test_from_logits_matches_float64(N, V, dtype, T, gen, triton_device):
    z, zd, tok = _logits(N, V, gen, dtype=dtype)
    g = _grads(N, gen)
    got, dz, dzd = _run(F.token_stats_from_logits, z, tok, zd, T, g, {0, 1, 2, 3}, triton_device)
    want, dz64, dzd64 = _run(R.token_stats_from_logits, z.double(), tok, zd.double(), T, g, {0, 1, 2, 3}, "cpu")
    for name, a, b in zip(("logp", "kl", "entropy", "entropy_deg"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5, msg=lambda m: f"{name}: {m}")
    # bf16 gradients are stored in bf16: compare at bf16 resolution.
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(dz, dz64, **tol)
    torch.testing.assert_close(dzd, dzd64, **tol)


@pytest.mark.parametrize("which", [{0}, {1}, {2}, {3}, {0, 2}, {1, 3}])
def test_any_combination_of_outputs(which, gen, triton_device):
    z, zd, tok = _logits(9, 777, gen)
    g = _grads(9, gen)
    _, dz, dzd = _run(F.token_stats_from_logits, z, tok, zd, 1.0, g, which, triton_device)
    _, dz64, dzd64 = _run(R.token_stats_from_logits, z.double(), tok, zd.double(), 1.0, g, which, "cpu")
    torch.testing.assert_close(dz, dz64, rtol=1e-4, atol=1e-5)
    if dzd64 is None:  # only H(p~) reaches the degraded logits
        assert dzd is None or torch.count_nonzero(dzd) == 0
    else:
        torch.testing.assert_close(dzd, dzd64, rtol=1e-4, atol=1e-5)


def test_no_degraded_logits(gen, triton_device):
    z, _, tok = _logits(37, 4099, gen)
    g = _grads(37, gen)
    got, dz, _ = _run(F.token_stats_from_logits, z, tok, None, 1.0, g, {0}, triton_device)
    want, dz64, _ = _run(R.token_stats_from_logits, z.double(), tok, None, 1.0, g, {0}, "cpu")
    assert got[1] is None and got[2] is None and got[3] is None
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(dz, dz64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["neg_inf", "huge", "all_equal", "one_hot"])
def test_numerical_edge_cases(case, gen, triton_device):
    N, V = 6, 1500
    z, zd, tok = _logits(N, V, gen)
    if case == "neg_inf":
        banned = torch.rand(V, generator=gen) < 0.3
        z[:, banned] = -INF
        zd[:, banned] = -INF
        z[0, torch.rand(V, generator=gen) < 0.5] = -INF  # -inf in p only: those terms vanish
        tok = torch.stack([torch.nonzero(torch.isfinite(z[i]))[0, 0] for i in range(N)])
    elif case == "huge":
        z = z.sign() * 1e4 - z  # |logits| near 1e4 with O(1) spread
        zd = zd.sign() * 1e4 - zd
    elif case == "all_equal":
        z = torch.full((N, V), 7.5)
        zd = torch.full((N, V), -2.0)
    elif case == "one_hot":
        z = torch.full((N, V), -1e4)
        z[torch.arange(N), tok] = 1e4
        zd = z.clone()
    g = _grads(N, gen)
    got, dz, dzd = _run(F.token_stats_from_logits, z, tok, zd, 1.0, g, {0, 1, 2, 3}, triton_device)
    want, dz64, dzd64 = _run(R.token_stats_from_logits, z.double(), tok, zd.double(), 1.0, g, {0, 1, 2, 3}, "cpu")
    for name, a, b in zip(("logp", "kl", "entropy", "entropy_deg"), got, want):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4, msg=lambda m: f"{name}: {m}")
    assert torch.isfinite(dz).all() and torch.isfinite(dzd).all()
    torch.testing.assert_close(dz, dz64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dzd, dzd64, rtol=1e-5, atol=1e-5)
    if case == "all_equal":
        torch.testing.assert_close(got[2], torch.full((N,), float(np.log(V)), dtype=torch.float64))


@pytest.mark.parametrize("split", [1, 2, 3, 7])
@pytest.mark.parametrize("case", ["plain", "neg_inf_span", "no_deg"])
def test_split_rows_match_float64(split, case, gen, triton_device):
    """Rows cut into `split` column ranges (what the launcher picks on a GPU for few rows): the
    partial softmax states merge exactly, including a range that is entirely -inf, and the
    backward over ranges gives the same gradients."""
    N, V, block = 5, 2000, 128
    z, zd, tok = _logits(N, V, gen)
    if case == "neg_inf_span":
        z[:2, : V // 2] = -INF  # rows 0-1: the first ranges hold nothing but -inf
        zd[1, : V // 2] = -INF  # (-inf in p~ where p > 0 would make the KL infinite)
        tok[:2] = V - 1
    g = _grads(N, gen)
    zd = None if case == "no_deg" else zd
    bv, _, used, span = F.launch_params(N, V, torch.device(triton_device), block_v=block, split=split)
    assert bv == block and span % block == 0 and (used - 1) * span < V <= used * span
    dev = triton_device
    zc, zdc, tokc = z.to(dev), (zd.to(dev) if zd is not None else None), tok.to(dev)
    logp, kl, ent, entd, saved = F.stats_forward(zc, tokc, zdc, 1.0, block_v=block, split=split)
    dz = torch.empty_like(zc)
    dzd = torch.empty_like(zdc) if zd is not None else None
    gs = [x.float().to(dev) for x in g]
    F.stats_backward(
        zc,
        tokc,
        zdc,
        1.0,
        saved,
        ent,
        entd,
        gs[0],
        gs[1] if zd is not None else None,
        gs[2] if zd is not None else None,
        gs[3] if zd is not None else None,
        dz,
        dzd,
        block_v=block,
        split=split,
    )
    which = {0, 1, 2, 3} if zd is not None else {0}
    want, dz64, dzd64 = _run(
        R.token_stats_from_logits, z.double(), tok, None if zd is None else zd.double(), 1.0, g, which, "cpu"
    )
    got = [logp, kl, ent, entd]
    for name, a, b in zip(("logp", "kl", "entropy", "entropy_deg"), got, want):
        if b is not None:
            torch.testing.assert_close(a.cpu().double(), b, rtol=1e-5, atol=2e-5, msg=lambda m: f"{name}: {m}")
    torch.testing.assert_close(dz.cpu().double(), dz64, rtol=1e-4, atol=1e-5)
    if dzd is not None:
        torch.testing.assert_close(dzd.cpu().double(), dzd64, rtol=1e-4, atol=1e-5)


def test_launch_params_split_only_for_few_rows():
    cpu = torch.device("cpu")
    assert F.launch_params(4096, 152064, cpu)[2] == 1  # the interpreter never splits by default
    for n in (1, 37, 512, 8192):
        bv, _, split, span = F.launch_params(n, 152064, cpu, block_v=4096, split=16)
        assert (split - 1) * span < 152064 <= split * span and span % bv == 0


def test_never_writes_caller_tensors_and_accepts_strided_rows(gen, triton_device):
    big = torch.randn(4, 10, 1001, generator=gen).to(triton_device)
    z = big[:, :-1].reshape(-1, 1001)[::2]  # strided rows of a bigger tensor
    zd = (big[:, :-1] + 0.5).reshape(-1, 1001)[::2]
    tok = torch.randint(0, 1001, (z.shape[0],), generator=gen).to(triton_device)
    z_before, zd_before = z.clone(), zd.clone()
    zz = z.detach().requires_grad_()
    zzd = zd.detach().requires_grad_()
    out = F.token_stats_from_logits(zz, tok, zzd)
    sum(o.sum() for o in out).backward()
    assert torch.equal(z, z_before) and torch.equal(zd, zd_before)
    want = R.token_stats_from_logits(z.cpu().double(), tok.cpu(), zd.cpu().double())
    for a, b in zip(out, want):
        torch.testing.assert_close(a.detach().cpu().double(), b, rtol=1e-5, atol=2e-5)


# ------------------------------------------------------------- chunked linear entry point


def _linear_inputs(N, H, V, gen, dtype):
    h = torch.randn(N, H, generator=gen)
    w = torch.randn(V, H, generator=gen) / H**0.5 * 2
    hd = h + 0.3 * torch.randn(N, H, generator=gen)
    tok = torch.randint(0, V, (N,), generator=gen)
    return h.to(dtype), w.to(dtype), hd.to(dtype), tok


def _run_linear(fn, h, w, hd, tok, g, device, chunk, T=1.0, grad_w=True, grad_hd=True):
    h = h.detach().to(device).requires_grad_()
    w = w.detach().to(device).requires_grad_(grad_w)
    hd = hd.detach().to(device).requires_grad_(grad_hd) if hd is not None else None
    out = fn(h, w, tok.to(device), hd, temperature=T, chunk_size=chunk)
    sum((o * gg.to(device, o.dtype)).sum() for o, gg in zip(out, g) if o is not None).backward()
    cpu = lambda t: None if t is None else t.detach().cpu().double()
    return [cpu(o) for o in out], cpu(h.grad), cpu(w.grad), cpu(hd.grad) if hd is not None else None


@pytest.mark.parametrize(
    "N,H,V,chunk", [(1, 16, 1000, None), (37, 32, 4099, 8), (37, 24, 1000, 37), (13, 16, 50257, 5)]
)
def test_linear_fp32_matches_float64(N, H, V, chunk, gen, triton_device):
    h, w, hd, tok = _linear_inputs(N, H, V, gen, torch.float32)
    g = _grads(N, gen)
    got = _run_linear(F.token_stats, h, w, hd, tok, g, triton_device, chunk, T=0.8)
    want = _run_linear(R.token_stats, h.double(), w.double(), hd.double(), tok, g, "cpu", None, T=0.8)
    for name, a, b in zip(("logp", "kl", "entropy", "entropy_deg"), got[0], want[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
    for name, a, b in zip(("d_hidden", "d_weight", "d_hidden_deg"), got[1:], want[1:]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_linear_bf16_matches_reference_and_float64(gen, triton_device):
    N, H, V = 37, 32, 4099
    h, w, hd, tok = _linear_inputs(N, H, V, gen, torch.bfloat16)
    g = _grads(N, gen)
    got = _run_linear(F.token_stats, h, w, hd, tok, g, triton_device, 16)
    same = _run_linear(R.token_stats, h, w, hd, tok, g, triton_device, 16)  # same bf16 logits
    exact = _run_linear(R.token_stats, h.double(), w.double(), hd.double(), tok, g, "cpu", None)
    for a, b, c in zip(got[0], same[0], exact[0]):
        assert a.dtype == torch.float64  # (converted) fp32 outputs
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        # bf16 logits carry ~0.4% relative rounding: that is the whole gap to float64.
        torch.testing.assert_close(a, c, rtol=0.05, atol=0.05)
    # bf16 gradients are sums over V=4099 rounded terms with cancellation: one element can be
    # off by many ulps of its own size in either path, so compare relative to the gradient's
    # scale. The fused error to float64 must stay near the plain bf16 path's own error (seeds
    # 0-11: ratio <= 1.35, relative norm error <= 0.015, max element gap <= 0.010 x max|grad|).
    for name, a, b, c in zip(("d_hidden", "d_weight", "d_hidden_deg"), got[1:], same[1:], exact[1:]):
        err_fused, err_ref = ((a - c).norm() / c.norm()).item(), ((b - c).norm() / c.norm()).item()
        assert err_fused <= 1.5 * err_ref + 2e-3 and err_fused < 0.03, (name, err_fused, err_ref)
        assert (a - b).abs().max() <= 0.03 * c.abs().max(), name


def test_linear_frozen_weight_and_no_degraded_grad(gen, triton_device):
    h, w, hd, tok = _linear_inputs(19, 16, 999, gen, torch.float32)
    g = _grads(19, gen)
    got = _run_linear(F.token_stats, h, w, hd, tok, g, triton_device, 7, grad_w=False, grad_hd=False)
    want = _run_linear(
        R.token_stats, h.double(), w.double(), hd.double(), tok, g, "cpu", 7, grad_w=False, grad_hd=False
    )
    assert got[2] is None and got[3] is None
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)


def test_kl_alone_gives_degraded_side_no_gradient(gen, triton_device):
    h, w, hd, tok = _linear_inputs(9, 16, 500, gen, torch.float32)
    for fn, dev in ((F.token_stats, triton_device), (R.token_stats, "cpu")):
        hh = h.to(dev).requires_grad_()
        hdd = hd.to(dev).requires_grad_()
        out = fn(hh, w.to(dev), tok.to(dev), hdd)
        out.kl.sum().backward()
        assert hdd.grad is None or torch.count_nonzero(hdd.grad) == 0
        assert torch.count_nonzero(hh.grad) > 0


def test_chunk_size_does_not_change_results(gen):
    h, w, hd, tok = _linear_inputs(23, 16, 700, gen, torch.float64)
    a = R.token_stats(h, w, tok, hd, chunk_size=4)
    b = R.token_stats(h, w, tok, hd, chunk_size=1000)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_default_chunk_bounds_logits_memory():
    assert R.default_chunk_size(8192, 152064) * 152064 * 4 <= 1 << 29
    assert R.default_chunk_size(3, 152064) == 3
    assert R.default_chunk_size(100, 10) == 100


def test_dispatch_and_bad_inputs(gen, monkeypatch):
    h, w, hd, tok = _linear_inputs(4, 8, 50, gen, torch.float32)
    monkeypatch.setenv("HAWKEYE_KERNELS", "torch")
    out = kernels.token_stats(h, w, tok, hd)
    assert out.kl.shape == (4,)
    with pytest.raises(ValueError, match="token_ids shape"):
        kernels.token_stats(h, w, tok[:3])
    with pytest.raises(ValueError, match="hidden_deg shape"):
        kernels.token_stats(h, w, tok, hd[:2])
    with pytest.raises(TypeError, match="dtype"):
        kernels.token_stats(h, w.double(), tok)
    with pytest.raises(ValueError, match="logits_deg shape"):
        kernels.token_stats_from_logits(torch.zeros(4, 5), tok, torch.zeros(4, 6))
