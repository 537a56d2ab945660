"""The native dataset layouts: each dataset's own release, one reader per dataset.

    koniq:DIR  kadid:DIR  spaq:DIR  livec:DIR  pipal:DIR  csiq:DIR  agiqa:DIR   native releases

Each reader is `read_KIND(directory, params) -> _Reader`: it finds the dataset's annotation file
and image folder in DIR, knows the dataset's scale (DMOS flipped, a variance column, PIPAL's open
Elo range) and its split (official, or the content group a seeded split keeps together), and
yields raw rows; finalize.py does the rest. Where the official annotation file is not in the
folder but pyiqa's meta file is, that file is read as `pyiqa:` reads it (`_via_pyiqa`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from .files import (
    _first_existing,
    _index_images,
    _name_score_lines,
    _pick_column,
    _read_csv,
    _require_dir,
    _require_file,
    _truthy,
)
from .formats import _koniq_mos, _pyiqa_key, read_pyiqa
from .records import DataError, _Reader, _Row


def _pyiqa_in(d: Path, name: str) -> Optional[Path]:
    """pyiqa's meta file for a dataset, if the user keeps it in the dataset folder."""
    for c in (d / f"meta_info_{name}Dataset.csv", d / f"meta_info_{name}Dataset.txt"):
        if c.is_file():
            return c
    return None


def _via_pyiqa(meta: Path, root: Path, params: Dict[str, str], kind: str) -> _Reader:
    p = {k: v for k, v in params.items() if k in ("name", "encoding", "practice", "split_col")}
    p["root"] = str(root)
    rd = read_pyiqa(str(meta), p)
    rd.name = params.get("name") or kind
    rd.notes.insert(0, f"{kind}: no official annotation file in the folder; read pyiqa's {meta.name}")
    return rd


def read_koniq(directory: str, params: Dict[str, str]) -> _Reader:
    """KonIQ-10k as released. Either file gives the 1-5 MOS and SD the papers report:
    - `koniq10k_distributions_sets.csv` (the authors' metadata repo: image_name, c1..c5 as
      fractions, c_total, MOS, SD, set). Its `MOS` column is the 0-100 z-score MOS, so the 1-5
      MOS is computed from the rating distribution, sum k*c_k; SD is already 1-5. Official split
      (set: training/validation/test).
    - `koniq10k_scores_and_distributions.csv` (the website file: ..., MOS, SD, MOS_zscore): MOS
      and SD on 1-5 as given; no split column: seeded split.
    - pyiqa's `meta_info_KonIQ10kDataset.csv` in the folder (as pyiqa: reads it; official split).
    Images in `1024x768/` (or koniq10k_1024x768/1024x768, 512x384, images)."""
    d = _require_dir(Path(directory).expanduser(), "koniq", "KonIQ-10k")
    imgdir_of = lambda: (
        d / params["images"]
        if params.get("images")
        else _first_existing(
            d,
            ["1024x768", "koniq10k_1024x768/1024x768", "512x384", "koniq10k_512x384/512x384", "images"],
            "KonIQ-10k image folder",
        )
    )
    names = [
        "koniq10k_distributions_sets.csv",
        "metadata/koniq10k_distributions_sets.csv",
        "koniq10k_scores_and_distributions.csv",
        "koniq10k_scores_and_distributions/koniq10k_scores_and_distributions.csv",
    ]
    if params.get("file") and _pyiqa_key(Path(params["file"])) == "koniq10k":
        return _via_pyiqa(
            _require_file(Path(params["file"]).expanduser(), "pyiqa meta_info file"), imgdir_of(), params, "koniq"
        )
    if params.get("file"):
        ann = _require_file(Path(params["file"]).expanduser(), "KonIQ-10k score CSV")
    elif not any((d / n).is_file() for n in names) and _pyiqa_in(d, "KonIQ10k") is not None:
        return _via_pyiqa(_pyiqa_in(d, "KonIQ10k"), imgdir_of(), params, "koniq")  # type: ignore[arg-type]
    else:
        ann = _first_existing(d, names, "KonIQ-10k score CSV")
    imgdir = imgdir_of()
    header, it = _read_csv(ann, None, params.get("encoding"))
    for col in ("image_name", "MOS"):
        if col not in header:
            raise DataError(f"{ann}:1: KonIQ-10k CSV has no {col!r} column (columns: {', '.join(header)})")
    sets_file = "set" in header or "MOS_zscore" not in header
    if sets_file:
        for col in ("c1", "c2", "c3", "c4", "c5"):
            if col not in header:
                raise DataError(
                    f"{ann}:1: KonIQ-10k sets file has no {col!r} column, which the 1-5 MOS is computed "
                    f"from (columns: {', '.join(header)})"
                )
    rows = []
    for line, r in it:
        n = r["image_name"]
        mos = _koniq_mos(r) if sets_file else r["MOS"]
        if sets_file and mos is None:
            mos = f"c1..c5 = {[r.get(f'c{k}') for k in range(1, 6)]}"  # unparseable: reported as a bad MOS
        rows.append(_Row(str(ann), line, n, str(imgdir / n) if n else None, mos, r.get("SD"), None, r.get("set")))
    note = (
        f"{ann.name}: MOS = sum k*c_k of c1..c5 (1-5; its MOS column is the 0-100 z-score MOS); SD as given (1-5)"
        if sets_file
        else f"{ann.name}: MOS and SD as given (1-5)"
    )
    return _Reader(params.get("name") or "koniq", str(ann), rows, (1.0, 5.0), notes=[note])


