"""Reading images the way a viewer shows them, and naming them by their content.

Every image the package reads (Scorer inputs, dataset records, degraded partners, the demo)
goes through `open_rgb`, so an image looks the same to the model wherever it came from. The
EXIF orientation tag is applied: phone photos (SPAQ is phone photos) store the sensor's pixel
grid plus a tag saying how to turn it, and without the tag the model would see them sideways.

`content_key` is a 64-bit name of the pixels themselves; the Scorer derives each image's random
stream from it, so a score is a function of the image, not of where it sits in a batch.
"""

from __future__ import annotations

import hashlib
import os
from typing import Union

URL_SCHEMES = ("http://", "https://", "hf://", "s3://", "gs://", "ftp://")


class ImageReadError(ValueError):
    """An image could not be read or converted; the message names the image."""


def upright(image):
    """Apply the EXIF orientation tag (if any) to an in-memory PIL image. The tag is dropped from
    the result, so applying this twice is the same as once."""
    from PIL import ImageOps

    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is not worth losing the image over
        return image
    if orientation in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def check_path(path: Union[str, os.PathLike], name: str) -> str:
    """A readable-file check whose message says what the path actually is."""
    text = os.fspath(path)
    if text.lower().startswith(URL_SCHEMES):
        raise ImageReadError(f"{name}: is a URL; images are not downloaded, save it to a file first")
    if os.path.isdir(text):
        raise ImageReadError(f"{name}: is a directory, not an image file")
    if not os.path.exists(text):
        raise ImageReadError(f"{name}: no such file")
    if not os.path.isfile(text):
        raise ImageReadError(f"{name}: is not a regular file")
    return text


def open_image(path: Union[str, os.PathLike], name: str = None):
    """Decode a file fully and return it upright, in its own mode (see `as_rgb` for RGB)."""
    from PIL import Image

    name = name or os.fspath(path)
    text = check_path(path, name)
    try:
        opened = Image.open(text)
        keep = False
        try:
            opened.load()  # decode now: a truncated file fails here, naming itself
            image = upright(opened)
            if image is not opened:
                return image
            # load() closes the file of a single-frame image: it can be returned as it is (no
            # copy of a 12 MP photo); a multi-frame one still holds its file open, so copy it.
            keep = getattr(opened, "fp", None) is None
            return opened if keep else opened.copy()
        finally:
            if not keep:
                opened.close()
    except Exception as exc:  # PIL raises many types (OSError, DecompressionBombError, SyntaxError...)
        raise ImageReadError(f"{name}: cannot read image ({type(exc).__name__}: {exc})") from exc


def open_rgb(path: Union[str, os.PathLike], name: str = None):
    """A file -> an upright RGB PIL image (16-bit, palette and transparent images converted the
    way viewers show them). Raises ImageReadError naming the file."""
    return as_rgb(os.fspath(path), name or os.fspath(path))


def array_to_pil(array, name: str):
    """numpy HxW / HxWxC (uint8, uint16 or float in [0, 1]) -> PIL image."""
    import numpy as np
    from PIL import Image

    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageReadError(
            f"{name}: expected an HxW or HxWxC array with C in 1, 3, 4; got shape {tuple(array.shape)}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"{name}: image has no pixels (shape {tuple(array.shape)})")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageReadError(f"{name}: float image contains NaN or inf")
        lo, hi = float(array.min()), float(array.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ImageReadError(f"{name}: float images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
        array = (array.clip(0, 1) * 255.0).round().astype(np.uint8)
    else:
        raise ImageReadError(f"{name}: unsupported pixel type {array.dtype} (use uint8, uint16 or float in [0, 1])")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.ndim if array.ndim == 2 else array.shape[2]]
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def as_rgb(image, name: str = "image"):
    """Any supported input -> an upright RGB PIL image. Raises ImageReadError naming `name`.
    Paths are decoded fully (a truncated file fails here, not mid-batch)."""
    import numpy as np
    from PIL import Image

    try:
        if isinstance(image, (str, os.PathLike)):
            image = open_image(image, name)
        elif isinstance(image, np.ndarray):
            image = array_to_pil(image, name)
        elif type(image).__module__.startswith("torch"):
            import torch

            if not isinstance(image, torch.Tensor):
                raise ImageReadError(f"{name}: unsupported input type {type(image).__name__}")
            t = image.detach().cpu()
            if not (t.ndim == 2 or (t.ndim == 3 and t.shape[0] in (1, 3, 4))):
                # Say it in the tensor's own layout: the user passed CxHxW, not what we permute it to.
                raise ImageReadError(
                    f"{name}: expected a CxHxW tensor with C in 1, 3, 4 (or HxW); got shape {tuple(t.shape)}"
                )
            if t.ndim == 3:  # CxHxW -> HxWxC
                t = t.permute(1, 2, 0)
            array = t.float().numpy() if t.is_floating_point() else t.numpy()
            image = array_to_pil(array, name)
        elif isinstance(image, Image.Image):
            image = upright(image)  # a PIL image opened by the caller still carries its EXIF tag
        else:
            raise ImageReadError(
                f"{name}: unsupported input type {type(image).__name__} (use a path, PIL image, numpy array or torch tensor)"
            )
    except ImageReadError:
        raise
    except Exception as exc:  # PIL raises many types (OSError, DecompressionBombError, SyntaxError…)
        raise ImageReadError(f"{name}: cannot read image ({type(exc).__name__}: {exc})") from exc

    if image.width == 0 or image.height == 0:
        raise ImageReadError(f"{name}: image has no pixels ({image.width}x{image.height})")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grayscale: PIL's convert("L") would clip at 255 instead of scaling.
        image = array_to_pil(np.asarray(image).astype(np.uint16, copy=False), name)
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        image = array_to_pil(array / 255.0 if array.max() > 1 else array, name)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels are shown over white by viewers; their stored colour is arbitrary.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def content_key(image) -> int:
    """63-bit key of an RGB PIL image's size and pixels (sha256): equal pixels, equal key."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


def mix_seed(seed: int, key: int) -> int:
    """One 63-bit seed from a user seed and an image key (sha256, so nearby seeds don't collide)."""
    h = hashlib.sha256(f"{int(seed)}:{int(key)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)
