"""Plain PyTorch reference of every hawkeye-lite kernel.

This file is the executable definition of the math in SPEC §1.2-1.5 and the CPU path of
training. It is written for clarity and relies on autograd for every gradient, so that the
hand-derived backward passes of the Triton kernels have an independent check.

Memory: `token_stats` never holds more than one token-chunk of logits (plus the autograd
temporaries of that chunk): each chunk runs under activation checkpointing, so the chunk's
logits are recomputed in backward instead of being kept alive.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch
from torch.utils.checkpoint import checkpoint


class GroupAdvantages(NamedTuple):
    advantages: torch.Tensor  # [B, G] uncertainty-weighted group-normalised advantages
    weight: torch.Tensor  # [B] w = exp(-alpha * u)
    uncertainty: torch.Tensor  # [B] u in [0, 1]
    reward_mean: torch.Tensor  # [B]
    reward_std: torch.Tensor  # [B] Bessel-corrected, 0 when G == 1


class TokenStats(NamedTuple):
    logp: torch.Tensor  # [N] log p(token)
    kl: Optional[torch.Tensor]  # [N] KL(p || p_deg), exact over the vocabulary
    entropy: Optional[torch.Tensor]  # [N] H(p)
    entropy_deg: Optional[torch.Tensor]  # [N] H(p_deg)


# --------------------------------------------------------------------------- advantages


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
    """SPEC §1.2. rewards, scores: [B, G]; NaN scores are unparsed rollouts."""
    _check_groups(rewards, scores)
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    r = rewards.to(dtype)
    G = r.shape[1]
    mean = r.mean(dim=1)
    dev = r - mean[:, None]
    # Bessel-corrected std; a single rollout has no spread, so its advantage is 0, not NaN.
    std = (dev.square().sum(dim=1) / max(G - 1, 1)).sqrt()
    adv = dev / (std[:, None] + eps) if scale_rewards else dev

    s = scores.to(dtype)
    valid = ~torch.isnan(s)
    n = valid.sum(dim=1)
    sc = torch.where(valid, s.clamp(score_min, score_max), torch.zeros_like(s))
    mu = sc.sum(dim=1) / n.clamp(min=1)
    var = torch.where(valid, (sc - mu[:, None]).square(), torch.zeros_like(s)).sum(dim=1) / n.clamp(min=1)
    var = torch.where(n >= 2, var, torch.zeros_like(var))
    u = (var / (0.25 * (score_max - score_min) ** 2)).clamp(0.0, 1.0)
    w = torch.exp(-alpha * u) if use_uncertainty else torch.ones_like(u)
    return GroupAdvantages(adv * w[:, None], w, u, mean, std)


def _check_groups(rewards: torch.Tensor, scores: torch.Tensor) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"group_advantages: rewards must be [B, G], got shape {tuple(rewards.shape)}")
    if scores.shape != rewards.shape:
        raise ValueError(
            f"group_advantages: scores shape {tuple(scores.shape)} != rewards shape {tuple(rewards.shape)}"
        )
    if not rewards.is_floating_point() or not scores.is_floating_point():
        raise TypeError("group_advantages: rewards and scores must be floating point (NaN marks unparsed scores)")


# --------------------------------------------------------------------------- token statistics


def _masked_log_softmax(z: torch.Tensor):
    """log_softmax, softmax, and log p with 0 where p == 0 (so p * log p has a finite gradient)."""
    logp_all = torch.log_softmax(z, dim=-1)
    p = logp_all.exp()
    safe = torch.where(p > 0, logp_all, torch.zeros_like(logp_all))
    return logp_all, p, safe


def stats_from_logits(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    logits_deg: Optional[torch.Tensor] = None,
    *,
    temperature: float = 1.0,
) -> TokenStats:
    """Per-token log-prob, and with degraded logits KL(p||p_deg), H(p), H(p_deg). fp32 (or fp64) out.

    Gradients flow by autograd into `logits`; `logits_deg` gets a gradient only through
    H(p_deg) — inside the KL it is a constant (SPEC §1.4).
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    z = logits.to(dtype) / temperature
    logp_all, p, safe = _masked_log_softmax(z)
    logp = logp_all.gather(-1, token_ids.long()[:, None]).squeeze(-1)
    if logits_deg is None:
        return TokenStats(logp, None, None, None)
    zd = logits_deg.to(dtype) / temperature
    logq_all, q, safe_q = _masked_log_softmax(zd)
    entropy = -(p * safe).sum(-1)
    entropy_deg = -(q * safe_q).sum(-1)
    # KL uses the degraded distribution as a constant: its gradient would push p~, which the
    # degraded pass must not do.
    # Select before multiplying: where p == 0 the difference can be -inf - (-inf).
    diff = torch.where(p > 0, safe - logq_all.detach(), torch.zeros_like(p))
    kl = (p * diff).sum(-1)
    return TokenStats(logp, kl, entropy, entropy_deg)


