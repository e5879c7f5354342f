"""``tiendasync import``: a product catalog and/or stock from CSV files.

Every file is read and checked whole before anything is written: a file
with one bad row imports nothing, and the error names the line and the SKU
of each bad row (the first few).  When both ``--catalog`` and ``--stock``
are given, both are checked first, then each is written in one durable
transaction (``--batch-size N`` splits the writes, not the checks).

Reading: the encoding is UTF-8 (with or without a byte-order mark),
UTF-16 with a byte-order mark (Excel's "Unicode text"), else Windows-1252
(Excel's "CSV" on a Spanish Windows); the delimiter is whichever of ``,``
``;`` or tab splits the header into the most columns.

Catalog: header ``sku,name,price_cents[,more columns]``; the columns of
:data:`~tiendasync.model.docnames.PRODUCT_INTEGER_FIELDS` hold non-negative
integers, the others text; an empty optional cell leaves that field as it
is.  Only fields that differ from the replica's are written, so importing
the same file again writes nothing.

Stock: header ``sku,quantity``.  By default the file states stock levels
(a stocktake, :meth:`~tiendasync.store.inventory.Inventory.count_many`):
re-running it writes nothing.  With ``receive=True`` (``--receive``) it is
a delivery: each quantity is added; rows of 0 are skipped and not reported
as received.  The receipt's queue entry records the file's SHA-256, and the
same file received again at the same location is refused unless ``again``
(``--again``), so an accidental re-run does not double the stock.  A SKU
that is not in the catalog (nor in the catalog file of the same run) is
refused unless ``allow_new`` (``--allow-new``); a SKU on two rows of one
file is refused in both files.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import difflib
import hashlib
import io
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tiendasync.cli.common import Commands, add_command, db_parent, open_replica, positive_int
from tiendasync.cli.tables import ProgressBar
from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import PRODUCT_INTEGER_FIELDS
from tiendasync.model.names import check_name, check_safe_int
from tiendasync.store.replica import Replica

__all__ = [
    "CatalogPlan",
    "RowError",
    "StockPlan",
    "decode",
    "parse_catalog",
    "parse_stock",
    "plan_catalog",
    "plan_stock",
    "read_csv",
    "register",
    "sniff_delimiter",
]

_CATALOG_REQUIRED = ("sku", "name", "price_cents")
_STOCK_COLUMNS = ("sku", "quantity")
_DELIMITERS = (",", ";", "\t")
#: How many bad rows one error message lists.
_SHOWN_ERRORS = 5

#: ``(line number, cells)`` of one data row.
Row = tuple[int, list[str]]


@dataclass(frozen=True)
class RowError:
    """One bad row: its 1-based line, its SKU cell (if any) and what is wrong."""

    line: int
    sku: str | None
    message: str

    def __str__(self) -> str:
        sku = f" (SKU {self.sku})" if self.sku else ""
        return f"line {self.line}{sku}: {self.message}"


def _refuse(path: str, errors: list[RowError]) -> InvalidArgument:
    by_line: dict[int, RowError] = {}
    for e in sorted(errors, key=lambda e: e.line):
        first = by_line.get(e.line)
        by_line[e.line] = (
            e if first is None else RowError(e.line, first.sku, f"{first.message}, and {e.message}")
        )
    rows = list(by_line.values())
    shown = "; ".join(str(e) for e in rows[:_SHOWN_ERRORS])
    more = len(rows) - _SHOWN_ERRORS
    tail = f"; and {more} more bad row(s)" if more > 0 else ""
    return InvalidArgument(
        f"{path}: nothing imported, {len(rows)} bad row(s): {shown}{tail}; "
        "fix the file and run the import again"
    )


# -- reading --------------------------------------------------------------------------


def decode(data: bytes, path: str) -> tuple[str, str]:
    """``(text, encoding name)`` of a CSV file's bytes.

    UTF-8 with a BOM, UTF-16 with a BOM, plain UTF-8, else Windows-1252.
    Windows-1252 bytes that happen to be valid UTF-8 read as UTF-8; real
    text never does (it would take an accented capital or ``à``-``ï``
    followed by exactly the right symbols, such as ``Ã©``).
    :class:`InvalidArgument` if none of them decodes the bytes.
    """
    if data.startswith(codecs.BOM_UTF8):
        candidates = ["utf-8-sig"]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    else:
        candidates = ["utf-8", "cp1252"]
    for encoding in candidates:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise InvalidArgument(
        f"{path} is neither UTF-8 nor Windows-1252 text; save it as CSV UTF-8 and try again"
    )


def sniff_delimiter(header_line: str) -> str:
    """The delimiter among ``,`` ``;`` and tab that splits ``header_line`` into the most cells.

    Ties go to the earlier one (a one-column header reads as ``,``).
    """
    best, best_cells = ",", 0
    for delimiter in _DELIMITERS:
        try:
            cells = next(csv.reader([header_line], delimiter=delimiter), [])
        except csv.Error:
            continue
        if len(cells) > best_cells:
            best, best_cells = delimiter, len(cells)
    return best


def read_csv(path: str, what: str) -> tuple[list[str], list[Row]]:
    """Header and ``(line number, cells)`` rows of a CSV file (blank lines skipped).

    ``what`` names the file in errors.  Raises :class:`InvalidArgument` for
    an unreadable or undecodable file, a missing header, or a header with
    an invalid or repeated column name.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    text, _ = decode(data, path)
    return parse_text(text, path, what)