def read_kadid(directory: str, params: Dict[str, str]) -> _Reader:
    """KADID-10k as released (kadid10k.zip): `dmos.csv` (dist_img, ref_img, dmos, var) and `images/`
    holding both references and distorted images (or pyiqa's meta_info_KADID10kDataset.csv in its
    place). DMOS is a 1-5 degradation category rating where higher is better. No official split:
    seeded split by reference image, never leaking one."""
    d = _require_dir(Path(directory).expanduser(), "kadid", "KADID-10k")
    base = d if (d / "dmos.csv").is_file() or not (d / "kadid10k").is_dir() else d / "kadid10k"
    imgdir = base / params.get("images", "images")
    if not (base / "dmos.csv").is_file() and _pyiqa_in(base, "KADID10k") is not None:
        return _via_pyiqa(_pyiqa_in(base, "KADID10k"), imgdir, params, "kadid")  # type: ignore[arg-type]
    ann = _require_file(base / "dmos.csv", "KADID-10k dmos.csv")
    header, it = _read_csv(ann, None, params.get("encoding"))
    for col in ("dist_img", "ref_img", "dmos"):
        if col not in header:
            raise DataError(f"{ann}:1: KADID-10k dmos.csv has no {col!r} column (columns: {', '.join(header)})")
    rows = [
        _Row(
            str(ann),
            line,
            r["dist_img"],
            str(imgdir / r["dist_img"]) if r["dist_img"] else None,
            r["dmos"],
            r.get("var"),
            None,
            None,
            r["ref_img"] or None,
        )
        for line, r in it
    ]
    return _Reader(params.get("name") or "kadid", str(ann), rows, (1.0, 5.0), std_is_variance=True)


def read_spaq(directory: str, params: Dict[str, str]) -> _Reader:
    """SPAQ: the release's `Annotations/MOS and Image attribute scores.xlsx` exported to CSV (same
    name, .csv; columns "Image name", "MOS", ...) or pyiqa's meta_info_SPAQDataset.csv (the same
    columns), and images in `TestImage/`. MOS range 0-100."""
    d = _require_dir(Path(directory).expanduser(), "spaq", "SPAQ")
    if params.get("file"):
        ann = _require_file(Path(params["file"]).expanduser(), "SPAQ annotation CSV")
    else:
        cands = [
            d / "Annotations" / "MOS and Image attribute scores.csv",
            d / "MOS and Image attribute scores.csv",
            d / "Annotations" / "MOS_and_Image_attribute_scores.csv",
            d / "meta_info_SPAQDataset.csv",
            d / "Annotations" / "meta_info_SPAQDataset.csv",
        ]
        found = [c for c in cands if c.is_file()]
        if not found:
            xlsx = list(d.glob("**/MOS and Image attribute scores.xlsx")) if d.is_dir() else []
            hint = (
                f" Found {xlsx[0]}: export its first sheet to CSV next to it (same name, .csv)."
                if xlsx
                else ""
                if d.is_dir()
                else f" The folder {d} does not exist."
            )
            raise DataError(
                f"{d}: SPAQ annotation CSV not found (looked for {cands[0]}).{hint} Or pass spaq:DIR?file=CSV."
            )
        ann = found[0]
    imgdir = d / params.get("images", "TestImage")
    header, it = _read_csv(ann, None, params.get("encoding"))
    ncol = _pick_column(header, None, ["Image name", "image_name", "Image_name", "name"], "image name", ann)
    mcol = _pick_column(header, None, ["MOS", "mos"], "MOS", ann)
    if ncol is None or mcol is None:
        raise DataError(f"{ann}:1: SPAQ CSV needs 'Image name' and 'MOS' columns (columns: {', '.join(header)})")
    rows = [_Row(str(ann), line, r[ncol], str(imgdir / r[ncol]) if r[ncol] else None, r[mcol]) for line, r in it]
    return _Reader(params.get("name") or "spaq", str(ann), rows, (0.0, 100.0), notes=[f"{ann.name}: MOS 0-100"])


