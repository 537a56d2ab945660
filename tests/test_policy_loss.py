"""policy_loss: the reference against a per-token loop written from SPEC §1.3-1.5, and the
Triton kernel against float64 autograd of the reference."""

import math

import pytest
import torch

from hawkeye_lite import kernels
from hawkeye_lite.kernels import reference as R
from hawkeye_lite.kernels.fused_policy_loss import policy_loss as triton_policy_loss

KW = dict(beta=0.04, eps_low=0.2, eps_high=0.28)


def loop_loss(lp, old, ref, adv, mask, beta, eps_low, eps_high, loss_type, max_len, klp, ent, entd, gamma, eta1, eta2):
    """SPEC §1.3-1.5 written token by token with Python floats."""
    S, T = len(lp), len(lp[0])
    per_seq, total, n_tok = [], 0.0, 0
    for s in range(S):
        acc, n = 0.0, 0
        for t in range(T):
            if not mask[s][t]:
                continue
            ratio = math.exp(lp[s][t] - (lp[s][t] if old is None else old[s][t]))
            surr = min(ratio * adv[s], min(max(ratio, 1 - eps_low), 1 + eps_high) * adv[s])
            k = 0.0
            if ref is not None and beta:
                d = ref[s][t] - lp[s][t]
                k = math.exp(d) - d - 1
            acc += -(surr - beta * k)
            n += 1
        per_seq.append((acc, n))
        total += acc
        n_tok += n
    if loss_type == "grpo":
        loss = sum(a / max(n, 1) for a, n in per_seq) / S
    elif loss_type == "dapo":
        loss = total / max(n_tok, 1)
    else:
        loss = total / (S * (max_len or T))
    for coef, x in ((-gamma, klp), (eta1, ent), (eta2, entd)):
        if x is not None:
            loss += coef * sum(x[s][t] for s in range(S) for t in range(T) if mask[s][t]) / max(n_tok, 1)
    return loss


def _inputs(S, T, gen, dtype=torch.float32, garbage=True):
    lp = -torch.rand(S, T, generator=gen, dtype=torch.float64) * 4
    old = lp + 0.4 * torch.randn(S, T, generator=gen, dtype=torch.float64)  # ratios on both sides of the clip
    ref = lp + 0.3 * torch.randn(S, T, generator=gen, dtype=torch.float64)
    adv = torch.randn(S, generator=gen, dtype=torch.float64)
    mask = torch.rand(S, T, generator=gen) > 0.25
    if S > 2:
        mask[1] = False  # a sequence with no completion tokens
    klp = torch.rand(S, T, generator=gen, dtype=torch.float64)
    ent = torch.rand(S, T, generator=gen, dtype=torch.float64) * 3
    entd = torch.rand(S, T, generator=gen, dtype=torch.float64) * 3
    if garbage:  # padded positions may hold anything finite
        lp = torch.where(mask, lp, torch.full_like(lp, 80.0))
    return [x.to(dtype) if x.is_floating_point() else x for x in (lp, old, ref, adv, mask, klp, ent, entd)]


@pytest.mark.parametrize("loss_type,max_len", [("grpo", None), ("dapo", None), ("dr_grpo", None), ("dr_grpo", 64)])
def test_reference_matches_token_loop(loss_type, max_len, gen):
    lp, old, ref, adv, mask, klp, ent, entd = _inputs(4, 7, gen, torch.float64)
    co = dict(gamma=0.3, eta1=0.01, eta2=0.02)
    loss, _ = R.policy_loss(
        lp,
        old,
        ref,
        adv,
        mask,
        **KW,
        loss_type=loss_type,
        max_len=max_len,
        kl_perception=klp,
        entropy=ent,
        entropy_deg=entd,
        **co,
    )
    want = loop_loss(
        lp.tolist(),
        old.tolist(),
        ref.tolist(),
        adv.tolist(),
        mask.tolist(),
        **KW,
        loss_type=loss_type,
        max_len=max_len,
        klp=klp.tolist(),
        ent=ent.tolist(),
        entd=entd.tolist(),
        **co,
    )
    assert loss.item() == pytest.approx(want, rel=1e-12, abs=1e-12)


def _grad_run(fn, tensors, kw, device, dtype):
    lp, old, ref, adv, mask, klp, ent, entd = tensors
    to = lambda t, req=False: None if t is None else t.detach().to(device, dtype).requires_grad_(req)
    lp_, klp_, ent_, entd_ = to(lp, True), to(klp, True), to(ent, True), to(entd, True)
    loss, metrics = fn(
        lp_,
        to(old),
        to(ref),
        adv.to(device, dtype),
        mask.to(device),
        kl_perception=klp_,
        entropy=ent_,
        entropy_deg=entd_,
        **kw,
    )
    grads = torch.autograd.grad(loss, [lp_, klp_, ent_, entd_])
    return loss.detach().cpu().double(), [g.cpu().double() for g in grads], metrics