def parse_text(text: str, path: str, what: str) -> tuple[list[str], list[Row]]:
    """:func:`read_csv` of already decoded ``text``."""
    text = text.lstrip("\ufeff")
    first = text.replace("\r", "\n").split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(first))
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise InvalidArgument(f"{path}: the {what} file is empty (need a header)")
        rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise InvalidArgument(f"{path} line {reader.line_num}: {exc}") from exc
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


def _require(path: str, header: list[str], required: Iterable[str], exact: bool) -> None:
    needed = list(required)
    problems = []
    missing = [c for c in needed if c not in header]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    extra = [c for c in header if c not in needed] if exact else []
    if extra:
        problems.append(f"unexpected column(s) {', '.join(extra)}")
    if problems:
        shape = "be" if exact else "have at least"
        raise InvalidArgument(
            f"{path} line 1: {'; '.join(problems)}; the header must {shape} "
            f"{','.join(needed)} (got {','.join(header)}; comma, semicolon and tab "
            "separated files are all read)"
        )


# -- checking rows --------------------------------------------------------------------


def _non_negative_cell(text: str, column: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidArgument(f"{column} must be a whole number, got {text!r}") from None
    check_safe_int(value, column)
    if value < 0:
        raise InvalidArgument(f"{column} must not be negative, got {value}")
    return value


def _rows(
    path: str, header: list[str], rows: list[Row], progress: ProgressBar
) -> Iterable[tuple[int, str, dict[str, str], list[RowError]]]:
    """``(line, sku, record, errors)`` per row; width, SKU and duplicate checks done."""
    first_line: dict[str, int] = {}
    for n, (line, cells) in enumerate(rows):
        progress.update(n + 1)
        errors: list[RowError] = []
        raw_sku = cells[header.index("sku")].strip() if len(cells) > header.index("sku") else ""
        if len(cells) != len(header):
            errors.append(
                RowError(line, raw_sku or None, f"expected {len(header)} cells, got {len(cells)}")
            )
            yield line, raw_sku, {}, errors
            continue
        try:
            check_name(raw_sku, "SKU")
        except InvalidArgument as exc:
            yield line, raw_sku, {}, [RowError(line, raw_sku or None, str(exc))]
            continue
        if raw_sku in first_line:
            errors.append(
                RowError(line, raw_sku, f"the SKU is already on line {first_line[raw_sku]}")
            )
        else:
            first_line[raw_sku] = line
        yield line, raw_sku, dict(zip(header, cells, strict=True)), errors


def parse_catalog(
    path: str, header: list[str], rows: list[Row], progress: ProgressBar | None = None
) -> tuple[dict[str, dict[str, Any]], list[RowError]]:
    """``({sku: fields}, errors)`` of a catalog file's rows."""
    _require(path, header, _CATALOG_REQUIRED, exact=False)
    bar = progress or ProgressBar(0, stream=sys.stderr, enabled=False)
    products: dict[str, dict[str, Any]] = {}
    errors: list[RowError] = []
    for line, sku, record, row_errors in _rows(path, header, rows, bar):
        errors += row_errors
        if not record:
            continue
        fields: dict[str, Any] = {}
        for column, text in record.items():
            if column == "sku":
                continue
            try:
                if not text.strip():
                    if column in _CATALOG_REQUIRED:
                        raise InvalidArgument(f"{column} is empty")
                    continue  # an empty optional cell leaves that field unchanged
                fields[column] = (
                    _non_negative_cell(text, column) if column in PRODUCT_INTEGER_FIELDS else text
                )
            except InvalidArgument as exc:
                errors.append(RowError(line, sku, str(exc)))
        if not row_errors:
            products[sku] = fields
    return products, errors


def parse_stock(
    path: str, header: list[str], rows: list[Row], progress: ProgressBar | None = None
) -> tuple[dict[str, int], dict[str, int], list[RowError]]:
    """``({sku: quantity}, {sku: line}, errors)`` of a stock file's rows."""
    _require(path, header, _STOCK_COLUMNS, exact=True)
    bar = progress or ProgressBar(0, stream=sys.stderr, enabled=False)
    quantities: dict[str, int] = {}
    lines: dict[str, int] = {}
    errors: list[RowError] = []
    for line, sku, record, row_errors in _rows(path, header, rows, bar):
        errors += row_errors
        if not record:
            continue
        try:
            quantity = _non_negative_cell(record["quantity"], "quantity")
        except InvalidArgument as exc:
            errors.append(RowError(line, sku, str(exc)))
            continue
        if not row_errors:
            quantities[sku] = quantity
            lines[sku] = line
    return quantities, lines, errors


# -- planning and writing -------------------------------------------------------------


@dataclass
class CatalogPlan:
    """What a catalog file changes: the fields to write per SKU."""

    path: str
    rows: int
    new: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)
    unchanged: int = 0

    def writes(self) -> dict[str, dict[str, Any]]:
        return {**self.new, **self.changed}

    def summary(self, dry_run: bool) -> str:
        verb = "would import" if dry_run else "imported"
        return (
            f"catalog: {verb} {self.path}: {len(self.new)} new product(s), "
            f"{len(self.changed)} changed, {self.unchanged} unchanged"
        )