def read_livec(directory: str, params: Dict[str, str]) -> _Reader:
    """LIVE In the Wild Challenge as released: `Data/AllImages_release.mat`, `Data/AllMOS_release.mat`,
    `Data/AllStdDev_release.mat` (aligned vectors) and `Images/` (or pyiqa's
    meta_info_LIVEChallengeDataset.csv in DIR). The first 7 of the 1169 entries are the observers'
    practice images (in Images/trainingImages) and are dropped, as everyone does. MOS range 0-100.
    Entries are reported as `entry N` (1-based) of AllImages_release.mat."""
    import scipy.io

    d = _require_dir(Path(directory).expanduser(), "livec", "LIVE Challenge (ChallengeDB_release)")
    data = d / "Data"
    imgdir = d / params.get("images", "Images")
    if not (data / "AllImages_release.mat").is_file() and _pyiqa_in(d, "LIVEChallenge") is not None:
        return _via_pyiqa(_pyiqa_in(d, "LIVEChallenge"), imgdir, params, "livec")  # type: ignore[arg-type]
    names_f = _require_file(data / "AllImages_release.mat", "LIVE-C AllImages_release.mat")
    mos_f = _require_file(data / "AllMOS_release.mat", "LIVE-C AllMOS_release.mat")
    std_f = data / "AllStdDev_release.mat"

    def vec(path: Path, key: str) -> np.ndarray:
        try:
            m = scipy.io.loadmat(str(path))
        except Exception as e:  # scipy raises several types for a corrupt .mat
            raise DataError(f"{path}: cannot read .mat file ({type(e).__name__}: {e})") from None
        if key not in m:
            keys = [k for k in m if not k.startswith("__")]
            if len(keys) != 1:
                raise DataError(f"{path}: no variable {key!r} (variables: {', '.join(keys)})")
            key = keys[0]
        return np.asarray(m[key]).reshape(-1)

    names = vec(names_f, "AllImages_release")
    mos = vec(mos_f, "AllMOS_release")
    std = vec(std_f, "AllStdDev_release") if std_f.is_file() else None
    if len(mos) != len(names) or (std is not None and len(std) != len(names)):
        raise DataError(
            f"{data}: AllImages_release ({len(names)}), AllMOS_release ({len(mos)})"
            f"{'' if std is None else f', AllStdDev_release ({len(std)})'} differ in length"
        )
    start = 7 if len(names) == 1169 and not _truthy(params.get("practice")) else 0
    rows = []
    for i in range(start, len(names)):
        n = names[i]
        while isinstance(n, np.ndarray):  # MATLAB cell arrays nest: array([array(['x.bmp'])])
            n = n.reshape(-1)[0] if n.size else ""
        n = str(n).strip()
        rows.append(
            _Row(
                str(names_f),
                f"entry {i + 1}",
                n or f"entry{i + 1}",
                str(imgdir / n) if n else None,
                mos[i],
                None if std is None else std[i],
            )
        )
    notes = [f"{names_f.parent.name}/*.mat: MOS and std 0-100" + ("; practice images t1-t7 dropped" if start else "")]
    return _Reader(params.get("name") or "livec", str(names_f), rows, (0.0, 100.0), notes=notes)


