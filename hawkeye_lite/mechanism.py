"""Mechanism metrics: does each term of the method do what the paper says? (issue #11)

SRCC/PLCC say how well the held-out images are ranked; these say why, and are logged beside
them in every evaluation of a run (Trainer.evaluate):

- `sens` (perception sensitivity): mean over images of score(original) - score(partner), both
  the eval's K-sample mean rating, the partner being the image's degraded twin from the
  trainer's `Partners` (the perception loss's own degradations: the data's partner file, else
  the configured degradation). The partner is scored with its original's random streams
  (`Scorer.score(stream_keys=)`), so the difference is the model's response to the pixels, not
  sampling noise. The implicit perception loss (SPEC §1.4) is there to make the answer depend on
  the pixels: a visibly worse image should get a lower rating (sens > 0); a model rating from
  the text alone has sens ~ 0.
- `pkl`: KL(p || p~) between the next-token distributions on the original (p) and on the
  partner (p~), exact over the vocabulary at temperature eval.temperature (1 when greedy), at
  the rating tokens (the inside of the last closed <answer>...</answer>, what parse_score
  reads) of `eval.mechanism_samples` completions sampled on the original. Those are the eval's
  own first samples: same seed, same per-image streams (decode.row_keys keys row g by
  (seed, g) only). Per completion the mean over its rating tokens; a completion without a rating
  (no closed answer, or an empty one) uses all of its tokens instead, so pkl stays defined for a
  model that does not answer yet (the eval's parse_rate says how often that happened); then
  the mean over completions and images.
- `pkl_all`: the same KL averaged over every completion token of those completions (pooled over
  tokens, mask-aware): what the training term -γ KL(p‖p̃) sees and pushes up.
- `score_std`: mean over images of the std of the K sampled ratings (population std, as the
  Scorer reports it): the answer spread that the uncertainty weighting (SPEC §1.2) discounts.
- `srcc_mean`, `srcc_std`, `plcc_std` (eval.repeats): the metrics over eval seeds seed,
  seed+1, ...; std with ddof=1, NaN for a single seed (a spread of one number is undefined).

Per dataset, then the mean over datasets at the top of the eval record, as for srcc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .prompts import _ANSWER_RE

NAN = float("nan")


# ============================================================================ rating tokens


def answer_span(text: str) -> Optional[Tuple[int, int]]:
    """Character span of the inside of the last closed <answer>...</answer> (the one
    parse_score reads), or None."""
    last = None
    for last in _ANSWER_RE.finditer(text):  # noqa: B007 - the last match is the one wanted
        pass
    return None if last is None else last.span(1)


def answer_token_mask(tokenizer, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """[S, T] bool: the completion tokens whose decoded characters overlap the inside of the
    last closed <answer>...</answer>; all False for a completion without one (or an empty one).

    Token k spans [len(decode(ids[:k])), len(decode(ids[:k+1]))) of the decoded text (special
    tokens decode to nothing). The rating sits at the end of a completion, so the prefixes are
    decoded from the end backwards and the scan stops at the answer's start: a handful of
    decodes per completion, not one per token."""
    out = torch.zeros(completion_ids.shape, dtype=torch.bool)

    def decode(ids: List[int]) -> str:
        # No space clean-up: it can join characters across a prefix boundary and shift offsets.
        return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    for i, (row, m) in enumerate(zip(completion_ids.tolist(), completion_mask.tolist())):
        cols = [j for j, v in enumerate(m) if v]
        ids = [row[j] for j in cols]
        text = decode(ids)
        span = answer_span(text)
        if span is None or span[0] == span[1]:
            continue
        a, b = span
        end = len(text)
        for k in range(len(ids) - 1, -1, -1):
            start = len(decode(ids[:k]))
            # A character split over byte-level tokens decodes as one replacement character at
            # its first token; the tokens that complete it are zero-width here and belong to the
            # character before them.
            if (start < b and end > a) or (start == end and a < start <= b):
                out[i, cols[k]] = True
            if start <= a:  # every earlier token ends before the answer starts
                break
            end = start
    return out.to(completion_ids.device)


# ============================================================================ the KL


def token_kl(
    hidden: torch.Tensor,
    hidden_deg: torch.Tensor,
    weight: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float,
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    """[S, T] KL(p || p~) at each completion position (0 where the mask is 0), p from `hidden`,
    p~ from `hidden_deg` ([S, T, H] each, times the lm_head `weight` [V, H]). Exact over the
    vocabulary, fp32, through the same fused token_stats as the training objective: logits
    exist one token-chunk at a time, never [S*T, V] at once."""
    from .kernels import token_stats

    sel = completion_mask.bool()
    stats = token_stats(
        hidden[sel], weight, completion_ids[sel], hidden_deg[sel], temperature=temperature, chunk_size=chunk_size
    )
    out = torch.zeros(sel.shape, dtype=stats.kl.dtype, device=stats.kl.device)
    return out.masked_scatter(sel, stats.kl)


def rating_kl(kl: torch.Tensor, answer: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """[S] float64: per completion, the mean KL over its rating tokens (`answer` [S, T]), or over
    all of its tokens when it has none."""
    valid = completion_mask.bool()
    pick = torch.where(answer.any(1, keepdim=True), answer & valid, valid)
    kl = kl.double()
    return (kl * pick).sum(1) / pick.sum(1).clamp(min=1)


# ============================================================================ per image, per dataset


@dataclass
class ImageMechanism:
    """One held-out image's share of the mechanism metrics (small: crosses ranks under torchrun)."""

    dataset: str
    sens: float  # score(original) - score(partner); NaN when either has no parsed rating
    pkl: float  # mean over its completions of rating_kl
    kl_sum: float  # KL summed over every completion token of its completions
    kl_tokens: int  # how many tokens that is (pkl_all pools kl_sum / kl_tokens over images)


