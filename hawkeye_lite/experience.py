"""From a step's images to what its updates learn from (SPEC §1.1-1.4, everything before the loss).

`collect` runs the frozen vision tower once per image (the features feed the rollouts and every
later pass), decodes G completions per image with all the step's images together (decode.py, each
image from the random stream of its slot), then per learning micro-batch computes the rewards, the
uncertainty-weighted group advantages (kernels), the reference log-probs with the adapter off
(skipped when β = 0) and the degraded-image hidden states (no gradient), on the same completions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from .config import TrainConfig
from .kernels import group_advantages, token_stats


@dataclass
class Experience:
    """One sampled micro-batch, everything the μ policy updates need."""

    batch: object  # PromptBatch of the original images
    feats: torch.Tensor  # their vision features (computed once)
    batch_deg: Optional[object]
    feats_deg: Optional[torch.Tensor]
    completion_ids: torch.Tensor  # [S, T]
    completion_mask: torch.Tensor  # [S, T]
    advantages: torch.Tensor  # [S]
    ref_logp: Optional[torch.Tensor]  # [S, T]
    hidden_deg: Optional[torch.Tensor]  # [S, T, H] (no grad), or None when computed in the update
    old_logp: Optional[torch.Tensor] = None  # [S, T], filled when μ > 1
    stats: Dict[str, float] = field(default_factory=dict)
    images: Dict[str, list] = field(default_factory=dict)  # logging.per_image: one entry per image


def scatter(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """[N] values at the True positions of a [S, T] mask -> [S, T] (0 elsewhere)."""
    return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values)


def reward_spread(rewards, G: int, eps: float = 1e-6) -> Dict[str, float]:
    """Where a step's learning signal comes from. GRPO learns only from the spread of rewards
    inside a group: `zero_spread` is the fraction of groups whose G rewards are all equal (their
    advantages are 0: no gradient), and `spread_<name>` is each reward column's share of the
    within-group variance of the total, cov(r_name, r_total) / var(r_total) summed over groups
    (the shares add up to 1), e.g. how much of the advantage comes from format vs accuracy."""
    total = rewards.total.double().view(-1, G)
    dev = total - total.mean(1, keepdim=True)
    out = {"zero_spread": float((total.std(1, unbiased=False) <= eps).double().mean()) if G > 1 else 1.0}
    var = float(dev.square().sum())
    for name, col in rewards.columns.items():
        c = col.double().view(-1, G)
        cov = float(((c - c.mean(1, keepdim=True)) * dev).sum())
        out[f"spread_{name}"] = cov / var if var > 0 else float("nan")
    return out


@torch.no_grad()
def collect(policy, cfg: TrainConfig, records: list, images: list, seeds: Sequence[int], partners) -> List[Experience]:
    """Rollouts for the images of a step (`records` in slot order, one rollout seed each),
    decoded `rollout.batch_size` images at a time (None: all together); then one Experience per
    learning micro-batch of `optim.batch_size` images. `partners(record, image)` gives the
    degraded partner (trainset.Partners)."""
    from .decode import rollout_weights
    from .rollout import generate_rollouts

    r = cfg.rollout
    if len(seeds) != len(records):
        raise ValueError(f"sample: {len(seeds)} seeds for {len(records)} images")
    n, mb, g = len(records), cfg.optim.batch_size, r.num_generations
    micro = [list(range(i, min(i + mb, n))) for i in range(0, n, mb)]
    batches, feats, per_image = [], [], []
    for m in micro:
        batch = policy.encode([images[i] for i in m], r.prompt)
        f = policy.image_features(batch)
        batches.append(batch)
        feats.append(f)
        per_image += list(torch.split(f, policy.processor.num_image_tokens(batch.image_grid_thw)))

    chunk = min(r.batch_size or n, n)
    done = [None] * n  # per image: (ids [G, T], mask [G, T], texts, scores [G])
    t0 = time.time()
    cache_len = max(b.input_ids.shape[1] for b in batches) + r.max_new_tokens
    with rollout_weights(policy, r.weights, rows=chunk * g, cache_len=cache_len):
        for c0 in range(0, n, chunk):
            idx = list(range(c0, min(c0 + chunk, n)))
            # A chunk that is exactly one micro-batch decodes from that micro-batch's prompts.
            batch = (
                batches[c0 // mb]
                if c0 % mb == 0 and idx == micro[c0 // mb]
                else policy.encode([images[i] for i in idx], r.prompt)
            )
            ro = generate_rollouts(
                policy,
                [images[i] for i in idx],
                num_generations=g,
                max_new_tokens=r.max_new_tokens,
                temperature=r.temperature,
                top_p=r.top_p,
                top_k=r.top_k,
                seeds=[seeds[i] for i in idx],
                prompt=r.prompt,
                batch=batch,
                image_features=torch.cat([per_image[i] for i in idx]),
                engine=r.engine,
                sync_every=r.sync_every,
            )
            for j, i in enumerate(idx):
                rows = slice(j * g, (j + 1) * g)
                done[i] = (ro.completion_ids[rows], ro.completion_mask[rows], ro.texts[rows], ro.scores[j])
    t_roll = time.time() - t0

    pad = policy.tokenizer.pad_token_id
    exps = []
    for m, batch, f in zip(micro, batches, feats):
        # Each micro-batch's completions as one decode of it alone would give them: as wide
        # as its longest completion (only pad columns are cut or added).
        width = max(int(done[i][1].sum(1).max()) for i in m)
        ids = torch.full((len(m) * g, width), pad, dtype=torch.long, device=policy.device)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(m):
            w = min(width, done[i][0].shape[1])
            ids[j * g : (j + 1) * g, :w] = done[i][0][:, :w]
            mask[j * g : (j + 1) * g, :w] = done[i][1][:, :w]
        texts = [t for i in m for t in done[i][2]]
        scores = torch.stack([done[i][3] for i in m])
        exps.append(
            _experience(
                policy,
                cfg,
                [records[i] for i in m],
                [images[i] for i in m],
                batch,
                f,
                ids,
                mask,
                texts,
                scores,
                t_roll * len(m) / n,
                partners,
            )
        )
    return exps


def _experience(
    policy, cfg: TrainConfig, records, images, batch, feats, ids, mask, texts, scores, t_roll, partners
) -> Experience:
    """Rewards, advantages, reference and degraded passes of one learning micro-batch."""
    from .prompts import format_ok
    from .rewards import compute_rewards

    o, r = cfg.objective, cfg.rollout
    B, G = len(records), r.num_generations
    rewards = compute_rewards(texts, [x.mos for x in records], cfg.reward, num_generations=G)
    adv = group_advantages(
        rewards.total.view(B, G).to(policy.device),
        scores.to(policy.device),
        alpha=o.alpha,
        score_min=cfg.reward.score_min,
        score_max=cfg.reward.score_max,
        eps=o.adv_eps,
        scale_rewards=o.scale_rewards,
        use_uncertainty=o.use_uncertainty,
    )
    sel = mask.bool()
    ref_logp = None
    if o.beta > 0:  # reference = the same model with the adapter switched off
        with policy.reference():
            h_ref = policy.completion_hidden_states(batch, ids, mask, feats)
        ref_logp = scatter(
            sel,
            token_stats(
                h_ref[sel], policy.lm_head_weight, ids[sel], temperature=r.temperature, chunk_size=o.chunk_size
            ).logp,
        )
    batch_deg = feats_deg = hidden_deg = None
    if o.perception.enabled:
        batch_deg = policy.encode([partners(rec, im) for rec, im in zip(records, images)], r.prompt)
        feats_deg = policy.image_features(batch_deg)
        if not o.perception.degraded_grad:
            hidden_deg = policy.completion_hidden_states(batch_deg, ids, mask, feats_deg)

    total = rewards.total
    stats = {"reward": float(total.mean()), "reward_std": float(total.std()) if total.numel() > 1 else 0.0}
    stats.update({f"reward_{k}": float(v.mean()) for k, v in rewards.columns.items()})
    stats["format_rate"] = sum(format_ok(t, require_think=cfg.reward.require_think) for t in texts) / len(texts)
    stats["parse_rate"] = float((~torch.isnan(scores)).float().mean())
    stats.update(reward_spread(rewards, G))
    stats["uncertainty"] = float(adv.uncertainty.mean())
    stats["weight"] = float(adv.weight.mean())
    stats["adv_std"] = float(adv.advantages.std())
    stats["completion_len"] = float(mask.sum(1).float().mean())
    stats["rollout_tokens"] = float(mask.sum())
    stats["rollout_time"] = t_roll  # this micro-batch's share of the step's decoding time
    images = {}
    if cfg.logging.per_image:  # how much of the step's signal each image's group carried
        images = {
            "id": [x.id for x in records],
            "u": adv.uncertainty.tolist(),
            "w": adv.weight.tolist(),
            "reward_acc": rewards.columns["accuracy"].view(B, G).mean(1).tolist()
            if "accuracy" in rewards.columns
            else [],
            "adv_abs": adv.advantages.abs().view(B, G).sum(1).tolist(),
        }
    return Experience(
        batch,
        feats,
        batch_deg,
        feats_deg,
        ids,
        mask,
        adv.advantages.reshape(-1).float(),
        ref_logp,
        hidden_deg,
        stats=stats,
        images=images,
    )
