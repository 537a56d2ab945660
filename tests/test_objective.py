"""policy_loss_from_hidden: the fused one-pass objective against float64 autograd of its
definition (reference token_stats on the masked positions, then policy_loss)."""

import pytest
import torch

from hawkeye_lite import kernels
from hawkeye_lite.kernels import reference as R
from hawkeye_lite.kernels.fused_objective import policy_loss_from_hidden as fused


def _inputs(S, T, H, V, gen, dtype):
    hidden = torch.randn(S, T, H, generator=gen)
    weight = torch.randn(V, H, generator=gen) * 2 / H**0.5
    hidden_deg = hidden + 0.5 * torch.randn(S, T, H, generator=gen)
    tok = torch.randint(0, V, (S, T), generator=gen)
    adv = torch.randn(S, generator=gen)
    mask = torch.rand(S, T, generator=gen) > 0.3
    if S > 2:
        mask[-1] = False
    # Sampling-policy log-probs near the current ones, so ratios fall on both sides of the clip.
    cur = R.token_stats(hidden.reshape(S * T, H).double(), weight.double(), tok.reshape(-1)).logp.view(S, T).float()
    old = cur + 0.4 * torch.randn(S, T, generator=gen)
    ref = cur + 0.2 * torch.randn(S, T, generator=gen)
    cast = lambda t: t.to(dtype)
    return cast(hidden), cast(weight), cast(hidden_deg), tok, adv, mask, old, ref


def _run(fn, x, device, kw, grad_w=False, grad_deg=True, f64=False):
    hidden, weight, hidden_deg, tok, adv, mask, old, ref = x
    conv = (lambda t: t.detach().double()) if f64 else (lambda t: t.detach().clone())
    h = conv(hidden).to(device).requires_grad_()
    w = conv(weight).to(device).requires_grad_(grad_w)
    hd = conv(hidden_deg).to(device).requires_grad_(grad_deg) if kw.pop("deg", True) else None
    loss, metrics = fn(
        h,
        w,
        tok.to(device),
        adv.to(device),
        mask.to(device),
        old.to(device) if kw.pop("old", True) else None,
        ref.to(device),
        hd,
        **kw,
    )
    loss.backward()
    cpu = lambda t: None if t is None else t.detach().cpu().double()
    return cpu(loss), cpu(h.grad), cpu(w.grad), cpu(hd.grad) if hd is not None else None, metrics


CASES = [
    dict(loss_type="grpo", gamma=0.5, eta1=0.05, eta2=0.02),
    dict(loss_type="dapo", gamma=0.1, eta1=0.0, eta2=0.0, temperature=0.7),
    dict(loss_type="dr_grpo", max_len=40, gamma=0.0, eta1=0.1, eta2=0.0, beta=0.0),
    dict(loss_type="grpo", deg=False, old=False),
]


@pytest.mark.parametrize("case", range(len(CASES)))
# Shapes: token chunks of 7 over ragged rows; a vocabulary just past a 4096 block (auto chunk);
# a single token. (The 4099 case had T = 37 until the suite had to fit 3 minutes: the Triton
# interpreter's cost grows with the tokens, and 5 x 9 ragged rows cover the same paths.)
@pytest.mark.parametrize("S,T,H,V,chunk", [(3, 11, 16, 1000, 7), (5, 9, 24, 4099, None), (1, 1, 8, 300, None)])
def test_fused_matches_float64(case, S, T, H, V, chunk, gen, triton_device):
    x = _inputs(S, T, H, V, gen, torch.float32)
    kw = dict(CASES[case], chunk_size=chunk)
    got = _run(fused, x, triton_device, dict(kw), grad_w=True)
    want = _run(R.policy_loss_from_hidden, x, "cpu", dict(kw), grad_w=True, f64=True)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    for name, a, b in zip(("d_hidden", "d_weight", "d_hidden_deg"), got[1:4], want[1:4]):
        if b is None or torch.count_nonzero(b) == 0:
            assert a is None or torch.count_nonzero(a) == 0, name
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
    assert got[4].keys() == want[4].keys()
    for k in want[4]:
        assert got[4][k] == pytest.approx(want[4][k], rel=1e-4, abs=1e-6), k


def test_fused_bf16_matches_unfused_path(gen, triton_device):
    # Same bf16 inputs through the reference composition: the fused pass must agree with it.
    x = _inputs(4, 19, 32, 2048, gen, torch.bfloat16)
    kw = dict(loss_type="grpo", gamma=0.3, eta1=0.05, eta2=0.05, chunk_size=16)
    got = _run(fused, x, triton_device, dict(kw))
    want = _run(R.policy_loss_from_hidden, x, triton_device, dict(kw))
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    for a, b in zip(got[1:4], want[1:4]):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-4)


def test_dispatch_and_errors(gen, monkeypatch):
    x = _inputs(2, 5, 8, 50, gen, torch.float32)
    hidden, weight, hidden_deg, tok, adv, mask, old, ref = x
    monkeypatch.setenv("HAWKEYE_KERNELS", "torch")
    loss, m = kernels.policy_loss_from_hidden(hidden, weight, tok, adv, mask, old, ref, hidden_deg, gamma=0.1)
    assert torch.isfinite(loss) and "perception_kl" in m
    with pytest.raises(ValueError, match="need hidden_deg"):
        kernels.policy_loss_from_hidden(hidden, weight, tok, adv, mask, gamma=0.1)
    with pytest.raises(ValueError, match="token_ids"):
        kernels.policy_loss_from_hidden(hidden, weight, tok[:, :3], adv, mask)
    with pytest.raises(ValueError, match=r"\[S, T, H\]"):
        kernels.policy_loss_from_hidden(hidden[0], weight, tok, adv, mask)
