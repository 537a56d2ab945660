"""Uncertainty-weighted group advantages (SPEC §1.2) in one Triton program per group.

Rewards carry no gradient (they come from parsing sampled text), so there is no backward
and no autograd Function here: the kernel is a plain forward op.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import GroupAdvantages, _check_groups


@triton.jit
def _group_advantages_kernel(
    rewards_ptr,
    scores_ptr,
    adv_ptr,
    weight_ptr,
    unc_ptr,
    mean_ptr,
    std_ptr,
    G,
    alpha,
    score_min,
    score_max,
    eps,
    SCALE: tl.constexpr,
    USE_UNC: tl.constexpr,
    BLOCK_G: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_G)
    inb = offs < G
    r = tl.load(rewards_ptr + b * G + offs, mask=inb, other=0.0).to(tl.float32)
    mean = tl.sum(r, axis=0) / G
    dev = tl.where(inb, r - mean, 0.0)
    # G == 1: dev is 0 and so is the std; dividing by max(G-1, 1) keeps it finite.
    std = tl.sqrt(tl.sum(dev * dev, axis=0) / tl.maximum(G - 1, 1))
    if SCALE:
        adv = dev / (std + eps)
    else:
        adv = dev

    s = tl.load(scores_ptr + b * G + offs, mask=inb, other=float("nan")).to(tl.float32)
    valid = inb & (s == s)  # NaN != NaN marks an unparsed rollout
    n = tl.sum(valid.to(tl.float32), axis=0)
    sc = tl.where(valid, tl.minimum(tl.maximum(s, score_min), score_max), 0.0)
    mu = tl.sum(sc, axis=0) / tl.maximum(n, 1.0)
    d = tl.where(valid, sc - mu, 0.0)
    var = tl.sum(d * d, axis=0) / tl.maximum(n, 1.0)
    var = tl.where(n >= 2.0, var, 0.0)
    span = score_max - score_min
    u = tl.minimum(tl.maximum(var / (0.25 * span * span), 0.0), 1.0)
    if USE_UNC:
        w = tl.exp(-alpha * u)
    else:
        w = u * 0.0 + 1.0

    tl.store(adv_ptr + b * G + offs, adv * w, mask=inb)
    tl.store(weight_ptr + b, w)
    tl.store(unc_ptr + b, u)
    tl.store(mean_ptr + b, mean)
    tl.store(std_ptr + b, std)


def group_advantages(
    rewards: torch.Tensor,
    scores: torch.Tensor,
    *,
    alpha: float = 0.2,
    score_min: float = 1.0,
    score_max: float = 5.0,
    eps: float = 1e-4,
    scale_rewards: bool = True,
    use_uncertainty: bool = True,
) -> GroupAdvantages:
    _check_groups(rewards, scores)
    B, G = rewards.shape
    r = rewards.contiguous()
    s = scores.contiguous()
    out = torch.empty((B, G), dtype=torch.float32, device=r.device)
    w, u, mean, std = (torch.empty(B, dtype=torch.float32, device=r.device) for _ in range(4))
    if B > 0 and G > 0:
        _group_advantages_kernel[(B,)](
            r,
            s,
            out,
            w,
            u,
            mean,
            std,
            G,
            float(alpha),
            float(score_min),
            float(score_max),
            float(eps),
            SCALE=bool(scale_rewards),
            USE_UNC=bool(use_uncertainty),
            BLOCK_G=triton.next_power_of_2(G),
        )
    return GroupAdvantages(out, w, u, mean, std)
