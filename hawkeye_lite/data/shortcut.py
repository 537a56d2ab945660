"""A shortcut variant of the demo dataset, for studying the perception loss (issue #28).

`write_shortcut_demo(src, out)` copies the demo dataset at `src` with a coloured frame painted
around every image. The frame's colour is a cue that is *not* image quality:

- in the training split its colour follows the MOS (cue c = (MOS - 1) / 4 plus a little noise,
  then red for c = 1 through purple to blue for c = 0), so the cue predicts the training labels
  almost perfectly and is far easier to read than a distortion;
- in the held-out (test) split c is drawn uniformly, independent of the MOS.

It stands for a spurious property of a real training set: a camera's border, a watermark or a
colour grade that happens to go with the ratings of the images it was collected with. A model
that rates the frame scores well on the training images and near zero on held-out ones; one that
rates the distortions ranks both. The degraded partners of the perception loss are made from the
framed images, so they carry the same frame: an answer read off the frame is the same for an
image and its degraded copy, which is what the perception loss pushes against.

The MOS, ids, splits and scenes are the source's. Deterministic for (source, seed, width, noise).
Train on it with `data.train=[json:OUT/demo.json]`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Union

import numpy as np

from ..fsio import atomic_write_text

SETTINGS = "shortcut.json"


def frame_colour(c: float) -> tuple:
    """The frame's RGB for cue value c in [0, 1]: blue (0) through purple to red (1)."""
    c = min(1.0, max(0.0, float(c)))
    return (int(round(40 + 215 * c)), 40, int(round(40 + 215 * (1 - c))))


def cue_values(records, *, seed: int = 0, noise: float = 0.05) -> List[float]:
    """One cue value per record: (MOS - 1) / 4 + N(0, noise) clipped to [0, 1] for training
    records, uniform on [0, 1] for the others. Keyed by record id (order-free)."""
    import zlib

    out = []
    for r in records:
        rng = np.random.default_rng([int(seed), 37, zlib.crc32(r.id.encode("utf-8"))])
        if r.split == "train":
            c = (r.mos - 1.0) / 4.0 + noise * float(rng.standard_normal())
        else:
            c = float(rng.uniform())
        out.append(min(1.0, max(0.0, c)))
    return out


def write_shortcut_demo(
    src: Union[str, Path], out: Union[str, Path], *, seed: int = 0, width: int = 4, noise: float = 0.05
) -> Path:
    """Write the framed copy of the demo dataset at `src` (made first if missing) to `out`:
    images/, demo.json (readable by the `json:` spec) and shortcut.json (the settings and every
    image's cue value). Returns the JSON file."""
    from PIL import Image, ImageDraw

    from .demo import demo_records

    if width < 1:
        raise ValueError(f"shortcut: the frame width must be >= 1 px, got {width}")
    records = demo_records(src)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    cues = cue_values(records, seed=seed, noise=noise)
    rows = []
    for r, c in zip(records, cues):
        with Image.open(r.image) as im:
            img = im.convert("RGB")
        draw = ImageDraw.Draw(img)
        w, h = img.size
        for k in range(width):
            draw.rectangle([k, k, w - 1 - k, h - 1 - k], outline=frame_colour(c))
        path = out / "images" / Path(r.image).name
        img.save(path)
        row = r.to_json(relative_to=out)
        row["images"] = [str(path.relative_to(out))]
        row.pop("image_deg", None)  # partners are made from the framed image, so they carry the frame
        rows.append(row)
    atomic_write_text(out / "demo.json", json.dumps(rows, indent=1) + "\n")
    settings = {"source": str(Path(src).resolve()), "seed": seed, "width": width, "noise": noise}
    settings["cue"] = {r.id: round(c, 6) for r, c in zip(records, cues)}
    atomic_write_text(out / SETTINGS, json.dumps(settings, indent=1) + "\n")
    return out / "demo.json"
