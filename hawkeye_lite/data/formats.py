"""The generic file formats: JSON/JSONL, CSV, header-less label lists, and pyiqa's meta files.

    json:FILE                      JSON lists as the peers ship them (the paper's {"id", "images", "gt_score"},
                                   DeQA-Score, Q-Align, VisualQuality-R1 jsonl), or JSONL
    csv:FILE?path=COL&mos=COL&root=DIR&range=LO,HI   any CSV with an image and a MOS column
    txt:FILE?cols=name,score,std&root=DIR            header-less label lists (space, tab or comma)
    pyiqa:FILE                     pyiqa's meta_info_<Name>Dataset.csv/.txt, with that dataset's scale

Each reader is `read_KIND(file, params) -> _Reader`: it knows its format and yields raw rows;
finalize.py does the rest. json/csv/txt are on 1-5 unless their values cannot be (scale.py);
pyiqa's files get their dataset's scale from PYIQA_FACTS.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .files import _is_num, _Locator, _pick_column, _read_csv, _read_text, _require_file, _resolve, _truthy
from .records import DataError, _parse_float, _Reader, _Row

_JSON_IMAGE_KEYS = ("images", "image", "img_path", "image_path", "path", "img", "file_name", "filename")
_JSON_SCORE_KEYS = ("gt_score", "mos", "score", "MOS", "gt")


def _json_entries(path: Path, text: str) -> List[Tuple[Union[int, str], object]]:
    entries: List[Tuple[Union[int, str], object]] = []
    dec = json.JSONDecoder()

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            # walk the top-level array element by element so every entry keeps its line number
            pos = text.index("[") + 1
            while True:
                while pos < len(text) and text[pos] in " \t\r\n,":
                    pos += 1
                if pos >= len(text):
                    raise DataError(f"{path}:{line_of(pos)}: unterminated JSON list")
                if text[pos] == "]":
                    break
                obj, end = dec.raw_decode(text, pos)
                entries.append((line_of(pos), obj))
                pos = end
        elif stripped.startswith("{") and _single_object(text) is not None:
            # one object; a wrapper like {"annotations": [...]} holds the list under one key
            obj = _single_object(text)
            lists = [v for v in obj.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
            entries = [(1, x) for x in lists[0]] if len(lists) == 1 else [(1, obj)]
        else:  # JSONL
            for i, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    entries.append((i, json.loads(line)))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if len({ln for ln, _ in entries}) < len(entries):
        # a list on one line (Q-Align's files): "x.json:1" would name every entry; count them instead
        return [(f"entry {i}", obj) for i, (_, obj) in enumerate(entries, 1)]  # type: ignore[misc]
    return entries


def _single_object(text: str) -> Optional[dict]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None  # JSONL (several objects), or invalid: the line-by-line pass reports where
    return obj if isinstance(obj, dict) else None


def read_json(file: str, params: Dict[str, str]) -> _Reader:
    """JSON lists as the peers ship them, or JSONL. Per entry: the image under `images` (a list:
    the first is used) / `image` / `img_path` / `image_path` / `path`; the score under `gt_score`
    (a number or a numeric string) / `mos` / `score` (or `score=KEY`); else Q-Align's `id` of the
    form `name->score`; else a numeric answer in `conversations` (VisualQuality-R1's RL layout).
    `std` (or `std=KEY`, `std=none`), DeQA-Score's `gt_score_norm` with `std_norm` via
    `score=gt_score_norm`. Relative image paths resolve against `root=` or the JSON file's folder.
    Scale: 1-5 unless the values cannot be on it; then a standard range is inferred (or the load
    stops naming the observed range): see `_infer_range`."""
    path = _require_file(Path(file).expanduser(), "JSON file")
    root = Path(params.get("root") or path.parent).expanduser()
    entries = _json_entries(path, _read_text(path, params.get("encoding")))
    score_key = params.get("score")
    std_key = params.get("std") or ("std_norm" if score_key == "gt_score_norm" else "std")
    sources: Counter = Counter()

    rows = []
    for line, obj in entries:
        if not isinstance(obj, dict):
            rows.append(_Row(str(path), line, f"{path.name}:{line}", None, None))
            continue
        img = next((obj[k] for k in _JSON_IMAGE_KEYS if obj.get(k) not in (None, "", [])), None)
        if isinstance(img, list):
            img = img[0] if img else None
        deg = obj.get("image_deg")
        if isinstance(deg, list):
            deg = deg[0] if deg else None
        rid = obj.get("id")
        id_score = None
        if isinstance(rid, str) and "->" in rid:  # Q-Align: "10007357496.jpg->68.7285714286"
            rid, _, id_score = rid.rpartition("->")
        if score_key:
            mos, src = obj.get(score_key), score_key
        else:
            k = next((k for k in _JSON_SCORE_KEYS if k in obj and obj[k] not in (None, "")), None)
            mos, src = (obj[k], k) if k else (None, None)
        if mos is None and id_score is not None:
            mos, src = id_score, "id (name->score)"
        if mos is None and isinstance(obj.get("conversations"), list):
            answers = [
                c.get("value")
                for c in obj["conversations"]
                if isinstance(c, dict) and c.get("from") in ("gpt", "assistant")
            ]
            if answers and _is_num(str(answers[-1])):
                mos, src = answers[-1], "the answer in conversations"
        if src:
            sources[src] += 1
        image = _resolve(str(img), root) if img else None
        rid = str(rid) if rid not in (None, "") else (str(img) if img else f"{path.name}:{line}")  # as written: unique
        std = None if std_key == "none" else obj.get(std_key)
        rows.append(
            _Row(
                str(path),
                line,
                rid,
                image,
                mos,
                std,
                _resolve(str(deg), root) if deg else None,
                obj.get("split"),
                obj.get("ref") or obj.get("ref_img") or obj.get("group_id"),
            )
        )
    # a file we wrote carries its dataset name; otherwise the file name stands for it
    names = {obj.get("dataset") for _, obj in entries if isinstance(obj, dict)}
    name = params.get("name") or (names.pop() if len(names) == 1 and None not in names else path.stem)
    notes = []
    if sources and set(sources) != {"gt_score"}:
        notes.append("score from " + ", ".join(f"{k} ({n})" for k, n in sources.most_common()))
    return _Reader(
        str(name),
        str(path),
        rows,
        None,
        infer_range=True,
        lower_better=_truthy(params.get("lower_better")),
        notes=notes,
    )


def read_csv(file: str, params: Dict[str, str]) -> _Reader:
    """Generic CSV. Options: path=COL mos=COL std=COL split_col=COL group=COL root=DIR
    lower_better=1 delimiter=CHAR. Columns are auto-detected when not given. A pyiqa meta_info
    CSV (recognised by its name or header) is read as `pyiqa:` reads it, with the dataset's scale."""
    path = _require_file(Path(file).expanduser(), "CSV file")
    header, it = _read_csv(path, params.get("delimiter"), params.get("encoding"))
    pyiqa_key = _pyiqa_key(path, header)
    if not any(params.get(k) for k in ("path", "mos", "std", "delimiter")) and pyiqa_key is not None:
        return read_pyiqa(file, params)
    root = Path(params.get("root") or path.parent).expanduser()
    pcol = _pick_column(
        header,
        params.get("path"),
        [
            "image",
            "image_name",
            "images",
            "img_path",
            "path",
            "filename",
            "file",
            "name",
            "img",
            "img_name",
            "dist_name",
            "Image name",
        ],
        "image path",
        path,
    )
    mcol = _pick_column(header, params.get("mos"), ["mos", "gt_score", "score", "dmos", "mos_quality"], "MOS", path)
    if pcol is None or mcol is None:
        raise DataError(
            f"{path}:1: cannot tell which columns hold the image path and the MOS "
            f"(columns: {', '.join(header)}); pass ?path=COL&mos=COL"
        )
    scol = _pick_column(
        header, params.get("std"), ["std", "sd", "mos_std"] if not params.get("std") else [], "std", path
    )
    tcol = _pick_column(header, params.get("split_col"), ["split", "set"], "split", path)
    gcol = _pick_column(header, params.get("group"), ["ref", "ref_img", "reference", "ref_name"], "group", path)
    locate = _Locator(root)
    rows = []
    for line, r in it:
        p = r.get(pcol, "")
        rows.append(
            _Row(
                str(path),
                line,
                p or f"line{line}",
                locate(p) if p else None,
                r.get(mcol),
                r.get(scol) if scol else None,
                None,
                r.get(tcol) if tcol else None,
                r.get(gcol) if gcol else None,
            )
        )
    notes = [
        f"{path.name}: columns {pcol}, {mcol}" + (f", std {scol}" if scol else "") + (f", split {tcol}" if tcol else "")
    ]
    if pyiqa_key:  # the user chose the columns of a file whose scale we know: say how to get it
        notes.append(
            f"this is pyiqa's {PYIQA_FACTS[pyiqa_key].name} meta file: pyiqa:{path} (or csv: without "
            f"path=/mos=/std=) reads it with that dataset's scale"
        )
    return _Reader(
        params.get("name") or path.stem,
        str(path),
        rows,
        None,
        infer_range=True,
        lower_better=_truthy(params.get("lower_better")),
        notes=notes,
    )


_TXT_ROLES = {
    "name": "name",
    "image": "name",
    "dist": "name",
    "path": "name",
    "img": "name",
    "ref": "ref",
    "score": "score",
    "mos": "score",
    "dmos": "score",
    "std": "std",
    "sd": "std",
    "split": "split",
    "group": "ref",
    "_": None,
    "skip": None,
    "-": None,
}
_SPLIT_WORDS = {"train", "training", "val", "valid", "validation", "test", "testing", "dev"}


def _txt_lines(path: Path, sep: Optional[str], encoding: Optional[str]) -> Tuple[str, List[Tuple[int, List[str]]]]:
    """Header-less label lines -> (separator used, [(line, fields)]). Separator: tab if the first
    line has one (pyiqa's tab-padded files, LIQE), else comma (MANIQA's `name, score`), else runs
    of spaces (VisualQuality-R1, TID); `sep=` overrides (tab, comma, space, or a character)."""
    text = _read_text(path, encoding)
    lines = [(i, s) for i, s in enumerate(text.splitlines(), 1) if s.strip() and not s.lstrip().startswith("#")]
    if sep is None or sep == "auto":
        first = lines[0][1] if lines else ""
        sep = "\t" if "\t" in first else ("," if "," in first else " ")
    else:
        sep = {"tab": "\t", "\\t": "\t", "comma": ",", "space": " ", "semicolon": ";"}.get(sep, sep)
    out = []
    for i, s in lines:
        fields = s.split() if sep == " " else [f.strip() for f in s.split(sep)]
        out.append((i, fields))
    return {"\t": "tab", ",": "comma", " ": "space"}.get(sep, repr(sep)), out


def _txt_columns(
    path: Path, lines: List[Tuple[int, List[str]]], cols: Optional[str]
) -> Tuple[List[Optional[str]], bool, str]:
    """The role of each column: from `cols=` or positional defaults (`name score [std]`, or
    `ref dist score [std]` when the first two fields are both names; a trailing train/val/test
    field is the split). Returns (roles, first line is a header, description)."""
    if cols:
        roles = []
        for c in cols.split(","):
            c = c.strip().lower()
            if c not in _TXT_ROLES:
                raise DataError(f"{path}: cols={cols!r}: unknown column {c!r} (use name, ref, score, std, split, _)")
            roles.append(_TXT_ROLES[c])
        if "name" not in roles or "score" not in roles:
            raise DataError(f"{path}: cols={cols!r} must name a 'name' and a 'score' column")
        si = roles.index("score")
        header = bool(lines) and len(lines[0][1]) > si and not _is_num(lines[0][1][si])
        return roles, header, "cols=" + ",".join(r or "_" for r in roles)
    if not lines:
        return ["name", "score"], False, "name score"
    header = not any(_is_num(f) for f in lines[0][1])
    fields = lines[1][1] if header and len(lines) > 1 else lines[0][1]
    lead = 0
    while lead < len(fields) and not _is_num(fields[lead]):
        lead += 1
    if lead == 0 or lead > 2 or lead == len(fields):
        raise DataError(
            f"{path}:{lines[0][0]}: cannot tell the columns of {' '.join(fields)!r} "
            "(expected `name score [std]` or `ref dist score [std]`); pass ?cols=name,score,std"
        )
    roles: List[Optional[str]] = ["name"] if lead == 1 else ["ref", "name"]
    nums = 0
    for f in fields[lead:]:
        if _is_num(f) and nums < 2:
            roles.append("score" if nums == 0 else "std")
            nums += 1
        elif f.lower() in _SPLIT_WORDS and "split" not in roles:
            roles.append("split")
        else:
            roles.append(None)
    desc = " ".join(r or "_" for r in roles)
    return roles, header, desc


def _txt_rows(path: Path, params: Dict[str, str], root: Path) -> Tuple[List[_Row], List[str]]:
    sep, lines = _txt_lines(path, params.get("sep"), params.get("encoding"))
    roles, header, desc = _txt_columns(path, lines, params.get("cols"))
    notes = [f"{path.name}: columns {desc} ({sep}-separated)" + ("; line 1 read as a header" if header else "")]
    if header:
        lines = lines[1:]
    idx = {r: i for i, r in reversed(list(enumerate(roles))) if r}
    locate = _Locator(root)
    rows = []

    def get(fields: List[str], role: str) -> Optional[str]:
        i = idx.get(role)
        return fields[i] if i is not None and i < len(fields) else None

    for line, fields in lines:
        name = get(fields, "name") or ""
        rows.append(
            _Row(
                str(path),
                line,
                name or f"line{line}",
                locate(name) if name else None,
                get(fields, "score"),
                get(fields, "std"),
                None,
                get(fields, "split"),
                get(fields, "ref"),
            )
        )
    return rows, notes


def read_txt(file: str, params: Dict[str, str]) -> _Reader:
    """Header-less label lists (`name score [std]`, full-reference `ref dist score [std]`), space-,
    tab- or comma(+space)-separated, as VisualQuality-R1, LIQE, MANIQA and pyiqa's old .txt files
    are. `cols=` names the columns (name, ref, score, std, split, _ to skip); `root=` is the image
    folder (default: the file's folder; bare names are also found in its subfolders); `sep=`,
    `lower_better=1`, `range=`, `std_range=` as for the other readers. Scale: as `json:`."""
    path = _require_file(Path(file).expanduser(), "label file")
    root = Path(params.get("root") or path.parent).expanduser()
    rows, notes = _txt_rows(path, params, root)
    return _Reader(
        params.get("name") or path.stem,
        str(path),
        rows,
        None,
        infer_range=True,
        lower_better=_truthy(params.get("lower_better")),
        notes=notes,
    )


# pyiqa's meta_info files, by the dataset name in `meta_info_<Name>Dataset.csv`: the scale of the
# score column as the dataset defines it. LIVE's "mos" column holds the realigned DMOS (the
# reference images are 0 in Q-Align's live.json, the same values), so it is lower-is-better.
@dataclass(frozen=True)
class _PyiqaFacts:
    name: str
    range: Optional[Tuple[float, float]]  # None: observed min/max (Elo)
    lower_better: bool = False
    std_is_variance: bool = False
    std_range: Optional[Tuple[float, float]] = None
    note: str = ""


PYIQA_FACTS: Dict[str, _PyiqaFacts] = {
    "koniq10k": _PyiqaFacts("koniq", (1.0, 5.0), note="MOS = sum k*c_k of c1..c5 (1-5); std as given (1-5)"),
    "koniq10k++": _PyiqaFacts("koniq++", (1.0, 5.0)),
    "kadid10k": _PyiqaFacts(
        "kadid", (1.0, 5.0), std_is_variance=True, note="its 'std' column holds the official variance: std = sqrt"
    ),
    "livechallenge": _PyiqaFacts("livec", (0.0, 100.0)),
    "spaq": _PyiqaFacts("spaq", (0.0, 100.0)),
    "csiq": _PyiqaFacts("csiq", (0.0, 1.0), lower_better=True, note="DMOS 0-1, lower is better: flipped"),
    "pipal": _PyiqaFacts("pipal", None, note="Elo: range = observed min-max"),
    "tid2008": _PyiqaFacts("tid2008", (0.0, 9.0)),
    "tid2013": _PyiqaFacts("tid2013", (0.0, 9.0)),
    "liveiqa": _PyiqaFacts(
        "live", (0.0, 100.0), lower_better=True, note="realigned DMOS 0-100, lower is better: flipped"
    ),
    "livemd": _PyiqaFacts("livemd", (0.0, 100.0), lower_better=True, note="DMOS 0-100, lower is better: flipped"),
}
_PYIQA_NAME_RE = re.compile(r"^meta_info_(.+?)(?:Dataset)?\.(?:csv|txt)$", re.I)
_PYIQA_HEADERS = ({"img_name", "mos", "std", "split"}, {"ref_name", "dist_name"}, {"hq_name", "dist_name", "elo_score"})


def _pyiqa_key(path: Path, header: Optional[Sequence[str]] = None) -> Optional[str]:
    """The PYIQA_FACTS key of a pyiqa meta file ('' for an unknown dataset in that layout), else None."""
    m = _PYIQA_NAME_RE.match(path.name)
    if m:
        return m.group(1).lower() if m.group(1).lower() in PYIQA_FACTS else ""
    if header is not None:
        h = {x.lower() for x in header}
        if any(need <= h for need in _PYIQA_HEADERS):
            return ""
    return None


def _split_value(v: Optional[str]) -> Optional[str]:
    """pyiqa's split columns: 0/1/2 (train/val/test) or the words."""
    if v is None:
        return None
    s = str(v).strip()
    return {"0": "train", "1": "val", "2": "test", "0.0": "train", "1.0": "val", "2.0": "test"}.get(s, s)


def read_pyiqa(file: str, params: Dict[str, str]) -> _Reader:
    """pyiqa's meta_info files: `meta_info_<Name>Dataset.csv` (header; first the image name, or
    ref_name + dist_name, then the score; split columns `split` with 0/1/2 or any column whose name
    contains `split` with train/val/test, `split_col=` picks one) or the older header-less `.txt`.
    The scale comes from the dataset named in the file name (PYIQA_FACTS); an unknown one is
    inferred as for `json:`. Images: `root=` (default the file's folder), found by name below it."""
    path = _require_file(Path(file).expanduser(), "pyiqa meta_info file")
    root = Path(params.get("root") or path.parent).expanduser()
    key = _pyiqa_key(path)
    facts = PYIQA_FACTS.get(key or "")
    notes: List[str] = []
    text_head = _read_text(path, params.get("encoding")).splitlines()[:1]
    has_header = (
        bool(text_head)
        and path.suffix.lower() == ".csv"
        and "," in text_head[0]
        and not any(_is_num(f) for f in text_head[0].split(","))
    )
    rows: List[_Row] = []
    koniq_dist = False
    if has_header:
        header, it = _read_csv(path, ",", params.get("encoding"))
        lower = [h.lower() for h in header]
        ref_col = next((header[i] for i, h in enumerate(lower) if h in ("ref_name", "hq_name", "ref_img")), None)
        name_col = next(
            (
                header[i]
                for i, h in enumerate(lower)
                if h in ("dist_name", "img_name", "image name", "filename", "image_name", "dis_name")
            ),
            None,
        )
        if name_col is None:
            raise DataError(f"{path}:1: no image-name column (dist_name, img_name, ...; columns: {', '.join(header)})")
        std_col = next((header[i] for i, h in enumerate(lower) if h in ("std", "sd", "mos_std")), None)
        split_cols = [h for h in header if "split" in h.lower()]
        if params.get("split_col"):
            if params["split_col"] not in header:
                raise DataError(f"{path}:1: no split column {params['split_col']!r} (columns: {', '.join(header)})")
            split_col = params["split_col"]
        else:
            split_col = next(
                (c for c in ("official_split", "split") if c in split_cols), split_cols[0] if split_cols else None
            )
        if len(split_cols) > 1:
            notes.append(
                f"split from column {split_col!r} (others: {', '.join(c for c in split_cols if c != split_col)}; split_col= picks)"
            )
        koniq_dist = key == "koniq10k" and all(f"c{k}" in header for k in range(1, 6))
        if params.get("mos"):
            score_col = _pick_column(header, params["mos"], [], "MOS", path)
        else:
            # the first numeric-named score column after the names
            start = header.index(name_col) + 1
            score_col = next(
                (
                    h
                    for h in header[start:]
                    if h.lower() in ("mos", "dmos", "elo_score", "qmos", "score", "mos_quality")
                ),
                None,
            )
            if score_col is None:
                raise DataError(
                    f"{path}:1: no score column (mos, dmos, elo_score, ...; columns: {', '.join(header)}); pass ?mos=COL"
                )
        for line, r in it:
            name = r.get(name_col, "")
            mos: object = r.get(score_col)
            if koniq_dist:
                mos = _koniq_mos(r)
            rows.append(
                _Row(
                    str(path),
                    line,
                    name or f"line{line}",
                    None,
                    mos,
                    r.get(std_col) if std_col else None,
                    None,
                    _split_value(r.get(split_col)) if split_col else None,
                    (r.get(ref_col) or None) if ref_col else None,
                )
            )
        what = (
            f"columns {name_col}, {'c1..c5' if koniq_dist else score_col}"
            + (f", {std_col}" if std_col else "")
            + (f", split column {split_col}" if split_col else "")
        )
    else:
        rows, txt_notes = _txt_rows(path, params, root)
        what = txt_notes[0].split(": ", 1)[1]
        for r in rows:
            r.split = _split_value(r.split)
    locate = _Locator(root)
    for r in rows:
        if r.image is None and r.id and not r.id.startswith("line"):
            r.image = locate(r.id)
    std_range = None
    if facts is not None and facts.name == "koniq" and not koniq_dist:
        # the .txt (no rating distribution): the MOS column is the 0-100 z-score MOS, std is on 1-5
        facts = _PyiqaFacts("koniq", (0.0, 100.0))
        std_range = (1.0, 5.0)
        notes.append("no c1..c5 columns: MOS is the 0-100 (z-score) MOS mapped from 0-100; std as given (1-5)")
    if facts is not None and facts.name == "livec" and not _truthy(params.get("practice")):
        practice = {f"t{i}.bmp" for i in range(1, 8)}
        n0 = len(rows)
        rows = [r for r in rows if r.id.lower() not in practice]
        if n0 != len(rows):
            notes.append(f"{n0 - len(rows)} practice images t1-t7 dropped (practice=1 keeps them)")
    label = f"pyiqa {path.name}" + (f" ({facts.name})" if facts else " (dataset not known: scale inferred)")
    notes.insert(0, f"{label}: {what}" + (f"; {facts.note}" if facts and facts.note else ""))
    if facts is None:
        return _Reader(
            params.get("name") or path.stem,
            str(path),
            rows,
            None,
            infer_range=True,
            lower_better=_truthy(params.get("lower_better")),
            notes=notes,
        )
    return _Reader(
        params.get("name") or facts.name,
        str(path),
        rows,
        facts.range,
        lower_better=facts.lower_better,
        std_is_variance=facts.std_is_variance,
        std_range=std_range or facts.std_range,
        notes=notes,
    )


def _koniq_mos(r: Dict[str, str]) -> Optional[float]:
    """KonIQ's 1-5 MOS from its rating distribution: sum k * c_k / sum c_k (c_k are fractions in
    the sets file and pyiqa's CSV, counts in the scores file; dividing by the sum covers both)."""
    cs = [_parse_float(r.get(f"c{k}")) for k in range(1, 6)]
    if any(c is None or c < 0 for c in cs) or sum(cs) <= 0:  # type: ignore[operator]
        return None
    return sum(k * c for k, c in zip(range(1, 6), cs)) / sum(cs)  # type: ignore[misc]
