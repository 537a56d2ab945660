"""The embedded demo dataset: generated in code, so the demo runs with no downloads.

Design (for a tiny model trained for minutes on a CPU to learn from):

- Reference scenes: a colour gradient background (linear or radial), a regular texture over the
  frame or a band of it (sine grating, period 5-12 px, or checkerboard, cells 4-10 px: structured,
  so it never looks like noise, and fine, so blur and JPEG visibly erase it), and 4-8 flat,
  hard-edged shapes (ellipses, rectangles, triangles, bars). Every scene therefore has edges for
  blur and JPEG to destroy, and its mean luminance is normalised to 0.40-0.60 so darkening is
  visible against any scene. Sizes: width and height each drawn from (56, 84, 112) px.
- Distortions, one per image, at a severity s in [0, 1]:
      noise   gaussian, sigma = 50 s (0-255 scale)
      blur    gaussian, radius = 3 s pixels
      jpeg    quality = round(75 * (3/75)^s)   (75 at s=0 down to 3 at s=1; PNG-stored after decoding)
      darken  brightness factor 1 - 0.75 s
  Each scene contributes its pristine image (s = 0) and `per_scene` distorted versions whose
  severities are stratified: version j has s = (j + u) / per_scene with u ~ U(0, 1), and the
  distortion types rotate across versions from a random offset, so every scene spans the whole
  quality range and the types are balanced across severities.
- MOS (documented formula, a function of severity only):
      MOS = 4.8 - 3.6 s                     (pristine 4.8, worst 1.2; on the 1-5 scale)
      std = 0.3 + 0.8 s (1 - s)             (raters disagree most at medium severity)
  The severity -> parameter maps above were chosen so equal s looks roughly equally bad across
  types at these sizes; the MOS is therefore learnable from pixels but not from the scene.
- Splits: by scene, seeded; train and test share no reference scene.

Everything is deterministic for a given seed (numpy Generator + PIL drawing, PNG files).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from ..fsio import writing
from .records import IQARecord, assign_splits, write_json

DEMO_KINDS = ("noise", "blur", "jpeg", "darken")
FORMAT_VERSION = 1
MOS_FORMULA = "MOS = 4.8 - 3.6*s; std = 0.3 + 0.8*s*(1-s); s = distortion severity in [0, 1]"


@dataclass(frozen=True)
class DemoConfig:
    n_scenes: int = 64
    per_scene: int = 5  # distorted versions per scene (plus the pristine one)
    sizes: Tuple[int, ...] = (56, 84, 112)  # each of width and height is drawn from these
    kinds: Tuple[str, ...] = DEMO_KINDS
    test_frac: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_scenes < 2:
            raise ValueError("the demo needs at least 2 scenes (one for each split)")
        if self.per_scene < 1:
            raise ValueError("per_scene must be >= 1")
        if not self.kinds or any(k not in DEMO_KINDS for k in self.kinds):
            raise ValueError(f"kinds must be a non-empty subset of {DEMO_KINDS}")
        if any(s < 16 or s > 1024 for s in self.sizes) or not self.sizes:
            raise ValueError("sizes must be within 16-1024 px")


@dataclass
class DemoSample:
    id: str
    scene: str
    kind: str  # "pristine" or a distortion type
    severity: float
    mos: float
    std: float
    split: str
    image: "object"  # PIL.Image.Image, RGB


def demo_mos(severity: float) -> Tuple[float, float]:
    """(MOS, std) of an image with the given distortion severity: see MOS_FORMULA."""
    s = min(max(float(severity), 0.0), 1.0)
    return 4.8 - 3.6 * s, 0.3 + 0.8 * s * (1.0 - s)


# ----------------------------------------------------------------------------- scenes


def _colour(rng: np.random.Generator) -> Tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def render_scene(rng: np.random.Generator, width: int, height: int):
    """One synthetic reference scene (RGB PIL image)."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    if rng.random() < 0.6:  # linear gradient at a random angle
        a = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(a) + yy * math.sin(a)
    else:  # radial gradient from a random centre
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        t = np.hypot(xx - cx, yy - cy)
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]

    # A regular texture (whole frame, or a band of at least 40% of it) on every scene: without
    # fine structure, blur and JPEG leave no visible trace and their MOS could not be learned.
    if rng.random() < 0.55:
        period = rng.uniform(5, 12)
        a = rng.uniform(0, math.pi)
        tex = np.sin(2 * math.pi * (xx * math.cos(a) + yy * math.sin(a)) / period)
    else:
        cell = int(rng.integers(4, 11))
        tex = (((xx // cell) + (yy // cell)) % 2) * 2 - 1
    amp = rng.uniform(20, 50)
    mask = np.ones_like(xx)
    if rng.random() < 0.4:
        lo = rng.uniform(0, 0.6)
        mask = ((yy / height >= lo) & (yy / height <= lo + 0.4)).astype(np.float32)
    img = img + amp * (tex * mask)[..., None]

    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(4, 9))):
        shape = rng.integers(0, 4)
        col = _colour(rng)
        x0, y0 = rng.uniform(-0.1, 0.9) * width, rng.uniform(-0.1, 0.9) * height
        w, h = rng.uniform(0.12, 0.5) * width, rng.uniform(0.12, 0.5) * height
        box = [x0, y0, x0 + w, y0 + h]
        if shape == 0:
            draw.ellipse(box, fill=col)
        elif shape == 1:
            draw.rectangle(box, fill=col)
        elif shape == 2:
            pts = [(float(rng.uniform(x0, x0 + w)), float(rng.uniform(y0, y0 + h))) for _ in range(3)]
            draw.polygon(pts, fill=col)
        else:
            draw.line([(x0, y0), (x0 + w, y0 + h)], fill=col, width=int(rng.integers(2, 6)))

    # normalise mean luminance to 0.40-0.60 so "darken" is detectable on every scene
    a = np.asarray(pil, dtype=np.float32)
    lum = float((a @ np.array([0.299, 0.587, 0.114], np.float32)).mean())
    target = rng.uniform(0.40, 0.60) * 255
    a = a + (target - lum)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")


def distort(img, kind: str, severity: float, rng: np.random.Generator):
    """The demo's graded distortions (see the module docstring for the severity maps)."""
    from PIL import Image, ImageEnhance, ImageFilter

    s = min(max(float(severity), 0.0), 1.0)
    if kind == "noise":
        a = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 50.0 * s, (img.height, img.width, 3)).astype(np.float32)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=3.0 * s))
    if kind == "jpeg":
        q = int(round(75 * (3 / 75) ** s))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=max(1, q))
        buf.seek(0)
        with Image.open(buf) as dec:
            return dec.convert("RGB")
    if kind == "darken":
        return ImageEnhance.Brightness(img).enhance(1.0 - 0.75 * s)
    raise ValueError(f"unknown demo distortion {kind!r}")


