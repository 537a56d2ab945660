"""Collections: the list of images `hawkeye-lite score` scores, from files, folders, @lists and data specs.

`expand_inputs(items, data)` turns what the user typed into one ordered list of image paths plus
one-line notes saying what was found and what was skipped. It reads names only: no image is
opened here (the scorer reports an unreadable file in its own row), and a folder of 100k images
costs one directory listing per folder, not one system call per file. `iter_folder` is the folder
walk on its own, as a stream.

Each item is one of:

    FILE        any existing file that is not a folder, whatever its extension: kept exactly as typed
                (not resolved, not normalised). A non-image file is passed through too; the scorer
                reports it as unreadable in its row. Hidden files given by name are kept.
    FOLDER      every image under it, recursively (see "Folders" below).
    @LISTFILE   a UTF-8 text file of paths, one per line (see "@lists" below). To score a file whose
                name starts with `@`, type it as `./@name.jpg`.

and `data` holds data specs (`json:FILE`, `csv:FILE?...`, `koniq:DIR`, ...: see hawkeye_lite.data),
read with `load_records(data, on_bad=, check_images=, seed=)`. Every record's image (all splits,
train/val/test alike; not the degraded partner `image_deg`) is appended in the records' order, as
the absolute path the record holds, and each dataset's summary becomes a note.

Order. Items come in the order given, each expanded in place; the data specs' images come after
all items. A path that names a file already in the list (same `os.path.realpath`: `a.jpg` and
`./a.jpg`, a symlink and its target, a folder given twice, a data record that is also a typed
file) is dropped, keeping the first, and one note counts them ("removed 5 repeated paths").

Folders:
  - recursive; a file is an image when its extension, compared case-insensitively, is in
    IMAGE_EXTENSIONS (every one of them is a format Pillow opens): other files are skipped and
    counted by extension in the note ("2 non-image files skipped; non-image extensions: .heic 2").
  - the order is by relative path, compared part by part (folder names, then the file name) in
    plain string order: code point by code point, case-sensitive (`B.jpg` before `a.jpg`), with no
    "human" numbering (`img10.jpg` before `img2.jpg`: zero-pad numbers for numeric order). A folder's
    contents sort as its name does: `a/z.jpg` comes before `a.jpg` because `a` < `a.jpg`. The order
    is the same on every platform and file system, and the walk streams in it.
  - hidden entries (name starting with "."), files and folders alike, are skipped and counted; a
    hidden folder is not entered. A hidden file or folder typed by name (or listed) is used.
  - symlinked files are followed (the link's path is what is returned); symlinked folders are
    followed too, but a folder whose real path was already entered in this walk is not entered
    again, so `a/loop -> a` cannot loop ("1 repeated folder link" in the note). Broken links and
    special files (FIFOs, sockets, devices) are skipped and counted.
  - a folder that cannot be read (permission denied, ...) is skipped with its own note; the walk
    goes on. An empty folder is a note ("empty/: 0 images"), not an error.
  - returned paths are the folder as typed joined with the relative path (`photos/a/b.jpg`, and
    `./a.jpg` for `.`).

@lists:
  - one path per line; trailing whitespace (and the CR of CRLF files) is stripped, leading
    whitespace is kept as part of the name; blank lines and lines starting with `#` are skipped;
    a UTF-8 byte-order mark is ignored. A list that is not valid UTF-8 is an error naming the line.
  - a relative path is relative to the list file's folder, as in dataset annotation files (a list
    in `lists/` that says `a.jpg` means `lists/a.jpg`, and that is the path returned). A list that
    is not a regular file (a pipe: `@/dev/stdin`, `@<(find ...)`) has no folder of its own: its
    relative paths are relative to `base` (the current folder).
  - a listed folder is expanded like a folder item (its counts are added to the list's note); a
    listed `@other.txt` is an ordinary path, never read as another list: lists do not nest.
  - a listed path that does not exist is skipped and counted in the list's note naming the first
    one (on_bad="skip", the default) or is an error naming the list file and line (on_bad="fail").

`base`: relative items are looked up under `base` (default: the current folder) to check that
they exist and what they are; the returned strings stay relative as typed, so a caller that
passes `base` reads them relative to `base`. No `~` or wildcard expansion is done (the shell does
that).

Errors (CollectionError, a UserError, so the command line exits with status 2, one line naming
the item): an item that does not exist ("photos/: no such file or folder"), a missing or unreadable
@list file, an unknown on_bad/check_images, and a collection with no images at all ("no images to
score in: photos/, @list.txt (notes...)"). Data-spec problems keep the data package's own
exception (DataError). check_images applies to the data specs only.
"""

