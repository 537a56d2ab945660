"""Image checks: whether an image file a label file lists can be used, before a record is made of it.

`check_image` opens the file (`header`) or also decodes it (`full`, which is what catches a
truncated file) and names what is wrong: missing, empty, a folder, a URL, zero-sized, above
`max_pixels` (DEFAULT_MAX_PIXELS: a decompression bomb), truncated or unreadable. IMAGE_EXTS are
the file names the readers take for images when they search a folder. `_is_url` lives here, with
its lowest user; files.py and specs.py use it to refuse remote paths.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Optional, Tuple

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
# 8192 x 8192: bigger than any IQA benchmark image (SPAQ's largest is ~4000 x 4000) and far
# below what a decompression bomb asks for. PIL's own limit (~179 MP) still applies above it.
DEFAULT_MAX_PIXELS = 8192 * 8192


_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _is_url(p: str) -> bool:
    return bool(_URL_RE.match(p.strip()))


def check_image(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, mode: str = "full") -> Optional[Tuple[str, str]]:
    """Return (kind, reason) if the image cannot be used, else None.

    `header` opens the file (format, size); `full` also decodes it, which is what catches a
    truncated file. JPEGs decode in draft mode at 1/8 scale: libjpeg still reads the whole
    entropy-coded stream, so truncation is found at a fraction of the cost.
    """
    from PIL import Image

    if mode == "none":
        return None
    if _is_url(path):
        return "image is a URL", f"image is a URL, not a local file (download the images first): {path}"
    if os.path.isdir(path):
        return "image is a folder", f"image path is a folder, not an image file: {path}"
    if not os.path.isfile(path):
        return "missing image", f"image file not found: {path}"
    if os.path.getsize(path) == 0:
        return "empty image", f"image file is empty (0 bytes): {path}"
    try:
        with warnings.catch_warnings():
            # PIL warns (and only warns) between its limit and twice it: make that an error too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w <= 0 or h <= 0:
                    return "zero-sized image", f"image has zero size ({w}x{h}): {path}"
                if w * h > max_pixels:
                    return (
                        "oversized image",
                        f"image is {w}x{h} = {w * h} pixels, above max_pixels {max_pixels} "
                        f"(possible decompression bomb): {path}",
                    )
                if mode == "full":
                    if im.format == "JPEG":
                        im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                    im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return "oversized image", f"image rejected as a decompression bomb ({e}): {path}"
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        size = _png_size(path)  # PIL refuses 0-pixel PNGs before telling us their size
        if size is not None and 0 in size:
            return "zero-sized image", f"image has zero size ({size[0]}x{size[1]}): {path}"
        what = "truncated" if "truncated" in str(e).lower() else "unreadable"
        return f"{what} image", f"{what} image ({type(e).__name__}: {e}): {path}"
    return None


def _png_size(path: str) -> Optional[Tuple[int, int]]:
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) == 24 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return None
