"""The whole objective from hidden states: token_stats + policy_loss in one pass per chunk.

`token_stats` must recompute each logits chunk in backward because it cannot know, in
forward, which gradients its outputs will receive. The objective's gradient w.r.t. every
per-token statistic is local and known as soon as that token's statistics are (SPEC §1.3-1.5:
the loss is a weighted sum over tokens), so here each chunk goes

    logits = h W^T  ->  stats kernel  ->  policy kernel (per-token loss and d loss / d logp)
    ->  dlogits kernel  ->  dh = dlogits W          (all in forward)

and backward only scales the stored dh by the incoming scalar. That saves one [N, V, H]
matmul per step against token_stats + policy_loss, and still never holds more than one
chunk of logits (two with the degraded image).
"""

from __future__ import annotations

from typing import Optional

import torch

from .fused_policy_loss import ENT, ENT_DEG, LOSS, NCOLS, P_KL, launch_policy_terms, metrics_from_sums
from .fused_token_stats import chunk_grads, stats_forward
from .reference import check_objective_inputs, chunk_logits, default_chunk_size, sequence_weights


class _FusedObjective(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, hidden_deg, token_ids, advantages, mask, old_logp, ref_logp, opts):
        beta, eps_low, eps_high, loss_type, max_len, gamma, eta1, eta2, temperature, chunk = opts
        S, T, H = hidden.shape
        dev = hidden.device
        m_full = mask.to(torch.float32)
        idx = torch.nonzero(m_full.reshape(-1) != 0).squeeze(1)  # only completion tokens cost anything
        N = idx.numel()
        pick = lambda t: None if t is None else t.reshape(S * T, *t.shape[2:]).index_select(0, idx)
        h, hd, tok, m = pick(hidden), pick(hidden_deg), pick(token_ids), pick(m_full)
        old = pick(old_logp.detach().float()) if old_logp is not None else None
        ref = pick(ref_logp.detach().float()) if ref_logp is not None else None
        adv = advantages.detach().float()[:, None].expand(S, T).reshape(-1).index_select(0, idx)
        cw = sequence_weights(m_full, loss_type, max_len)[:, None].expand(S, T).reshape(-1).index_select(0, idx)
        n_tok = m_full.sum().clamp(min=1.0)
        has_deg = hd is not None
        grad_deg = has_deg and hidden_deg.requires_grad and eta2 != 0.0
        need_w = weight.requires_grad

        d_h = torch.empty_like(h)
        d_hd = torch.empty_like(hd) if grad_deg else None
        d_w = torch.zeros(weight.shape, dtype=torch.float32, device=dev) if need_w else None
        sums = torch.zeros(NCOLS, dtype=torch.float32, device=dev)
        inv_t = 1.0 / temperature
        for start in range(0, N, chunk):
            sl = slice(start, min(start + chunk, N))
            z = chunk_logits(h[sl], weight)
            zd = chunk_logits(hd[sl], weight) if has_deg else None
            lp, kl, ent, entd, saved = stats_forward(z, tok[sl], zd, inv_t)
            # Each token is its own one-token "sequence" for the policy kernel: its advantage
            # and its sequence's weight c[s] ride along per token.
            col = lambda t: None if t is None else t[:, None]
            g_lp, part = launch_policy_terms(
                lp[:, None],
                col(None if old is None else old[sl]),
                col(None if ref is None else ref[sl]),
                adv[sl],
                m[sl][:, None].contiguous(),
                cw[sl].contiguous(),
                col(kl),
                col(ent),
                col(entd),
                beta,
                eps_low,
                eps_high,
            )
            sums += part.sum(0)
            coef = lambda c: None if (c == 0.0 or not has_deg) else (m[sl] * (c / n_tok)).contiguous()
            g_kl, g_h, g_hd = coef(-gamma), coef(eta1), coef(eta2) if grad_deg else None
            dh_c, dhd_c = chunk_grads(
                z,
                zd,
                tok[sl],
                inv_t,
                saved,
                ent,
                entd,
                g_lp[:, 0].contiguous(),
                g_kl,
                g_h,
                g_hd,
                weight,
                h[sl],
                hd[sl] if g_hd is not None else None,
                d_w,
            )
            d_h[sl] = dh_c
            if dhd_c is not None:
                d_hd[sl] = dhd_c
            del z, zd, dh_c, dhd_c
        loss = sums[LOSS] + (-gamma * sums[P_KL] + eta1 * sums[ENT] + eta2 * sums[ENT_DEG]) / n_tok
        ctx.save_for_backward(idx, d_h, d_hd, d_w)
        ctx.shape, ctx.w_dtype = (S, T, H), weight.dtype
        ctx.mark_non_differentiable(sums)
        return loss, sums

    @staticmethod
    def backward(ctx, g_loss, _g_sums):
        idx, d_h, d_hd, d_w = ctx.saved_tensors
        S, T, H = ctx.shape

        def scatter(d):
            full = torch.zeros((S * T, H), dtype=d.dtype, device=d.device)
            return full.index_copy_(0, idx, d * g_loss.to(d.dtype)).view(S, T, H)

        need_h, need_w, need_hd = ctx.needs_input_grad[:3]
        return (
            scatter(d_h) if need_h else None,
            (d_w * g_loss).to(ctx.w_dtype) if (need_w and d_w is not None) else None,
            scatter(d_hd) if (need_hd and d_hd is not None) else None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def policy_loss_from_hidden(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    old_logp: Optional[torch.Tensor] = None,
    ref_logp: Optional[torch.Tensor] = None,
    hidden_deg: Optional[torch.Tensor] = None,
    *,
    beta: float = 0.04,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    loss_type: str = "grpo",
    max_len: Optional[int] = None,
    gamma: float = 0.0,
    eta1: float = 0.0,
    eta2: float = 0.0,
    temperature: float = 1.0,
    chunk_size: Optional[int] = None,
):
    check_objective_inputs(
        hidden,
        weight,
        token_ids,
        advantages,
        mask,
        old_logp,
        ref_logp,
        hidden_deg,
        loss_type,
        max_len,
        gamma,
        eta1,
        eta2,
    )
    if ref_logp is not None and beta == 0.0:
        ref_logp = None
    S, T, _ = hidden.shape
    chunk = chunk_size or default_chunk_size(S * T, weight.shape[0])
    opts = (
        float(beta),
        float(eps_low),
        float(eps_high),
        loss_type,
        max_len,
        float(gamma),
        float(eta1),
        float(eta2),
        float(temperature),
        int(chunk),
    )
    loss, sums = _FusedObjective.apply(
        hidden, weight, hidden_deg, token_ids, advantages, mask, old_logp, ref_logp, opts
    )
    terms = (True,) * 3 if hidden_deg is not None else (None,) * 3  # which perception metrics exist
    return loss, metrics_from_sums(sums, mask, ref_logp is not None, terms)
