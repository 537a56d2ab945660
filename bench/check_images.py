"""What `data.check_images` costs at load time: header (open only) vs full (decode) vs none.

Writes N JPEGs the size of KonIQ-10k's (1024x768, quality 90, camera-like content: smooth
gradients + texture + noise) into a temporary folder, lists them in a CSV, and times
`load_records` with each mode. Also checks that only `full` catches a truncated file.

    python bench/check_images.py --n 10000          # the measurement in docs/reliability.md
    python bench/check_images.py --n 200 --size 256x192   # quick rehearsal
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, n: int, size: tuple, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    names = []
    for i in range(n):
        a, b, c = rng.uniform(0.002, 0.02, 3)
        base = 128 + 60 * np.sin(a * x + b * y + c * i)
        tex = 20 * np.sin(0.3 * x * rng.uniform(0.5, 1.5)) * np.cos(0.2 * y * rng.uniform(0.5, 1.5))
        img = np.stack([base + tex, base - tex, base + 0.5 * tex], -1) + rng.normal(0, 6, (h, w, 3))
        name = f"img{i:05d}.jpg"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / name, "JPEG", quality=90)
        names.append(name)
    return names


def main() -> None:
    from hawkeye_lite.data import load_records

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="hawkeye-check-"))
    try:
        t0 = time.perf_counter()
        names = make_images(tmp, args.n, size)
        t_make = time.perf_counter() - t0
        # one truncated file: only a full decode can tell
        bad = tmp / names[len(names) // 2]
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        with open(tmp / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "mos"])
            for i, name in enumerate(names):
                w.writerow([name, f"{1 + 4 * (i % 97) / 96:.3f}"])
        mb = sum(os.path.getsize(tmp / n) for n in names) / 2**20
        results = {
            "n": args.n,
            "size": args.size,
            "dataset_mb": round(mb, 1),
            "make_s": round(t_make, 1),
            "cpus": os.cpu_count(),
            "load": os.getloadavg()[0],
        }
        for mode in ("none", "header", "full"):
            t0 = time.perf_counter()
            res = load_records(f"csv:{tmp / 'labels.csv'}", check_images=mode)
            dt = time.perf_counter() - t0
            results[mode] = {
                "seconds": round(dt, 2),
                "ms_per_image": round(1000 * dt / args.n, 3),
                "kept": len(res.records),
                "bad": len(res.bad),
            }
            print(
                f"check_images={mode:<6} {dt:7.2f} s  {1000 * dt / args.n:6.3f} ms/image  "
                f"kept {len(res.records)}  bad {len(res.bad)}",
                flush=True,
            )
        results["load_after"] = os.getloadavg()[0]
        print(json.dumps(results))
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
