"""The update of one RL step (SPEC §1.3-1.5): μ times, policy forward on the completion positions
-> the fused objective (never full-vocabulary logits) -> backward, each micro-batch weighted so the
step is one batch -> all-reduce across ranks -> clip -> optimizer step. A non-finite loss or
gradient never reaches the weights: that update is dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import torch

from .config import TrainConfig
from .experience import Experience, scatter
from .kernels import policy_loss_from_hidden, token_stats


@dataclass
class UpdateResult:
    losses: List[float] = field(default_factory=list)  # one per micro-batch and update
    metrics: List[Dict[str, float]] = field(default_factory=list)  # the fused loss's, likewise
    grad_norms: List[float] = field(default_factory=list)  # one per update (NaN: skipped)
    skipped: int = 0  # updates dropped for a non-finite loss or gradient
    tokens: int = 0  # tokens through the policy forward
    seconds: float = 0.0


def normalisers(exps: Sequence[Experience], cfg: TrainConfig, dist) -> List[tuple]:
    """(scale, perception_scale) per micro-batch, so that the sum of `scale * loss` over the
    step's micro-batches and ranks is the objective of the whole step as one batch (SPEC
    §1.3-1.4) for every loss_type: the policy term is normalised by sequences (grpo, dr_grpo)
    or tokens (dapo) of the whole step, the perception terms by its tokens. Counts are summed
    over ranks, so R ranks x batch b give the gradient of one process with batch R*b."""
    seqs = [float(e.completion_mask.shape[0]) for e in exps]
    toks = [float(e.completion_mask.sum()) for e in exps]
    total_seqs, total_toks = dist.sum([sum(seqs), sum(toks)])
    out = []
    for s_i, t_i in zip(seqs, toks):
        scale = t_i / total_toks if cfg.objective.loss_type == "dapo" else s_i / total_seqs
        # The fused loss averages the perception terms over this micro-batch's tokens; rescale
        # their coefficients so that after `scale` they are averaged over the step's tokens.
        out.append((scale, (t_i / total_toks) / scale))
    return out


def loss(policy, cfg: TrainConfig, exp: Experience, gamma: float, perception_scale: float = 1.0):
    """Policy forward on the completion positions only, then the fused objective.
    Returns (loss, metrics, tokens through the forward)."""
    o, p = cfg.objective, cfg.objective.perception
    on = p.enabled
    vision_trainable = policy.model.training and cfg.model.lora.vision
    feats = None if vision_trainable else exp.feats
    hidden = policy.completion_hidden_states(exp.batch, exp.completion_ids, exp.completion_mask, feats)
    hidden_deg = exp.hidden_deg
    if on and hidden_deg is None:  # degraded_grad: the pass is part of the graph
        hidden_deg = policy.completion_hidden_states(
            exp.batch_deg, exp.completion_ids, exp.completion_mask, None if vision_trainable else exp.feats_deg
        )
    value, metrics = policy_loss_from_hidden(
        hidden,
        policy.lm_head_weight,
        exp.completion_ids,
        exp.advantages,
        exp.completion_mask,
        exp.old_logp,
        exp.ref_logp,
        hidden_deg if on else None,
        beta=o.beta,
        eps_low=o.eps_low,
        eps_high=o.eps_high,
        loss_type=o.loss_type,
        max_len=cfg.rollout.max_new_tokens,
        gamma=gamma * perception_scale if on else 0.0,
        eta1=p.eta1 * perception_scale if on else 0.0,
        eta2=p.eta2 * perception_scale if on else 0.0,
        temperature=cfg.rollout.temperature,
        chunk_size=o.chunk_size,
    )
    if cfg.optim.mu > 1 and exp.old_logp is None:
        # The sampling policy's log-probs, for the μ-1 later updates on this batch.
        sel = exp.completion_mask.bool()
        with torch.no_grad():
            lp = token_stats(
                hidden.detach()[sel],
                policy.lm_head_weight,
                exp.completion_ids[sel],
                temperature=cfg.rollout.temperature,
                chunk_size=o.chunk_size,
            ).logp
        exp.old_logp = scatter(sel, lp)
    tokens = exp.completion_ids.shape[0] * (exp.batch.input_ids.shape[1] + exp.completion_ids.shape[1])
    return value, metrics, tokens


def update(policy, optimizer, exps: Sequence[Experience], cfg: TrainConfig, dist, gamma: float) -> UpdateResult:
    """μ optimizer updates over the step's micro-batches (every rank skips a non-finite one, or none)."""
    o = cfg.optim
    norms = normalisers(exps, cfg, dist)
    params = policy.trainable_parameters()
    out, t0 = UpdateResult(), time.time()
    policy.model.train()
    for _ in range(o.mu):
        optimizer.zero_grad(set_to_none=True)
        finite = True
        for exp, (scale, perception_scale) in zip(exps, norms):
            value, metrics, ntok = loss(policy, cfg, exp, gamma, perception_scale)
            out.tokens += ntok
            if not torch.isfinite(value):
                finite = False
                break
            (value * scale).backward()
            out.losses.append(value.item())
            out.metrics.append(metrics)
        finite = not dist.any(not finite)
        if finite:
            dist.all_reduce_grads(params)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm if o.max_grad_norm > 0 else float("inf"))
        if not finite or not torch.isfinite(grad_norm):
            # AdamW would spread a NaN into every later step: drop this update.
            optimizer.zero_grad(set_to_none=True)
            out.skipped += 1
            out.grad_norms.append(float("nan"))
            continue
        optimizer.step()
        out.grad_norms.append(float(grad_norm))
    out.seconds = time.time() - t0
    return out