@pytest.mark.parametrize("S,T", [(1, 1), (3, 37), (8, 300), (2, 1025)])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_float64(S, T, loss_type, dtype, gen, triton_device):
    tensors = _inputs(S, T, gen)
    kw = dict(**KW, loss_type=loss_type, gamma=1e-2, eta1=1e-3, eta2=2e-3)
    got, g_got, m_got = _grad_run(triton_policy_loss, tensors, kw, triton_device, dtype)
    # The reference sees exactly the values the kernel sees (rounded to dtype), in float64.
    rounded = [t.to(dtype).double() if t.is_floating_point() else t for t in tensors]
    want, g_want, m_want = _grad_run(R.policy_loss, rounded, kw, "cpu", torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-5)
    for name, a, b in zip(("logp", "kl_perception", "entropy", "entropy_deg"), g_got, g_want):
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{name}: {m}")
    assert m_got.keys() == m_want.keys()
    for k in m_want:
        assert m_got[k] == pytest.approx(m_want[k], rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize(
    "use_old,use_ref,beta", [(False, True, 0.04), (True, False, 0.04), (True, True, 0.0), (False, False, 0.1)]
)
def test_optional_inputs(use_old, use_ref, beta, gen, triton_device):
    lp, old, ref, adv, mask, *_ = _inputs(5, 33, gen)
    res = []
    for fn, dev in ((triton_policy_loss, triton_device), (R.policy_loss, "cpu")):
        x = lp.to(dev).requires_grad_()
        loss, metrics = fn(
            x, old.to(dev) if use_old else None, ref.to(dev) if use_ref else None, adv.to(dev), mask.to(dev), beta=beta
        )
        (g,) = torch.autograd.grad(loss, [x])
        res.append((loss.item(), g.cpu(), metrics))
    assert res[0][0] == pytest.approx(res[1][0], rel=1e-5, abs=1e-7)
    torch.testing.assert_close(res[0][1], res[1][1], rtol=1e-5, atol=1e-7)
    assert ("ref_kl" in res[0][2]) == (use_ref and beta != 0.0) == ("ref_kl" in res[1][2])
    if not use_old:  # on-policy: ratio == 1, nothing is clipped, gradient is -A * c[s]
        assert res[0][2]["clip_frac"] == 0.0


def test_clipping_semantics(triton_device):
    # One token per sequence; ratios e^0.5 = 1.65 (above 1.28) and e^-0.5 = 0.61 (below 0.8).
    lp = torch.zeros(4, 1)
    old = torch.tensor([[-0.5], [-0.5], [0.5], [0.5]])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    mask = torch.ones(4, 1)
    for fn, dev in ((triton_policy_loss, triton_device), (R.policy_loss, "cpu")):
        x = lp.to(dev).requires_grad_()
        loss, m = fn(x, old.to(dev), None, adv.to(dev), mask.to(dev), loss_type="dapo")
        (g,) = torch.autograd.grad(loss, [x])
        g = g.cpu().flatten()
        # high ratio & A>0: clipped (no grad); high ratio & A<0: unclipped; low ratio & A>0:
        # unclipped; low ratio & A<0: clipped.
        assert g[0] == 0 and g[3] == 0
        assert g[1].item() == pytest.approx(math.exp(0.5) / 4, rel=1e-6)
        assert g[2].item() == pytest.approx(-math.exp(-0.5) / 4, rel=1e-6)
        assert m["clip_frac_high"] == pytest.approx(0.25) and m["clip_frac_low"] == pytest.approx(0.25)


def test_all_masked_is_finite(triton_device):
    lp = torch.randn(3, 5)
    for fn, dev in ((triton_policy_loss, triton_device), (R.policy_loss, "cpu")):
        x = lp.to(dev).requires_grad_()
        loss, m = fn(
            x,
            None,
            x.detach() + 0.1,
            torch.randn(3).to(dev),
            torch.zeros(3, 5).to(dev),
            kl_perception=torch.rand(3, 5).to(dev),
            gamma=0.1,
        )
        (g,) = torch.autograd.grad(loss, [x])
        assert loss.item() == 0.0 and torch.count_nonzero(g) == 0
        assert all(math.isfinite(v) for v in m.values())


def test_bad_inputs_raise():
    lp, mask, adv = torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2)
    with pytest.raises(ValueError, match="loss_type"):
        kernels.policy_loss(lp, None, None, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="kl_perception"):
        kernels.policy_loss(lp, None, None, adv, mask, gamma=0.1)
    with pytest.raises(ValueError, match="entropy_deg"):
        kernels.policy_loss(lp, None, None, adv, mask, eta2=0.1)
    with pytest.raises(ValueError, match="advantages"):
        kernels.policy_loss(lp, None, None, torch.zeros(3), mask)
    with pytest.raises(ValueError, match="mask shape"):
        kernels.policy_loss(lp, None, None, adv, torch.ones(2, 4))
