"""Kernel microbenchmark: token_stats + policy_loss, forward + backward.

    python bench/kernels.py                      # GPU: N in {1024, 4096}, H 3584, V 152064, bf16
    python bench/kernels.py --n 8192 --json out.json --markdown out.md

Compares, on the same inputs and the same machine in one run:
  hawkeye   hawkeye_lite.kernels.policy_loss_from_hidden: the fused one-pass objective the trainer
            uses (Triton on CUDA; the PyTorch reference on CPU)
  unfused   hawkeye_lite.kernels.token_stats then policy_loss as two ops
  eager     PyTorch eager: materialised logits, fp32 log_softmax, the same loss
  compile   torch.compile of the eager function
  liger     Liger-Kernel's LigerFusedLinearGRPOLoss (only the plain GRPO objective; if installed)
for two objectives: `grpo` (clipped surrogate + k3 reference KL) and `hawkeye` (+ the exact
perception KL and both entropies over the vocabulary from the degraded-image hidden states).
Times are medians over --reps runs (CUDA events on GPU); memory is the peak allocated on top of
the inputs. It also measures the logits-level kernel's bandwidth against a device-to-device copy.

Without a GPU it runs small shapes and says so: GPU numbers need a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

# Run as a script, this file's folder is sys.path[0]: drop it so that `import kernels` (Hugging
# Face's package, which transformers and bitsandbytes probe for) can never find this file.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from hawkeye_lite import kernels  # noqa: E402  (needs `pip install -e .`: kernels/ maps to hawkeye_lite.kernels)

BETA, EPS_LOW, EPS_HIGH, GAMMA, ETA1 = 0.04, 0.2, 0.28, 1e-4, 1e-3


def machine() -> str:
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}, torch {torch.__version__} (no GPU)"


def timed(fn, reps: int, warmup: int, device: str) -> float:
    """Median milliseconds of fn()."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_extra_mib(fn, device: str):
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


# ------------------------------------------------------------------ the four implementations


