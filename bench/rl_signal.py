"""Where RL's learning signal is on the demo task: two measurements behind configs/demo-rl.yaml.

    python bench/rl_signal.py --model runs/demo-rl/sft-base [--data data/demo] [--seeds 3]

1. probe: is quality readable from the hidden state where the model makes its first rating
   decision (the position after "<think>", which predicts the judgement word)? A ridge probe on
   that state, fitted on the demo's train split, scored by SRCC on the test split.
2. bandit: a model of the RL problem without the language model's pathway: a linear softmax
   policy over the 5 judgement bins on those same hidden states (the score is the bin's centre
   plus uniform noise of +-0.4, the decimals), trained with GRPO advantages and Adam, G and B as
   in the demo. How many steps does the reward alone need to reach the probe's SRCC, per lr?
   Run on the raw states (the scale the model's own readout sees) and on standardised ones.
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np
import torch
from scipy.stats import spearmanr


def decision_states(model: str, data: str):
    from hawkeye_lite.config import ModelConfig
    from hawkeye_lite.data import load_image
    from hawkeye_lite.data.demo import demo_records
    from hawkeye_lite.model import load_policy

    recs = demo_records(data)
    pol = load_policy(
        ModelConfig(name_or_path=model, quantization="none", dtype="float32", device="cpu", lora=None), trainable=False
    )
    prefix = pol.tokenizer("<think>", add_special_tokens=False)["input_ids"]
    H = []
    with torch.no_grad():
        for i in range(0, len(recs), 32):
            rs = recs[i : i + 32]
            batch = pol.encode([load_image(r) for r in rs], "think")
            ids = torch.tensor([prefix] * len(rs))
            H.append(pol.completion_hidden_states(batch, ids, torch.ones_like(ids))[:, -1].float().numpy())
    return np.concatenate(H), np.array([r.mos for r in recs]), np.array([r.split == "train" for r in recs])


def ridge_probe(X, y, train, lam: float = 10.0) -> float:
    Z = (X - X[train].mean(0)) / (X[train].std(0) + 1e-6)
    w = np.linalg.solve(Z[train].T @ Z[train] + lam * np.eye(Z.shape[1]), Z[train].T @ (y[train] - y[train].mean()))
    return float(spearmanr(Z[~train] @ w, y[~train])[0])


def bandit(
    X, y, train, *, lr: float, steps: int, seed: int, G: int = 8, B: int = 8, tau: float = 0.3, every: int = 50
) -> dict:
    centres = torch.tensor([1.4, 2.2, 3.0, 3.8, 4.6])  # the bins of the judgement words (trainer.sft_target)
    g = torch.Generator().manual_seed(seed)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    W = torch.zeros(X.shape[1], 5, requires_grad=True)
    b = torch.zeros(5, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr, betas=(0.9, 0.99))
    pool, out = np.where(train)[0], {}
    for step in range(steps):
        idx = torch.tensor(np.random.default_rng([seed, step]).choice(pool, B, replace=False))
        logits = Xt[idx] @ W + b
        a = torch.multinomial(torch.softmax(logits, -1).detach().repeat_interleave(G, 0), 1, generator=g).view(B, G)
        score = centres[a] + (torch.rand(B, G, generator=g) * 2 - 1) * 0.4
        r = torch.exp(-(score - yt[idx, None]).abs() / tau)
        adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)
        loss = -(adv * torch.log_softmax(logits, -1).gather(1, a)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % every == 0:
            with torch.no_grad():
                expected = torch.softmax(Xt @ W + b, -1) @ centres
            out[step + 1] = float(spearmanr(expected[~torch.tensor(train)].numpy(), y[~train])[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a warm-started model folder (RUN/sft-base)")
    ap.add_argument("--data", default="data/demo")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lrs", default="1e-3,3e-3,1e-2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, torch {torch.__version__}")
    X, y, train = decision_states(args.model, args.data)
    print(f"ridge probe at the decision position: held-out SRCC {ridge_probe(X, y, train):.3f}")
    for name, feats in (
        ("raw", X - X[train].mean(0)),
        ("standardised", (X - X[train].mean(0)) / (X[train].std(0) + 1e-6)),
    ):
        for lr in (float(v) for v in args.lrs.split(",")):
            runs = [bandit(feats, y, train, lr=lr, steps=args.steps, seed=s) for s in range(args.seeds)]
            curve = " ".join(f"{k}:{np.mean([r[k] for r in runs]):.3f}" for k in runs[0])
            print(f"bandit, {name} states, lr {lr:g}, mean of {args.seeds} seeds, held-out SRCC by step: {curve}")


if __name__ == "__main__":
    main()
