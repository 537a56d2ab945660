"""File helpers the readers share: reading label files, picking columns, finding images, refusing URLs.

Text is UTF-8 (with or without BOM) unless the spec's `encoding=` says otherwise; a file that is
not text (gzip, zip/xlsx, an image, a .mat) or not valid text fails naming the line and the byte
at fault (`_read_text`). CSV rows keep the file's line numbers (`_read_csv`). Image names in a
label file resolve against the reader's root (`_resolve`); a name the layout does not place is
found by name below it (`_Locator`, `_index_images`). Remote paths (http, hf, s3, gs) are
refused, saying how to download them (`_url_message`, `_require_file`): data specs read local
files only.
"""

from __future__ import annotations

import csv
import functools
import os
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from .imagecheck import IMAGE_EXTS, _is_url
from .records import DataError, _parse_float


def _url_message(where: str, url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    how = {"hf": "e.g. `huggingface-cli download`", "s3": "e.g. `aws s3 cp`"}.get(scheme, "e.g. with curl or wget")
    return (
        f"{where}: {url} is a {scheme}:// URL; data specs read local files only. "
        f"Download it first ({how}) and pass the local path"
    )


def _resolve(p: str, root: Path) -> str:
    if _is_url(p):  # kept as written: check_image reports it as a URL, not as a missing file
        return p.strip()
    q = os.path.expanduser(p)
    if not os.path.isabs(q):
        q = os.path.join(_resolved_root(str(root)), q)
    # normpath, not Path.resolve: resolving symlinks costs a syscall per path component, which is
    # most of the load time of a 20k-line label file; the root itself is resolved once
    return os.path.normpath(q)


@functools.lru_cache(maxsize=64)
def _resolved_root(root: str) -> str:
    return str(Path(root).expanduser().resolve())


def _read_text(path: Path, encoding: Optional[str] = None) -> str:
    """A text file's content. UTF-8 (with or without BOM) unless `encoding` says otherwise; UTF-16
    with a BOM is recognised. Anything else fails with the line and the byte at fault rather than
    decoding to replacement characters, which would surface later as "caf\ufffd.png not found"."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        raise DataError(f"{path}: is gzip-compressed, not a text file; decompress it first (gunzip)")
    if data[:4] == b"PK\x03\x04":
        raise DataError(
            f"{path}: is a zip archive (an .xlsx workbook is one), not a text file; unpack it, "
            f"or export the sheet to CSV"
        )
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or data[:6] in (b"MATLAB",):
        raise DataError(f"{path}: is an image or MATLAB file, not a label file")
    if encoding:
        try:
            text = data.decode(encoding)
        except LookupError:
            raise DataError(f"{path}: unknown encoding {encoding!r} (try utf-8, latin-1, cp1252, utf-16)") from None
        except UnicodeDecodeError as e:
            raise DataError(_decode_error(path, data, e, encoding)) from None
        return text.lstrip("\ufeff")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16").lstrip("\ufeff")
        except UnicodeDecodeError as e:
            raise DataError(_decode_error(path, data, e, "utf-16")) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(_decode_error(path, data, e, "utf-8")) from None


def _decode_error(path: Path, data: bytes, e: UnicodeDecodeError, encoding: str) -> str:
    line = data.count(b"\n", 0, e.start) + 1
    start = data.rfind(b"\n", 0, e.start) + 1
    end = data.find(b"\n", e.start)
    snippet = data[start : end if end >= 0 else len(data)].rstrip(b"\r")[:80]
    hint = (
        "if the file is Latin-1 or Windows-1252, add ?encoding=latin-1 (or ?encoding=cp1252) to the spec"
        if encoding == "utf-8"
        else "set ?encoding= to the file's encoding"
    )
    return (
        f"{path}:{line}: not valid {encoding} text (byte 0x{data[e.start]:02x} at column {e.start - start + 1}, "
        f"in {snippet!r}); {hint}"
    )


def _read_csv(
    path: Path, delimiter: Optional[str] = None, encoding: Optional[str] = None
) -> Tuple[List[str], Iterator[Tuple[int, Dict[str, str]]]]:
    """Header and (line number, row dict) pairs. Line numbers are the file's, header = line 1."""
    text = _read_text(path, encoding)
    lines = text.splitlines()  # CRLF and a missing final newline both end up the same
    if delimiter is None:
        first = lines[0] if lines else ""
        delimiter = max([",", ";", "\t"], key=first.count)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path}:1: empty CSV file") from None

    def rows() -> Iterator[Tuple[int, Dict[str, str]]]:
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue
            row: Dict[str, str] = {}
            for i, h in enumerate(header):
                row.setdefault(
                    h, values[i].strip() if i < len(values) else ""
                )  # a repeated name keeps its first column
            yield reader.line_num, row

    return header, rows()


