"""A stand-in for a pretrained vision tower, for the tiny demo model.

A real Qwen2.5-VL rates image quality from features its vision tower learned in pretraining;
a randomly initialised tiny tower has no such features (a linear probe on its pooled output
reaches held-out SRCC ~0.36 on the demo set). So, once, when the demo model is built, the
tiny tower is trained for a few hundred steps to regress generic low-level image statistics
(brightness, contrast, gradient energy, high-frequency energy, 8-px blockiness, colourfulness)
on synthetic scenes that are NOT the demo images (another generator seed) and without any
MOS label. Measured on this 2-core CPU (600 steps, ~25 s): a ridge probe on the mean-pooled
features, fitted on the demo's train split, reaches held-out SRCC 0.65 instead of 0.36. Quality
itself is still learned by the language model, in the warm start and in RL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch


def low_level_stats(image) -> np.ndarray:
    """Seven generic statistics of an RGB PIL image (no notion of quality in them)."""
    from PIL import Image, ImageFilter

    a = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    y = a @ np.array([0.299, 0.587, 0.114], np.float32)
    gx = np.abs(np.diff(y, axis=1))
    gy = np.abs(np.diff(y, axis=0))
    smooth = np.asarray(Image.fromarray(np.rint(y * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.0)),
                        dtype=np.float32) / 255.0
    hf = np.abs(y - smooth)
    blocks = gx[:, 7::8].mean() if gx.shape[1] > 8 else gx.mean()  # jumps at 8-px block borders
    return np.array([y.mean(), y.std(), gx.mean() + gy.mean(), hf.mean(), np.log(hf.var() + 1e-6),
                     blocks / (gx.mean() + 1e-6), a.std(-1).mean()], dtype=np.float32)


def pretrain_tiny_vision(
    model_dir: Union[str, Path],
    *,
    steps: int = 600,
    lr: float = 1e-3,
    batch_size: int = 32,
    n_scenes: int = 160,
    seed: int = 12345,
    log: Optional[Callable[[str], None]] = None,
) -> float:
    """Train the vision tower (and its merger) of the tiny checkpoint in `model_dir` to regress
    `low_level_stats` from mean-pooled image features, then save the checkpoint in place.
    Deterministic for a given seed. Returns the last batch's loss (standardised MSE)."""
    from .config import ModelConfig
    from .data.demo import DemoConfig, generate_demo
    from .model import load_policy

    if steps < 1:
        raise ValueError(f"tiny_model.vision_pretrain_steps must be >= 1 here, got {steps}")
    policy = load_policy(ModelConfig(name_or_path=str(model_dir), quantization="none", dtype="float32", lora=None,
                                     device="cpu", gradient_checkpointing=False), trainable=False)
    model = policy.model
    visual = policy.backbone.visual
    images = [s.image for s in generate_demo(DemoConfig(n_scenes=n_scenes, seed=seed))]
    stats = np.stack([low_level_stats(im) for im in images])
    target = torch.from_numpy((stats - stats.mean(0)) / (stats.std(0) + 1e-6))

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(model.config.text_config.hidden_size, target.shape[1])  # thrown away after
    for p in model.parameters():
        p.requires_grad_(False)
    for p in visual.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(list(visual.parameters()) + list(head.parameters()), lr=lr)
    visual.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen).tolist()
        batch = policy.encode([images[i] for i in idx])
        feats = policy.image_features(batch)
        per_image = (batch.image_grid_thw.prod(-1) // 4).tolist()  # tokens per image after the 2x2 merge
        pooled = torch.stack([f.mean(0) for f in torch.split(feats, per_image)])
        loss = (head(pooled) - target[idx]).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log is not None and (step + 1) % 100 == 0:
            log(f"vision pretraining {step + 1}/{steps} | loss {loss.item():.4f}")
    visual.eval()
    for p in visual.parameters():
        p.requires_grad_(False)
    model.save_pretrained(str(model_dir))
    return loss.item()
