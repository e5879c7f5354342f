"""Small helpers for human-readable command-line output (stdlib only).

``format_table`` lays rows out in aligned columns, ``format_fields`` prints
``key: value`` pairs, and :class:`ProgressBar` draws
``[#####     ] 45% 4500/10000`` on a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from tiendasync.errors import InternalError

__all__ = ["ProgressBar", "format_fields", "format_table", "format_time", "one_line"]


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def format_time(ts: float | None) -> str:
    """A Unix timestamp as local ``YYYY-MM-DD HH:MM:SS`` (``-`` for none)."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _cell(value: Any, max_width: int | None) -> str:
    text = "-" if value is None else one_line(value)
    if max_width is not None and len(text) > max_width:
        text = text[: max(max_width - 1, 0)] + "…"
    return text


def format_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    right: Iterable[int] = (),
    max_width: int | None = 60,
    empty: str = "(none)",
) -> str:
    """Rows under ``headers`` in aligned columns, two spaces apart.

    Columns whose index is in ``right`` are right-aligned (numbers).  Cells
    are made one line and cut to ``max_width`` characters; ``None`` shows as
    ``-``.  With no rows, returns ``empty``.
    """
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    if not cells:
        return empty
    ncols = len(headers)
    widths = [len(h) for h in headers]
    for row in cells:
        if len(row) != ncols:
            raise InternalError(f"row has {len(row)} cells, expected {ncols}")
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    right_set = set(right)

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if i in right_set else v.ljust(widths[i])
            for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def format_fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """``key: value`` lines with the values aligned."""
    items = [(k, _cell(v, None)) for k, v in pairs]
    if not items:
        return ""
    width = max(len(k) for k, _ in items) + 1
    return "\n".join(f"{(k + ':').ljust(width)} {v}".rstrip() for k, v in items)


class ProgressBar:
    """``\\r[#####     ] 45% 4500/10000`` on ``stream``; silent unless ``enabled``.

    Redraws only when the shown text changes, so calling :meth:`update` for
    every row is cheap.  :meth:`close` ends the line.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO,
        enabled: bool,
        label: str = "",
        width: int = 30,
    ) -> None:
        self.total = max(total, 0)
        self.stream = stream
        self.enabled = enabled
        self.label = label
        self.width = width
        self.done = 0
        self._shown = ""
        self._closed = False

    def render(self) -> str:
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * self.width)
        bar = "#" * filled + " " * (self.width - filled)
        prefix = f"{self.label} " if self.label else ""
        return f"{prefix}[{bar}] {int(fraction * 100):3d}% {self.done}/{self.total}"

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled or self._closed:
            return
        text = self.render()
        if text != self._shown:
            self._shown = text
            self.stream.write("\r" + text)
            self.stream.flush()

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def close(self) -> None:
        """Finish the line (idempotent)."""
        if self._closed:
            return
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True
