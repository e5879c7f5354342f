"""docs/admin-api.md states the HTTP status the relay really answers for each refusal.

The admin API maps every error through its class's ``http_status``
(tiendasync.errors): this pins the page's 409s and 400s to those classes,
so a page that says 400 where the relay answers 409 fails here.
"""

from __future__ import annotations

import re

from tiendasync.errors import ConflictClosed, InvalidArgument, NotFound, http_status_of

from .test_docs import DOCS

PAGE = (DOCS / "admin-api.md").read_text(encoding="utf-8")


def _rows_with(text: str) -> list[int]:
    """The status of every table row of the page that contains ``text``."""
    return [
        int(m.group(1))
        for m in re.finditer(r"^\| (\d{3}) \|(.*)$", PAGE, re.M)
        if text in m.group(2)
    ]


def test_resolve_refusals_have_the_status_of_their_error_class() -> None:
    assert _rows_with("is already resolved") == [http_status_of(ConflictClosed("x"))] == [409]
    assert _rows_with("resolving a conflict that is no longer open") == [409]
    assert _rows_with("unknown action 'explode'") == [http_status_of(InvalidArgument("x"))]
    assert _rows_with("no conflict 'C-nope'") == [http_status_of(NotFound("x"))] * 2
    assert _rows_with("is not connected now") == [409]
