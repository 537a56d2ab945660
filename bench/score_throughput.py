"""Images per second of `Scorer` on a folder of mixed sizes: the pipeline before (every image
read and converted first, then batches in input order, each preprocessed on the main thread
before it generates) against `score_iter` (background workers, images resized before the
processor's array conversions, batches grouped by visual-token count), side by side in one
process, alternating, on the same images. Every image's result must be identical in both (the
script stops if one differs). The speedup is against the better of the two "before" runs.

    python bench/score_throughput.py                               # tiny model's processor (<= 12,544 px)
    python bench/score_throughput.py --max-pixels 200704           # up to 256 visual tokens: padding shows
    python bench/score_throughput.py --preset 7b --device cuda --max-pixels 401408   # bench/gpu_check.sh

The tiny random model (built here) never stops early, so every image decodes --max-new-tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# `python bench/score_throughput.py` puts bench/ first on sys.path, where bench/kernels.py would
# shadow the Hugging Face `kernels` package that transformers probes for at import.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hawkeye_lite.scorer import Scorer, ScoreResult, aggregate, to_rgb  # noqa: E402

SIZES = [(320, 240), (640, 480), (1024, 768), (1600, 1200), (480, 640), (800, 800), (2000, 1500), (256, 256)]


def mixed_folder(out: Path, n: int, seed: int = 0) -> list:
    """n JPEGs of the sizes above (photo-like: smooth colour fields plus noise), seeded."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = SIZES[rng.integers(len(SIZES))]
        base = Image.fromarray(rng.integers(0, 256, (h // 32 + 1, w // 32 + 1, 3), dtype=np.uint8))
        arr = np.asarray(base.resize((w, h), Image.BILINEAR)).astype(np.int16) + rng.integers(-20, 20, (h, w, 3))
        path = out / f"img{i:05d}.jpg"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def score_before(scorer: Scorer, paths, *, samples, max_new_tokens, batch_size, seed=0) -> list:
    """The Scorer's loop before score_iter (hawkeye_lite/scorer.py at 6f13fab), kept verbatim in
    its steps: read and convert all, then per batch in input order encode + generate."""
    from hawkeye_lite.images import content_key, mix_seed
    from hawkeye_lite.rollout import generate_rollouts

    loaded = [(i, p, to_rgb(p, p)) for i, p in enumerate(paths)]
    results = []
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start : start + batch_size]
        keys = [content_key(im) for _, _, im in chunk]
        rollouts = generate_rollouts(
            scorer.policy,
            [im for _, _, im in chunk],
            num_generations=samples,
            max_new_tokens=max_new_tokens,
            seeds=[mix_seed(seed, k) for k in keys],
            prompt=scorer.prompt,
        )
        for b, (_, name, _) in enumerate(chunk):
            texts = rollouts.texts[b * samples : (b + 1) * samples]
            mean, std, values = aggregate(texts, parse=scorer.parse)
            results.append(ScoreResult(name, mean, std, samples=values, texts=texts, n_parsed=len(values)))
    return results


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (default: a tiny random Qwen2.5-VL built here)")
    ap.add_argument(
        "--preset",
        choices=["7b", "3b", "tiny"],
        help="instead: bench/rollout.py's random model of that shape (NF4 + LoRA r=64; answers run to "
        "--max-new-tokens), its processor capped at --max-pixels",
    )
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--folder", help="score these images instead (*.jpg, *.png), the first --images")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-pixels", type=int, help="the tiny model's processor cap (its default: 12544)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=2, help="before/after pairs, alternating")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="score-bench-"))
    model = args.model
    if model is None and not args.preset:
        from hawkeye_lite.tiny_model import build_tiny_model

        model = str(build_tiny_model(tmp / "tiny", seed=0))
        if args.max_pixels:
            cfg_path = Path(model) / "preprocessor_config.json"
            cfg = json.loads(cfg_path.read_text())
            cfg["max_pixels"] = args.max_pixels
            cfg_path.write_text(json.dumps(cfg, indent=2))
    if args.folder:
        paths = sorted(str(p) for p in Path(args.folder).iterdir() if p.suffix.lower() in (".jpg", ".png"))
        paths = paths[: args.images]
    else:
        paths = mixed_folder(tmp / "mixed", args.images)
    scorer = _preset_scorer(args) if args.preset else Scorer.from_pretrained(model, device=args.device)
    opts = dict(samples=args.samples, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    score_before(scorer, paths[: args.batch_size], **opts)  # warm-up (allocator, kernels, caches)
    # `hawkeye-lite score` on CPU leaves the workers their cores (torch threads = cores - workers);
    # "before" is timed with torch's default threads (what it ran with) and with that many too.
    default_threads = torch.get_num_threads()
    fewer = max(1, (os.cpu_count() or 1) - args.workers) if args.device == "cpu" and args.workers else default_threads
    runs = {"before": default_threads, "before_fewer_threads": fewer, "after": fewer}
    if fewer == default_threads:
        del runs["before_fewer_threads"]
    times = {k: [] for k in runs}
    ref = None
    load = [os.getloadavg()[0]]
    for _ in range(args.reps):
        for which, threads in runs.items():
            torch.set_num_threads(threads)
            sync()
            t0 = time.perf_counter()
            if which.startswith("before"):
                out = score_before(scorer, paths, **opts)
            else:
                out = list(scorer.score_iter(paths, workers=args.workers, **opts))
            sync()
            times[which].append(time.perf_counter() - t0)
            got = [(r.source, r.samples, r.texts) for r in out]
            if ref is None:
                ref = got
            elif got != ref:
                bad = next(i for i, (a, b) in enumerate(zip(got, ref)) if a != b)
                raise SystemExit(f"{which}: image {paths[bad]} scored differently from the first run")
        load.append(os.getloadavg()[0])
    rate = {k: len(paths) / statistics.median(v) for k, v in times.items()}
    tokens = sorted({int(t) for t in _token_counts(scorer, paths)})
    res = {
        "images": len(paths),
        "visual_tokens": [tokens[0], tokens[-1]],
        "samples": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "device": args.device,
        "cpus": os.cpu_count(),
        "torch_threads": runs,
        "load_1min": [round(x, 2) for x in load],
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "images_per_s": {k: round(v, 2) for k, v in rate.items()},
        "speedup": round(rate["after"] / max(v for k, v in rate.items() if k != "after"), 2),  # vs the better before
        "identical": True,
    }
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


def _preset_scorer(args) -> Scorer:
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("hawkeye_bench_rollout", Path(__file__).with_name("rollout.py"))
    rollout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rollout)
    build_policy = rollout.build_policy

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    side = int((args.max_pixels or 200704) ** 0.5)
    ns = SimpleNamespace(preset=args.preset, model=None, no_nf4=False, lora_r=64, lora_b_std=0.002, image_size=side)
    return Scorer(build_policy(ns, device, dtype), max_new_tokens=args.max_new_tokens)


def _token_counts(scorer: Scorer, paths) -> list:
    proc = scorer.policy.processor
    return [proc.num_image_tokens(proc.process_image(to_rgb(p, p))["image_grid_thw"])[0] for p in paths]


if __name__ == "__main__":
    main()
