"""Degraded partners for the implicit perception loss (SPEC §1.4).

Every training image gets a partner with the same content and visibly worse quality. The recipe
follows the paper's released pipeline (Q-Hawkeye, src/Dataset/Degradation_Dataset): pick one of
four degradations per image,

    noise   additive gaussian noise, sigma 45 on the 0-255 scale
    blur    gaussian blur, radius 2
    jpeg    JPEG at quality 5, re-encoded 3 times so the artifacts accumulate
    darken  brightness factor 0.6

and optionally apply a second, *different* one on top with stronger settings (noise 65, blur 4,
JPEG 5, darken 0.5). The paper filtered its partners with a VLM and by hand; we keep the
strong settings that survived that filter and skip the filtering.

Determinism: the choice of degradation and the noise field come from a generator seeded by
(seed, record id), so a partner is the same on the fly in training, offline, on any machine,
and independent of the order images are processed in.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..fsio import writing

KINDS = ("noise", "blur", "jpeg", "darken")


@dataclass(frozen=True)
class StageParams:
    noise_sigma: float = 45.0  # gaussian noise std on 0-255
    blur_radius: float = 2.0  # PIL GaussianBlur radius (pixels)
    jpeg_quality: int = 5  # 1-95
    jpeg_passes: int = 3  # re-encodings
    darken: float = 0.6  # brightness factor, < 1 darkens


@dataclass(frozen=True)
class DegradeRecipe:
    kinds: Tuple[str, ...] = KINDS
    first: StageParams = StageParams()
    second_stage: bool = False  # apply a second, different degradation on top
    second: StageParams = StageParams(noise_sigma=65.0, blur_radius=4.0, jpeg_quality=5, jpeg_passes=3, darken=0.5)

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"degradation kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        if self.second_stage and len(set(self.kinds)) < 2:
            raise ValueError("second_stage needs at least two degradation kinds (the second must differ)")
        for p in (self.first, self.second):
            if (
                not (1 <= p.jpeg_quality <= 95)
                or p.jpeg_passes < 1
                or p.noise_sigma < 0
                or p.blur_radius < 0
                or p.darken < 0
            ):
                raise ValueError(f"invalid degradation parameters: {p}")

    @classmethod
    def from_dict(cls, d: dict) -> "DegradeRecipe":
        d = dict(d)
        first = StageParams(**d.pop("first", {}))
        second = StageParams(**{**asdict(cls().second), **d.pop("second", {})})
        if "kinds" in d:
            d["kinds"] = tuple(d["kinds"])
        return cls(first=first, second=second, **d)


def record_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, key): stable across runs, processes and machines."""
    h = hashlib.sha256(f"{seed}\x00{key}".encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(h[:16], "little"))


def apply_one(img, kind: str, p: StageParams, rng: np.random.Generator):
    """One degradation on an RGB PIL image -> RGB PIL image."""
    from PIL import Image, ImageEnhance, ImageFilter

    if kind == "noise":
        a = np.asarray(img, dtype=np.float32)
        a = a + rng.normal(0.0, p.noise_sigma, a.shape).astype(np.float32)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=p.blur_radius))
    if kind == "jpeg":
        out = img
        for _ in range(p.jpeg_passes):
            buf = io.BytesIO()
            out.save(buf, "JPEG", quality=int(p.jpeg_quality))
            buf.seek(0)
            with Image.open(buf) as dec:
                out = dec.convert("RGB")
        return out
    if kind == "darken":
        return ImageEnhance.Brightness(img).enhance(p.darken)
    raise ValueError(f"unknown degradation {kind!r} (expected one of {KINDS})")


def degrade(img, key: str, *, seed: int = 0, recipe: DegradeRecipe = DegradeRecipe()):
    """Degraded partner of `img` for the record `key` -> (PIL image, kinds applied).

    Same (img, key, seed, recipe) -> same pixels. `img` may be a PIL image or a path.
    """
    from PIL import Image

    if not isinstance(img, Image.Image):
        from ..images import open_rgb

        img = open_rgb(img)  # upright, like every other reader of the package
    elif img.mode != "RGB":
        img = img.convert("RGB")
    rng = record_rng(seed, key)
    first = recipe.kinds[int(rng.integers(len(recipe.kinds)))]
    out = apply_one(img, first, recipe.first, rng)
    applied = [first]
    if recipe.second_stage:
        rest = [k for k in recipe.kinds if k != first]
        second = rest[int(rng.integers(len(rest)))]
        out = apply_one(out, second, recipe.second, rng)
        applied.append(second)
    return out, tuple(applied)


@dataclass
class Degrader:
    """Callable wrapper for the trainer: `degrader(pil_image, record_id) -> PIL image`."""

    seed: int = 0
    recipe: DegradeRecipe = field(default_factory=DegradeRecipe)

    def __call__(self, img, key: str):
        return degrade(img, key, seed=self.seed, recipe=self.recipe)[0]


def _safe_name(rid: str) -> str:
    """A file name from a record id that cannot escape the output folder and never collides:
    readable part + a short hash of the full id."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in rid)[-80:].strip(".") or "img"
    return f"{stem}_{hashlib.sha1(rid.encode('utf-8')).hexdigest()[:8]}"


def degrade_records(
    records: Sequence,
    out_dir,
    *,
    seed: int = 0,
    recipe: DegradeRecipe = DegradeRecipe(),
    fmt: str = "png",
    jpeg_save_quality: int = 95,
    progress: Optional[Callable[[int, int], None]] = None,
) -> List:
    """Write a degraded partner for every record under out_dir/images and a JSON (out_dir/data.json)
    listing the originals with the `image_deg` field. Returns the updated records.

    fmt="png" stores the degradation losslessly; fmt="jpg" saves like the paper (quality 95, or the
    JPEG itself for the jpeg degradation). Files are written deterministically: re-running with the
    same seed gives byte-identical images and JSON.
    """
    from dataclasses import replace

    from .records import write_json

    if fmt not in ("png", "jpg"):
        raise ValueError(f"fmt must be 'png' or 'jpg', got {fmt!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    updated, manifest = [], []
    for i, r in enumerate(records):
        img, kinds = degrade(r.image, r.id, seed=seed, recipe=recipe)
        name = _safe_name(r.id) + (".png" if fmt == "png" else ".jpg")
        dst = out / "images" / name
        tmp = dst.with_name(dst.name + ".tmp")
        with writing(dst):
            _save(img, tmp, dst, fmt, kinds, recipe, jpeg_save_quality)
        updated.append(replace(r, image_deg=str(dst.resolve())))
        manifest.append({"id": r.id, "degradation": "+".join(kinds)})
        if progress:
            progress(i + 1, len(records))
    write_json(updated, out / "data.json")
    meta = {"seed": seed, "recipe": asdict(recipe), "format": fmt, "degradations": manifest}
    with writing(out / "degrade_meta.json"):
        (out / "degrade_meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return updated


def _save(img, tmp: Path, dst: Path, fmt: str, kinds, recipe, jpeg_save_quality: int) -> None:
    try:
        if fmt == "png":
            # no timestamps or text chunks: PIL's PNG writer is byte-stable for equal pixels
            img.save(tmp, "PNG", optimize=False, compress_level=6)
        else:
            q = (
                recipe.second.jpeg_quality
                if kinds[-1] == "jpeg" and len(kinds) > 1
                else (recipe.first.jpeg_quality if kinds[-1] == "jpeg" else jpeg_save_quality)
            )
            img.save(tmp, "JPEG", quality=int(q))
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