from __future__ import annotations

import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .data.imagecheck import IMAGE_EXTS
from .errors import UserError
from .images import URL_SCHEMES

# The data readers' image names (data/imagecheck.py) and the other formats Pillow opens: every
# extension here maps to a Pillow plugin (Image.registered_extensions()) and round-trips through
# Pillow 10+ (JPEG 2000 and WebP need Pillow's bundled openjpeg/libwebp, which its wheels have).
IMAGE_EXTENSIONS = frozenset(IMAGE_EXTS | {".jpe", ".jfif", ".dib", ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".j2k"})

ON_BAD = ("skip", "fail")
CHECK_IMAGES = ("full", "header", "none")

PathLike = Union[str, "os.PathLike[str]"]


class CollectionError(UserError):
    """The images to score cannot be collected from what was given: the message names the item."""


@dataclass
class Expanded:
    """The images to score, in order, without repeats, and the notes on how they were found."""

    paths: List[str]
    notes: List[str] = field(default_factory=list)


def _n(count: int, noun: str, plural: Optional[str] = None) -> str:
    return f"{count:,} {noun if count == 1 else (plural or noun + 's')}"


@dataclass
class FolderStats:
    """What a folder walk found and skipped (filled in while `iter_folder` runs)."""

    images: int = 0
    folders: int = 0  # folders walked, the top one included
    hidden_files: int = 0
    hidden_folders: int = 0
    non_images: Counter = field(default_factory=Counter)  # extension (lower case, "" for none) -> count
    repeated_links: int = 0  # folder links to a folder already walked (loops)
    broken_links: int = 0
    special_files: int = 0  # FIFOs, sockets, devices
    unreadable: List[Tuple[str, str]] = field(default_factory=list)  # (folder as shown, why)

    def skipped(self) -> List[str]:
        """The skip counts, as phrases ("3 hidden files")."""
        parts = []
        if self.hidden_files:
            parts.append(_n(self.hidden_files, "hidden file"))
        if self.hidden_folders:
            parts.append(_n(self.hidden_folders, "hidden folder"))
        n_non = sum(self.non_images.values())
        if n_non:
            parts.append(_n(n_non, "non-image file"))
        if self.repeated_links:
            parts.append(_n(self.repeated_links, "repeated folder link"))
        if self.broken_links:
            parts.append(_n(self.broken_links, "broken link"))
        if self.special_files:
            parts.append(_n(self.special_files, "special file"))
        return parts

    def extensions(self, most: int = 5) -> str:
        """'.heic 3, .txt 1' for the most common skipped extensions ('(none)': no extension)."""
        top = sorted(self.non_images.items(), key=lambda kv: (-kv[1], kv[0]))
        s = ", ".join(f"{ext or '(none)'} {k:,}" for ext, k in top[:most])
        if len(top) > most:
            s += f", {len(top) - most:,} more"
        return s

    def format(self, label: str) -> str:
        """The one-line note: 'photos/: 1,234 images (3 hidden files, 2 non-image files skipped)'."""
        s = f"{label}: {_n(self.images, 'image')}"
        skipped = self.skipped()
        if skipped:
            s += f" ({', '.join(skipped)} skipped)"
        if self.non_images:
            s += f"; non-image extensions: {self.extensions()}"
        return s

    def unreadable_notes(self) -> List[str]:
        return [f"{folder}: cannot read folder ({why}), skipped" for folder, why in self.unreadable]


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _scan(fs_path: str, shown: str, stats: FolderStats) -> Optional[List[os.DirEntry]]:
    """A folder's entries sorted by name, or None (and a note) when it cannot be read."""
    try:
        with os.scandir(fs_path) as it:
            entries = list(it)
    except OSError as e:
        stats.unreadable.append((shown, _why(e)))
        return None
    entries.sort(key=lambda e: e.name)
    stats.folders += 1
    return entries


