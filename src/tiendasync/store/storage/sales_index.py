"""SQL of the sales index: which document holds each sale, and its lines by key.

The ledger documents are the truth; these rows are derived from them inside
the same transaction that logs the update, so reads (a sale by id, the sales
behind a (location, SKU) key) need not scan documents.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

__all__ = ["IndexedLine", "SalesIndex"]

#: ``(sku, quantity, unit_price_cents)`` of one sale line.
IndexedLine = tuple[str, int, int]


class SalesIndex:
    """The ``sales`` and ``sale_lines`` tables (call writes inside a transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(
        self,
        sale_id: str,
        *,
        doc: str,
        location: str,
        replica: str,
        created_at_ms: int,
        lines: Sequence[IndexedLine],
    ) -> None:
        """Index a sale (a second call for the same id changes nothing)."""
        total = sum(qty * price for _, qty, price in lines)
        self.conn.execute(
            "INSERT OR IGNORE INTO sales (id, doc, location, replica, created_at, total_cents) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (sale_id, doc, location, replica, created_at_ms / 1000, total),
        )
        self.conn.executemany(
            "INSERT OR IGNORE INTO sale_lines (sale_id, line, location, sku, quantity, "
            "unit_price_cents, at_ms, replica) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (sale_id, n, location, sku, qty, price, created_at_ms, replica)
                for n, (sku, qty, price) in enumerate(lines)
            ],
        )

    def drop_doc(self, doc: str) -> None:
        """Forget the sales recorded in document ``doc`` and their lines."""
        self.conn.execute(
            "DELETE FROM sale_lines WHERE sale_id IN (SELECT id FROM sales WHERE doc = ?)", (doc,)
        )
        self.conn.execute("DELETE FROM sales WHERE doc = ?", (doc,))

    def mark_void(self, sale_id: str) -> None:
        self.conn.execute("UPDATE sale_lines SET voided = 1 WHERE sale_id = ?", (sale_id,))

    def mark_remapped(self, sale_id: str, from_sku: str, to_sku: str) -> None:
        self.conn.execute(
            "UPDATE sale_lines SET remapped_to = ? WHERE sale_id = ? AND sku = ?",
            (to_sku, sale_id, from_sku),
        )

    def doc_of(self, sale_id: str) -> str | None:
        """The ledger document holding ``sale_id``."""
        row = self.conn.execute("SELECT doc FROM sales WHERE id = ?", (sale_id,)).fetchone()
        return None if row is None else str(row[0])

    def recent_ids(self, *, location: str | None, limit: int) -> list[str]:
        """Sale ids, most recent first."""
        sql = "SELECT id FROM sales"
        params: list[Any] = []
        if location is not None:
            sql += " WHERE location = ?"
            params.append(location)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        return [str(i) for (i,) in self.conn.execute(sql, [*params, limit])]

    def count(self, *, location: str | None) -> int:
        if location is None:
            row = self.conn.execute("SELECT COUNT(*) FROM sales").fetchone()
        else:
            row = self.conn.execute(
                "SELECT COUNT(*) FROM sales WHERE location = ?", (location,)
            ).fetchone()
        return int(row[0])

    def live_lines(self, location: str, sku: str) -> list[tuple[str, str, int, int, int]]:
        """``(sale id, replica, quantity, unit price, at ms)`` of the sales of ``sku`` at
        ``location`` that are neither voided nor remapped away."""
        rows = self.conn.execute(
            "SELECT sale_id, replica, quantity, unit_price_cents, at_ms FROM sale_lines "
            "WHERE location = ? AND sku = ? AND voided = 0 AND remapped_to IS NULL",
            (location, sku),
        ).fetchall()
        return [(str(a), str(b), int(c), int(d), int(e)) for a, b, c, d, e in rows]

    def lines_of(
        self, location: str, sku: str
    ) -> list[tuple[str, str, str, int, int, bool, str | None]]:
        """Every sale line of ``sku`` at ``location``, voided and remapped ones too, and the
        lines remapped *to* ``sku``: ``(sale id, replica, sku, quantity, at ms, voided,
        remapped_to)``, oldest first (what the console's timeline shows)."""
        rows = self.conn.execute(
            "SELECT sale_id, replica, sku, quantity, at_ms, voided, remapped_to FROM sale_lines "
            "WHERE location = ? AND (sku = ? OR remapped_to = ?) ORDER BY at_ms, sale_id",
            (location, sku, sku),
        ).fetchall()
        return [
            (str(a), str(b), str(c), int(d), int(e), bool(f), g) for a, b, c, d, e, f, g in rows
        ]

    def locations_of_sku(self, sku: str) -> set[str]:
        """Locations where ``sku`` was ever sold."""
        rows = self.conn.execute(
            "SELECT DISTINCT location FROM sale_lines WHERE sku = ?", (sku,)
        ).fetchall()
        return {str(r[0]) for r in rows}

    def sold_keys(self, skus: set[str]) -> set[tuple[str, str]]:
        """``(location, sku)`` of each of ``skus`` ever sold there (few statements for many
        SKUs: an import asks for thousands)."""
        found: set[tuple[str, str]] = set()
        if len(skus) > 500:  # one pass over the (location, sku) index, not one per chunk
            rows = self.conn.execute("SELECT DISTINCT location, sku FROM sale_lines").fetchall()
            return {(str(loc), str(sku)) for loc, sku in rows if sku in skus}
        ordered = sorted(skus)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT DISTINCT location, sku FROM sale_lines WHERE sku IN ({marks})", chunk
            ).fetchall()
            found.update((str(loc), str(sku)) for loc, sku in rows)
        return found
