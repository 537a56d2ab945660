"""What a durable, verified checkpoint costs: atomic_dir with the manifest (sha256 of every file)
and fsync of files and folders, against the plain atomic rename, on a checkpoint-shaped folder
(an adapter in safetensors, an AdamW state twice its size with torch.save, small JSON files).

    python bench/checkpoint_io.py --mib 64 256 --reps 3      # here: the tiny model's are ~0.5 MB
    python bench/checkpoint_io.py --mib 640 --dir /scratch   # a 7B r=64 adapter (~160M params, fp32)

Prints one row per size and mode (seconds, median of --reps) and the overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from hawkeye_lite.fsio import atomic_dir, verify_manifest


def writer(mib: int):
    n = mib * 2**20 // 4 // 3  # adapter 1/3, optimizer 2/3 of the bytes (fp32)
    adapter = {"lora.weight": torch.randn(n)}
    optim = {"state": {0: {"exp_avg": torch.randn(n), "exp_avg_sq": torch.rand(n), "step": torch.tensor(3.0)}}}

    def write(d: Path) -> None:
        save_file(adapter, str(d / "adapter_model.safetensors"))
        (d / "training_state").mkdir()
        torch.save(optim, d / "training_state" / "optimizer.pt")
        (d / "training_state" / "state.json").write_text(json.dumps({"step": 3}))

    return write


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        for mib in args.mib:
            write = writer(mib)
            times = {}
            for mode, kw in (("plain", dict(manifest=False, durable=False)), ("verified+durable", {})):
                t = []
                for i in range(args.reps):
                    start = time.perf_counter()
                    out = atomic_dir(Path(root) / f"{mode}-{mib}-{i}", write, **kw)
                    t.append(time.perf_counter() - start)
                times[mode] = statistics.median(t)
                if kw == {}:
                    start = time.perf_counter()
                    assert verify_manifest(out) is None
                    times["verify on resume"] = time.perf_counter() - start
            row = {"MiB": mib, **{k: round(v, 3) for k, v in times.items()}}
            row["overhead"] = round(times["verified+durable"] / times["plain"], 2)
            rows.append(row)
            print(row, flush=True)
    return rows


if __name__ == "__main__":
    main()