def _pick_column(
    header: Sequence[str], wanted: Optional[str], candidates: Sequence[str], what: str, path: Path
) -> Optional[str]:
    if wanted:
        if wanted not in header:
            raise DataError(f"{path}:1: no column {wanted!r} for the {what} (columns: {', '.join(header)})")
        return wanted
    lower = {h.lower(): h for h in reversed(header)}
    for c in candidates:
        if c.lower() in lower:
            return lower[c.lower()]
    return None


def _require_file(path: Path, what: str) -> Path:
    s = str(path)
    if re.match(r"^(https?|hf|s3|gs):/", s, re.I):  # Path() has already folded '://' into ':/'
        raise DataError(_url_message(what, s.replace(":/", "://", 1)))
    if path.is_dir():
        raise DataError(
            f"{path}: is a folder, but a {what} is expected here (a file). "
            f"For a dataset folder use its kind (koniq:DIR, kadid:DIR, ...); for a label file in it "
            f"give the file's path"
        )
    if not path.is_file():
        missing = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
        why = "" if missing == path.parent else f" (its folder {path.parent} does not exist either)"
        raise DataError(f"{path}: {what} not found{why}")
    return path


def _require_dir(path: Path, kind: str, what: str) -> Path:
    """A native reader's DIR argument: a file here is a different mistake from a missing folder."""
    if path.is_file():
        raise DataError(
            f"{path}: is a file, but {kind}: expects the {what} folder. For an annotation file "
            f"on its own use csv:FILE, txt:FILE, json:FILE or pyiqa:FILE"
        )
    return path


def _first_existing(base: Path, candidates: Sequence[str], what: str) -> Path:
    for c in candidates:
        p = base / c
        if p.exists():
            return p
    why = "" if base.is_dir() else f"; the folder {base} does not exist"
    raise DataError(f"{base}: {what} not found (looked for {', '.join(candidates)}{why})")


def _index_images(root: Path) -> Dict[str, str]:
    """Lower-case file name -> path for every image under root. Used by layouts whose label
    files give bare names while the images sit in per-distortion subfolders (CSIQ, PIPAL)."""
    index: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            if os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                index.setdefault(f.lower(), os.path.join(dirpath, f))
    return index


class _Locator:
    """Image name in a label file -> path. `root/name` when it exists; else the name with an image
    extension added (pyiqa's LIVE lists `jp2k/img2`); else the one file under root whose path ends
    with the name (label files that give bare names while the release nests images in subfolders).
    A name that matches several files (LIVE's img1.bmp is in five folders) is never guessed: it stays
    `root/name` and is reported missing. The index is built on the first miss only, so a layout
    that matches costs no directory walk."""

    def __init__(self, root: Path):
        self.root = root
        self._index: Optional[Dict[str, List[str]]] = None

    def _build(self) -> Dict[str, List[str]]:
        index: Dict[str, List[str]] = {}
        if self.root.is_dir():
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames.sort()
                for f in sorted(filenames):
                    if os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                        index.setdefault(f.lower(), []).append(os.path.join(dirpath, f))
        return index

    def __call__(self, name: str) -> Optional[str]:
        if not name:
            return None
        if _is_url(name):
            return name.strip()
        direct = _resolve(name, self.root)
        if os.path.isfile(direct):
            return direct
        has_ext = os.path.splitext(name)[1].lower() in IMAGE_EXTS
        if not has_ext:
            for ext in (".bmp", ".png", ".jpg", ".JPG", ".BMP", ".PNG", ".jpeg", ".tif"):
                if os.path.isfile(direct + ext):
                    return direct + ext
        if self._index is None:
            self._index = self._build()
        rel = "/" + re.sub(r"^(\./)+|^/+", "", name.replace("\\", "/")).lower()
        for suffix in [""] if has_ext else ["", ".png", ".bmp", ".jpg"]:
            cands = [
                p
                for p in self._index.get(os.path.basename(rel) + suffix, [])
                if p.replace(os.sep, "/").lower().endswith(rel + suffix)
            ]
            if len(cands) == 1:
                return cands[0]
            if cands:
                break
        return direct


def _name_score_lines(path: Path, encoding: Optional[str] = None) -> Iterator[Tuple[int, str, str]]:
    """`name score` or `name,score` lines -> (line, name, score-string). Blank/comment lines skipped."""
    for i, line in enumerate(_read_text(path, encoding).splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = [p.strip() for p in (s.split(",") if "," in s else s.split())]
        yield i, parts[0], (parts[1] if len(parts) > 1 else "")


def _truthy(v: Optional[str]) -> bool:
    return str(v or "0").strip().lower() in ("1", "true", "yes", "on")


def _is_num(s: str) -> bool:
    return _parse_float(s) is not None
