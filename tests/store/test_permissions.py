"""A store file this user may not write: a typed error naming the user, the path and the fix.

Runs the scenario as a user without write access (``nobody`` when the tests
run as root, as CI does; the current user with the write bits removed
otherwise: see :mod:`tests.support.asuser`).  Nothing is created and nothing
is half-written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.asuser import make_read_only, make_writable, run_restricted
from tiendasync import Replica

OPEN = """
from tiendasync import Replica, StoragePermissionError
try:
    Replica.open({path!r}, tenant="acme", replica_id="t1", location="s")
except StoragePermissionError as exc:
    assert isinstance(exc, PermissionError)
    print("REFUSED", exc)
else:
    print("OPENED")
"""


def _replica(directory: Path) -> Path:
    path = directory / "store.db"
    with Replica.open(path, tenant="acme", replica_id="t1", location="s") as r:
        r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
        r.record_sale([("CAFE", 1)])
    return path


def _refused(snippet: str) -> str:
    result = run_restricted(snippet)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("REFUSED "), result.stdout + result.stderr
    return result.stdout.removeprefix("REFUSED ").strip()


def test_an_unwritable_replica_file_is_refused_by_name(restricted_dir: Path) -> None:
    path = _replica(restricted_dir)
    before = sorted(p.name for p in restricted_dir.iterdir())
    make_read_only(restricted_dir, *restricted_dir.iterdir())
    message = _refused(OPEN.format(path=str(path)))
    assert f"cannot write {path}" in message and "write access" in message, message
    assert "uid " in message  # names the user
    assert sorted(p.name for p in restricted_dir.iterdir()) == before  # nothing created


def test_a_writable_file_in_an_unwritable_directory_names_the_wal(restricted_dir: Path) -> None:
    path = _replica(restricted_dir)
    for extra in restricted_dir.glob("store.db-*"):
        extra.unlink()
    make_writable(path)
    make_read_only(restricted_dir)
    message = _refused(OPEN.format(path=str(path)))
    assert "store.db-wal" in message and f"write access to {restricted_dir}" in message, message


def test_creating_a_replica_in_an_unwritable_directory_leaves_nothing(restricted_dir: Path) -> None:
    make_read_only(restricted_dir)
    path = restricted_dir / "new.db"
    message = _refused(OPEN.format(path=str(path)))
    assert f"cannot create {path}" in message, message
    assert list(restricted_dir.iterdir()) == []


def test_a_missing_directory_says_to_create_it(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "store.db"
    with pytest.raises(PermissionError, match="does not exist: create it"):
        Replica.open(path, tenant="acme", replica_id="t1", location="s")
    assert not (tmp_path / "no").exists()


def test_the_cli_says_it_in_one_line(restricted_dir: Path) -> None:
    path = _replica(restricted_dir)
    make_read_only(restricted_dir, *restricted_dir.iterdir())
    result = run_restricted(
        "import sys\nfrom tiendasync.cli import main\n"
        f"sys.exit(main(['config', 'set', '--db', {str(path)!r}, 'interval_s=10']))\n"
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("tiendasync: error: "), result.stderr
    assert "write access" in lines[0], lines[0]


def test_reading_an_unwritable_replica_works_or_names_the_shm(restricted_dir: Path) -> None:
    """A read-only open (``status``) needs the ``-shm`` file SQLite keeps beside a WAL
    database: it reads, or it says exactly that."""
    path = _replica(restricted_dir)
    make_read_only(restricted_dir, *restricted_dir.iterdir())
    result = run_restricted(
        "from tiendasync import Replica, StoragePermissionError\n"
        "try:\n"
        f"    with Replica.open({str(path)!r}, read_only=True) as r:\n"
        "        print('READ', r.sales.count())\n"
        "except StoragePermissionError as exc:\n"
        "    print('REFUSED', exc)\n"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip()
    assert out == "READ 1" or (out.startswith("REFUSED") and "store.db-shm" in out), out
