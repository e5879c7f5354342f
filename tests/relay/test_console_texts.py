"""The console's two languages say the same things, and every text it asks for exists.

Reads the ``es`` and ``en`` dictionaries of the console's app.js as text (keys
``name:`` or ``'dotted.name':``) and every literal ``t('key')`` call.
"""

from __future__ import annotations

import re
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "src/tiendasync/relay/console/static/app.js"
KEY = re.compile(r"(?:^|,)\s*(?:'([\w.]+)'|([a-z_]\w*))\s*:\s*'", re.MULTILINE)


def _block(source: str, lang: str, until: str) -> str:
    start = source.index(f"\n    {lang}: {{")
    return source[start : source.index(until, start + 1)]


def _keys(block: str) -> set[str]:
    return {quoted or bare for quoted, bare in KEY.findall(block)}


def test_spanish_and_english_have_the_same_texts() -> None:
    source = APP.read_text(encoding="utf-8")
    es, en = _keys(_block(source, "es", "\n    en: {")), _keys(_block(source, "en", "\n    }"))
    assert len(es) > 200
    assert es - en == set(), f"only in Spanish: {sorted(es - en)}"
    assert en - es == set(), f"only in English: {sorted(en - es)}"


def test_every_text_asked_for_by_name_exists() -> None:
    source = APP.read_text(encoding="utf-8")
    known = _keys(_block(source, "es", "\n    en: {"))
    # ``t('kind.' + k)`` builds names at run time: only whole literal names count
    asked = set(re.findall(r"\bt\('([\w.]*\w)'", source))
    assert asked and asked - known == set(), f"missing texts: {sorted(asked - known)}"