def _nanmean(values: Sequence[float]) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else NAN


def sensitivity(original: Sequence[float], degraded: Sequence[float]) -> List[float]:
    """Per image score(original) - score(degraded); NaN where either score is NaN."""
    if len(original) != len(degraded):
        raise ValueError(f"sensitivity: {len(original)} original and {len(degraded)} degraded scores")
    return [o - d if math.isfinite(o) and math.isfinite(d) else NAN for o, d in zip(original, degraded)]


def score_spread(predictions: Sequence) -> float:
    """Mean over images of the std of their K sampled ratings (images without one left out)."""
    return _nanmean([p.std for p in predictions if getattr(p, "error", None) is None])


def seed_spread(values: Sequence[float]) -> Tuple[float, float]:
    """(mean, sample std with ddof=1) of one metric over eval seeds; std is NaN for one seed."""
    n = len(values)
    if n == 0:
        return NAN, NAN
    mean = sum(values) / n
    if n < 2:
        return mean, NAN
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def summarize(images: Sequence[ImageMechanism]) -> Dict[str, dict]:
    """dataset -> {sens, pkl, pkl_all, n_mechanism}: sens the mean over images with both scores,
    pkl the mean over images, pkl_all pooled over all completion tokens."""
    by_ds: Dict[str, List[ImageMechanism]] = {}
    for im in images:
        by_ds.setdefault(im.dataset, []).append(im)
    out = {}
    for name, ims in by_ds.items():
        tokens = sum(im.kl_tokens for im in ims)
        out[name] = {
            "sens": _nanmean([im.sens for im in ims]),
            "pkl": _nanmean([im.pkl for im in ims]),
            "pkl_all": sum(im.kl_sum for im in ims) / tokens if tokens else NAN,
            "n_mechanism": len(ims),
        }
    return out


MECHANISM_KEYS = ("sens", "pkl", "pkl_all")


def eval_fields(reports: Sequence, images: Optional[Sequence[ImageMechanism]]) -> Tuple[Dict[str, dict], dict]:
    """The fields an eval record gets: (per dataset, top level = the mean over datasets).

    `reports`: the EvalReport of each eval seed, eval.seed's first (score_std is its);
    `images`: the mechanism's per-image results, or None when eval.mechanism is off (then no
    sens / pkl / pkl_all at all, rather than NaN that would read as 'measured, undefined').
    The seed spread is per dataset only when there are repeats: a per-dataset NaN would say
    nothing the top-level NaN does not."""
    first = reports[0]
    mech = summarize(images) if images is not None else {}
    keys = ("score_std", "srcc_mean", "srcc_std", "plcc_std") + (MECHANISM_KEYS if images is not None else ())
    full: Dict[str, dict] = {}
    for i, d in enumerate(first.datasets):
        f = {"score_std": score_spread([p for rec, p in first.rows if rec.dataset == d.dataset])}
        f["srcc_mean"], f["srcc_std"] = seed_spread([r.datasets[i].metrics.srcc for r in reports])
        f["plcc_std"] = seed_spread([r.datasets[i].metrics.plcc for r in reports])[1]
        if images is not None:
            f.update(mech.get(d.dataset, {"sens": NAN, "pkl": NAN, "pkl_all": NAN, "n_mechanism": 0}))
        full[d.dataset] = f
    top = {k: sum(f[k] for f in full.values()) / len(full) if full else NAN for k in keys}
    spread = ("srcc_mean", "srcc_std", "plcc_std")
    per_ds = {name: {k: v for k, v in f.items() if len(reports) > 1 or k not in spread} for name, f in full.items()}
    return per_ds, top


