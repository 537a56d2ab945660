"""hawkeye_lite.kernels: the fused Q-Hawkeye objective (SPEC §2).

Every op has a Triton implementation (one file each: fused_advantages.py,
fused_token_stats.py, fused_policy_loss.py — named so that importing one never shadows the
function of the same name here) and a plain PyTorch reference (`reference.py`). Dispatch per call: Triton for CUDA tensors, the reference otherwise.
`HAWKEYE_KERNELS=triton|torch` forces one; Triton on CPU tensors needs TRITON_INTERPRET=1 set
before triton is first imported (that is how CI tests the kernels).
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from . import reference
from .reference import GroupAdvantages, TokenStats

__all__ = [
    "GroupAdvantages",
    "TokenStats",
    "group_advantages",
    "token_stats",
    "token_stats_from_logits",
    "policy_loss",
    "policy_loss_from_hidden",
    "backend",
    "reference",
]


def backend(t: torch.Tensor) -> str:
    """'triton' or 'torch': which implementation a call on tensor `t` runs."""
    mode = os.environ.get("HAWKEYE_KERNELS", "auto").strip().lower()
    if mode in ("torch", "reference"):
        return "torch"
    if mode == "triton":
        if not t.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                "HAWKEYE_KERNELS=triton on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
            )
        return "triton"
    if mode != "auto":
        raise ValueError(f"HAWKEYE_KERNELS must be 'triton', 'torch' or unset, got {mode!r}")
    return "triton" if t.is_cuda else "torch"


def group_advantages(rewards: torch.Tensor, scores: torch.Tensor, **kw) -> GroupAdvantages:
    """SPEC §1.2: group-normalised, uncertainty-weighted advantages. See reference.group_advantages."""
    if backend(rewards) == "triton":
        from .fused_advantages import group_advantages as fn
    else:
        fn = reference.group_advantages
    return fn(rewards, scores, **kw)


def token_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    hidden_deg: Optional[torch.Tensor] = None,
    *,
    temperature: float = 1.0,
    chunk_size: Optional[int] = None,
) -> TokenStats:
    """log p(token), and with hidden_deg KL(p||p~), H(p), H(p~), from hidden states and lm_head
    weight, one token-chunk of logits at a time. All outputs fp32, differentiable."""
    if backend(hidden) == "triton":
        from .fused_token_stats import token_stats as fn
    else:
        fn = reference.token_stats
    return fn(hidden, weight, token_ids, hidden_deg, temperature=temperature, chunk_size=chunk_size)


def token_stats_from_logits(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    logits_deg: Optional[torch.Tensor] = None,
    *,
    temperature: float = 1.0,
) -> TokenStats:
    """token_stats for callers that already hold [N, V] logits. Never writes to `logits`."""
    if backend(logits) == "triton":
        from .fused_token_stats import token_stats_from_logits as fn
    else:
        fn = reference.token_stats_from_logits
    return fn(logits, token_ids, logits_deg, temperature=temperature)


def policy_loss(logp, old_logp, ref_logp, advantages, mask, **kw):
    """SPEC §1.3-1.5: (loss, metrics). See reference.policy_loss for the arguments."""
    if backend(logp) == "triton":
        from .fused_policy_loss import policy_loss as fn
    else:
        fn = reference.policy_loss
    return fn(logp, old_logp, ref_logp, advantages, mask, **kw)


def policy_loss_from_hidden(
    hidden, weight, token_ids, advantages, mask, old_logp=None, ref_logp=None, hidden_deg=None, **kw
):
    """The whole objective from completion hidden states [S, T, H] and the lm_head weight:
    token_stats + policy_loss, fused so that forward also produces the gradient (one matmul
    fewer than the two ops in sequence). Returns (loss, metrics)."""
    if backend(hidden) == "triton":
        from .fused_objective import policy_loss_from_hidden as fn
    else:
        fn = reference.policy_loss_from_hidden
    return fn(hidden, weight, token_ids, advantages, mask, old_logp, ref_logp, hidden_deg, **kw)
