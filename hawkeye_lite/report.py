"""Paper-style evaluation reports: `hawkeye-lite eval --report DIR`.

IQA papers (Q-Insight, VisualQuality-R1, Q-Hawkeye) report cross-dataset generalisation as one
row per model, one column per test dataset (train on KonIQ; test on SPAQ, KADID, PIPAL,
LIVE-C, AGIQA, CSIQ) holding SRCC / PLCC, and a last column with their unweighted mean. The
report writes that table and the full metrics per dataset (plus their mean) as

    DIR/report.md    the cross-dataset table and the per-dataset table, for a README or paper
    DIR/report.csv   one row per dataset, then the mean row
    DIR/report.json  the same numbers (NaN as null), the notes, what was evaluated

A suite file (`eval --suite FILE`, e.g. configs/suites/koniq-cross.yaml) names the data specs
of a standard protocol, so one command runs all of it; `${VAR}` in a spec is read from the
environment (IQA_ROOT: where the datasets live).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .fsio import writing

# Columns of the per-dataset table: (key, header). PLCC is the raw predictions' (what the
# MLLM IQA papers report); PLCC (logistic) is after the 4-parameter logistic (VQEG).
COLUMNS = (
    ("srcc", "SRCC"),
    ("plcc", "PLCC"),
    ("plcc_fit", "PLCC (logistic)"),
    ("krcc", "KRCC"),
    ("rmse", "RMSE"),
    ("rmse_fit", "RMSE (logistic)"),
    ("parse_rate", "parse rate"),
)
NAN = float("nan")


class SuiteError(ValueError):
    """A bad suite file; the message names the file and the key."""


def load_suite(path) -> Tuple[str, List[str]]:
    """(suite name, data specs) of a suite YAML file: `name:` and `data:` (a list of specs)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("data"), list) or not tree["data"]:
        raise SuiteError(f"{path}: data: expected a non-empty list of data specs")
    unknown = sorted(set(tree) - {"name", "description", "data"})
    if unknown:
        raise SuiteError(f"{path}: {unknown[0]}: unknown key (known keys: name, description, data)")
    specs = []
    for i, spec in enumerate(tree["data"]):
        if not isinstance(spec, str):
            raise SuiteError(f"{path}: data[{i}]: expected a data spec string, got {spec!r}")
        missing = [v for v in re.findall(r"\$\{(\w+)\}", spec) if v not in os.environ]
        if missing:
            raise SuiteError(f"{path}: data[{i}]: environment variable {missing[0]} is not set (used in {spec!r})")
        specs.append(os.path.expandvars(spec))
    return str(tree.get("name") or path.stem), specs


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def dataset_rows(report) -> List[Dict]:
    """One dict per dataset of an EvalReport: n, every metric, parse rates."""
    rows = []
    for d in report.datasets:
        m = d.metrics
        rows.append(
            {
                "dataset": d.dataset,
                "n": d.n_images,
                "srcc": m.srcc,
                "plcc": m.plcc,
                "plcc_fit": m.plcc_fit,
                "krcc": m.krcc,
                "rmse": m.rmse,
                "rmse_fit": m.rmse_fit,
                "parse_rate": m.parse_rate,
                "sample_parse_rate": d.sample_parse_rate,
                "n_unparsed": m.n_unparsed,
            }
        )
    return rows


def mean_row(rows: List[Dict]) -> Tuple[Dict, List[str]]:
    """Unweighted mean over datasets of every metric (as the papers' "average" column), over the
    datasets where it is defined; a note names any left out."""
    out: Dict = {"dataset": "mean", "n": sum(r["n"] for r in rows), "n_unparsed": sum(r["n_unparsed"] for r in rows)}
    notes = []
    for key in [k for k, _ in COLUMNS] + ["sample_parse_rate"]:
        vals = [r[key] for r in rows if isinstance(r[key], float) and math.isfinite(r[key])]
        out[key] = sum(vals) / len(vals) if vals else NAN
        if vals and len(vals) < len(rows) and key in ("srcc", "plcc"):
            left = [r["dataset"] for r in rows if not (isinstance(r[key], float) and math.isfinite(r[key]))]
            notes.append(
                f"mean {key.upper()} is over {len(vals)} of {len(rows)} datasets ({', '.join(left)}: undefined)"
            )
    return out, notes


def _f(v, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def render_markdown(
    rows: List[Dict],
    mean: Dict,
    *,
    model: str,
    suite: Optional[str] = None,
    notes: List[str] = (),
    samples: Optional[int] = None,
) -> str:
    names = [r["dataset"] for r in rows]
    lines = [f"# Evaluation of `{model}`", ""]
    if suite:
        lines += [f"Suite: **{suite}**.", ""]
    lines += [
        "## Cross-dataset table (SRCC / PLCC)",
        "",
        "| model | " + " | ".join(names) + " | mean |",
        "|---|" + "---:|" * (len(names) + 1),
        f"| {Path(model).name or model} | "
        + " | ".join(f"{_f(r['srcc'], 3)} / {_f(r['plcc'], 3)}" for r in rows)
        + f" | {_f(mean['srcc'], 3)} / {_f(mean['plcc'], 3)} |",
        "",
    ]
    lines += [
        "## Per dataset",
        "",
        "| dataset | images | " + " | ".join(h for _, h in COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(COLUMNS),
    ]
    for r in rows + [mean]:
        label = "**mean**" if r is mean else r["dataset"]
        lines.append(f"| {label} | {r['n']} | " + " | ".join(_f(r[k]) for k, _ in COLUMNS) + " |")
    lines.append("")
    lines.append(
        "SRCC / KRCC: rank correlation; PLCC / RMSE on the raw predictions and after the 4-parameter "
        "logistic fit; parse rate: images with at least one readable answer"
        + (f" (prediction = mean of {samples} sampled ratings)." if samples else ".")
    )
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_report(
    report,
    out_dir,
    *,
    model: str,
    suite: Optional[str] = None,
    samples: Optional[int] = None,
    extra: Optional[Dict] = None,
) -> List[Path]:
    """report.md, report.csv and report.json of an EvalReport in `out_dir`; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = dataset_rows(report)
    mean, notes = mean_row(rows)
    for d in report.datasets:
        notes += [f"[{d.dataset}] {n}" for n in d.metrics.notes]
    md = out_dir / "report.md"
    with writing(md):
        md.write_text(
            render_markdown(rows, mean, model=model, suite=suite, notes=notes, samples=samples), encoding="utf-8"
        )
    cs = out_dir / "report.csv"
    keys = ["dataset", "n"] + [k for k, _ in COLUMNS] + ["sample_parse_rate", "n_unparsed"]
    with writing(cs), open(cs, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows + [mean]:
            w.writerow(
                [
                    ""
                    if isinstance(r[k], float) and not math.isfinite(r[k])
                    else (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k])
                    for k in keys
                ]
            )
    js = out_dir / "report.json"
    payload = {"model": model, "suite": suite, "samples": samples, "datasets": rows, "mean": mean, "notes": notes}
    payload.update(extra or {})
    with writing(js):
        js.write_text(json.dumps(_clean(payload), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return [md, cs, js]
