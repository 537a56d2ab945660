"""Rollout throughput: shared-prefix generation vs transformers' generate(num_return_sequences=G).

Both paths sample B images x G rollouts with the same settings; reported are wall time per
call (median of --repeats) and completion tokens per second. By default it runs on a tiny
random Qwen2.5-VL built into a temporary folder; --model points it at a real checkpoint.

    python bench/rollout.py                       # tiny model, CPU
    python bench/rollout.py --model Qwen/Qwen2.5-VL-3B-Instruct --quantization nf4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# `python bench/rollout.py` puts bench/ first on sys.path, where bench/kernels.py would shadow
# the Hugging Face `kernels` package that transformers probes for at import.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch
from PIL import Image

from hawkeye_lite.config import ModelConfig
from hawkeye_lite.model import build_tiny_model, load_policy
from hawkeye_lite.rollout import generate_rollouts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder or hub id (default: a fresh tiny model)")
    ap.add_argument("--quantization", default="none", choices=["none", "nf4"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch", type=int, default=4, help="images per call (B)")
    ap.add_argument("--generations", type=int, default=8, help="rollouts per image (G)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=112, help="square image side in pixels")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or str(build_tiny_model(tmp))
        max_pixels = max(args.image_size**2, 56 * 56)
        policy = load_policy(ModelConfig(name_or_path=path, quantization=args.quantization, lora=None,
                                         device=args.device, max_pixels=max_pixels), trainable=False)
        rng = np.random.RandomState(0)
        images = [Image.fromarray(rng.randint(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8))
                  for _ in range(args.batch)]
        kw = dict(num_generations=args.generations, max_new_tokens=args.max_new_tokens, temperature=args.temperature)

        paths = {"shared_prefix": True, "naive_generate": False}
        for shared in paths.values():
            generate_rollouts(policy, images, seed=0, shared_prefix=shared, **kw)  # warm-up
        # Interleaved, so that load from other processes hits both paths alike.
        times = {name: [] for name in paths}
        tokens = {name: [] for name in paths}
        for rep in range(args.repeats):
            for name, shared in paths.items():
                if policy.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                r = generate_rollouts(policy, images, seed=rep, shared_prefix=shared, **kw)
                if policy.device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
                tokens[name].append(int(r.completion_mask.sum()))
        rows = {}
        for name in paths:
            rows[name] = {"seconds_per_call": statistics.median(times[name]),
                          "completion_tokens": statistics.median(tokens[name]),
                          "tokens_per_second": statistics.median(t / s for t, s in zip(tokens[name], times[name])),
                          "prompt_tokens": int(r.prompt_ids.shape[1])}
        rows["speedup"] = rows["naive_generate"]["seconds_per_call"] / rows["shared_prefix"]["seconds_per_call"]
        rows["setting"] = {**vars(args), "model": args.model or "tiny (built in code)", "device": str(policy.device),
                           "torch_threads": torch.get_num_threads()}

    if args.json:
        print(json.dumps(rows, indent=1))
        return
    s = rows["setting"]
    print(f"model {s['model']} on {s['device']} ({s['torch_threads']} threads), B={args.batch} G={args.generations} "
          f"max_new_tokens={args.max_new_tokens} image {args.image_size}px, prompt {rows['shared_prefix']['prompt_tokens']} tokens")
    for name in ("shared_prefix", "naive_generate"):
        r = rows[name]
        print(f"  {name:15s} {r['seconds_per_call'] * 1000:8.1f} ms/call  {r['tokens_per_second']:9.1f} completion tokens/s  "
              f"({r['completion_tokens']} tokens/call)")
    print(f"  speedup (naive time / shared time): {rows['speedup']:.2f}x")


if __name__ == "__main__":
    main()
