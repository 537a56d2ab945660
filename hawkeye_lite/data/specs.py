"""Data specs: the strings that say which datasets to read, and `load_records`, which reads them.

A data spec string picks a reader and its directory or file:

    json:FILE                      JSON lists as the peers ship them (the paper's {"id", "images", "gt_score"},
                                   DeQA-Score, Q-Align, VisualQuality-R1 jsonl), or JSONL
    csv:FILE?path=COL&mos=COL&root=DIR&range=LO,HI   any CSV with an image and a MOS column
    txt:FILE?cols=name,score,std&root=DIR            header-less label lists (space, tab or comma)
    pyiqa:FILE                     pyiqa's meta_info_<Name>Dataset.csv/.txt, with that dataset's scale
    koniq:DIR  kadid:DIR  spaq:DIR  livec:DIR  pipal:DIR  csiq:DIR  agiqa:DIR   native releases
    suite:cross?root=DIR           the cross-dataset protocol (KonIQ train/test + six test sets)

Several specs can be combined: "koniq:/d/koniq,spaq:/d/spaq" (comma or semicolon before the
next `kind:`), or a list of strings. Every spec takes the common query options

    split=train|val|test     put every record of this spec in that split (cross-dataset testing)
    corrupt=F  corrupt_seed=N   replace the MOS of a seeded fraction F of the training records by
                             uniform draws (label-noise studies, data/corrupt.py)
    seed=N  test_frac=F  val_frac=F   the seeded split, used when the dataset has no split column
    range=LO,HI              the raw MOS range (overrides the reader's default; `observed`: min-max)
    std_range=LO,HI          the std's scale when it is not the MOS's
    encoding=NAME            text encoding (default UTF-8; a non-UTF-8 file fails naming its line)
    name=NAME                the dataset name used in summaries and eval tables

Generic files (json/csv/txt) are on 1-5 unless their values cannot be; then a standard range is
inferred and said in the summary, or the load stops naming the observed range (scale.py).

READERS maps each kind to its reader (formats.py: the generic files; layouts.py: the datasets'
own releases) and READER_PARAMS to the options it takes; SUITES are the built-in suites. For each
spec `load_records` runs the reader and hands its rows to `_finalize` (finalize.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union
from urllib.parse import parse_qsl

from .corrupt import corrupt_from_options
from .files import _read_text, _truthy, _url_message
from .finalize import _finalize
from .formats import read_csv, read_json, read_pyiqa, read_txt
from .imagecheck import DEFAULT_MAX_PIXELS, _is_url
from .layouts import read_agiqa, read_csiq, read_kadid, read_koniq, read_livec, read_pipal, read_spaq
from .records import SPLITS, DataError, IQARecord, LoadOptions, LoadResult, LoadSummary, _Reader

READERS: Dict[str, Callable[[str, Dict[str, str]], _Reader]] = {
    "json": read_json,
    "csv": read_csv,
    "txt": read_txt,
    "pyiqa": read_pyiqa,
    "koniq": read_koniq,
    "kadid": read_kadid,
    "spaq": read_spaq,
    "livec": read_livec,
    "pipal": read_pipal,
    "csiq": read_csiq,
    "agiqa": read_agiqa,
}
COMMON_PARAMS = {
    "split",
    "seed",
    "test_frac",
    "val_frac",
    "range",
    "name",
    "encoding",
    "std_range",
    "corrupt",
    "corrupt_seed",
}
_SCALE_PARAMS = {"root", "lower_better"}
READER_PARAMS = {
    "json": _SCALE_PARAMS | {"score", "std"},
    "csv": _SCALE_PARAMS | {"path", "mos", "std", "split_col", "group", "delimiter", "practice"},
    "txt": _SCALE_PARAMS | {"cols", "sep"},
    "pyiqa": {"root", "split_col", "mos", "practice", "cols", "sep", "lower_better"},
    "koniq": {"file", "images"},
    "kadid": {"images"},
    "spaq": {"file", "images"},
    "livec": {"images", "practice"},
    "pipal": {"labels"},
    "csiq": {"file"},
    "agiqa": {"file", "images"},
}


# ----------------------------------------------------------------------------- suites

# The cross-dataset protocol of the IQA papers (Q-Align, DeQA-Score, Q-Insight, VisualQuality-R1,
# Q-Hawkeye): train on KonIQ-10k's official training set, report KonIQ's official test set and every
# image of the other datasets. `suite:cross?root=DIR` expands to these specs, one folder per dataset
# under DIR (each overridable: `&spaq=/elsewhere/SPAQ`).
SUITES: Dict[str, Tuple[Tuple[str, str, str], ...]] = {
    "cross": (
        ("koniq", "koniq10k", ""),
        ("spaq", "SPAQ", "split=test"),
        ("kadid", "kadid10k", "split=test"),
        ("pipal", "PIPAL", "split=test"),
        ("livec", "ChallengeDB_release", "split=test"),
        ("agiqa", "AGIQA-3K", "split=test"),
        ("csiq", "CSIQ", "split=test"),
    ),
}
_SUITE_PARAMS = {"root", "skip_missing", "seed"}


def _expand_suite(spec: "DataSpec", text: str) -> List[Tuple[str, bool]]:
    """suite:NAME (built-in, SUITES) or suite:FILE (one spec per line, `#` comments, `{root}`
    replaced by the root= option) -> [(spec, optional)]. skip_missing=1 makes a dataset whose
    folder is absent a note in the summary instead of an error."""
    o = spec.options
    root = o.get("root")
    optional = _truthy(o.get("skip_missing"))
    extra = f"seed={o['seed']}" if "seed" in o else ""
    out: List[Tuple[str, bool]] = []
    if root is not None and not Path(root).expanduser().is_dir():
        what = "is a file" if Path(root).expanduser().is_file() else "does not exist"
        raise DataError(f"data spec {text!r}: root {root} {what}; it must be the folder that holds the datasets")
    if spec.path in SUITES:
        entries = SUITES[spec.path]
        known = {k for k, _, _ in entries}
        for k in o:
            if k not in _SUITE_PARAMS | known:
                raise DataError(
                    f"data spec {text!r}: unknown option {k!r} for suite:{spec.path} "
                    f"(allowed: {', '.join(sorted(_SUITE_PARAMS | known))})"
                )
        if root is None and not all(k in o for k in known):
            raise DataError(
                f"data spec {text!r}: suite:{spec.path} needs root=DIR (the folder holding "
                f"{', '.join(sub for _, sub, _ in entries)}) or a path per dataset ({', '.join(sorted(known))}=DIR)"
            )
        for kind, sub, q in entries:
            path = o.get(kind) or str(Path(root).expanduser() / sub)  # type: ignore[arg-type]
            query = "&".join(x for x in (q, extra) if x)
            out.append((f"{kind}:{path}" + (f"?{query}" if query else ""), optional))
        return out
    f = Path(spec.path).expanduser()
    if not f.is_file():
        raise DataError(
            f"data spec {text!r}: no built-in suite {spec.path!r} (built-in: {', '.join(SUITES)}) and no suite file {f}"
        )
    for k in o:
        if k not in _SUITE_PARAMS:
            raise DataError(
                f"data spec {text!r}: unknown option {k!r} for a suite file (allowed: {', '.join(sorted(_SUITE_PARAMS))})"
            )
    for i, line in enumerate(_read_text(f).splitlines(), 1):
        s = line.split("#", 1)[0].strip() if not line.strip().startswith("#") else ""
        if not s:
            continue
        if "{root}" in s:
            if root is None:
                raise DataError(f"{f}:{i}: uses {{root}}: pass suite:{spec.path}?root=DIR")
            s = s.replace("{root}", str(Path(root).expanduser()))
        if parse_spec(s).kind == "suite":
            raise DataError(f"{f}:{i}: a suite file cannot include another suite")
        out.append((s, optional))
    if not out:
        raise DataError(f"{f}: suite file lists no data specs")
    return out


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: str
    params: Tuple[Tuple[str, str], ...] = ()

    @property
    def options(self) -> Dict[str, str]:
        return dict(self.params)


KINDS = tuple(READERS) + ("suite",)
# split before any `word:` of two or more letters, not only known kinds: "koniq:/a,cvs:/b.csv" must
# say "unknown data kind 'cvs'", not look for a folder named "/a,cvs:/b.csv" (1 letter: a drive)
_SPLIT_RE = re.compile(r"[;,]\s*(?=[A-Za-z][A-Za-z0-9_+.-]+:)")
_KIND_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]*):(.*)$", re.S)


def _unknown_kind(spec: str, kind: str) -> DataError:
    import difflib

    close = difflib.get_close_matches(kind.lower(), KINDS, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}:'?" if close else ""
    return DataError(f"data spec {spec!r}: unknown data kind {kind!r} (known: {', '.join(KINDS)}){hint}")


def parse_spec(spec: str) -> DataSpec:
    """'kind:PATH[?k=v&k=v]' -> DataSpec. A bare .json/.jsonl/.csv/.txt path is accepted as json:/csv:/txt:."""
    s = spec.strip()
    if _is_url(s):
        raise DataError(_url_message(f"data spec {spec!r}", s))
    m = _KIND_RE.match(s)
    if m and m.group(1).lower() in KINDS:
        kind, rest = m.group(1).lower(), m.group(2)
    elif m and len(m.group(1)) > 1:  # a single letter is a Windows drive (C:\data\x.csv)
        raise _unknown_kind(spec, m.group(1))
    else:
        low = s.lower().split("?", 1)[0]
        if low.endswith((".json", ".jsonl")):
            kind, rest = "json", s
        elif low.endswith(".csv"):
            kind, rest = "csv", s
        elif low.endswith(".txt"):
            kind, rest = "txt", s
        else:
            raise DataError(f"data spec {spec!r}: expected KIND:PATH with KIND one of {', '.join(KINDS)}")
    path, _, query = rest.partition("?")
    if not path:
        raise DataError(f"data spec {spec!r}: no file or directory after '{kind}:'")
    if _is_url(path):
        raise DataError(_url_message(f"data spec {spec!r}", path))
    params = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else ()
    if kind != "suite":  # a suite's options are checked when it is expanded (they depend on the suite)
        allowed = COMMON_PARAMS | READER_PARAMS[kind]
        for k, _ in params:
            if k not in allowed:
                raise DataError(
                    f"data spec {spec!r}: unknown option {k!r} for {kind} (allowed: {', '.join(sorted(allowed))})"
                )
    return DataSpec(kind, path, params)


def _expand(specs: Union[str, Sequence[str]]) -> List[Tuple[str, bool]]:
    items = [specs] if isinstance(specs, str) else list(specs)
    out: List[Tuple[str, bool]] = []
    for it in items:
        for p in _SPLIT_RE.split(it):
            p = p.strip()
            if not p:
                continue
            spec = parse_spec(p)
            out.extend(_expand_suite(spec, p) if spec.kind == "suite" else [(p, False)])
    return out


def split_specs(specs: Union[str, Sequence[str]]) -> List[str]:
    """'a:X,b:Y' or ['a:X', 'b:Y;c:Z'] -> ['a:X', 'b:Y', 'c:Z']; a suite: spec becomes its specs."""
    return [s for s, _ in _expand(specs)]


def _float_pair(spec: str, v: str, key: str = "range") -> Tuple[float, float]:
    try:
        lo, hi = (float(x) for x in v.split(","))
    except ValueError:
        raise DataError(f"data spec {spec!r}: {key} must be LO,HI (two numbers), got {v!r}") from None
    if not hi > lo:
        raise DataError(f"data spec {spec!r}: {key} {v!r} must have HI > LO")
    return lo, hi


def load_records(
    specs: Union[str, Sequence[str]],
    *,
    on_bad: str = "skip",
    check_images: str = "full",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    seed: int = 0,
    test_frac: float = 0.2,
    val_frac: float = 0.0,
) -> LoadResult:
    """Read one or several data specs into records (see the module docstring).

    on_bad="skip" drops bad records and lists them in the summaries; "fail" raises DataError on
    the first one. Options in a spec's query (seed, test_frac, ...) override the arguments.
    """
    records: List[IQARecord] = []
    summaries: List[LoadSummary] = []
    for text, optional in _expand(specs):
        spec = parse_spec(text)
        o = spec.options
        try:
            opts = LoadOptions(
                on_bad=on_bad,
                check_images=check_images,
                max_pixels=max_pixels,
                seed=int(o.get("seed", seed)),
                test_frac=float(o.get("test_frac", test_frac)),
                val_frac=float(o.get("val_frac", val_frac)),
            )
        except ValueError as e:
            raise DataError(f"data spec {text!r}: {e}") from None
        forced = o.get("split")
        if forced is not None and forced not in SPLITS:
            raise DataError(f"data spec {text!r}: split must be one of {', '.join(SPLITS)}, got {forced!r}")
        observed = o.get("range") == "observed"
        rng = _float_pair(text, o["range"]) if "range" in o and not observed else None
        std_rng = _float_pair(text, o["std_range"], "std_range") if "std_range" in o else None
        if optional and not Path(spec.path).expanduser().exists():
            s = LoadSummary(dataset=o.get("name") or spec.kind, file=spec.path)
            s.notes.append(f"skipped: {spec.path} does not exist (suite skip_missing=1)")
            summaries.append(s)
            continue
        rd = READERS[spec.kind](spec.path, o)
        if std_rng is not None:
            rd.std_range = std_rng
            rd.notes.append(f"std on {std_rng[0]:g}-{std_rng[1]:g} (std_range=), mapped to the 1-5 scale")
        if observed:  # an open scale: the observed min-max, as PIPAL's reader does
            rd.mos_range, rd.infer_range = None, False
        recs, summary = _finalize(rd, opts, forced_split=forced, range_override=rng, name=o.get("name"))
        try:
            recs, corrupted = corrupt_from_options(recs, o, text)
        except ValueError as e:
            raise DataError(str(e)) from None
        if corrupted:
            rho, cseed, n = corrupted
            summary.notes.append(f"corrupt={rho:g}: {n} training labels replaced by uniform draws (seed {cseed})")
        records.extend(recs)
        summaries.append(summary)
    return LoadResult(records, summaries)