# ----------------------------------------------------------------------------- dataset


def generate_demo(cfg: DemoConfig = DemoConfig()) -> List[DemoSample]:
    """All demo samples in memory (images as PIL). Deterministic for cfg.seed."""
    scenes = [f"scene{i:03d}" for i in range(cfg.n_scenes)]
    split_of = assign_splits(scenes, seed=cfg.seed, test_frac=cfg.test_frac)
    samples: List[DemoSample] = []
    for i, scene in enumerate(scenes):
        # one generator per scene: adding scenes never changes the earlier ones
        rng = np.random.default_rng([cfg.seed, i])
        w, h = (int(v) for v in rng.choice(cfg.sizes, 2))
        ref = render_scene(rng, w, h)
        mos, std = demo_mos(0.0)
        samples.append(DemoSample(f"{scene}_ref", scene, "pristine", 0.0, mos, std, split_of[scene], ref))
        offset = int(rng.integers(len(cfg.kinds)))
        for j in range(cfg.per_scene):
            s = round((j + float(rng.uniform())) / cfg.per_scene, 6)
            kind = cfg.kinds[(offset + j) % len(cfg.kinds)]
            mos, std = demo_mos(s)
            img = distort(ref, kind, s, rng)
            samples.append(DemoSample(f"{scene}_{j}_{kind}", scene, kind, s, mos, std, split_of[scene], img))
    return samples


def write_demo(out_dir: Union[str, Path], cfg: DemoConfig = DemoConfig()) -> List[IQARecord]:
    """Write the demo to out_dir: images/*.png, demo.json (all, with split), train.json, test.json,
    meta.json. Returns the records (absolute image paths)."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records: List[IQARecord] = []
    for smp in generate_demo(cfg):
        path = out / "images" / f"{smp.id}.png"
        with writing(path):
            smp.image.save(path, "PNG", compress_level=6)
        records.append(
            IQARecord(
                id=smp.id,
                image=str(path.resolve()),
                mos=round(smp.mos, 6),
                mos_raw=round(smp.mos, 6),
                mos_range=(1.0, 5.0),
                dataset="demo",
                split=smp.split,
                std=round(smp.std, 6),
                ref=smp.scene,
                source=f"demo:{smp.id}",
            )
        )
    write_json(records, out / "demo.json")
    write_json([r for r in records if r.split == "train"], out / "train.json")
    write_json([r for r in records if r.split == "test"], out / "test.json")
    meta = {
        "format_version": FORMAT_VERSION,
        "config": asdict(cfg),
        "mos_formula": MOS_FORMULA,
        "n_images": len(records),
        "n_train": sum(r.split == "train" for r in records),
        "n_test": sum(r.split == "test" for r in records),
    }
    with writing(out / "meta.json"):
        (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return records


def demo_records(
    root: Union[str, Path], cfg: DemoConfig = DemoConfig(), *, split: Optional[str] = None
) -> List[IQARecord]:
    """Records of the demo dataset stored at root, generating it first if it is missing or was made
    with another config. `split` filters (train/test); None returns all. This is what the trainer uses."""
    from .specs import load_records

    root = Path(root)
    meta_path = root / "meta.json"
    current = None
    if meta_path.is_file():
        try:
            current = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            current = None
    want = json.loads(json.dumps(asdict(cfg)))  # tuples -> lists, as stored
    if (
        current is None
        or current.get("config") != want
        or current.get("format_version") != FORMAT_VERSION
        or not (root / "demo.json").is_file()
    ):
        recs = write_demo(root, cfg)
    else:
        recs = load_records(f"json:{root / 'demo.json'}?name=demo", check_images="header", on_bad="fail").records
    return recs if split is None else [r for r in recs if r.split == split]
