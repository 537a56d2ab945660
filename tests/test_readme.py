"""The README and the docs/ pages: runnable examples run, links resolve, the README stays short.

- Every Python block marked `<!-- runnable ... -->` in README.md or docs/**/*.md runs as written
  (in a temporary folder, with the PyTorch kernels).
- README.md is at most 400 lines: it is the user's manual; the rest lives in docs/.
- Every relative link (and image) in those pages points to a file that exists, and every `#anchor`
  names a heading of its target page under GitHub's anchor rules.
"""

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
README_MAX_LINES = 400

RUNNABLE = re.compile(r"<!-- runnable[^>]*-->\n```python\n(.*?)```", re.S)
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _blocks():
    out = []
    for page in PAGES:
        for i, code in enumerate(RUNNABLE.findall(page.read_text(encoding="utf-8"))):
            out.append(pytest.param(page, i, code, id=f"{_rel(page)}-{i}"))
    return out


BLOCKS = _blocks()


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lowercase, punctuation other than '-' and
    '_' removed, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keeps letters (any script), digits, '_', '-', ' '
    return text.replace(" ", "-")


def anchors(page: Path) -> set:
    text = page.read_text(encoding="utf-8")
    seen: Counter = Counter()
    out = set()
    for _, line in _prose_lines(text):
        m = HEADING.match(line)
        if m:
            slug = github_slug(m.group(2))
            out.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
            seen[slug] += 1
        out.update(a.lower() for a in HTML_ANCHOR.findall(line))
    return out


def links(page: Path):
    """(line number, target) of every link and image outside code."""
    for n, line in _prose_lines(page.read_text(encoding="utf-8")):
        line = re.sub(r"(`+)(.+?)\1", "", line)  # inline code spans hold no links
        for m in LINK.finditer(line):
            yield n, m.group(1)


def test_slugs_follow_github():
    assert github_slug("One step (hawkeye_lite/trainer.py)") == "one-step-hawkeye_litetrainerpy"
    assert (
        github_slug("RL from a label-free start (`configs/demo-rl.yaml`)")
        == "rl-from-a-label-free-start-configsdemo-rlyaml"
    )
    assert github_slug("### `hawkeye-lite train`".lstrip("# ")) == "hawkeye-lite-train"
    assert github_slug("The evaluation's own spread") == "the-evaluations-own-spread"
    assert github_slug("γ0 sweeps") == "γ0-sweeps"
    assert (
        github_slug("1. A full 7B training step fits 24 GB: 11.9 GiB peak")
        == "1-a-full-7b-training-step-fits-24-gb-119-gib-peak"
    )
    assert github_slug("Data — specs, [layouts](x.md)") == "data--specs-layouts"


def test_duplicate_headings_are_numbered(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Notes\n\n## Notes\n\n```\n# Notes\n```\n\n### Notes\n")
    assert anchors(page) == {"notes", "notes-1", "notes-2"}


def test_readme_has_runnable_examples():
    assert len(RUNNABLE.findall(README.read_text(encoding="utf-8"))) >= 2


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_links_resolve(page):
    bad = []
    for n, target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        where = f"{_rel(page)}:{n}: {target}"
        try:
            rel = _rel(dest)
        except ValueError:
            bad.append(f"{where}: outside the repository")
            continue
        if not dest.exists():
            bad.append(f"{where}: no such file {rel}")
            continue
        if anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            bad.append(f"{where}: no heading with anchor #{anchor} in {rel}")
    assert not bad, "broken links:\n" + "\n".join(bad)


@pytest.mark.parametrize("page,i,code", BLOCKS)
def test_example_runs(page, i, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write relative paths (runs/tiny, data/demo)
    monkeypatch.setenv("HAWKEYE_KERNELS", "torch")
    exec(compile(code, f"{_rel(page)} block {i}", "exec"), {"__name__": "__readme__"})