def _walk(fs_top: str, shown_top: str, stats: FolderStats) -> Iterator[Tuple[str, str]]:
    """(path as shown, real path) for every image under a folder, in the documented order.

    A depth-first walk over each folder's entries sorted by name, files and folders together: that
    is exactly the order of the relative paths' parts. Only what scandir gives is used per file
    (d_type); symlinks cost one stat each, and a followed folder link one realpath.
    """
    top_real = os.path.realpath(fs_top)
    visited = {top_real}
    entries = _scan(fs_top, shown_top, stats)
    if entries is None:
        return
    # each level: (entries, next index, shown folder, real folder)
    stack: List[Tuple[List[os.DirEntry], int, str, str]] = [(entries, 0, shown_top, top_real)]
    join = os.path.join
    while stack:
        entries, i, shown_dir, real_dir = stack[-1]
        if i >= len(entries):
            stack.pop()
            continue
        stack[-1] = (entries, i + 1, shown_dir, real_dir)
        e = entries[i]
        name = e.name
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        if name.startswith("."):
            if is_dir:
                stats.hidden_folders += 1
            else:
                stats.hidden_files += 1
            continue
        if is_dir:
            shown = join(shown_dir, name)
            real = os.path.realpath(e.path) if e.is_symlink() else join(real_dir, name)
            if real in visited:
                stats.repeated_links += 1
                continue
            visited.add(real)
            sub = _scan(e.path, shown, stats)
            if sub:
                stack.append((sub, 0, shown, real))
            continue
        try:
            is_file = e.is_file()
        except OSError:
            is_file = False
        if not is_file:
            if e.is_symlink():
                stats.broken_links += 1
            else:
                stats.special_files += 1
            continue
        ext = os.path.splitext(name)[1].lower()
        if ext not in IMAGE_EXTENSIONS:
            stats.non_images[ext] += 1
            continue
        stats.images += 1
        real = os.path.realpath(e.path) if e.is_symlink() else join(real_dir, name)
        yield join(shown_dir, name), real


def _fs(path: str, base: Optional[str]) -> str:
    """Where a typed path is on disk: under base when it is relative and base is given."""
    return os.path.join(base, path) if base is not None else path


def iter_folder(
    folder: PathLike, *, base: Optional[PathLike] = None, stats: Optional[FolderStats] = None
) -> Iterator[str]:
    """Stream the images under `folder`, recursively, in the documented order (see the module
    docstring), as `folder` joined with each relative path. A relative `folder` is looked up under
    `base` (default: the current folder). Pass a FolderStats to collect the counts of what was
    skipped; a folder that cannot be read is recorded there and skipped. Raises CollectionError
    if `folder` is not a folder."""
    shown = os.fspath(folder)
    fs_top = _fs(shown, None if base is None else os.fspath(base))
    if not os.path.isdir(fs_top):  # checked now, not at the first next()
        what = "not a folder" if os.path.exists(fs_top) else "no such folder"
        raise CollectionError(f"{shown}: {what}")
    return (p for p, _ in _walk(fs_top, shown, stats if stats is not None else FolderStats()))


