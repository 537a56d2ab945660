"""The loss passes with the prompt once per image (model.shared_prefix) vs once per rollout.

    python bench/loss_passes.py --preset tiny --threads 1     # CPU: the demo's shapes (308-token prompts, G=8, 24 tokens)
    python bench/loss_passes.py                               # GPU: 7B shape, NF4 + LoRA r=64, 448x448, G=8, 256 tokens
    python bench/loss_passes.py --json out.json --markdown out.md

Each training step runs three passes over the B*G rollouts: the reference and the degraded
pass (no gradients) and the policy pass (forward + backward). Both ways compute the same
function; this times them side by side, cases interleaved per repeat so that load from other
processes hits both alike, and reports each case's median and the ratio, plus the largest
difference of the hidden states and the relative difference of the LoRA gradients between them.

The model is bench/rollout.py's (the real Qwen2.5-VL configuration with random weights, or the
tiny demo model for --preset tiny; --model PATH for a real checkpoint). The policy pass runs
without gradient checkpointing (with it on, the shared path falls back to repeated prompts).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
PRESETS = {  # images, G, completion tokens, image side
    "7b": dict(images=2, generations=8, tokens=256, image_size=448),
    "3b": dict(images=2, generations=8, tokens=256, image_size=448),
    "tiny": dict(images=8, generations=8, tokens=24, image_size=112),
}


def _rollout_module():
    spec = importlib.util.spec_from_file_location("hawkeye_bench_rollout", HERE / "rollout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_policy(device, dtype):
    """The demo's tiny model (configs/demo.yaml's tiny_model, without the vision pretraining)."""
    import tempfile

    from hawkeye_lite.config import LoRAConfig, ModelConfig
    from hawkeye_lite.model import load_policy
    from hawkeye_lite.tiny_model import build_tiny_model

    path = build_tiny_model(
        Path(tempfile.mkdtemp(prefix="hawkeye-bench-")) / "tiny",
        seed=0,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        intermediate_size=128,
        vision_depth=2,
        vision_hidden_size=32,
        min_pixels=3136,
        max_pixels=12544,
    )
    cfg = ModelConfig(
        name_or_path=str(path),
        quantization="none",
        dtype=str(dtype).split(".")[-1],
        device=str(device),
        lora=LoRAConfig(r=16, alpha=32, dropout=0.0),
        gradient_checkpointing=False,
    )
    policy = load_policy(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen).to(p) * 0.02)
    return policy


def main(argv=None) -> dict:
    bench_rollout = _rollout_module()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_rollout.add_model_arguments(ap, PRESETS)
    ap.add_argument("--images", type=int, default=None, help="B")
    ap.add_argument("--generations", type=int, default=None, help="G")
    ap.add_argument("--tokens", type=int, default=None, help="completion length T")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    device, dtype = bench_rollout.resolve_model_arguments(args, PRESETS)
    if args.preset == "tiny" and not args.model:
        policy = tiny_policy(device, dtype)
    else:
        policy = bench_rollout.build_policy(args, device, dtype)

    from PIL import Image

    rng = np.random.RandomState(0)
    imgs = [
        Image.fromarray(rng.randint(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8))
        for _ in range(args.images)
    ]
    batch = policy.encode(imgs)
    feats = policy.image_features(batch).detach()
    n = args.images * args.generations
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(10, 300, (n, args.tokens), generator=gen).to(device)
    mask = torch.ones_like(ids)
    params = policy.trainable_parameters()
    # A random linear read-out of the hidden states as the loss (a squared norm would be nearly
    # constant after the final RMSNorm, its gradient mostly cancellation).
    w = torch.randn(n, args.tokens, policy.lm_head_weight.shape[1], generator=gen).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def no_grad_pass(shared):
        with torch.no_grad():
            return policy.completion_hidden_states(batch, ids, mask, feats, shared_prefix=shared)

    def grad_pass(shared):
        for p in params:
            p.grad = None
        h = policy.completion_hidden_states(batch, ids, mask, feats, shared_prefix=shared)
        (h.float() * w).sum().backward()
        return torch.cat([p.grad.flatten().float() for p in params])

    policy.model.train()
    # Warm-up and the exactness check (once per case).
    h = {s: no_grad_pass(s).float() for s in (False, True)}
    g = {s: grad_pass(s) for s in (False, True)}
    times = {(kind, s): [] for kind in ("no_grad", "grad") for s in (False, True)}
    for _ in range(args.repeats):
        for s in (False, True):
            for kind, fn in (("no_grad", no_grad_pass), ("grad", grad_pass)):
                sync()
                t = time.perf_counter()
                fn(s)
                sync()
                times[(kind, s)].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "preset": args.preset,
        "images": args.images,
        "generations": args.generations,
        "prompt_tokens": int(batch.input_ids.shape[1]),
        "completion_tokens": args.tokens,
        "repeats": args.repeats,
        "seconds": {f"{kind}_{'shared' if s else 'repeated'}": v for (kind, s), v in med.items()},
        "speedup_no_grad": med[("no_grad", False)] / med[("no_grad", True)],
        "speedup_grad": med[("grad", False)] / med[("grad", True)],
        "step_speedup": (2 * med[("no_grad", False)] + med[("grad", False)])
        / (2 * med[("no_grad", True)] + med[("grad", True)]),
        "hidden_max_abs_diff": float((h[True] - h[False]).abs().max()),
        "grad_rel_diff": float((g[True] - g[False]).norm() / g[False].norm().clamp_min(1e-30)),
        "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }
    s = out["seconds"]
    lines = [
        f"# loss passes, {out['device']}: B={args.images} images x G={args.generations}, prompt {out['prompt_tokens']} tokens, "
        f"completion {args.tokens}, median of {args.repeats}",
        "",
        "| pass | repeated prompts (s) | shared prefix (s) | speed-up |",
        "| --- | --- | --- | --- |",
        f"| reference / degraded (no grad) | {s['no_grad_repeated']:.4f} | {s['no_grad_shared']:.4f} | {out['speedup_no_grad']:.2f}x |",
        f"| policy (forward + backward) | {s['grad_repeated']:.4f} | {s['grad_shared']:.4f} | {out['speedup_grad']:.2f}x |",
        f"| a step's three passes | {2 * s['no_grad_repeated'] + s['grad_repeated']:.4f} | "
        f"{2 * s['no_grad_shared'] + s['grad_shared']:.4f} | {out['step_speedup']:.2f}x |",
        "",
        f"hidden states max |diff| {out['hidden_max_abs_diff']:.2e}; LoRA gradient relative diff {out['grad_rel_diff']:.2e}",
    ]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    main()
