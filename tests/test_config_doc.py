"""docs/config.md is generated from the config dataclasses (hawkeye_lite/config_doc.py): the page
must match the code, every key must have a meaning, and every key on the page must be settable."""

import dataclasses
from pathlib import Path

from hawkeye_lite import config_doc
from hawkeye_lite.config import TrainConfig
from hawkeye_lite.config_loader import load_train_config

PAGE = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_page_matches_the_code():
    assert PAGE.read_text(encoding="utf-8") == config_doc.render(), (
        "docs/config.md is out of date: run `python -m hawkeye_lite.config_doc docs/config.md`"
    )


def test_every_key_has_a_meaning_and_every_section_a_summary():
    sections = config_doc.sections()
    missing = [key for _, _, rows in sections for key, _, _, meaning in rows if not meaning.strip()]
    assert not missing, f"fields without a comment in hawkeye_lite/config.py: {missing}"
    assert all(doc for _, doc, _ in sections), [name for name, doc, _ in sections if not doc]


def _leaf_keys(obj, prefix=""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_keys(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def test_the_page_lists_every_key_once_with_its_default():
    rows = {key: default for _, _, rs in config_doc.sections() for key, _, default, _ in rs}
    leaves = dict(_leaf_keys(TrainConfig()))
    assert set(leaves) <= set(rows), sorted(set(leaves) - set(rows))
    text = PAGE.read_text(encoding="utf-8")
    for key, value in leaves.items():
        assert text.count(f"| `{key}` |") == 1, key
        assert rows[key] == config_doc.value_text(value), key


def test_every_key_on_the_page_can_be_set_to_its_default():
    """Each documented key is a real key: `--set key=<default>` loads and gives the default back."""
    defaults = TrainConfig()
    for key, value in _leaf_keys(defaults):
        if isinstance(value, (list, tuple)):
            text = "[" + ", ".join(str(v) for v in value) + "]"
        else:
            text = "null" if value is None else str(value)
        cfg = load_train_config(None, [f"{key}={text}"])
        got = cfg
        for part in key.split("."):
            got = getattr(got, part)
        assert got == value, (key, got, value)