class _RealPaths:
    """Real paths (the key for repeats) at one lstat per path: a file that is not a symlink is its
    folder's real path (cached, one per folder) joined with its name."""

    def __init__(self) -> None:
        self._dirs: Dict[str, str] = {}

    def dir(self, d: str) -> str:
        r = self._dirs.get(d)
        if r is None:
            r = self._dirs[d] = os.path.realpath(d or os.curdir)
        return r

    def __call__(self, fs_path: str, st_mode: Optional[int] = None) -> str:
        if st_mode is None:
            try:
                st_mode = os.lstat(fs_path).st_mode
            except OSError:  # missing (a data record with check_images=none): its name is its key
                st_mode = 0
        if stat.S_ISLNK(st_mode):
            return os.path.realpath(fs_path)
        d, name = os.path.split(fs_path)
        if name in ("", os.curdir, os.pardir):
            return os.path.realpath(fs_path)
        return os.path.join(self.dir(d), name)


_SPEC_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+.-]+:")


def _missing(item: str) -> CollectionError:
    hint = ""
    if item.lower().startswith(URL_SCHEMES):
        hint = " (a URL: images are not downloaded, save it to a file first)"
    elif _SPEC_RE.match(item):
        from .data.specs import KINDS

        if item.split(":", 1)[0].lower() in KINDS:
            hint = " (it looks like a data spec: give it as one, not as an image path)"
    return CollectionError(f"{item}: no such file or folder{hint}")


def _stat(fs_path: str) -> Optional[Tuple[int, int]]:
    """(lstat mode, followed mode), or None when the path does not exist (or cannot be reached)."""
    try:
        lmode = os.lstat(fs_path).st_mode
        mode = os.stat(fs_path).st_mode if stat.S_ISLNK(lmode) else lmode
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return None
    return lmode, mode