def token_stats_from_logits(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    logits_deg: Optional[torch.Tensor] = None,
    *,
    temperature: float = 1.0,
) -> TokenStats:
    _check_logits(logits, token_ids, logits_deg)
    return stats_from_logits(logits, token_ids, logits_deg, temperature=temperature)


class _MatmulFloatOut(torch.autograd.Function):
    """h @ w^T with fp32 output from half inputs (torch.mm(out_dtype=) has no autograd formula)."""

    @staticmethod
    def forward(ctx, h, w):
        ctx.save_for_backward(h, w)
        return torch.mm(h, w.t(), out_dtype=torch.float32)

    @staticmethod
    def backward(ctx, g):
        h, w = ctx.saved_tensors
        g = g.to(h.dtype)
        return (g @ w if ctx.needs_input_grad[0] else None), (g.t() @ h if ctx.needs_input_grad[1] else None)


@functools.lru_cache(maxsize=None)
def _mm_out_dtype_works(device: str, dtype: torch.dtype) -> bool:
    t = torch.ones(1, 1, device=device, dtype=dtype)
    try:
        torch.mm(t, t, out_dtype=torch.float32)
        return True
    except (TypeError, RuntimeError):  # older torch: no mm(out_dtype=)
        return False


def chunk_logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """hidden[n, H] @ weight[V, H]^T as fp32 (fp32 accumulation; on CUDA half inputs give fp32 out,
    elsewhere the matmul's own dtype is upcast)."""
    if hidden.dtype != weight.dtype:
        raise TypeError(f"token_stats: hidden dtype {hidden.dtype} != weight dtype {weight.dtype}")
    if (
        hidden.is_cuda
        and hidden.dtype in (torch.bfloat16, torch.float16)
        and _mm_out_dtype_works(str(hidden.device), hidden.dtype)
    ):
        return _MatmulFloatOut.apply(hidden, weight)
    out = torch.mm(hidden, weight.t())
    return out if out.dtype == torch.float64 else out.float()


def default_chunk_size(n: int, vocab: int, budget_bytes: int = 1 << 29) -> int:
    """Largest power-of-two token chunk whose fp32 logits fit in `budget_bytes` (512 MiB)."""
    c = max(1, budget_bytes // (4 * max(vocab, 1)))
    c = 1 << (c.bit_length() - 1)
    return max(1, min(n, c))


def token_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    hidden_deg: Optional[torch.Tensor] = None,
    *,
    temperature: float = 1.0,
    chunk_size: Optional[int] = None,
) -> TokenStats:
    """Chunked over tokens: logits = hidden @ weight^T exist one chunk at a time."""
    _check_hidden(hidden, weight, token_ids, hidden_deg)
    N = hidden.shape[0]
    chunk = chunk_size or default_chunk_size(N, weight.shape[0])
    need_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (hidden_deg is not None and hidden_deg.requires_grad)
    )

    def one_chunk(h, tok, hd):
        z = chunk_logits(h, weight)
        zd = chunk_logits(hd, weight) if hd is not None else None
        return tuple(t for t in stats_from_logits(z, tok, zd, temperature=temperature) if t is not None)

    outs = []
    for start in range(0, N, chunk):
        sl = slice(start, start + chunk)
        args = (hidden[sl], token_ids[sl], hidden_deg[sl] if hidden_deg is not None else None)
        outs.append(checkpoint(one_chunk, *args, use_reentrant=False) if need_grad else one_chunk(*args))
    if not outs:  # N == 0: empty outputs that still belong to the graph, so backward works
        empty = hidden[:0].sum(-1).to(torch.promote_types(hidden.dtype, torch.float32))
        return TokenStats(empty, *((empty, empty, empty) if hidden_deg is not None else (None, None, None)))
    cols = [torch.cat(c) for c in zip(*outs)]
    if hidden_deg is None:
        return TokenStats(cols[0], None, None, None)
    return TokenStats(*cols)


