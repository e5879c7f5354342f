"""``tiendasync import``: a product catalog and/or stock from CSV files.

The engine reads the whole file first (so the header is checked before
anything is written), then checks rows one by one and writes them in
batches.  At the first bad row the import stops with an error naming its
line; the rows before it stay imported.

Catalog: header ``sku,name,price_cents[,more columns]``; the columns of
:data:`~tiendasync.model.docnames.PRODUCT_INTEGER_FIELDS` hold non-negative
integers, the others text; an empty optional cell leaves that field as it
is.  Stock: header ``sku,quantity``; each row is received at one location.
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

from tiendasync.cli.common import Commands, add_command, db_parent, open_replica, positive_int
from tiendasync.cli.tables import ProgressBar
from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import PRODUCT_INTEGER_FIELDS
from tiendasync.model.names import check_name, check_safe_int
from tiendasync.store.replica import Replica

__all__ = ["import_catalog", "import_stock", "read_csv", "register"]

_CATALOG_REQUIRED = ("sku", "name", "price_cents")
_STOCK_COLUMNS = ("sku", "quantity")

#: ``(line number, cells)`` of one data row.
Row = tuple[int, list[str]]


def read_csv(path: str, what: str) -> tuple[list[str], list[Row]]:
    """Header and ``(line number, cells)`` rows of a CSV file (blank lines skipped).

    ``what`` names the file in errors.  Raises :class:`InvalidArgument` for
    an unreadable or non-UTF-8 file, a missing header, or a header with an
    invalid or repeated column name.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader, None)
                if header is None:
                    raise InvalidArgument(f"{path}: the {what} file is empty (need a header)")
                rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
            except csv.Error as exc:
                raise InvalidArgument(f"{path} line {reader.line_num}: {exc}") from exc
    except OSError as exc:
        raise InvalidArgument(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{path} is not UTF-8 text: {exc.reason}") from exc
    header = [h.strip() for h in header]
    _check_header(path, header)
    return header, rows


def _check_header(path: str, header: list[str]) -> None:
    seen: set[str] = set()
    for name in header:
        try:
            check_name(name, "column name")
        except InvalidArgument as exc:
            raise InvalidArgument(f"{path} line 1: {exc}") from None
        if name in seen:
            raise InvalidArgument(f"{path} line 1: column {name!r} appears twice")
        seen.add(name)


def _row_error(path: str, line: int, message: str, done: int) -> InvalidArgument:
    return InvalidArgument(f"{path} line {line}: {message} ({done} row(s) before it were imported)")


def _csv_record(header: list[str], cells: list[str]) -> dict[str, str]:
    """One CSV row as ``{column: text}``; a row of the wrong width is an error."""
    if len(cells) != len(header):
        raise InvalidArgument(f"expected {len(header)} cells, got {len(cells)}")
    return dict(zip(header, cells, strict=True))


def _non_negative_cell(text: str, column: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidArgument(f"{column} must be an integer, got {text!r}") from None
    check_safe_int(value, column)
    if value < 0:
        raise InvalidArgument(f"{column} must not be negative, got {value}")
    return value


# -- catalog --------------------------------------------------------------------------


def _product(header: list[str], cells: list[str]) -> tuple[str, dict[str, Any]]:
    """``(sku, fields)`` of one catalog row; InvalidArgument if the row is bad."""
    record = _csv_record(header, cells)
    sku = check_name(record.pop("sku").strip(), "SKU")
    fields: dict[str, Any] = {}
    for column, text in record.items():
        if not text.strip():
            if column in _CATALOG_REQUIRED:
                raise InvalidArgument(f"{column} is empty")
            continue  # an empty optional cell leaves that field unchanged
        if column in PRODUCT_INTEGER_FIELDS:
            fields[column] = _non_negative_cell(text, column)
        else:
            fields[column] = text
    return sku, fields


def import_catalog(replica: Replica, path: str, batch_size: int, progress: bool) -> int:
    """Put the products of catalog CSV ``path``; returns the rows imported.

    A later row for the same SKU wins.  At a bad row the rows before it are
    written and :class:`InvalidArgument` names its line.
    """
    header, rows = read_csv(path, "catalog")
    missing = [c for c in _CATALOG_REQUIRED if c not in header]
    if missing:
        raise InvalidArgument(
            f"{path} line 1: missing column(s) {', '.join(missing)}; "
            f"the header needs {','.join(_CATALOG_REQUIRED)}"
        )
    bar = ProgressBar(len(rows), stream=sys.stderr, enabled=progress, label="catalog")
    batch: dict[str, dict[str, Any]] = {}
    done = 0

    def flush() -> None:
        nonlocal done
        if batch:
            replica.catalog.put_many(batch)
            done += len(batch)
            batch.clear()

    try:
        for n, (line, cells) in enumerate(rows):
            try:
                sku, fields = _product(header, cells)
            except InvalidArgument as exc:
                flush()
                raise _row_error(path, line, str(exc), done) from None
            if sku in batch:
                flush()  # keep the file's order: a later row for the same SKU wins
            batch[sku] = fields
            if len(batch) >= batch_size:
                flush()
            bar.update(n + 1)
        flush()
    finally:
        bar.close()
    return done


# -- stock ----------------------------------------------------------------------------


def _stock_row(header: list[str], cells: list[str]) -> tuple[str, int]:
    record = _csv_record(header, cells)
    sku = check_name(record["sku"].strip(), "SKU")
    return sku, _non_negative_cell(record["quantity"], "quantity")


def import_stock(
    replica: Replica, path: str, location: str | None, progress: bool, batch_size: int = 1000
) -> tuple[int, int]:
    """Receive the stock of CSV ``path`` at ``location`` (default: the replica's).

    Returns ``(rows imported, rows naming SKUs not in the catalog)``.  At a
    bad row the rows before it are received and :class:`InvalidArgument`
    names its line.
    """
    header, rows = read_csv(path, "stock")
    if sorted(header) != sorted(_STOCK_COLUMNS):
        raise InvalidArgument(
            f"{path} line 1: the header must be {','.join(_STOCK_COLUMNS)} (got {','.join(header)})"
        )
    bar = ProgressBar(len(rows), stream=sys.stderr, enabled=progress, label="stock")
    done = unknown = 0
    batch: list[tuple[str, int]] = []

    def flush() -> None:
        nonlocal unknown
        if batch:
            replica.inventory.receive_many(batch, location=location, reason="import")
            unknown += sum(1 for sku in {s for s, _ in batch} if replica.catalog.get(sku) is None)
            batch.clear()

    try:
        for n, (line, cells) in enumerate(rows):
            try:
                sku, quantity = _stock_row(header, cells)
            except InvalidArgument as exc:
                flush()  # the rows before the bad one stay imported, as documented
                raise _row_error(path, line, str(exc), done) from None
            if quantity > 0:
                batch.append((sku, quantity))
            done += 1
            if len(batch) >= batch_size:
                flush()
            bar.update(n + 1)
        flush()
    finally:
        bar.close()
    return done, unknown


# -- the command ----------------------------------------------------------------------


def _cmd_import(args: argparse.Namespace) -> int:
    if args.catalog is None and args.stock is None:
        raise InvalidArgument("nothing to import: give --catalog and/or --stock")
    progress = bool(args.progress or sys.stderr.isatty())
    with open_replica(args) as replica:
        if args.location is not None and args.location not in replica.inventory.locations():
            known = ", ".join(replica.inventory.locations())
            raise InvalidArgument(f"unknown location {args.location!r}; known: {known}")
        if args.catalog is not None:
            count = import_catalog(replica, args.catalog, args.batch_size, progress)
            print(f"catalog: {count} product row(s) imported from {args.catalog}")
        if args.stock is not None:
            rows, unknown = import_stock(
                replica, args.stock, args.location, progress, args.batch_size
            )
            where = args.location or replica.location
            print(f"stock: {rows} row(s) received at {where} from {args.stock}")
            if unknown:
                print(
                    f"warning: {unknown} stock row(s) name SKUs that are not in the catalog",
                    file=sys.stderr,
                )
    return 0


def register(commands: Commands) -> None:
    """Add ``import``."""
    integers = " and ".join(PRODUCT_INTEGER_FIELDS)
    p = add_command(
        commands,
        "import",
        "import a product catalog and/or stock from CSV files",
        _cmd_import,
        [db_parent()],
        epilog="Catalog CSV header: sku,name,price_cents[,more columns]; "
        f"{integers}\nare integers, other columns are text fields, empty optional "
        "cells are skipped.\nStock CSV header: sku,quantity; each row is received "
        "at the location.\nRows are checked one by one: at the first bad row the "
        "import stops with an error\nnaming its line; the rows before it stay "
        "imported.",
    )
    p.add_argument("--catalog", metavar="CSV", help="products CSV (sku,name,price_cents,...)")
    p.add_argument(
        "--stock", metavar="CSV", help="stock CSV (sku,quantity), imported after the catalog"
    )
    p.add_argument(
        "--location", metavar="L", help="location that receives the stock (default: the replica's)"
    )
    p.add_argument(
        "--batch-size",
        dest="batch_size",
        type=positive_int,
        default=1000,
        metavar="N",
        help="products per transaction (default: 1000)",
    )
    p.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr even when it is not a terminal",
    )
