"""The demo's vision stand-in: what a pretraining recipe costs and what it gives the tower.

    python bench/vision_probe.py [--steps 3000 --lr 2e-3 --batch-size 32 --scenes 1280] [--threads 2]

Builds a tiny Qwen2.5-VL (tiny_model.build_tiny_model, seed 0, the demo's image sizes), pretrains
its tower with the recipe given (tiny_vision.pretrain_tiny_vision; --steps 0 leaves it random),
and reports the wall time of each part and the ridge probe: a ridge regression from the tower's
mean-pooled image features to the MOS, fitted on the demo's train split (288 images) and scored
by SRCC on its test split (96 images). The probe is the check that a cheaper recipe still
carries the image statistics the demo's RL has to find (random tower 0.25-0.36; the 3000-step
recipe 0.72-0.74, docs/experiments/demo.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr


def pooled_features(model_dir: Path, data: Path):
    from hawkeye_lite.config import ModelConfig
    from hawkeye_lite.data import load_image
    from hawkeye_lite.data.demo import demo_records
    from hawkeye_lite.model import load_policy

    recs = demo_records(data)
    pol = load_policy(
        ModelConfig(name_or_path=str(model_dir), quantization="none", dtype="float32", device="cpu", lora=None),
        trainable=False,
    )
    out = []
    with torch.no_grad():
        for i in range(0, len(recs), 64):
            batch = pol.encode([load_image(r) for r in recs[i : i + 64]])
            feats = pol.vision_features(batch.pixel_values, batch.image_grid_thw)
            feats = feats[:, 0] if feats.dim() == 3 else feats
            sizes = pol.processor.num_image_tokens(batch.image_grid_thw)
            out.extend(f.mean(0).numpy() for f in torch.split(feats, sizes))
    return np.stack(out), np.array([r.mos for r in recs]), np.array([r.split == "train" for r in recs])


def ridge_probe(X, y, train, lam: float = 10.0) -> float:
    Z = (X - X[train].mean(0)) / (X[train].std(0) + 1e-6)
    w = np.linalg.solve(Z[train].T @ Z[train] + lam * np.eye(Z.shape[1]), Z[train].T @ (y[train] - y[train].mean()))
    return float(spearmanr(Z[~train] @ w, y[~train])[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--scenes", type=int, default=1280)
    ap.add_argument("--token-weight", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default="data/demo")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from hawkeye_lite.tiny_model import build_tiny_model
    from hawkeye_lite.tiny_vision import pretrain_tiny_vision

    print(
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, load {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        d = build_tiny_model(Path(tmp) / "m", seed=0, min_pixels=3136, max_pixels=12544)
        t1 = time.perf_counter()
        loss = float("nan")
        if args.steps > 0:
            loss = pretrain_tiny_vision(
                d,
                steps=args.steps,
                lr=args.lr,
                batch_size=args.batch_size,
                n_scenes=args.scenes,
                token_weight=args.token_weight,
            )
        t2 = time.perf_counter()
        X, y, train = pooled_features(d, Path(args.data))
        probe = ridge_probe(X, y, train)
    print(
        f"steps {args.steps} lr {args.lr:g} batch {args.batch_size} scenes {args.scenes} token_weight "
        f"{args.token_weight:g}: build {t1 - t0:.1f} s, pretraining {t2 - t1:.1f} s (last loss {loss:.4f}), "
        f"ridge probe held-out SRCC {probe:.3f}, load after {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