def _check_logits(logits, token_ids, logits_deg) -> None:
    if logits.dim() != 2:
        raise ValueError(f"token_stats_from_logits: logits must be [N, V], got {tuple(logits.shape)}")
    if token_ids.shape != logits.shape[:1]:
        raise ValueError(f"token_stats_from_logits: token_ids shape {tuple(token_ids.shape)} != [N={logits.shape[0]}]")
    if logits_deg is not None and logits_deg.shape != logits.shape:
        raise ValueError(
            f"token_stats_from_logits: logits_deg shape {tuple(logits_deg.shape)} != logits shape {tuple(logits.shape)}"
        )


def _check_hidden(hidden, weight, token_ids, hidden_deg) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"token_stats: need hidden [N, H] and weight [V, H], got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if token_ids.shape != hidden.shape[:1]:
        raise ValueError(f"token_stats: token_ids shape {tuple(token_ids.shape)} != [N={hidden.shape[0]}]")
    if hidden_deg is not None and hidden_deg.shape != hidden.shape:
        raise ValueError(
            f"token_stats: hidden_deg shape {tuple(hidden_deg.shape)} != hidden shape {tuple(hidden.shape)}"
        )


# --------------------------------------------------------------------------- policy loss

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")


def sequence_weights(mask: torch.Tensor, loss_type: str, max_len: Optional[int], dtype=torch.float32) -> torch.Tensor:
    """Per-sequence factor c[s] so that the policy loss is sum_{s,t} c[s] * mask * loss_token."""
    S, T = mask.shape
    m = mask.to(dtype)
    if loss_type == "grpo":  # mean over each sequence's tokens, then over sequences
        return 1.0 / (m.sum(1).clamp(min=1.0) * max(S, 1))
    if loss_type == "dapo":  # mean over all tokens of the batch
        return (1.0 / m.sum().clamp(min=1.0)).expand(S).contiguous()
    if loss_type == "dr_grpo":  # sum over tokens / (sequences * max completion length)
        L = T if max_len is None else max_len
        return torch.full((S,), 1.0 / (max(S, 1) * L), dtype=dtype, device=mask.device)
    raise ValueError(f"policy_loss: loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def check_policy_inputs(logp, old_logp, ref_logp, advantages, mask, loss_type, max_len, terms) -> None:
    if logp.dim() != 2:
        raise ValueError(f"policy_loss: logp must be [S, T], got {tuple(logp.shape)}")
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask), *terms):
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"policy_loss: {name} shape {tuple(t.shape)} != logp shape {tuple(logp.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"policy_loss: advantages must be [S={logp.shape[0]}], got {tuple(advantages.shape)}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"policy_loss: loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if max_len is not None and max_len < 1:
        raise ValueError(f"policy_loss: max_len must be >= 1, got {max_len}")


def check_perception(gamma, eta1, eta2, kl_perception, entropy, entropy_deg) -> None:
    for coef, value, name, t in (
        ("gamma", gamma, "kl_perception", kl_perception),
        ("eta1", eta1, "entropy", entropy),
        ("eta2", eta2, "entropy_deg", entropy_deg),
    ):
        if value != 0.0 and t is None:
            raise ValueError(f"policy_loss: {coef}={value} needs `{name}`, which is None")


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
    """SPEC §1.3-1.5: clipped surrogate + beta * k3 reference KL, aggregated by loss_type, plus
    -gamma * KL(p||p_deg) + eta1 * H(p) + eta2 * H(p_deg) averaged over the masked tokens."""
    terms = (("kl_perception", kl_perception), ("entropy", entropy), ("entropy_deg", entropy_deg))
    check_policy_inputs(logp, old_logp, ref_logp, advantages, mask, loss_type, max_len, terms)
    check_perception(gamma, eta1, eta2, kl_perception, entropy, entropy_deg)
    dtype = torch.promote_types(logp.dtype, torch.float32)
    lp = logp.to(dtype)
    # old/ref log-probs and advantages are constants of the objective.
    old = lp.detach() if old_logp is None else old_logp.detach().to(dtype)
    m = mask.to(dtype)
    on = m != 0  # masked positions may hold anything (padding): select, never multiply by 0
    A = advantages.detach().to(dtype)[:, None]

    ratio = torch.exp(lp - old)
    s1 = ratio * A
    s2 = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * A
    per_token = -torch.minimum(s1, s2)
    k3 = None
    if ref_logp is not None and beta != 0.0:
        delta = ref_logp.detach().to(dtype) - lp
        k3 = torch.exp(delta) - delta - 1.0
        per_token = per_token + beta * k3

    c = sequence_weights(mask, loss_type, max_len, dtype)
    loss = torch.where(on, per_token * m * c[:, None], 0.0).sum()

    n_tok = m.sum().clamp(min=1.0)
    for coef, t in ((-gamma, kl_perception), (eta1, entropy), (eta2, entropy_deg)):
        if t is not None and coef != 0.0:
            loss = loss + coef * torch.where(on, t.to(dtype) * m, 0.0).sum() / n_tok

    with torch.no_grad():
        low = ((ratio < 1.0 - eps_low) & (A < 0)).to(dtype)
        high = ((ratio > 1.0 + eps_high) & (A > 0)).to(dtype)
        metrics = {
            "clip_frac_low": float((low * m).sum() / n_tok),
            "clip_frac_high": float((high * m).sum() / n_tok),
            "clip_frac": float(((low + high) * m).sum() / n_tok),
        }
        if k3 is not None:
            metrics["ref_kl"] = float(torch.where(on, k3 * m, 0.0).sum() / n_tok)
        for key, t in (("perception_kl", kl_perception), ("entropy", entropy), ("entropy_deg", entropy_deg)):
            if t is not None:
                metrics[key] = float(torch.where(on, t.to(dtype) * m, 0.0).sum() / n_tok)
    return loss, metrics