def make_inputs(N, H, V, T, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    S = max(1, N // T)
    N = S * T
    mk = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(device, dtype)
    x = dict(
        hidden=mk(N, H).requires_grad_(),
        hidden_deg=mk(N, H),
        weight=mk(V, H, scale=H**-0.5),
        tok=torch.randint(0, V, (N,), generator=g).to(device),
        old=(-torch.rand(S, T, generator=g) * 3).to(device),
        adv=torch.randn(S, generator=g).to(device),
        mask=(torch.rand(S, T, generator=g) > 0.1).float().to(device),
        S=S,
        T=T,
    )
    x["ref"] = x["old"] + 0.05 * torch.randn(S, T, generator=g).to(device)
    return x


def run_hawkeye(x, perception: bool):
    """The fused one-pass objective: policy_loss_from_hidden (what the trainer calls)."""
    S, T = x["S"], x["T"]
    loss, _ = kernels.policy_loss_from_hidden(
        x["hidden"].view(S, T, -1),
        x["weight"],
        x["tok"].view(S, T),
        x["adv"],
        x["mask"],
        x["old"],
        x["ref"],
        x["hidden_deg"].view(S, T, -1) if perception else None,
        beta=BETA,
        eps_low=EPS_LOW,
        eps_high=EPS_HIGH,
        loss_type="grpo",
        gamma=GAMMA if perception else 0.0,
        eta1=ETA1 if perception else 0.0,
    )
    loss.backward()
    x["hidden"].grad = None


def run_hawkeye_unfused(x, perception: bool):
    """token_stats then policy_loss as two differentiable ops (backward recomputes the logits)."""
    st = kernels.token_stats(x["hidden"], x["weight"], x["tok"], x["hidden_deg"] if perception else None)
    S, T = x["S"], x["T"]
    view = lambda t: None if t is None else t.view(S, T)
    loss, _ = kernels.policy_loss(
        view(st.logp),
        x["old"],
        x["ref"],
        x["adv"],
        x["mask"],
        beta=BETA,
        eps_low=EPS_LOW,
        eps_high=EPS_HIGH,
        loss_type="grpo",
        kl_perception=view(st.kl),
        entropy=view(st.entropy),
        gamma=GAMMA if perception else 0.0,
        eta1=ETA1 if perception else 0.0,
    )
    loss.backward()
    x["hidden"].grad = None


def eager_loss(hidden, weight, tok, hidden_deg, old, ref, adv, mask, perception: bool):
    logits = (hidden @ weight.t()).float()
    logp_all = torch.log_softmax(logits, dim=-1)
    S, T = old.shape
    logp = logp_all.gather(-1, tok[:, None]).squeeze(-1).view(S, T)
    ratio = torch.exp(logp - old)
    surr = torch.minimum(ratio * adv[:, None], ratio.clamp(1 - EPS_LOW, 1 + EPS_HIGH) * adv[:, None])
    k3 = torch.exp(ref - logp) - (ref - logp) - 1
    per_tok = -(surr - BETA * k3)
    loss = ((per_tok * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    if perception:
        logq_all = torch.log_softmax((hidden_deg @ weight.t()).float(), dim=-1)
        p = logp_all.exp()
        kl = (p * (logp_all - logq_all)).sum(-1).view(S, T)
        ent = -(p * logp_all).sum(-1).view(S, T)
        n = mask.sum().clamp(min=1)
        loss = loss - GAMMA * (kl * mask).sum() / n + ETA1 * (ent * mask).sum() / n
    return loss


def make_eager(compiled: bool):
    fn = torch.compile(eager_loss, dynamic=False) if compiled else eager_loss

    def run(x, perception):
        loss = fn(
            x["hidden"], x["weight"], x["tok"], x["hidden_deg"], x["old"], x["ref"], x["adv"], x["mask"], perception
        )
        loss.backward()
        x["hidden"].grad = None

    return run


def make_liger(device):
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
    except Exception:  # not installed: the column says so
        return None
    mod = LigerFusedLinearGRPOLoss(
        beta=BETA,
        compiled=device == "cuda",
        epsilon_low=EPS_LOW,
        epsilon_high=EPS_HIGH,
        loss_type="grpo",
        use_ref_model=True,
    )

    def run(x, perception):
        if perception:
            raise NotImplementedError
        S, T = x["S"], x["T"]
        h = x["hidden"].view(S, T, -1)
        out = mod(
            h,
            x["weight"],
            x["tok"].view(S, T),
            x["mask"],
            x["adv"],
            ref_per_token_logps=x["ref"],
            old_per_token_logps=x["old"],
        )
        (out[0] if isinstance(out, tuple) else out).backward()
        x["hidden"].grad = None

    return run


# ------------------------------------------------------------------ bandwidth


def queued_ms(fn, reps: int, warmup: int) -> float:
    """GPU milliseconds per call with calls queued back to back (one sync at the end), so the
    host-side launch latency overlaps the previous call: what the kernel costs inside a busy
    training step, as opposed to `timed`, which starts every call from an idle GPU."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def bandwidth(N, V, dtype, device, reps, warmup):
    """Logits-level kernel, forward + backward of log p, against a device-to-device copy."""
    z = torch.randn(N, V, device=device, dtype=dtype).requires_grad_()
    tok = torch.randint(0, V, (N,), device=device)

    def step():
        out = kernels.token_stats_from_logits(z, tok)
        out.logp.sum().backward()
        z.grad = None

    ms = timed(step, reps, warmup, device)
    nbytes = 3 * z.numel() * z.element_size()  # read (fwd) + read and write dlogits (bwd)
    src = torch.empty(N * V * z.element_size() // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    copy_ms = timed(lambda: dst.copy_(src), reps, warmup, device)
    copy_gbs = 2 * src.numel() * 4 / copy_ms / 1e6
    kern_gbs = nbytes / ms / 1e6
    out = dict(
        N=N,
        V=V,
        dtype=str(dtype).replace("torch.", ""),
        kernel_ms=ms,
        kernel_GBps=kern_gbs,
        copy_GBps=copy_gbs,
        fraction_of_copy=kern_gbs / copy_gbs,
    )
    if device == "cuda":
        q_ms = queued_ms(step, reps, warmup)
        q_copy = 2 * src.numel() * 4 / queued_ms(lambda: dst.copy_(src), reps, warmup) / 1e6
        out.update(
            queued_ms=q_ms,
            queued_GBps=nbytes / q_ms / 1e6,
            queued_copy_GBps=q_copy,
            queued_fraction_of_copy=nbytes / q_ms / 1e6 / q_copy,
        )
    return out


# ------------------------------------------------------------------ main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu = torch.cuda.is_available()
    ap.add_argument("--n", type=int, nargs="+", default=[1024, 4096] if gpu else [256])
    ap.add_argument("--hidden", type=int, default=3584 if gpu else 256)
    ap.add_argument("--vocab", type=int, default=152064 if gpu else 8192)
    ap.add_argument("--seq-len", type=int, default=256, help="completion tokens per sequence (N = S * T)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--reps", type=int, default=20 if gpu else 3)
    ap.add_argument("--warmup", type=int, default=3 if gpu else 1)
    ap.add_argument("--impls", nargs="+", default=["hawkeye", "unfused", "eager", "compile", "liger"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)
    device = "cuda" if gpu else "cpu"
    dtype = getattr(torch, args.dtype)

    impls = {"hawkeye": run_hawkeye, "unfused": run_hawkeye_unfused, "eager": make_eager(False)}
    if "compile" in args.impls:
        impls["compile"] = make_eager(True)
    liger = make_liger(device) if "liger" in args.impls else None
    if liger is not None:
        impls["liger"] = liger
    impls = {k: v for k, v in impls.items() if k in args.impls}

    print(f"machine: {machine()}")
    if not gpu:
        print(
            "NOTE: no GPU here, so this ran small shapes on the CPU with the PyTorch reference path;"
            " the Triton numbers that matter need a GPU (the defaults there: N 1024/4096, H 3584, V 152064)."
        )
    rows = []
    for N in args.n:
        for objective in ("grpo", "hawkeye"):
            for name, fn in impls.items():
                if name == "liger" and objective == "hawkeye":
                    continue  # Liger has no perception term
                x = make_inputs(N, args.hidden, args.vocab, args.seq_len, dtype, device)
                torch._dynamo.reset()  # compiled impls start clean at every shape
                row = dict(
                    N=x["S"] * x["T"], H=args.hidden, V=args.vocab, dtype=args.dtype, objective=objective, impl=name
                )
                try:
                    row["ms"] = timed(lambda x=x: fn(x, objective == "hawkeye"), args.reps, args.warmup, device)
                    row["peak_extra_MiB"] = peak_extra_mib(lambda x=x: fn(x, objective == "hawkeye"), device)
                except torch.OutOfMemoryError:
                    row["error"] = "out of memory"
                except Exception as e:  # a failing comparison must not hide the others
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                rows.append(row)
                mem = row.get("peak_extra_MiB")
                print(
                    f"N={row['N']:>6} {objective:<8} {name:<8} "
                    + (
                        f"{row['ms']:9.2f} ms  " + (f"{mem:9.0f} MiB" if mem is not None else "      n/a MiB")
                        if "ms" in row
                        else row["error"]
                    ),
                    flush=True,
                )
                del x
                if gpu:
                    torch.cuda.empty_cache()
    bw = []
    if gpu:
        for N in args.n:
            for dt in (torch.bfloat16, torch.float32):
                b = bandwidth(N, args.vocab, dt, device, args.reps, args.warmup)
                bw.append(b)
                print(
                    f"bandwidth N={N} V={args.vocab} {b['dtype']}: kernel {b['kernel_GBps']:.0f} GB/s, "
                    f"copy {b['copy_GBps']:.0f} GB/s -> {100 * b['fraction_of_copy']:.0f}% of copy (from idle); "
                    f"queued {100 * b['queued_fraction_of_copy']:.0f}%"
                )

    result = dict(machine=machine(), date=time.strftime("%Y-%m-%d"), argv=sys.argv[1:], rows=rows, bandwidth=bw)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    md = to_markdown(result)
    print()
    print(md)
    if args.markdown:
        args.markdown.write_text(md)


def to_markdown(result) -> str:
    lines = [
        f"Machine: {result['machine']}, {result['date']}",
        "",
        "| N | objective | impl | fwd+bwd ms | peak extra MiB |",
        "|---:|---|---|---:|---:|",
    ]
    for r in result["rows"]:
        ms = f"{r['ms']:.2f}" if "ms" in r else r.get("error", "")
        mem = r.get("peak_extra_MiB")
        lines.append(f"| {r['N']} | {r['objective']} | {r['impl']} | {ms} | {'n/a' if mem is None else f'{mem:.0f}'} |")
    if result["bandwidth"]:
        lines += [
            "",
            "| N | V | logits dtype | queued: kernel GB/s | copy GB/s | % of copy | from idle: % of copy |",
            "|---:|---:|---|---:|---:|---:|---:|",
        ]
        for b in result["bandwidth"]:
            lines.append(
                f"| {b['N']} | {b['V']} | {b['dtype']} | {b['queued_GBps']:.0f} | {b['queued_copy_GBps']:.0f} | "
                f"{100 * b['queued_fraction_of_copy']:.0f} | {100 * b['fraction_of_copy']:.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
