"""The whole Q-Hawkeye objective on per-token inputs (SPEC §1.3-1.5), one Triton program per
sequence.

The loss is a sum of per-token terms with per-sequence weights c[s] fixed by the mask and
the loss type, so the gradient w.r.t. each token's log-prob is local and known in the
forward pass: the kernel writes it then, together with the per-sequence partial sums of the
loss and of every metric. Backward only scales the stored gradient.

    L_tok = -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A) + beta k3,  rho = exp(logp - old)
    dL/dlogp = -(A rho if the unclipped branch is the min else 0) + beta (1 - exp(ref - logp))
    loss = sum_s c[s] sum_t m L_tok + (-gamma KL + eta1 H + eta2 H~) summed over masked tokens / n_tok
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .reference import check_perception, check_policy_inputs, sequence_weights

# Columns of the per-sequence partial sums written by the kernel.
LOSS, LOW, HIGH, REF_KL, P_KL, ENT, ENT_DEG, NCOLS = range(8)


@triton.jit
def _policy_loss_kernel(
    logp_ptr,
    old_ptr,
    ref_ptr,
    adv_ptr,
    mask_ptr,
    cw_ptr,
    klp_ptr,
    ent_ptr,
    entd_ptr,
    grad_ptr,
    part_ptr,
    T,
    beta,
    eps_low,
    eps_high,
    HAS_OLD: tl.constexpr,
    HAS_REF: tl.constexpr,
    HAS_KLP: tl.constexpr,
    HAS_ENT: tl.constexpr,
    HAS_ENTD: tl.constexpr,
    BLOCK_T: tl.constexpr,
    NCOL: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    base = seq * T
    A = tl.load(adv_ptr + seq).to(tl.float32)
    cw = tl.load(cw_ptr + seq)
    a_neg = (A < 0.0).to(tl.float32)  # clipping below only binds for negative advantages
    a_pos = (A > 0.0).to(tl.float32)
    acc_loss = tl.zeros([BLOCK_T], tl.float32)
    acc_low = tl.zeros([BLOCK_T], tl.float32)
    acc_high = tl.zeros([BLOCK_T], tl.float32)
    acc_ref = tl.zeros([BLOCK_T], tl.float32)
    acc_klp = tl.zeros([BLOCK_T], tl.float32)
    acc_ent = tl.zeros([BLOCK_T], tl.float32)
    acc_entd = tl.zeros([BLOCK_T], tl.float32)
    for start in range(0, T, BLOCK_T):
        offs = start + tl.arange(0, BLOCK_T)
        inb = offs < T
        m = tl.load(mask_ptr + base + offs, mask=inb, other=0.0)
        on = m != 0.0
        lp = tl.load(logp_ptr + base + offs, mask=inb, other=0.0).to(tl.float32)
        if HAS_OLD:
            old = tl.load(old_ptr + base + offs, mask=inb, other=0.0).to(tl.float32)
        else:
            old = lp
        ratio = tl.exp(lp - old)
        s1 = ratio * A
        s2 = tl.minimum(tl.maximum(ratio, 1.0 - eps_low), 1.0 + eps_high) * A
        clipped = s2 < s1  # the clipped branch is the min: no gradient through it
        loss_t = -tl.minimum(s1, s2)
        dlp = tl.where(clipped, 0.0, -s1)
        if HAS_REF:
            delta = tl.load(ref_ptr + base + offs, mask=inb, other=0.0).to(tl.float32) - lp
            e = tl.exp(delta)
            k3 = e - delta - 1.0
            loss_t += beta * k3
            dlp += beta * (1.0 - e)
            acc_ref += tl.where(on, m * k3, 0.0)
        acc_loss += tl.where(on, m * loss_t, 0.0)
        tl.store(grad_ptr + base + offs, tl.where(on, cw * m * dlp, 0.0), mask=inb)
        acc_low += tl.where(on & (ratio < 1.0 - eps_low), m * a_neg, 0.0)
        acc_high += tl.where(on & (ratio > 1.0 + eps_high), m * a_pos, 0.0)
        if HAS_KLP:
            acc_klp += tl.where(on, m * tl.load(klp_ptr + base + offs, mask=inb, other=0.0).to(tl.float32), 0.0)
        if HAS_ENT:
            acc_ent += tl.where(on, m * tl.load(ent_ptr + base + offs, mask=inb, other=0.0).to(tl.float32), 0.0)
        if HAS_ENTD:
            acc_entd += tl.where(on, m * tl.load(entd_ptr + base + offs, mask=inb, other=0.0).to(tl.float32), 0.0)
    out = part_ptr + seq * NCOL
    tl.store(out + 0, cw * tl.sum(acc_loss, axis=0))
    tl.store(out + 1, tl.sum(acc_low, axis=0))
    tl.store(out + 2, tl.sum(acc_high, axis=0))
    tl.store(out + 3, tl.sum(acc_ref, axis=0))
    tl.store(out + 4, tl.sum(acc_klp, axis=0))
    tl.store(out + 5, tl.sum(acc_ent, axis=0))
    tl.store(out + 6, tl.sum(acc_entd, axis=0))


def launch_policy_terms(logp, old_logp, ref_logp, advantages, mask, cw, klp, ent, entd, beta, eps_low, eps_high):
    """Run the kernel on [S, T] inputs: (grad of the loss w.r.t. logp [S, T], per-sequence sums [S, NCOLS])."""
    S, T = logp.shape
    grad = torch.empty((S, T), dtype=torch.float32, device=logp.device)
    part = torch.zeros((S, NCOLS), dtype=torch.float32, device=logp.device)
    c = lambda t: t.contiguous() if t is not None else logp
    if S > 0 and T > 0:
        block = min(max(16, triton.next_power_of_2(T)), 1024 if logp.is_cuda else 4096)
        _policy_loss_kernel[(S,)](
            c(logp),
            c(old_logp),
            c(ref_logp),
            advantages.contiguous(),
            mask,
            cw,
            c(klp),
            c(ent),
            c(entd),
            grad,
            part,
            T,
            float(beta),
            float(eps_low),
            float(eps_high),
            HAS_OLD=old_logp is not None,
            HAS_REF=ref_logp is not None,
            HAS_KLP=klp is not None,
            HAS_ENT=ent is not None,
            HAS_ENTD=entd is not None,
            BLOCK_T=block,
            NCOL=NCOLS,
        )
    return grad, part


class _PolicyLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        logp,
        kl_perception,
        entropy,
        entropy_deg,
        old_logp,
        ref_logp,
        advantages,
        mask,
        cw,
        beta,
        eps_low,
        eps_high,
        gamma,
        eta1,
        eta2,
    ):
        grad, part = launch_policy_terms(
            logp, old_logp, ref_logp, advantages, mask, cw, kl_perception, entropy, entropy_deg, beta, eps_low, eps_high
        )
        sums = part.sum(0)
        n_tok = mask.sum().clamp(min=1.0)
        loss = sums[LOSS] + (-gamma * sums[P_KL] + eta1 * sums[ENT] + eta2 * sums[ENT_DEG]) / n_tok
        ctx.save_for_backward(grad, mask, n_tok)
        ctx.coefs = (-gamma, eta1, eta2)
        ctx.dtypes = tuple(t.dtype if t is not None else None for t in (logp, kl_perception, entropy, entropy_deg))
        ctx.mark_non_differentiable(sums)
        return loss, sums

    @staticmethod
    def backward(ctx, g_loss, _g_sums):
        grad, mask, n_tok = ctx.saved_tensors
        needs = ctx.needs_input_grad
        out = [None] * 15
        if needs[0]:
            out[0] = (grad * g_loss).to(ctx.dtypes[0])
        for i, coef in zip((1, 2, 3), ctx.coefs):
            if needs[i]:
                out[i] = (mask * (coef * g_loss / n_tok)).to(ctx.dtypes[i])
        return tuple(out)


def policy_loss(
    logp: torch.Tensor,
    old_logp: Optional[torch.Tensor],
    ref_logp: Optional[torch.Tensor],
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float = 0.04,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    loss_type: str = "grpo",
    max_len: Optional[int] = None,
    kl_perception: Optional[torch.Tensor] = None,
    entropy: Optional[torch.Tensor] = None,
    entropy_deg: Optional[torch.Tensor] = None,
    gamma: float = 0.0,
    eta1: float = 0.0,
    eta2: float = 0.0,
):
    terms = (("kl_perception", kl_perception), ("entropy", entropy), ("entropy_deg", entropy_deg))
    check_policy_inputs(logp, old_logp, ref_logp, advantages, mask, loss_type, max_len, terms)
    check_perception(gamma, eta1, eta2, kl_perception, entropy, entropy_deg)
    m = mask.to(torch.float32).contiguous()
    cw = sequence_weights(m, loss_type, max_len).contiguous()
    if ref_logp is not None and beta == 0.0:
        ref_logp = None  # beta = 0 means no reference term at all (and no ref_kl metric)
    # A term whose coefficient is 0 still feeds its metric, but gets no gradient.
    loss, sums = _PolicyLoss.apply(
        logp,
        kl_perception,
        entropy,
        entropy_deg,
        None if old_logp is None else old_logp.detach(),
        None if ref_logp is None else ref_logp.detach(),
        advantages.detach(),
        m,
        cw,
        float(beta),
        float(eps_low),
        float(eps_high),
        float(gamma),
        float(eta1),
        float(eta2),
    )
    return loss, metrics_from_sums(sums, m, ref_logp is not None, (kl_perception, entropy, entropy_deg))


def metrics_from_sums(sums: torch.Tensor, mask: torch.Tensor, has_ref: bool, terms) -> dict:
    """Turn the kernel's summed columns into the metrics dict (one device sync for all of them)."""
    vals = sums.tolist()
    n_tok = max(float(mask.sum()), 1.0)
    metrics = {
        "clip_frac_low": vals[LOW] / n_tok,
        "clip_frac_high": vals[HIGH] / n_tok,
        "clip_frac": (vals[LOW] + vals[HIGH]) / n_tok,
    }
    if has_ref:
        metrics["ref_kl"] = vals[REF_KL] / n_tok
    for key, col, t in zip(("perception_kl", "entropy", "entropy_deg"), (P_KL, ENT, ENT_DEG), terms):
        if t is not None:
            metrics[key] = vals[col] / n_tok
    return metrics