# --------------------------------------------------------------------------- the whole objective


def check_objective_inputs(
    hidden, weight, token_ids, advantages, mask, old_logp, ref_logp, hidden_deg, loss_type, max_len, gamma, eta1, eta2
) -> None:
    if hidden.dim() != 3:
        raise ValueError(f"policy_loss_from_hidden: hidden must be [S, T, H], got {tuple(hidden.shape)}")
    S, T, H = hidden.shape
    if weight.dim() != 2 or weight.shape[1] != H:
        raise ValueError(f"policy_loss_from_hidden: weight must be [V, H={H}], got {tuple(weight.shape)}")
    if hidden.dtype != weight.dtype:
        raise TypeError(f"policy_loss_from_hidden: hidden dtype {hidden.dtype} != weight dtype {weight.dtype}")
    if hidden_deg is not None and hidden_deg.shape != hidden.shape:
        raise ValueError(
            f"policy_loss_from_hidden: hidden_deg shape {tuple(hidden_deg.shape)} != hidden shape {tuple(hidden.shape)}"
        )
    for name, t in (("token_ids", token_ids), ("mask", mask), ("old_logp", old_logp), ("ref_logp", ref_logp)):
        if t is not None and t.shape != (S, T):
            raise ValueError(f"policy_loss_from_hidden: {name} must be [S={S}, T={T}], got {tuple(t.shape)}")
    if advantages.shape != (S,):
        raise ValueError(f"policy_loss_from_hidden: advantages must be [S={S}], got {tuple(advantages.shape)}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"policy_loss_from_hidden: loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if max_len is not None and max_len < 1:
        raise ValueError(f"policy_loss_from_hidden: max_len must be >= 1, got {max_len}")
    if hidden_deg is None and (gamma != 0.0 or eta1 != 0.0 or eta2 != 0.0):
        raise ValueError("policy_loss_from_hidden: gamma/eta1/eta2 need hidden_deg (the degraded-image pass)")


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
    """The whole objective from completion hidden states [S, T, H]: by definition token_stats on
    the masked positions followed by policy_loss. Returns (loss, metrics)."""
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
    sel = mask != 0
    st = token_stats(
        hidden[sel],
        weight,
        token_ids[sel],
        hidden_deg[sel] if hidden_deg is not None else None,
        temperature=temperature,
        chunk_size=chunk_size,
    )

    def full(v):
        return None if v is None else torch.zeros(sel.shape, dtype=v.dtype, device=v.device).masked_scatter(sel, v)

    return policy_loss(
        full(st.logp),
        old_logp,
        ref_logp,
        advantages,
        mask,
        beta=beta,
        eps_low=eps_low,
        eps_high=eps_high,
        loss_type=loss_type,
        max_len=max_len,
        kl_perception=full(st.kl),
        entropy=full(st.entropy),
        entropy_deg=full(st.entropy_deg),
        gamma=gamma,
        eta1=eta1,
        eta2=eta2,
    )
