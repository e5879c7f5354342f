"""``tiendasync import``: all-or-nothing files, stocktake vs --receive, --dry-run,
delimiter and encoding detection, errors naming the line and the SKU.

The parser and the row checks are property-tested (Hypothesis); the command
runs on real CSV files and a real replica database.
"""

from __future__ import annotations

import codecs
import csv
import io
import sqlite3
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tiendasync import Replica
from tiendasync.cli.csv_import import decode, parse_stock, parse_text, sniff_delimiter

from .test_store_cli import assert_one_error_line, db, run  # noqa: F401  (db is a fixture)


def queue_count(path: str) -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute("SELECT count(*) FROM queue").fetchone()[0]
        return count


@pytest.fixture
def shop(db: str) -> str:  # noqa: F811
    """``db`` with CAFE-500, TE-1 and AGUA-1 in the catalog and no stock."""
    with Replica.open(db) as r:
        r.catalog.put_many(
            {
                "CAFE-500": {"name": "Café 500 g", "price_cents": 450},
                "TE-1": {"name": "Té", "price_cents": 300},
                "AGUA-1": {"name": "Agua", "price_cents": 80},
            }
        )
    return db


def stock_of(path: str, *skus: str) -> list[int]:
    with Replica.open(path) as r:
        return [r.inventory.stock(sku) for sku in skus]


# -- the parser (property tests) ----------------------------------------------------

