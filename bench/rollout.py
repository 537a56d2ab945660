"""Rollout throughput: the old decode loop vs the static-cache engine (CUDA graph on CUDA) vs the
engine on bf16 rollout weights, and where greedy outputs of the loop and the engine first differ.

    python bench/rollout.py                                   # GPU: 7B shape, NF4 + LoRA r=64, 448x448, 256 tokens, 8 and 64 rows
    python bench/rollout.py --preset 3b --json out.json --markdown out.md
    python bench/rollout.py --preset tiny --device cpu        # the same code path on a CPU, in seconds

No download: the model is bench/memory.py's (the real Qwen2.5-VL-7B/3B configuration with random
weights, built module by module, language-model linears NF4, LoRA attached by wrap_policy with
non-zero B so the adapter changes the output). Every completion is forced to --max-new-tokens
(stop tokens are never sampled), so every case decodes the same number of tokens. Rows = images
x G; the cases run interleaved per repeat, so load from other processes hits all alike. Timed:
the whole generate_rollouts call (prefill, the engine's cache setup and graph capture included).

Greedy check (temperature 0, per row count): for every row, the first completion position where
the loop's and the engine's tokens differ, and at that position the loop's teacher-forced logit
margin between the two tokens (a near-tie shows as a margin of a few bf16 ulps of the logit).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

# `python bench/rollout.py` puts bench/ first on sys.path, where bench/kernels.py would shadow
# the Hugging Face `kernels` package that transformers probes for at import.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
PRESET_DEFAULTS = {  # rows, max_new_tokens, image side
    "7b": dict(rows="8,64", max_new_tokens=256, image_size=448),
    "3b": dict(rows="8,64", max_new_tokens=256, image_size=448),
    "tiny": dict(rows="8,32", max_new_tokens=32, image_size=56),
    "qwen3-4b": dict(rows="8,64", max_new_tokens=256, image_size=512),  # 512 x 512: 256 tokens at patch 16
    "qwen3-8b": dict(rows="8,64", max_new_tokens=256, image_size=512),
    "qwen3-tiny": dict(rows="8,32", max_new_tokens=32, image_size=64),
}


def _memory_module():
    spec = importlib.util.spec_from_file_location("hawkeye_bench_memory", HERE / "memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def add_model_arguments(ap: argparse.ArgumentParser, presets: dict) -> None:
    """The flags build_policy reads, plus threads and the output files (shared with bench/loss_passes.py)."""
    ap.add_argument("--preset", choices=sorted(presets), default="7b")
    ap.add_argument("--model", default=None, help="a real checkpoint folder instead of the preset's random model")
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--no-nf4", action="store_true", help="keep the language model in --dtype")
    ap.add_argument("--lora-r", type=int, default=64)
    ap.add_argument("--lora-b-std", type=float, default=0.002)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)


def resolve_model_arguments(args, presets: dict):
    """Fill the flags left unset from the preset, set the thread count; (device, dtype)."""
    for key, value in presets[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return device, getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))


def build_policy(args, device: torch.device, dtype: torch.dtype):
    from hawkeye_lite.config import LoRAConfig, ModelConfig
    from hawkeye_lite.model import load_policy

    pixels = max(args.image_size**2, 3136)
    lora = LoRAConfig(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0)
    cfg = ModelConfig(
        name_or_path=args.model or "bench",
        quantization="none" if args.no_nf4 else "nf4",
        dtype=str(dtype).split(".")[-1],
        device=str(device),
        lora=lora,
        gradient_checkpointing=False,
        max_pixels=pixels,
    )
    if args.model:
        policy = load_policy(cfg)
    else:
        from hawkeye_lite.model import VLProcessor, wrap_policy
        from hawkeye_lite.tiny_model import build_tokenizer

        mem = _memory_module()
        preset = mem.PRESETS[args.preset]
        tokenizer = build_tokenizer(400)
        vision_processor, low = mem.image_processor(preset, pixels)
        processor = VLProcessor(tokenizer, vision_processor, min_pixels=low, max_pixels=max(pixels, low))
        twin = mem.qwen_config(mem.twin_preset(preset, (len(tokenizer) + 63) // 64 * 64), tokenizer)
        model = mem.build_model(
            mem.qwen_config(preset, tokenizer), twin, device=device, dtype=dtype, nf4=not args.no_nf4
        )
        torch.manual_seed(0)
        policy = wrap_policy(model, processor, cfg, device=device, dtype=dtype, trainable=True)
    gen = torch.Generator(device="cpu").manual_seed(1)
    with torch.no_grad():  # a fresh adapter is a no-op (B = 0): give it weights
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen).to(p) * args.lora_b_std)
    policy.model.eval()
    # Forced length: stop tokens are never sampled.
    stops = policy.stop_token_ids()
    base = policy.suppressed_token_ids
    policy.suppressed_token_ids = lambda: sorted(set(base()) | set(stops))
    return policy


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def first_differences(policy, ref, other) -> dict:
    """Per row: the first position where `other` differs from `ref` (greedy), and the ref model's
    teacher-forced logit margin logit[ref token] - logit[other token] there."""
    a, b = ref.completion_ids, other.completion_ids
    width = min(a.shape[1], b.shape[1])
    diff = a[:, :width] != b[:, :width]
    rows = diff.any(1).nonzero().reshape(-1).tolist()
    out = {"rows": a.shape[0], "rows_differing": len(rows), "tokens_compared": width, "first": []}
    if rows:
        with torch.no_grad():
            hidden = policy.completion_hidden_states(ref.prompt, a, ref.completion_mask)
        for r in rows:
            d = int(diff[r].float().argmax())
            logits = hidden[r, d].float() @ policy.lm_head_weight.float().T
            out["first"].append(
                {
                    "row": r,
                    "position": d,
                    "margin": float(logits[a[r, d]] - logits[b[r, d]]),
                    "logit_scale": float(logits.abs().max()),
                }
            )
        positions = [f["position"] for f in out["first"]]
        out["first_position_min"] = min(positions)
        out["first_position_median"] = statistics.median(positions)
        out["margin_max"] = max(abs(f["margin"]) for f in out["first"])
    return out


def main(argv=None) -> dict:
    from hawkeye_lite.rollout import generate_rollouts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(ap, PRESET_DEFAULTS)
    ap.add_argument("--generations", type=int, default=8, help="G; rows / G images per call")
    ap.add_argument("--rows", default=None, help="comma-separated row counts (default: the preset's)")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--cases", default="loop,engine,engine_bf16", help="loop, engine, engine_eager, engine_bf16")
    ap.add_argument("--sync-every", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-greedy-check", action="store_true")
    args = ap.parse_args(argv)
    device, dtype = resolve_model_arguments(args, PRESET_DEFAULTS)
    row_counts = [int(x) for x in args.rows.split(",")]
    if any(r % args.generations for r in row_counts):
        raise SystemExit(f"--rows: each must be a multiple of G={args.generations}")
    graph = device.type == "cuda"
    cases = {  # name -> generate_rollouts kwargs
        "loop": dict(engine="loop"),
        "engine": dict(engine="graph" if graph else "eager"),
        "engine_eager": dict(engine="eager"),
        "engine_bf16": dict(engine="graph" if graph else "eager", weights="bf16"),
    }
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in cases]
    if unknown:
        raise SystemExit(f"--cases: unknown {unknown}; choose from {', '.join(cases)}")
    if args.no_nf4:
        names = [c for c in names if c != "engine_bf16"]  # nothing to dequantise

    t0 = time.perf_counter()
    policy = build_policy(args, device, dtype)
    info = {
        "preset": args.preset if not args.model else args.model,
        "device": str(device),
        "dtype": str(dtype),
        "nf4": not args.no_nf4,
        "lora_r": args.lora_r,
        "G": args.generations,
        "max_new_tokens": args.max_new_tokens,
        "image": f"{args.image_size}x{args.image_size}",
        "sync_every": args.sync_every,
        "build_s": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{p.name} ({p.total_memory / 2**30:.0f} GiB)"
    print(json.dumps(info), flush=True)

    from PIL import Image

    rng = np.random.RandomState(0)
    pool = [
        Image.fromarray(rng.randint(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8))
        for _ in range(max(row_counts) // args.generations)
    ]
    kw = dict(num_generations=args.generations, max_new_tokens=args.max_new_tokens, sync_every=args.sync_every)
    generate_rollouts(
        policy, pool[:1], **{**kw, "max_new_tokens": 2}, seed=0, engine="loop"
    )  # warm-up: libraries, kernels

    results = []
    greedy = {}
    for rows in row_counts:
        ims = pool[: rows // args.generations]
        times = {c: [] for c in names}
        tokens = dict.fromkeys(names, 0)
        peaks = dict.fromkeys(names, 0.0)
        for rep in range(args.repeats):
            for c in names:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                _sync(device)
                t = time.perf_counter()
                r = generate_rollouts(policy, ims, temperature=1.0, seed=rep, **kw, **cases[c])
                _sync(device)
                times[c].append(time.perf_counter() - t)
                tokens[c] = int(r.completion_mask.sum())
                if device.type == "cuda":
                    peaks[c] = max(peaks[c], torch.cuda.max_memory_allocated() / 2**30)
                print(
                    json.dumps(
                        {"rows": rows, "case": c, "repeat": rep, "seconds": round(times[c][-1], 3), "tokens": tokens[c]}
                    ),
                    flush=True,
                )
        base = statistics.median(times[names[0]])
        for c in names:
            s = statistics.median(times[c])
            row = {
                "rows": rows,
                "case": c,
                "seconds": s,
                "tokens": tokens[c],
                "tokens_per_s": tokens[c] / s,
                "ms_per_step": 1e3 * s / args.max_new_tokens,
                "speedup_vs_" + names[0]: base / s,
            }
            if device.type == "cuda":
                row["peak_alloc_gib"] = peaks[c]
            results.append(row)
        if not args.no_greedy_check and "loop" in names:
            g = dict(kw, temperature=0.0)
            loop = generate_rollouts(policy, ims, engine="loop", **g)
            greedy[rows] = {}
            for c in names:
                if c != "loop":
                    greedy[rows][c] = first_differences(policy, loop, generate_rollouts(policy, ims, **g, **cases[c]))
            print(
                json.dumps(
                    {
                        "rows": rows,
                        "greedy": {c: {k: v for k, v in d.items() if k != "first"} for c, d in greedy[rows].items()},
                    }
                ),
                flush=True,
            )

    result = {"info": info, "results": results, "greedy": greedy}
    md = to_markdown(result)
    print(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(md + "\n")
    return result


def to_markdown(result: dict) -> str:
    info = result["info"]
    head = (
        f"{info.get('gpu', info['device'])}, torch {info['torch']} ({info['torch_threads']} threads): "
        f"{info['preset']}, {'NF4 + ' if info['nf4'] else ''}LoRA r={info['lora_r']}, {info['dtype']}, G={info['G']}, "
        f"{info['max_new_tokens']} tokens forced, {info['image']} images, sync_every {info['sync_every']}"
    )
    speed = [k for k in result["results"][0] if k.startswith("speedup_vs_")][0] if result["results"] else "speedup"
    lines = [
        head,
        "",
        f"| rows | case | s / call | completion tokens / s | ms / decode step | {speed.replace('_', ' ')} | peak GiB |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["results"]:
        peak = f"{r['peak_alloc_gib']:.2f}" if "peak_alloc_gib" in r else "n/a"
        lines.append(
            f"| {r['rows']} | {r['case']} | {r['seconds']:.3f} | {r['tokens_per_s']:.1f} | {r['ms_per_step']:.2f} | "
            f"{r[speed]:.2f}x | {peak} |"
        )
    if result["greedy"]:
        lines += [
            "",
            "Greedy (temperature 0) against the loop: rows whose tokens differ anywhere; first differing position; "
            "the loop's logit margin between the two tokens there.",
            "",
            "| rows | case | rows differing | first position (min / median) | max abs margin |",
            "|---:|---|---:|---|---:|",
        ]
        for rows, cases in result["greedy"].items():
            for c, d in cases.items():
                pos = f"{d['first_position_min']} / {d['first_position_median']}" if d["rows_differing"] else "-"
                margin = f"{d['margin_max']:.4g}" if d["rows_differing"] else "-"
                lines.append(f"| {rows} | {c} | {d['rows_differing']} of {d['rows']} | {pos} | {margin} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
