"""The warm start (`sft.*`): a few supervised steps that teach the answer format before RL.

The target is `<think> WORD </think><answer>RATING</answer>`, where RATING is the image's MOS
(`sft.target: mos`, supervised) or a uniform draw independent of the image (`format`, label-free:
no quality label reaches the model before RL; `describe` adds four pixel statistics as the
<think>). The adapter is then folded into the base weights and saved as RUN/sft-base, the RL
base and the reference policy of the KL term; it is reused only when made with the same settings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, List, Optional

import torch

from .config import TrainConfig
from .fsio import atomic_dir
from .kernels import token_stats
from .prompts import completion_target
from .schedules import lr_at, set_lr
from .trainset import batch_indices

SFT_BASE = "sft-base"


def sft_target(rating: float, *, think: bool, description: Optional[str] = None) -> str:
    """The answer the warm start teaches: a one-word judgement of `rating` (or, with
    sft.target: describe, the image's `description`), then `rating` with 2 decimals. `rating`
    is the MOS (sft.target: mos) or a random draw (format, describe)."""
    word = ("bad", "poor", "fair", "good", "great")[min(4, max(0, int((rating - 1.0) / 0.8)))]
    answer = f"<answer>{rating:.2f}</answer>"
    return f"<think> {description or word} </think>{answer}" if think else answer


def sft_format_ratings(cfg: TrainConfig, step: int, n: int) -> List[float]:
    """The ratings of a label-free warm-start batch: uniform on [score_min, score_max], a pure
    function of (seed, step), so a rebuilt warm start is identical; never the images' MOS."""
    import numpy as np

    rng = np.random.default_rng([cfg.seed, 11, step])
    return [float(v) for v in rng.uniform(cfg.reward.score_min, cfg.reward.score_max, n)]


def sft_settings(cfg: TrainConfig) -> dict:
    """What the warm start is a function of: RUN/sft-base is reused only when these match."""
    from dataclasses import asdict

    from .tiny_model import tiny_settings

    m = cfg.model
    name = str(Path(m.name_or_path).resolve()) if Path(m.name_or_path).exists() else m.name_or_path
    out = {
        "sft": asdict(cfg.sft),
        "seed": cfg.seed,
        "rollout": {"prompt": cfg.rollout.prompt},
        "model": {
            "name_or_path": name,
            "lora": asdict(m.lora) if m.lora else None,
            "dtype": m.dtype,
            "quantization": m.quantization,
            "min_pixels": m.min_pixels,
            "max_pixels": m.max_pixels,
        },
        "data": {"train": list(cfg.data.train), "split_seed": cfg.data.split_seed},
    }
    if cfg.sft.target != "mos":  # the random ratings are drawn from the reward's score range
        out["reward"] = {"score_min": cfg.reward.score_min, "score_max": cfg.reward.score_max}
    if cfg.tiny_model.build:
        out.update(tiny_settings(cfg))
    return json.loads(json.dumps(out))  # tuples -> lists, as read back from disk


def sft_reusable(cfg: TrainConfig, run_dir: Path) -> tuple:
    """(True, "") when RUN/sft-base exists and was made with this config's warm-start
    settings; else (False, why) — why is "" when there is none yet."""
    from .runfolder import describe, differences, read_settings

    out = run_dir / SFT_BASE
    if not (out / "config.json").is_file():
        return False, ""
    saved = read_settings(out)
    if saved is None:
        return False, "it records no settings (made by an older version)"
    diffs = differences(saved, sft_settings(cfg))
    return (False, f"made with other settings: {describe(diffs)}") if diffs else (True, "")


def warm_start(cfg: TrainConfig, run_dir: Path, train: list, images, load_policy: Callable, log) -> str:
    """Supervised steps on `sft_target(rating)`, then the adapter folded into the base and saved
    as RUN/sft-base. Returns that folder (a finished one with the same settings is reused).
    `images.load(records)` reads a batch (trainset.ImageReader); `load_policy(base, lora_dropout=)`
    makes the policy with a fresh, seeded adapter."""
    from .runfolder import write_settings

    s = cfg.sft
    out = run_dir / SFT_BASE
    reusable, why = sft_reusable(cfg, run_dir)
    if reusable:
        log.info(f"warm start: reusing {out} (made with the same settings)")
        return str(out.resolve())
    if why:
        log.info(f"warm start: rebuilding {out}: {why}")
    policy = load_policy(cfg.model.name_or_path, lora_dropout=s.lora_dropout)
    params = policy.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=s.lr, betas=(0.9, 0.99), weight_decay=0.0)
    tok = policy.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    think = cfg.rollout.prompt == "think"
    describe = describer(train, images) if s.target == "describe" else None
    t0 = time.time()
    for step in range(s.steps):
        idx = batch_indices(len(train), step, 0, batch_size=s.batch_size, grad_accum=1, seed=cfg.seed + 7)
        recs, batch_images = images.load([train[i] for i in idx])
        batch = policy.encode(batch_images, cfg.rollout.prompt)
        ratings = [r.mos for r in recs] if s.target == "mos" else sft_format_ratings(cfg, step, len(recs))
        texts = [
            completion_target(
                sft_target(y, think=think, description=describe(r, im) if describe else None), batch.assistant_prefix
            )
            for y, r, im in zip(ratings, recs, batch_images)
        ]
        ids, mask = _pad([tok(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts], tok.pad_token_id)
        ids, mask = ids.to(policy.device), mask.to(policy.device)
        hidden = policy.completion_hidden_states(batch, ids, mask)
        sel = mask.bool()
        # Cross-entropy through the chunked token_stats: no full-vocabulary logits here either.
        loss = -token_stats(hidden[sel], policy.lm_head_weight, ids[sel]).logp.mean()
        lr = set_lr(opt, lr_at(step, s.steps, lr=s.lr, warmup=s.warmup_steps, schedule="cosine", min_ratio=0.1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log.write({"event": "sft", "step": step + 1, "loss": loss.item(), "lr": lr, "time": time.time() - t0})
        if (step + 1) % max(1, s.steps // 10) == 0 or step + 1 == s.steps:
            log.info(f"sft {step + 1:>4}/{s.steps} | loss {loss.item():.4f} | {time.time() - t0:.0f}s")
    merged = policy.model.merge_and_unload()

    def write(tmp: Path) -> None:
        merged.save_pretrained(str(tmp))
        policy.processor.save_pretrained(tmp)
        write_settings(tmp, sft_settings(cfg))

    atomic_dir(out, write)
    return str(out.resolve())


def _pad(seqs: List[List[int]], pad_id: int) -> tuple:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    return ids, mask


def describer(train: list, images) -> Callable:
    """record, image -> its label-free description (describe.py), relative to the training
    images; cached per record, since the warm start sees each image many times."""
    from .describe import Describer

    _, all_images = images.load(train)
    describe_image, cache = Describer(all_images), {}

    def describe(record, image) -> str:
        if record.id not in cache:
            cache[record.id] = describe_image(image)
        return cache[record.id]

    return describe