def read_pipal(directory: str, params: Dict[str, str]) -> _Reader:
    """PIPAL (NTIRE 2021/2022 training release): `Train_Label/A0001.txt ...` with lines
    `A0001_00_00.bmp,1556.05` (name, Elo score), or pyiqa's meta_info_PIPALDataset.csv in DIR;
    distorted images anywhere under DIR (the release ships them as Distortion_1..4 or Train_Dis);
    references A0001.bmp in Train_Ref. Elo has no fixed range: by default the observed min/max of
    the labels read is the range (pass range=LO,HI to fix it). Seeded split by reference (`A0001`)."""
    d = _require_dir(Path(directory).expanduser(), "pipal", "PIPAL")
    label_dir = d / params.get("labels", "Train_Label")
    if not label_dir.is_dir() and _pyiqa_in(d, "PIPAL") is not None:
        return _via_pyiqa(_pyiqa_in(d, "PIPAL"), d, params, "pipal")  # type: ignore[arg-type]
    if not label_dir.is_dir():
        raise DataError(
            f"{label_dir}: PIPAL label folder not found" + ("" if d.is_dir() else f" (the folder {d} does not exist)")
        )
    files = sorted(label_dir.glob("*.txt"))
    if not files:
        raise DataError(f"{label_dir}: no PIPAL label .txt files")
    index = _index_images(d)
    rows = []
    for f in files:
        for line, name, score in _name_score_lines(f, params.get("encoding")):
            img = index.get(name.lower())
            rows.append(_Row(str(f), line, name, img if img else str(d / name), score, ref=name.split("_")[0]))
    return _Reader(
        params.get("name") or "pipal",
        str(label_dir),
        rows,
        None,
        notes=[f"{label_dir.name}/*.txt ({len(files)} files): Elo, range = observed min-max"],
    )


def read_csiq(directory: str, params: Dict[str, str]) -> _Reader:
    """CSIQ: a name-score text file (default `csiq_label.txt`, lines `1600.AWGN.1.png 0.062`; the
    release's csiq.DMOS.xlsx re-exported this way is how CSIQ is commonly distributed for NR-IQA)
    or pyiqa's meta_info_CSIQDataset.csv in DIR; images found by name anywhere under DIR (release:
    dst_imgs/<type>/1600.AWGN.1.png). DMOS range 0-1, lower is better: flipped when mapped to
    [1, 5]. Seeded split by reference (the `1600` prefix)."""
    d = _require_dir(Path(directory).expanduser(), "csiq", "CSIQ")
    if not params.get("file") and not (d / "csiq_label.txt").is_file() and _pyiqa_in(d, "CSIQ") is not None:
        return _via_pyiqa(_pyiqa_in(d, "CSIQ"), d, params, "csiq")  # type: ignore[arg-type]
    ann = _require_file(
        Path(params["file"]).expanduser() if params.get("file") else d / "csiq_label.txt", "CSIQ label file"
    )
    index = _index_images(d)
    rows = []
    for line, name, score in _name_score_lines(ann, params.get("encoding")):
        img = index.get(name.lower()) or index.get(name.lower() + ".png")
        rows.append(_Row(str(ann), line, name, img if img else str(d / name), score, ref=name.split(".")[0]))
    return _Reader(
        params.get("name") or "csiq",
        str(ann),
        rows,
        (0.0, 1.0),
        lower_better=True,
        notes=[f"{ann.name}: DMOS 0-1, lower is better: flipped"],
    )


def read_agiqa(directory: str, params: Dict[str, str]) -> _Reader:
    """AGIQA-3K as released: `data.csv` (name, prompt, adj1, adj2, style, mos_quality, std_quality,
    mos_align, std_align) and the images (folder `AGIQA-3K/`, `images/` or DIR itself). Perceptual
    quality MOS (mos_quality), range 0-5. Seeded split by prompt: the same prompt rendered by
    different generators is the same content."""
    d = _require_dir(Path(directory).expanduser(), "agiqa", "AGIQA-3K")
    ann = _require_file(
        Path(params["file"]).expanduser() if params.get("file") else d / "data.csv", "AGIQA-3K data.csv"
    )
    header, it = _read_csv(ann, None, params.get("encoding"))
    for col in ("name", "mos_quality"):
        if col not in header:
            raise DataError(f"{ann}:1: AGIQA-3K data.csv has no {col!r} column (columns: {', '.join(header)})")
    if params.get("images"):
        imgdir = d / params["images"]
    else:
        imgdir = next((d / c for c in ("AGIQA-3K", "AGIQA-3k", "images", "image") if (d / c).is_dir()), d)
    rows = [
        _Row(
            str(ann),
            line,
            r["name"],
            str(imgdir / r["name"]) if r["name"] else None,
            r["mos_quality"],
            r.get("std_quality"),
            None,
            None,
            r.get("prompt") or None,
        )
        for line, r in it
    ]
    return _Reader(
        params.get("name") or "agiqa",
        str(ann),
        rows,
        (0.0, 5.0),
        notes=[f"{ann.name}: mos_quality and std_quality 0-5"],
    )