def _read_list(shown: str, fs_path: str) -> Tuple[List[Tuple[int, str]], int, bool]:
    """([(line number, path)], blank/comment lines, is a regular file) of a list file."""
    try:
        st = os.stat(fs_path)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        raise CollectionError(f"{shown}: no such list file") from None
    except OSError as e:
        raise CollectionError(f"{shown}: cannot read list file ({_why(e)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CollectionError(f"{shown}: is a folder, not a list file (give the folder without '@')")
    try:
        with open(fs_path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CollectionError(f"{shown}: cannot read list file ({_why(e)})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise CollectionError(f"{shown}: line {line}: not valid UTF-8 (lists are read as UTF-8)") from None
    entries: List[Tuple[int, str]] = []
    skipped = 0
    lines = text.split("\n")
    if lines[-1] == "":  # the empty piece after a final newline is not a line
        lines.pop()
    for i, line in enumerate(lines, 1):
        s = line.rstrip()
        if not s or s.startswith("#"):
            skipped += 1
            continue
        entries.append((i, s))
    return entries, skipped, stat.S_ISREG(st.st_mode)


class _Collector:
    def __init__(self, base: Optional[str], on_bad: str) -> None:
        self.base = base
        self.on_bad = on_bad
        self.real = _RealPaths()
        self.seen: Dict[str, str] = {}  # real path -> first path shown
        self.paths: List[str] = []
        self.notes: List[str] = []
        self.repeats = 0
        self.first_repeat: Optional[Tuple[str, str]] = None

    def add(self, shown: str, real: str) -> None:
        first = self.seen.get(real)
        if first is None:
            self.seen[real] = shown
            self.paths.append(shown)
            return
        self.repeats += 1
        if self.first_repeat is None:
            self.first_repeat = (shown, first)

    def folder(self, shown: str, fs_path: str, stats: FolderStats) -> None:
        for p, real in _walk(fs_path, shown, stats):
            self.add(p, real)

    def item(self, item: str) -> None:
        if not item:
            raise CollectionError("an empty path was given (an empty argument?)")
        if item.startswith("@"):
            self.list_file(item)
            return
        fs_path = _fs(item, self.base)
        modes = _stat(fs_path)
        if modes is None:
            raise _missing(item)
        lmode, mode = modes
        if stat.S_ISDIR(mode):
            stats = FolderStats()
            self.folder(item, fs_path, stats)
            self.notes.append(stats.format(item))
            self.notes.extend(stats.unreadable_notes())
        else:
            self.add(item, self.real(fs_path, lmode))

    def list_file(self, item: str) -> None:
        name = item[1:]
        if not name:
            raise CollectionError("@: no list file named after '@' (write @FILE)")
        entries, blank, regular = _read_list(item, _fs(name, self.base))
        shown_dir = os.path.dirname(name) if regular else ""
        stats = FolderStats()
        n_paths = n_folders = 0
        missing: List[Tuple[int, str]] = []
        for line, entry in entries:
            shown = entry if os.path.isabs(entry) else os.path.join(shown_dir, entry)
            fs_path = _fs(shown, self.base)
            modes = _stat(fs_path)
            if modes is None:
                if self.on_bad == "fail":
                    raise CollectionError(f"{name}:{line}: no such file or folder: {entry}")
                missing.append((line, entry))
                continue
            lmode, mode = modes
            if stat.S_ISDIR(mode):
                before = stats.images
                self.folder(shown, fs_path, stats)
                n_paths += stats.images - before
                n_folders += 1
            else:
                self.add(shown, self.real(fs_path, lmode))
                n_paths += 1
        n_lines = len(entries) + blank
        parts = []
        if blank:
            parts.append(f"{_n(blank, 'blank/comment line')}")
        if n_folders:
            s = f"{_n(n_folders, 'listed folder')} gave {_n(stats.images, 'image')}"
            skipped = stats.skipped()
            if skipped:
                s += f", {', '.join(skipped)} skipped"
            parts.append(s)
        if missing:
            line, entry = missing[0]
            parts.append(f"{_n(len(missing), 'missing path')} skipped (first: line {line}: {entry})")
        note = f"{item}: {_n(n_paths, 'path')} from {_n(n_lines, 'line')}"
        if parts:
            note += f" ({'; '.join(parts)})"
        if stats.non_images:
            note += f"; non-image extensions in listed folders: {stats.extensions()}"
        self.notes.append(note)
        self.notes.extend(stats.unreadable_notes())


def expand_inputs(
    items: Sequence[str],
    data: Sequence[str] = (),
    *,
    base: Optional[Path] = None,
    on_bad: str = "skip",
    check_images: str = "none",
    seed: int = 0,
) -> Expanded:
    """Every image that `items` (files, folders, @lists) and `data` (data specs) name, in order,
    without repeats, with notes on what was found and skipped: the rules are in the module
    docstring. Raises CollectionError for an item that does not exist and when no image is left;
    data specs raise the data package's errors (DataError)."""
    if on_bad not in ON_BAD:
        raise CollectionError(f"on_bad must be one of {', '.join(ON_BAD)}, got {on_bad!r}")
    if check_images not in CHECK_IMAGES:
        raise CollectionError(f"check_images must be one of {', '.join(CHECK_IMAGES)}, got {check_images!r}")
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    items = [os.fspath(it) for it in items]
    data = [os.fspath(d) for d in data]
    c = _Collector(None if base is None else os.fspath(base), on_bad)
    for it in items:
        c.item(it)
    if data:
        from .data import load_records

        res = load_records(data, on_bad=on_bad, check_images=check_images, seed=seed)
        for r in res.records:
            c.add(r.image, c.real(r.image))
        for s in res.summaries:
            c.notes.append(" | ".join(part.strip() for part in s.format().splitlines() if part.strip()))
    if c.repeats:
        shown, first = c.first_repeat  # type: ignore[misc]
        same = "given again" if shown == first else f"the same file as {first}"
        c.notes.append(f"removed {_n(c.repeats, 'repeated path')} (first: {shown}, {same})")
    if not c.paths:
        given = ", ".join(items + data) or "nothing (no files, folders, @lists or data specs given)"
        why = f" ({'; '.join(c.notes)})" if c.notes else ""
        raise CollectionError(f"no images to score in: {given}{why}")
    return Expanded(c.paths, c.notes)
