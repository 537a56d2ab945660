"""Input expansion for `score` (hawkeye_lite.collection): files, folders, @lists and data specs on
small trees made here, with exact orders, notes, repeats and errors."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hawkeye_lite import collection
from hawkeye_lite.collection import IMAGE_EXTENSIONS, CollectionError, FolderStats, expand_inputs, iter_folder
from hawkeye_lite.data import DataError
from hawkeye_lite.errors import UserError, classify


def img(path: Path, seed: int = 0, fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    Image.fromarray(a).save(path, fmt)
    return path


def text(path: Path, s: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(s)
    return path


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """photos/ with nested folders, hidden entries, non-images, links (a loop, a file inside, a
    file and a folder outside), mixed-case extensions; the current folder is tmp_path."""
    p = tmp_path / "photos"
    img(p / "a.png", 1)
    img(p / "B.jpg", 2, "JPEG")  # upper case sorts before lower case
    img(p / "a" / "z.png", 3)  # a/ sorts before a.png ("a" < "a.png")
    img(p / "a" / "deep" / "x.jpeg", 4, "JPEG")
    img(p / "img10.png", 5)  # plain string order: img10 before img2
    img(p / "img2.png", 6)
    img(p / "UPPER.PNG", 7)  # extension compared case-insensitively
    text(p / "notes.txt")
    text(p / "raw.heic")
    text(p / "Makefile")
    text(p / ".hidden.png")  # hidden file, an image by name
    text(p / "a" / ".DS_Store")
    img(p / ".thumbs" / "t.png", 8)  # hidden folder: not entered
    os.symlink(p, p / "a" / "loop")  # a/loop -> photos: walked once only
    os.symlink(p / "a.png", p / "same.png")  # a link to a file in the tree: a repeat
    img(tmp_path / "elsewhere" / "out.png", 9)
    os.symlink(tmp_path / "elsewhere" / "out.png", p / "linked.png")  # a link to a file outside
    img(tmp_path / "ext" / "e.png", 10)
    os.symlink(tmp_path / "ext", p / "extdir")  # a link to a folder outside: followed
    os.symlink(tmp_path / "gone.png", p / "broken.png")
    (p / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


PHOTOS = [
    "photos/B.jpg",
    "photos/UPPER.PNG",
    "photos/a/deep/x.jpeg",
    "photos/a/z.png",
    "photos/a.png",
    "photos/extdir/e.png",
    "photos/img10.png",
    "photos/img2.png",
    "photos/linked.png",
    "photos/same.png",
]


# ----------------------------------------------------------------------------- folders


def test_iter_folder_order_hidden_links_and_counts(tree):
    stats = FolderStats()
    got = list(iter_folder("photos", stats=stats))
    assert got == PHOTOS
    assert stats.images == 10
    assert (stats.hidden_files, stats.hidden_folders) == (2, 1)
    assert stats.non_images == {".txt": 1, ".heic": 1, "": 1}
    assert stats.repeated_links == 1  # a/loop
    assert stats.broken_links == 1
    assert stats.unreadable == []
    # walked from photos/a, the loop leads up to photos once; photos/a is not entered again
    assert list(iter_folder("photos/a")) == (
        ["photos/a/deep/x.jpeg"]
        + [p.replace("photos/", "photos/a/loop/", 1) for p in PHOTOS if not p.startswith("photos/a/")]
        + ["photos/a/z.png"]
    )
    # the folder as typed is the prefix: a trailing slash, "." and an absolute path
    assert list(iter_folder("photos/"))[:2] == ["photos/B.jpg", "photos/UPPER.PNG"]
    os.chdir("photos")
    assert list(iter_folder("."))[0] == "./B.jpg"
    assert list(iter_folder(tree / "photos"))[0] == str(tree / "photos" / "B.jpg")
    with pytest.raises(CollectionError, match=r"^nope: no such folder$"):
        iter_folder("nope")
    with pytest.raises(CollectionError, match=r"^a\.png: not a folder$"):
        iter_folder("a.png")


def test_folder_item_notes_and_repeats(tree):
    res = expand_inputs(["photos"])
    # photos/same.png is photos/a.png through a link: the later one goes
    assert res.paths == [p for p in PHOTOS if p != "photos/same.png"]
    assert res.notes == [
        "photos: 10 images (2 hidden files, 1 hidden folder, 3 non-image files, 1 repeated folder link, "
        "1 broken link skipped); non-image extensions: (none) 1, .heic 1, .txt 1",
        "removed 1 repeated path (first: photos/same.png, the same file as photos/a.png)",
    ]


def test_empty_folder_is_a_note_and_special_files_are_skipped(tree):
    os.mkfifo(tree / "photos" / "empty" / "pipe.png")
    res = expand_inputs(["photos/empty", "photos/a.png"])
    assert res.paths == ["photos/a.png"]
    assert res.notes == ["photos/empty: 0 images (1 special file skipped)"]


def test_unreadable_folder_is_a_note(tree, monkeypatch):
    # chmod does not stop root: make os.scandir refuse one folder instead
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "a":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(collection.os, "scandir", scandir)
    res = expand_inputs(["photos"])
    assert "photos/a/z.png" not in res.paths and "photos/a.png" in res.paths
    assert res.notes[0] == (
        "photos: 8 images (1 hidden file, 1 hidden folder, 3 non-image files, 1 broken link skipped); "
        "non-image extensions: (none) 1, .heic 1, .txt 1"
    )
    assert res.notes[1] == "photos/a: cannot read folder (Permission denied), skipped"
    stats = FolderStats()
    assert len(list(iter_folder("photos/a", stats=stats))) == 0
    assert stats.unreadable == [("photos/a", "Permission denied")]


def test_image_extensions_all_open_in_pillow(tmp_path):
    Image.init()
    registered = Image.registered_extensions()
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
    assert set(IMAGE_EXTENSIONS) <= set(registered)
    im = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    for ext in sorted(IMAGE_EXTENSIONS):
        path = tmp_path / f"x{ext}"
        (im.convert("1") if ext == ".pbm" else im.convert("L") if ext == ".pgm" else im).save(path)
        with Image.open(path) as back:
            back.load()
            assert back.size == (8, 8), ext
    assert expand_inputs([str(tmp_path)]).paths == [str(tmp_path / f"x{e}") for e in sorted(IMAGE_EXTENSIONS)]


# ----------------------------------------------------------------------------- files and repeats


def test_files_kept_as_typed_and_repeats_removed_by_real_path(tree):
    res = expand_inputs(
        [
            "photos/notes.txt",  # not an image: passed through, the scorer reports it
            "photos/.hidden.png",  # hidden, but typed by name
            "photos/a.png",
            "./photos/a.png",  # the same file typed again
            str(tree / "photos" / "a.png"),  # and absolute
            "photos/same.png",  # and through a link
            "photos/a/loop/a.png",  # and through a folder link
            "photos/a/z.png",
            "photos",  # the folder: its files already listed are repeats
        ]
    )
    assert res.paths[:4] == ["photos/notes.txt", "photos/.hidden.png", "photos/a.png", "photos/a/z.png"]
    assert res.paths[4:] == [p for p in PHOTOS if p not in ("photos/a.png", "photos/a/z.png", "photos/same.png")]
    assert res.notes[-1] == "removed 7 repeated paths (first: ./photos/a.png, the same file as photos/a.png)"


def test_missing_items_are_errors_naming_them(tree):
    with pytest.raises(CollectionError, match=r"^photos/nope\.jpg: no such file or folder$") as e:
        expand_inputs(["photos/a.png", "photos/nope.jpg"])
    assert isinstance(e.value, ValueError) and isinstance(e.value, UserError)
    assert classify(e.value) == (2, "error: photos/nope.jpg: no such file or folder")
    with pytest.raises(CollectionError, match=r"^photos/broken\.png: no such file or folder$"):
        expand_inputs(["photos/broken.png"])
    with pytest.raises(CollectionError, match=r"json:x\.json: no such file or folder \(it looks like a data spec"):
        expand_inputs(["json:x.json"])
    with pytest.raises(CollectionError, match=r"https://e\.org/a\.jpg: no such file or folder \(a URL"):
        expand_inputs(["https://e.org/a.jpg"])
    with pytest.raises(CollectionError, match=r"an empty path"):
        expand_inputs([""])
    with pytest.raises(CollectionError, match=r"on_bad must be one of skip, fail"):
        expand_inputs(["photos"], on_bad="ignore")


def test_nothing_to_score_is_an_error(tree):
    text(tree / "docs" / "readme.txt")
    with pytest.raises(
        CollectionError, match=r"^no images to score in: photos/empty, docs/ \(photos/empty: 0 images; "
    ):
        expand_inputs(["photos/empty", "docs/"])
    with pytest.raises(CollectionError, match=r"^no images to score in: nothing"):
        expand_inputs([])


def test_base_resolves_relative_items_but_paths_stay_as_typed(tree, monkeypatch):
    other = tree / "cwd"
    other.mkdir()
    monkeypatch.chdir(other)
    text(tree / "lists" / "l.txt", "../photos/a.png\nsub\n")
    img(tree / "lists" / "sub" / "s.png", 11)
    res = expand_inputs(["photos/B.jpg", "photos/a/deep", "@lists/l.txt"], base=tree)
    assert res.paths == [
        "photos/B.jpg",
        "photos/a/deep/x.jpeg",
        "lists/../photos/a.png",
        "lists/sub/s.png",
    ]
    with pytest.raises(CollectionError, match=r"^photos/B\.jpg: no such file or folder$"):
        expand_inputs(["photos/B.jpg"])  # not under the current folder


# ----------------------------------------------------------------------------- @lists


def test_list_file(tree):
    img(tree / "lists" / "here.png", 12)
    img(tree / "lists" / "sub" / "s1.png", 13)
    img(tree / "lists" / "sub" / "s0.jpg", 14, "JPEG")
    text(tree / "lists" / "sub" / ".h.png")
    text(tree / "lists" / "@other.txt", "here.png\n")  # listed: a path, never read as a list
    lines = [
        "# my picks",
        "here.png",  # relative to the list's folder
        str(tree / "photos" / "a.png"),  # absolute
        "",
        "   ",
        "sub  ",  # a folder, trailing spaces stripped
        "  # not a comment: leading spaces are part of the name",
        "@other.txt",
        "../photos/B.jpg\t",
        "gone.png",
        "here.png",  # a repeat
    ]
    (tree / "lists" / "l.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    res = expand_inputs(["@lists/l.txt"])
    assert res.paths == [
        "lists/here.png",
        str(tree / "photos" / "a.png"),
        "lists/sub/s0.jpg",
        "lists/sub/s1.png",
        "lists/@other.txt",
        "lists/../photos/B.jpg",
    ]
    assert res.notes == [
        "@lists/l.txt: 7 paths from 11 lines (3 blank/comment lines; 1 listed folder gave 2 images, "
        "1 hidden file skipped; 2 missing paths skipped (first: line 7:   # not a comment: leading "
        "spaces are part of the name))",
        "removed 1 repeated path (first: lists/here.png, given again)",
    ]
    with pytest.raises(CollectionError, match=r"^lists/l\.txt:7: no such file or folder:   # not a comment"):
        expand_inputs(["@lists/l.txt"], on_bad="fail")


def test_list_file_errors_and_edge_cases(tree):
    with pytest.raises(CollectionError, match=r"^@lists/nope\.txt: no such list file$"):
        expand_inputs(["photos", "@lists/nope.txt"])
    with pytest.raises(CollectionError, match=r"^@photos: is a folder, not a list file"):
        expand_inputs(["@photos"])
    with pytest.raises(CollectionError, match=r"^@: no list file"):
        expand_inputs(["@"])
    (tree / "latin.txt").write_bytes(b"photos/a.png\nphotos/caf\xe9.png\n")
    with pytest.raises(CollectionError, match=r"^@latin\.txt: line 2: not valid UTF-8"):
        expand_inputs(["@latin.txt"])
    # a BOM, no final newline, a list in the current folder
    (tree / "bom.txt").write_bytes("\ufeffphotos/a.png\n\nphotos/B.jpg".encode())
    res = expand_inputs(["@bom.txt"])
    assert res.paths == ["photos/a.png", "photos/B.jpg"]
    assert res.notes == ["@bom.txt: 2 paths from 3 lines (1 blank/comment line)"]
    # an empty list is a note; with nothing else it is the empty-collection error
    text(tree / "empty.txt", "# nothing yet\n")
    assert expand_inputs(["@empty.txt", "photos/a.png"]).notes == [
        "@empty.txt: 0 paths from 1 line (1 blank/comment line)"
    ]
    with pytest.raises(CollectionError, match=r"^no images to score in: @empty\.txt"):
        expand_inputs(["@empty.txt"])


def test_list_from_a_pipe_is_relative_to_base(tree):
    r, w = os.pipe()
    os.write(w, b"photos/a.png\nphotos/a/deep\n")
    os.close(w)
    try:
        res = expand_inputs([f"@/dev/fd/{r}"])
    finally:
        os.close(r)
    assert res.paths == ["photos/a.png", "photos/a/deep/x.jpeg"]


# ----------------------------------------------------------------------------- data specs


def test_data_specs_append_every_split_in_record_order(tree):
    img(tree / "ds" / "imgs" / "d1.png", 21)
    img(tree / "ds" / "imgs" / "d0.png", 20)
    entries = [
        {"id": "d1", "images": ["imgs/d1.png"], "gt_score": 3.5, "split": "test"},
        {"id": "d0", "images": ["imgs/d0.png"], "gt_score": 2.0, "split": "train"},
        {"id": "a", "images": [str(tree / "photos" / "a.png")], "gt_score": 4.0, "split": "train"},
    ]
    (tree / "ds" / "ann.json").write_text(json.dumps(entries))
    spec = f"json:{tree / 'ds' / 'ann.json'}"
    res = expand_inputs(["photos/a.png"], [spec])
    d = (tree / "ds" / "imgs").resolve()
    # records come after the items; photos/a.png again (absolute, from the data) is a repeat
    assert res.paths == ["photos/a.png", str(d / "d1.png"), str(d / "d0.png")]
    assert res.notes[0].startswith("ann: 3 read, 3 kept; raw MOS range 1-5; split train 2 / val 0 / test 1")
    assert "\n" not in res.notes[0]
    assert (
        res.notes[1]
        == f"removed 1 repeated path (first: {(tree / 'photos' / 'a.png').resolve()}, the same file as photos/a.png)"
    )
    assert expand_inputs([], spec).paths == [
        str(d / "d1.png"),
        str(d / "d0.png"),
        str((tree / "photos" / "a.png").resolve()),
    ]
    # data-spec errors keep their own type
    with pytest.raises(DataError):
        expand_inputs([], [f"json:{tree / 'ds' / 'nope.json'}"])
    with pytest.raises(DataError):
        expand_inputs(["photos"], ["cvs:x.csv"])


# ----------------------------------------------------------------------------- scale


def test_twenty_thousand_files_in_nested_folders(tmp_path, monkeypatch):
    """Linear-ish: no stat per file (counted, not timed). The time is printed, never asserted."""
    root = tmp_path / "big"
    expected = []
    for i in range(20):
        for j in range(10):
            d = root / f"d{i:02d}" / f"s{j}"
            d.mkdir(parents=True)
            for k in range(100):
                (d / f"f{k:03d}.jpg").touch()
                expected.append(f"big/d{i:02d}/s{j}/f{k:03d}.jpg")
    monkeypatch.chdir(tmp_path)
    calls = {"stat": 0}
    real_stat, real_lstat = os.stat, os.lstat

    def counting(fn):
        def wrapped(*a, **k):
            calls["stat"] += 1
            return fn(*a, **k)

        return wrapped

    monkeypatch.setattr(os, "stat", counting(real_stat))
    monkeypatch.setattr(os, "lstat", counting(real_lstat))
    t0 = time.perf_counter()
    res = expand_inputs(["big"])
    dt = time.perf_counter() - t0
    monkeypatch.setattr(os, "stat", real_stat)
    monkeypatch.setattr(os, "lstat", real_lstat)
    print(f"expanded {len(res.paths):,} files in {dt:.3f} s ({calls['stat']} stat calls)")
    assert len(res.paths) == 20_000
    assert res.paths == expected
    assert res.notes == ["big: 20,000 images"]
    assert calls["stat"] < 50  # the item's own checks only: scandir's d_type does the rest
    # and the stream gives the same
    assert list(iter_folder("big")) == expected
