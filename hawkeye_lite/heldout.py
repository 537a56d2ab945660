"""Held-out evaluation during training: SRCC/PLCC of the policy on the run's held-out images,
scored exactly as `hawkeye-lite eval` scores them (Scorer, K answers per image, per-image random
streams), plus the mechanism metrics (mechanism.py). Under torchrun each rank scores a share and
the gathered table is the single-process one.
"""

from __future__ import annotations

import time

from .config import TrainConfig


def evaluate_heldout(
    policy, cfg: TrainConfig, records: list, partners, *, dist, log, step: int, tag: str, chunk_size=None
) -> dict:
    """The "eval" record of metrics.jsonl (logged here, with a console line); {} with fewer
    than 3 held-out images (no correlation to report)."""
    from . import mechanism
    from .distributed import share
    from .evaluate import evaluate, scorer_fn
    from .scorer import Scorer

    e, r = cfg.eval, cfg.rollout
    if len(records) < 3:
        return {}
    scorer = Scorer(policy, prompt=r.prompt, max_new_tokens=e.max_new_tokens or r.max_new_tokens)
    t0 = time.time()

    def scored(seed: int):
        score = scorer_fn(scorer, samples=e.samples, temperature=e.temperature, seed=seed, stratified=e.stratified)
        if dist.enabled:
            # Sharded: each rank scores a contiguous share; every prediction is a function of its
            # image alone (per-image streams), so the gathered table is the single-process one.
            mine = [records[i] for i in share(len(records), dist.rank, dist.world)]
            rows = evaluate(mine, score, batch_size=e.batch_size).rows if mine else []
            by_image = {rec.image: p for part in dist.gather([(rec, p) for rec, p in rows]) for rec, p in part}
            return evaluate(records, lambda paths: [by_image[q] for q in paths], batch_size=len(records))
        return evaluate(records, score, batch_size=e.batch_size)

    # eval.repeats: the whole scoring again with seeds seed+1, ...; the logged srcc/plcc stay seed's.
    reports = [scored(e.seed + i) for i in range(e.repeats)]
    report = reports[0]
    per_image, t1 = None, time.time()
    if e.mechanism:  # sens, pkl, pkl_all (this rank's share, then gathered)
        mine = [report.rows[i] for i in share(len(report.rows), dist.rank, dist.world)]
        per_image = mechanism.measure(
            scorer,
            mine,
            partners,
            samples=e.samples,
            temperature=e.temperature,
            seed=e.seed,
            mechanism_samples=e.mechanism_samples,
            batch_size=e.batch_size,
            chunk_size=chunk_size,
            stratified=e.stratified,
        )
        per_image = [x for part in dist.gather(per_image) for x in part]
    per_dataset, extra = mechanism.eval_fields(reports, per_image)
    policy.model.train()
    out = {"event": "eval", "tag": tag, "step": step, "seconds": round(time.time() - t0, 2), "datasets": {}}
    if e.mechanism:
        out["mechanism_seconds"] = round(time.time() - t1, 2)
    for d in report.datasets:
        m = d.metrics
        out["datasets"][d.dataset] = {
            "n": d.n_images,
            "srcc": m.srcc,
            "plcc": m.plcc,
            "plcc_fit": m.plcc_fit,
            "krcc": m.krcc,
            "rmse": m.rmse,
            "parse_rate": d.sample_parse_rate,
            "n_failed": d.n_failed,
            **per_dataset[d.dataset],
        }
        if d.n_failed:
            log.info(
                f"eval [{tag}]: {d.n_failed} held-out image(s) of {d.dataset} could not be read (not in the metrics)"
            )
    vals = list(out["datasets"].values())
    out["srcc"] = sum(v["srcc"] for v in vals) / len(vals)
    out["plcc"] = sum(v["plcc"] for v in vals) / len(vals)
    out["parse_rate"] = sum(v["parse_rate"] for v in vals) / len(vals)
    out.update(extra)
    log.write(out)
    mech = f" sens {out['sens']:+.3f} pKL {out['pkl']:.2e}" if e.mechanism else ""
    log.info(
        f"eval [{tag}] step {step}: SRCC {out['srcc']:.4f} PLCC {out['plcc']:.4f} "
        f"parse {out['parse_rate']:.1%}{mech} ({out['seconds']:.0f}s)"
    )
    return out
