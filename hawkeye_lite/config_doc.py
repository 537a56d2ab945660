"""docs/config.md, generated from the config dataclasses: every key with its type, its default (the
demo's, i.e. what `hawkeye-lite train` uses when a config file does not set it) and its meaning
(the field's comment in config.py). `python -m hawkeye_lite.config_doc [OUT]` writes it; a test
fails when the page and the code disagree, or when a field has no comment.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any, Dict, List, Tuple

from . import config
from .config import TrainConfig

HEADER = """# Config reference

Every key of a training config (`hawkeye-lite train --config FILE`, `--set key=value`), with its
type and default. The defaults are those of `hawkeye-lite train` with no config file: the CPU
demo, which `configs/demo.yaml` spells out. How the configs are used: [training.md](training.md).

Generated from the config dataclasses in `hawkeye_lite/config.py` by
`python -m hawkeye_lite.config_doc docs/config.md`; do not edit by hand (a test compares them).
"""


def field_comments() -> Dict[Tuple[str, str], str]:
    """(class name, field name) -> the comment lines right above the field plus its trailing
    comment, joined into one text."""
    source = inspect.getsource(config)
    lines = source.splitlines()
    trailing = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and lines[tok.start[0] - 1].strip() != tok.string.strip():
            trailing[tok.start[0]] = tok.string
    out = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above, j = [], stmt.lineno - 1
            while j >= 1 and lines[j - 1].strip().startswith("#"):
                above.insert(0, lines[j - 1].strip())
                j -= 1
            parts = above + ([trailing[stmt.end_lineno]] if stmt.end_lineno in trailing else [])
            text = " ".join(p.lstrip("#").strip() for p in parts)
            out[(node.name, stmt.target.id)] = " ".join(text.split())
    return out


def type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = [type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(inner) + (" \\| null" if type(None) in args else "")
    if origin in (tuple, list):
        if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
            return f"list of {type_name(args[0])}"
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if dataclasses.is_dataclass(tp):
        return "section"
    return {str: "string", int: "integer", float: "number", bool: "bool"}.get(tp, getattr(tp, "__name__", str(tp)))


def value_text(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, tuple)):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    return f"`{value!r}`"


def _doc(cls) -> str:
    return " ".join((inspect.getdoc(cls) or "").split()) if cls.__doc__ else ""


def sections(cls=TrainConfig, prefix: str = "", value: Any = None) -> List[Tuple[str, str, list]]:
    """[(dotted section name, its docstring, [(key, type, default, meaning)])], depth first."""
    value = TrainConfig() if value is None else value
    comments = field_comments()
    hints = typing.get_type_hints(cls)
    rows, children = [], []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if cls is config.ModelConfig and f.name == "lora":
            tp = typing.Optional[config.LoRAConfig]  # declared as a forward-compatible Optional
        sub = getattr(value, f.name)
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or (
            [tp] if dataclasses.is_dataclass(tp) else []
        )
        if inner:
            children += sections(inner[0], f"{key}.", sub if sub is not None else inner[0]())
            if sub is None or typing.get_origin(tp) is typing.Union:
                rows.append(
                    (
                        key,
                        "section \\| null",
                        value_text(None) if sub is None else "the section below",
                        comments.get((cls.__name__, f.name), ""),
                    )
                )
            continue
        rows.append((key, type_name(tp), value_text(sub), comments.get((cls.__name__, f.name), "")))
    return [(prefix.rstrip(".") or "(top level)", _doc(cls), rows)] + children


def render() -> str:
    out = [HEADER]
    all_sections = sections()
    out.append("Sections: " + ", ".join(f"[`{name}`](#{_anchor(name)})" for name, _, _ in all_sections) + ".\n")
    for name, doc, rows in all_sections:
        out.append(f"## {name}\n")
        if doc:
            out.append(doc + "\n")
        out.append("| key | type | default | meaning |")
        out.append("|---|---|---|---|")
        for key, tp, default, meaning in rows:
            out.append(f"| `{key}` | {tp} | {default} | {meaning.replace('|', chr(92) + '|')} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, spaces to '-', punctuation other than - and _ dropped."""
    return "".join(c for c in heading.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def main(argv: List[str] = sys.argv[1:]) -> None:
    out = Path(argv[0]) if argv else Path("docs/config.md")
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