@dataclass
class StockPlan:
    """What a stock file changes: ``{sku: (before, after)}`` at one location."""

    path: str
    location: str
    receive: bool
    rows: int
    changes: dict[str, tuple[int, int]] = field(default_factory=dict)
    zero_rows: int = 0
    unchanged: int = 0
    #: First 16 hex digits of the file's SHA-256 (recorded with a receipt).
    digest: str = ""

    def summary(self, dry_run: bool) -> str:
        units = sum(after - before for before, after in self.changes.values())
        if self.receive:
            verb = "would receive" if dry_run else "received"
            skipped = f"; {self.zero_rows} row(s) of 0 skipped" if self.zero_rows else ""
            return (
                f"stock: {verb} {units} unit(s) of {len(self.changes)} SKU(s) at "
                f"{self.location} from {self.path}{skipped}"
            )
        verb = "would set" if dry_run else "set"
        return (
            f"stock: stocktake at {self.location} from {self.path}: {verb} "
            f"{len(self.changes)} SKU(s) ({units:+d} unit(s)), {self.unchanged} already right"
        )


def plan_catalog(replica: Replica, path: str, progress: bool = False) -> CatalogPlan:
    """Read and check catalog CSV ``path`` against ``replica``; write nothing.

    :class:`InvalidArgument` (naming the lines and SKUs) if any row is bad.
    """
    header, rows = read_csv(path, "catalog")
    bar = ProgressBar(len(rows), stream=sys.stderr, enabled=progress, label="catalog")
    try:
        products, errors = parse_catalog(path, header, rows, bar)
    finally:
        bar.close()
    if errors:
        raise _refuse(path, errors)
    plan = CatalogPlan(path, len(rows))
    for sku, fields in products.items():
        current = replica.catalog.get(sku)
        if current is None:
            plan.new[sku] = fields
            continue
        diff = {k: v for k, v in fields.items() if current.get(k) != v}
        if diff:
            plan.changed[sku] = diff
        else:
            plan.unchanged += 1
    return plan


