"""Launch-parameter sweep for the logits-level token_stats kernels (GPU).

    python bench/tune_stats.py                       # N in {512, 1024, 4096}, V 152064, bf16 + fp32
    python bench/tune_stats.py --n 1024 --json out.json

For every (BLOCK_V, num_warps, split) it times the forward kernel and the backward kernel
alone (median of --reps, CUDA events, no autograd) and reports GB/s and the fraction of a
device-to-device copy of the same bytes; the row marked `default bwd` is what
`fused_token_stats.launch_params` picks for the backward (the forward never splits by default).
This is how the defaults were chosen; rerun it on a new card before changing them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from hawkeye_lite.kernels import fused_token_stats as F  # noqa: E402


def cuda_ms(fn, reps: int, warmup: int = 2) -> float:
    """GPU milliseconds per call: calls queued back to back (no sync in between), so the
    Python/Triton launch latency overlaps the previous call instead of being counted."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(3):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / reps)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[512, 1024, 4096])
    ap.add_argument("--vocab", type=int, default=152064)
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--block-v", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--split", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench/tune_stats.py needs a GPU (the interpreter's timings mean nothing)")
    dev = torch.device("cuda")
    V = args.vocab
    rows = []
    for dtype_name, n in itertools.product(args.dtypes, args.n):
        dtype = getattr(torch, dtype_name)
        z = torch.randn(n, V, device=dev, dtype=dtype)
        tok = torch.randint(0, V, (n,), device=dev)
        g = torch.randn(n, device=dev)
        dz = torch.empty_like(z)
        nbytes = z.numel() * z.element_size()
        src = torch.empty(nbytes // 4, device=dev, dtype=torch.float32)
        dst = torch.empty_like(src)
        copy_gbs = 2 * nbytes / cuda_ms(lambda: dst.copy_(src), args.reps) / 1e6
        default = F.launch_params(n, V, dev, backward=True)
        configs = sorted(
            set(itertools.product(args.block_v, args.warps, args.split)) | {(default[0], default[1], default[2])}
        )
        for bv, w, sp in configs:
            launch = dict(block_v=bv, num_warps=w, split=sp)
            _, _, _, _, saved = F.stats_forward(z, tok, None, 1.0, **launch)
            fwd = cuda_ms(lambda: F.stats_forward(z, tok, None, 1.0, **launch), args.reps)
            bwd = cuda_ms(
                lambda: F.stats_backward(z, tok, None, 1.0, saved, None, None, g, None, None, None, dz, None, **launch),
                args.reps,
            )
            row = dict(
                dtype=dtype_name,
                N=n,
                V=V,
                block_v=bv,
                warps=w,
                split=F.launch_params(n, V, dev, **launch)[2],
                default_bwd=(bv, w, sp) == default[:3],
                fwd_ms=fwd,
                bwd_ms=bwd,
                fwd_pct=100 * (nbytes / fwd / 1e6) / copy_gbs,
                bwd_pct=100 * (2 * nbytes / bwd / 1e6) / copy_gbs,
                total_pct=100 * (3 * nbytes / (fwd + bwd) / 1e6) / copy_gbs,
                copy_GBps=copy_gbs,
            )
            rows.append(row)
            print(
                f"{dtype_name:>8} N={n:>5} BLOCK_V={bv:>5} warps={w:>2} split={row['split']:>2}"
                f"{' (default bwd)' if row['default_bwd'] else '':>14} | fwd {fwd:7.3f} ms {row['fwd_pct']:5.1f}% | "
                f"bwd {bwd:7.3f} ms {row['bwd_pct']:5.1f}% | fwd+bwd {row['total_pct']:5.1f}% of copy",
                flush=True,
            )
    best = {}
    for r in rows:
        key = (r["dtype"], r["N"])
        if key not in best or r["total_pct"] > best[key]["total_pct"]:
            best[key] = r
    print("\nbest per shape:")
    for (d, n), r in best.items():
        print(
            f"  {d} N={n}: BLOCK_V={r['block_v']} warps={r['warps']} split={r['split']} -> {r['total_pct']:.1f}% of copy"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, indent=1)
            + "\n"
        )


if __name__ == "__main__":
    main()