_SKU = st.text(
    st.characters(codec="cp1252", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip() == s and s != "" and s.lower() != "sku")
_ENCODINGS = ("utf-8", "utf-8-sig", "cp1252", "utf-16")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _csv_bytes(rows: list[list[str]], delimiter: str, encoding: str) -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode(encoding)


@settings(max_examples=150, deadline=None)
@given(
    stock=st.dictionaries(_SKU, st.integers(0, 10**9), max_size=15),
    delimiter=st.sampled_from([",", ";", "\t"]),
    encoding=st.sampled_from(_ENCODINGS),
)
def test_any_delimiter_and_encoding_reads_back(
    stock: dict[str, int], delimiter: str, encoding: str
) -> None:
    data = _csv_bytes(
        [["sku", "quantity"], *([k, str(v)] for k, v in stock.items())], delimiter, encoding
    )
    if encoding == "cp1252":
        # Windows-1252 bytes that are also valid UTF-8 read as UTF-8: the one ambiguity,
        # documented in decode() (Spanish text with accents is never valid UTF-8).
        assume(not _is_utf8(data))
    text, _ = decode(data, "f.csv")
    header, rows = parse_text(text, "f.csv", "stock")
    quantities, lines, errors = parse_stock("f.csv", header, rows)
    assert errors == []
    assert quantities == stock
    assert sorted(lines.values()) == list(range(2, 2 + len(stock)))


@settings(max_examples=200, deadline=None)
@given(
    cells=st.lists(
        st.tuples(st.sampled_from(["A", "B", "C", "D", "E"]), st.text(max_size=6)),
        min_size=1,
        max_size=8,
    )
)
def test_every_bad_row_is_reported_with_its_line_and_sku(cells: list[tuple[str, str]]) -> None:
    header = ["sku", "quantity"]
    rows = [(n + 2, [sku, q]) for n, (sku, q) in enumerate(cells)]
    quantities, _, errors = parse_stock("f.csv", header, rows)
    bad: dict[int, str] = {}
    seen: set[str] = set()
    for line, (sku, q) in rows:
        try:
            ok = int(q.strip()) >= 0
        except ValueError:
            ok = False
        if not ok or sku in seen:
            bad[line] = sku
        seen.add(sku)
    assert {e.line: e.sku for e in errors} == bad
    assert all(str(e).startswith(f"line {e.line} (SKU {e.sku}): ") for e in errors)
    # The rows kept are the good first occurrences; with any error nothing is imported.
    assert set(quantities) <= seen


@given(st.lists(st.sampled_from([",", ";", "\t", "a", " ", "b"]), max_size=20))
def test_sniffed_delimiter_splits_at_least_as_many_cells(chars: list[str]) -> None:
    line = "".join(chars)
    best = sniff_delimiter(line)
    cells = len(next(csv.reader([line], delimiter=best), []))
    for other in (",", ";", "\t"):
        assert cells >= len(next(csv.reader([line], delimiter=other), []))


def test_undecodable_bytes_are_refused() -> None:
    # 0x81 is undefined in Windows-1252 and not valid UTF-8 here.
    with pytest.raises(Exception, match="neither UTF-8 nor Windows-1252"):
        decode(b"sku,quantity\nA\x81,1\n", "f.csv")


# -- the command on real files ------------------------------------------------------


def test_a_bad_row_imports_nothing_and_a_rerun_does_not_double_count(
    shop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stock = tmp_path / "stock.csv"
    stock.write_text("sku,quantity\nCAFE-500,10\nTE-1,diez\nAGUA-1,3\n")
    before = queue_count(shop)
    code, _, err = run(capsys, "import", "--db", shop, "--stock", str(stock))
    assert code == 2
    assert_one_error_line(err, "nothing imported", "line 3 (SKU TE-1)", "diez")
    assert stock_of(shop, "CAFE-500", "AGUA-1") == [0, 0]
    assert queue_count(shop) == before

    stock.write_text("sku,quantity\nCAFE-500,10\nTE-1,4\nAGUA-1,3\n")
    for _ in range(3):  # the fixed file, run three times: levels, not additions
        code, out, err = run(capsys, "import", "--db", shop, "--stock", str(stock))
        assert code == 0, err
        assert stock_of(shop, "CAFE-500", "TE-1", "AGUA-1") == [10, 4, 3]
    assert "set 0 SKU(s) (+0 unit(s)), 3 already right" in out
    assert queue_count(shop) == before + 1  # one transaction, then nothing


def test_a_typo_sku_is_refused_by_name_unless_allowed(
    shop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stock = tmp_path / "stock.csv"
    stock.write_text("sku,quantity\nTE-1,4\nCAFE-5OO,10\n")
    code, _, err = run(capsys, "import", "--db", shop, "--stock", str(stock))
    assert code == 2
    assert_one_error_line(err, "line 3 (SKU CAFE-5OO)", "not in the catalog", "CAFE-500")
    assert stock_of(shop, "TE-1") == [0]
    code, _, err = run(capsys, "import", "--db", shop, "--stock", str(stock), "--allow-new")
    assert code == 0, err
    assert stock_of(shop, "TE-1", "CAFE-5OO") == [4, 10]


def test_duplicate_skus_are_refused_naming_both_lines(
    shop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stock = tmp_path / "stock.csv"
    stock.write_text("sku,quantity\nCAFE-500,10\nTE-1,1\nCAFE-500,2\n")
    code, _, err = run(capsys, "import", "--db", shop, "--stock", str(stock))
    assert code == 2
    assert_one_error_line(err, "line 4 (SKU CAFE-500): the SKU is already on line 2")
    products = tmp_path / "products.csv"
    products.write_text("sku,name,price_cents\nPAN-1,Pan,120\nPAN-1,Pan,130\n")
    code, _, err = run(capsys, "import", "--db", shop, "--catalog", str(products))
    assert code == 2
    assert_one_error_line(err, "line 3 (SKU PAN-1)", "line 2")
    assert stock_of(shop, "CAFE-500") == [0]


def test_receive_adds_and_skips_zero_rows(
    shop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    delivery = tmp_path / "delivery.csv"
    delivery.write_text("sku,quantity\nCAFE-500,6\nTE-1,0\nAGUA-1,2\n")
    code, out, err = run(capsys, "import", "--db", shop, "--stock", str(delivery), "--receive")
    assert code == 0, err
    assert "received 8 unit(s) of 2 SKU(s) at tienda-1" in out
    assert "1 row(s) of 0 skipped" in out
    assert stock_of(shop, "CAFE-500", "TE-1", "AGUA-1") == [6, 0, 2]
    # The same file again is an accident until said otherwise: refused, then --again.
    code, _, err = run(capsys, "import", "--db", shop, "--stock", str(delivery), "--receive")
    assert code == 2
    assert_one_error_line(err, "already received at tienda-1 on ", "--again")
    assert stock_of(shop, "CAFE-500", "TE-1", "AGUA-1") == [6, 0, 2]
    code, out, err = run(
        capsys, "import", "--db", shop, "--stock", str(delivery), "--receive", "--again"
    )
    assert code == 0, err
    assert stock_of(shop, "CAFE-500", "TE-1", "AGUA-1") == [12, 0, 4]
    delivery.write_text("sku,quantity\nCAFE-500,6\nAGUA-1,2\n")  # another file: no question
    code, out, err = run(capsys, "import", "--db", shop, "--stock", str(delivery), "--receive")
    assert code == 0, err
    assert stock_of(shop, "CAFE-500", "AGUA-1") == [18, 6]
    with Replica.open(shop) as r:
        receipts = r.queue.list(kind="receive")
    assert len(receipts) == 3 and all("sha256:" in e.summary for e in receipts)
    code, _, err = run(capsys, "import", "--db", shop, "--stock", str(delivery), "--again")
    assert code == 2
    assert_one_error_line(err, "--again applies to --receive")


def test_dry_run_reports_and_writes_nothing(
    shop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Replica.open(shop) as r:
        r.inventory.receive("CAFE-500", 5)
    products = tmp_path / "products.csv"
    products.write_text("sku,name,price_cents\nCAFE-500,Café 500 g,475\nPAN-1,Pan,120\n")
    stock = tmp_path / "stock.csv"
    stock.write_text("sku,quantity\nCAFE-500,7\nPAN-1,3\nTE-1,0\n")
    before = queue_count(shop)
    code, out, err = run(
        capsys, "import", "--db", shop, "--catalog", str(products), "--stock", str(stock),
        "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert "would import" in out and "1 new product(s), 1 changed, 0 unchanged" in out
    assert "change CAFE-500: {'price_cents': 475}" in out
    assert "CAFE-500: 5 -> 7" in out and "PAN-1: 0 -> 3" in out
    assert "dry run: nothing was written" in out
    assert queue_count(shop) == before
    with Replica.open(shop) as r:
        assert r.catalog.get("PAN-1") is None
        assert r.catalog.get("CAFE-500") == {"name": "Café 500 g", "price_cents": 450}


def test_a_bad_stock_file_keeps_the_catalog_file_out_too(
    shop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    products = tmp_path / "products.csv"
    products.write_text("sku,name,price_cents\nPAN-1,Pan,120\n")
    stock = tmp_path / "stock.csv"
    stock.write_text("sku,quantity\nPAN-1,3\nPAN-2,-1\n")
    code, _, err = run(
        capsys, "import", "--db", shop, "--catalog", str(products), "--stock", str(stock)
    )
    assert code == 2
    assert_one_error_line(err, "line 3 (SKU PAN-2)", "negative")
    with Replica.open(shop) as r:
        assert r.catalog.get("PAN-1") is None
    stock.write_text("sku,quantity\nPAN-1,3\n")  # PAN-1 is known from the catalog file
    code, out, err = run(
        capsys, "import", "--db", shop, "--catalog", str(products), "--stock", str(stock)
    )
    assert code == 0, err
    assert "1 new product(s)" in out
    assert stock_of(shop, "PAN-1") == [3]
    code, out, _ = run(capsys, "import", "--db", shop, "--catalog", str(products))
    assert "0 new product(s), 0 changed, 1 unchanged" in out


@pytest.mark.parametrize("encoding", ["cp1252", "utf-8-sig", "utf-8", "utf-16"])
def test_spanish_excel_files(
    shop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], encoding: str
) -> None:
    products = tmp_path / "productos.csv"
    products.write_bytes(
        "sku;name;price_cents;brand\r\nLECHE-1L;Leche entera 1 l;95;Pascual\r\n"
        "AÑIL-1;Añil, 50 g;120;\r\n".encode(encoding)
    )
    assert products.read_bytes().startswith(codecs.BOM_UTF8) == (encoding == "utf-8-sig")
    code, out, err = run(capsys, "import", "--db", shop, "--catalog", str(products))
    assert code == 0, err
    assert "2 new product(s)" in out
    with Replica.open(shop) as r:
        assert r.catalog.get("AÑIL-1") == {"name": "Añil, 50 g", "price_cents": 120}
        assert r.catalog.get("LECHE-1L") == {
            "name": "Leche entera 1 l",
            "price_cents": 95,
            "brand": "Pascual",
        }


def test_header_and_file_errors(
    shop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        ("sku,name\nX,Y\n", "catalog", "missing column(s) price_cents"),
        ("sku,name,price_cents\nX,Y,1,extra\n", "catalog", "line 2 (SKU X)"),
        ("sku,name,price_cents\nX,,1\n", "catalog", "line 2 (SKU X): name is empty"),
        ("sku,name,price_cents\nX,Y,-5\n", "catalog", "line 2"),
        ("sku,quantity\nTE-1,1.5\n", "stock", "line 2 (SKU TE-1)"),
        ("sku,qty\nA,1\n", "stock", "line 1"),
        ("", "stock", "empty"),
    ]
    for i, (text, kind, needle) in enumerate(cases):
        f = tmp_path / f"case{i}.csv"
        f.write_text(text)
        code, _, err = run(capsys, "import", "--db", shop, f"--{kind}", str(f))
        assert code == 2, text
        assert_one_error_line(err, needle)
    many = tmp_path / "many.csv"
    many.write_text("sku,quantity\n" + "".join(f"TE-1,x{n}\n" for n in range(9)))
    code, _, err = run(capsys, "import", "--db", shop, "--stock", str(many), "--progress")
    assert code == 2
    assert "[" in err and "%" in err  # --progress draws a bar even without a terminal
    error = [ln for ln in err.splitlines() if ln.startswith("tiendasync: error:")]
    assert len(error) == 1 and "9 bad row(s)" in error[0] and "and 4 more" in error[0]
    code, _, err = run(capsys, "import", "--db", shop, "--catalog", str(tmp_path / "none.csv"))
    assert code == 2
    assert_one_error_line(err, "none.csv")
    code, _, err = run(
        capsys, "import", "--db", shop, "--stock", str(many), "--location", "nowhere"
    )
    assert code == 2
    assert_one_error_line(err, "nowhere")
    code, _, err = run(capsys, "import", "--db", shop, "--catalog", str(many), "--receive")
    assert code == 2
    assert_one_error_line(err, "--receive")