def _digest(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()[:16]
    except OSError as exc:
        raise InvalidArgument(f"cannot read stock file {path}: {exc.strerror or exc}") from exc


def _receipt_tag(digest: str) -> str:
    return f"sha256:{digest}"


def _already_received(replica: Replica, location: str, digest: str) -> str | None:
    """When and in which queue entry this replica received the file ``digest``, if it did."""
    tag, offset = _receipt_tag(digest), 0
    while True:
        page = replica.queue.list(kind="receive", limit=1000, offset=offset)
        for entry in page:
            if tag in entry.summary and f" at {location} (" in entry.summary:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.created_at))
                return f"on {when} (queue entry {entry.id})"
        if len(page) < 1000:
            return None
        offset += len(page)


def plan_stock(
    replica: Replica,
    path: str,
    *,
    location: str | None = None,
    receive: bool = False,
    allow_new: bool = False,
    again: bool = False,
    also_known: Iterable[str] = (),
    progress: bool = False,
) -> StockPlan:
    """Read and check stock CSV ``path`` against ``replica``; write nothing.

    ``also_known``: SKUs that count as in the catalog (those of a catalog
    file imported in the same run).  :class:`InvalidArgument` if any row is
    bad, names a SKU that is not in the catalog and not ``allow_new``, or
    (``receive``) if this very file was already received at the location
    and not ``again``.
    """
    header, rows = read_csv(path, "stock")
    bar = ProgressBar(len(rows), stream=sys.stderr, enabled=progress, label="stock")
    try:
        quantities, lines, errors = parse_stock(path, header, rows, bar)
    finally:
        bar.close()
    if not allow_new:
        known = set(replica.catalog.skus()) | set(also_known)
        for sku in quantities.keys() - known:
            close = difflib.get_close_matches(sku, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            errors.append(
                RowError(lines[sku], sku, f"not in the catalog{hint} (--allow-new to accept it)")
            )
    if errors:
        raise _refuse(path, errors)
    where = location or replica.location
    digest = _digest(path)
    if receive and not again:
        seen = _already_received(replica, where, digest)
        if seen is not None:
            raise InvalidArgument(
                f"{path}: this file was already received at {where} {seen}; nothing "
                "imported (--again receives the same delivery once more)"
            )
    levels = replica.inventory.levels(where)
    plan = StockPlan(path, where, receive, len(rows), digest=digest)
    for sku, quantity in quantities.items():
        before = levels.get(sku, 0)
        if receive:
            if quantity == 0:
                plan.zero_rows += 1
            else:
                plan.changes[sku] = (before, before + quantity)
        elif quantity != before:
            plan.changes[sku] = (before, quantity)
        else:
            plan.unchanged += 1
    return plan


def _chunks(items: list[Any], size: int | None) -> Iterable[list[Any]]:
    step = size or max(len(items), 1)
    for start in range(0, len(items), step):
        yield items[start : start + step]


def apply_catalog(replica: Replica, plan: CatalogPlan, batch_size: int | None = None) -> int:
    """Write ``plan``'s new and changed fields (one transaction, or one per ``batch_size``)."""
    writes = list(plan.writes().items())
    for chunk in _chunks(writes, batch_size):
        replica.catalog.put_many(dict(chunk))
    return len(writes)


def apply_stock(replica: Replica, plan: StockPlan, batch_size: int | None = None) -> int:
    """Write ``plan``'s stock changes (one transaction, or one per ``batch_size``)."""
    changes = list(plan.changes.items())
    for chunk in _chunks(changes, batch_size):
        if plan.receive:
            replica.inventory.receive_many(
                [(sku, after - before) for sku, (before, after) in chunk],
                location=plan.location,
                reason=f"delivery {plan.path}, {_receipt_tag(plan.digest)}",
            )
        else:
            replica.inventory.count_many(
                [(sku, after) for sku, (_, after) in chunk], location=plan.location
            )
    return len(changes)


# -- the command ----------------------------------------------------------------------

#: How many per-SKU lines ``--dry-run`` prints per file.
_SHOWN_CHANGES = 20


def _print_dry_run(catalog: CatalogPlan | None, stock: StockPlan | None) -> None:
    lines: list[str] = []
    if catalog is not None:
        lines += [f"  new {sku}: {fields}" for sku, fields in catalog.new.items()]
        lines += [f"  change {sku}: {fields}" for sku, fields in catalog.changed.items()]
    shown = lines[:_SHOWN_CHANGES]
    if stock is not None:
        stock_lines = [f"  {sku}: {b} -> {a}" for sku, (b, a) in stock.changes.items()]
        shown += stock_lines[:_SHOWN_CHANGES]
        lines += stock_lines
    for line in shown:
        print(line)
    if len(lines) > len(shown):
        print(f"  ... and {len(lines) - len(shown)} more")
    print("dry run: nothing was written")


def _check_options(args: argparse.Namespace) -> None:
    if args.catalog is None and args.stock is None:
        raise InvalidArgument("nothing to import: give --catalog and/or --stock")
    if args.receive and args.stock is None:
        raise InvalidArgument("--receive applies to --stock; give a stock file")
    if args.again and not args.receive:
        raise InvalidArgument("--again applies to --receive (a stocktake can always run again)")


def _cmd_import(args: argparse.Namespace) -> int:
    _check_options(args)
    progress = bool(args.progress or sys.stderr.isatty())
    with open_replica(args, read_only=args.dry_run) as replica:
        if args.location is not None and args.location not in replica.inventory.locations():
            known = ", ".join(replica.inventory.locations())
            raise InvalidArgument(f"unknown location {args.location!r}; known: {known}")
        catalog = stock = None
        if args.catalog is not None:
            catalog = plan_catalog(replica, args.catalog, progress)
        if args.stock is not None:
            stock = plan_stock(
                replica,
                args.stock,
                location=args.location,
                receive=args.receive,
                allow_new=args.allow_new,
                again=args.again,
                also_known=catalog.writes() if catalog is not None else (),
                progress=progress,
            )
        if not args.dry_run:
            if catalog is not None:
                apply_catalog(replica, catalog, args.batch_size)
            if stock is not None:
                apply_stock(replica, stock, args.batch_size)
        for plan in (catalog, stock):
            if plan is not None:
                print(plan.summary(args.dry_run))
        if args.dry_run:
            _print_dry_run(catalog, stock)
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
        "cells are skipped.\nStock CSV header: sku,quantity; the quantities are the "
        "stock levels counted\n(a stocktake: running the same file again changes "
        "nothing), or with --receive\nthe units that arrived (added to the stock; the "
        "same file twice needs --again).\n"
        "Files are checked whole first: one bad row, a SKU on two rows or a stock "
        "SKU\nnot in the catalog (without --allow-new) and nothing is imported.  "
        "Comma,\nsemicolon or tab separated; UTF-8 (with or without BOM), UTF-16 or "
        "Windows-1252.",
    )
    p.add_argument("--catalog", metavar="CSV", help="products CSV (sku,name,price_cents,...)")
    p.add_argument(
        "--stock", metavar="CSV", help="stock CSV (sku,quantity), imported after the catalog"
    )
    p.add_argument(
        "--location",
        metavar="L",
        help="location of the stock (default: the replica's)",
    )
    p.add_argument(
        "--receive",
        action="store_true",
        help="the stock file is a delivery: add its quantities instead of setting the levels",
    )
    p.add_argument(
        "--again",
        action="store_true",
        help="with --receive: receive a file this store already received (a second delivery)",
    )
    p.add_argument(
        "--allow-new",
        dest="allow_new",
        action="store_true",
        help="accept stock rows for SKUs that are not in the catalog",
    )
    p.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="check the files and print what would change; write nothing",
    )
    p.add_argument(
        "--batch-size",
        dest="batch_size",
        type=positive_int,
        default=None,
        metavar="N",
        help="write N SKUs per transaction instead of one per file (the checks still come first)",
    )
    p.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr even when it is not a terminal",
    )