# ============================================================================ measuring a model


def load_pairs(rows: Sequence[tuple], partner: Callable) -> List[tuple]:
    """(record, prediction, original, partner, stream key) for each scored row; a row whose
    image cannot be read now, or whose partner fails, is left out."""
    from .data import load_image
    from .images import ImageReadError, content_key

    out = []
    for rec, p in rows:
        if p.error is not None:
            continue
        try:
            image = load_image(rec)  # the pixels the eval's Scorer read, so the same content key
            out.append((rec, p, image, partner(rec, image), content_key(image)))
        except (ImageReadError, OSError, ValueError):
            continue
    return out


def partner_sensitivity(pairs: Sequence[tuple], score: Callable[[list, List[int]], Sequence[float]]) -> List[float]:
    """Per pair score(original) - score(partner): the original's score is the eval's prediction,
    the partner's `score(partner images, stream keys of their originals)`."""
    degraded = list(score([c[3] for c in pairs], [c[4] for c in pairs]))
    return sensitivity([c[1].score for c in pairs], [float(d) for d in degraded])


@torch.no_grad()
def measure(
    scorer,
    rows: Sequence[tuple],
    partner: Callable,
    *,
    samples: int,
    temperature: float,
    seed: int,
    mechanism_samples: int,
    batch_size: int,
    chunk_size: Optional[int] = None,
    stratified: bool = False,
) -> List[ImageMechanism]:
    """ImageMechanism of each scored held-out image, `batch_size` images at a time.

    `rows`: the eval's (record, Prediction) pairs (seed `seed`), whose score is score(original);
    `partner(record, image)`: the degraded twin (Trainer.partners). `samples`, `temperature` and
    `seed` are the eval's, so the partner is scored exactly as the original was (`stratified`
    too: then the partner's K uniforms are the original's, stratum for stratum).

    Every number is a function of its image alone (SPEC §3's invariant, which torchrun's sharded
    evaluation relies on): the completions come from per-image streams, and the teacher-forced
    passes run one image at a time (its m rows, as wide as its own longest completion), so no
    other image's padding enters its floats."""
    from .images import mix_seed
    from .rollout import _eval_mode, generate_rollouts  # _eval_mode: the passes must not see LoRA dropout

    policy = scorer.policy
    kl_temperature = temperature if temperature > 0 else 1.0  # greedy decoding has no sampling temperature
    m = mechanism_samples

    def score(images, keys):
        results = scorer.score(
            images,
            samples=samples,
            temperature=temperature,
            seed=seed,
            batch_size=len(images),
            stream_keys=keys,
            stratified=stratified,
        )
        return [r.score for r in results]

    out: List[ImageMechanism] = []
    with _eval_mode(policy.model):
        for start in range(0, len(rows), batch_size):
            pairs = load_pairs(rows[start : start + batch_size], partner)
            if not pairs:
                continue
            sens = partner_sensitivity(pairs, score)
            # The eval's own first m samples of each original: same seed, same per-image stream
            # (independent draws: a stratified eval's samples depend on K, these m are iid ones).
            ro = generate_rollouts(
                policy,
                [c[2] for c in pairs],
                num_generations=m,
                max_new_tokens=scorer.max_new_tokens,
                temperature=temperature,
                seeds=[mix_seed(seed, c[4]) for c in pairs],
                prompt=scorer.prompt,
            )
            for b, c in enumerate(pairs):
                rows_b = slice(b * m, (b + 1) * m)
                width = int(ro.completion_mask[rows_b].sum(1).max())
                ids, mask = ro.completion_ids[rows_b, :width], ro.completion_mask[rows_b, :width]
                batch = policy.encode([c[2]], scorer.prompt)
                hidden = policy.completion_hidden_states(batch, ids, mask)
                hidden_deg = policy.completion_hidden_states(policy.encode([c[3]], scorer.prompt), ids, mask)
                kl = token_kl(
                    hidden,
                    hidden_deg,
                    policy.lm_head_weight,
                    ids,
                    mask,
                    temperature=kl_temperature,
                    chunk_size=chunk_size,
                )
                per_completion = rating_kl(kl, answer_token_mask(policy.tokenizer, ids, mask), mask)
                out.append(
                    ImageMechanism(
                        c[0].dataset,
                        sens[b],
                        float(per_completion.mean()),
                        float((kl.double() * mask).sum()),
                        int(mask.sum()),
                    )
                )
    return out
