"""A relay that may not write its database or directory refuses to start, by name.

Before, a relay started as a user who could not write ``relay.db`` listened
"ok" and lost every update it acknowledged nothing of.  Run as ``nobody``
when the tests run as root (see :mod:`tests.support.asuser`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.asuser import make_read_only, make_writable, run_restricted, shared_tmp
from tiendasync.relay import SqliteRelayStore
from tiendasync.relay.auth import issue_token

RELAY = (
    "import sys\nfrom tiendasync.cli import main\n"
    "sys.exit(main(['relay', '--db', {db!r}, '--port', '0']))\n"
)


@pytest.fixture
def shared() -> Iterator[Path]:
    path = shared_tmp()
    yield path
    make_writable(path, *path.rglob("*"))
    shutil.rmtree(path)


def _refused(db: Path) -> str:
    result = run_restricted(RELAY.format(db=str(db)), timeout=30)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "listening" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("tiendasync: error: "), result.stderr
    return lines[0]


def test_an_unwritable_relay_db_is_refused(shared: Path) -> None:
    db = shared / "relay.db"
    with SqliteRelayStore(str(db)) as store:
        issue_token(store, tenant="acme", replica_id="t1")
    (shared / "relay.db.central").mkdir()
    before = sorted(p.name for p in shared.iterdir())
    make_read_only(shared, *shared.iterdir())
    line = _refused(db)
    assert f"cannot write {db}" in line and "uid " in line, line
    assert sorted(p.name for p in shared.iterdir()) == before


def test_an_unwritable_directory_is_refused_before_any_file(shared: Path) -> None:
    make_read_only(shared)
    line = _refused(shared / "relay.db")
    assert f"cannot create {shared / 'relay.db'}" in line, line
    assert list(shared.iterdir()) == []


def test_an_unwritable_central_directory_is_refused(shared: Path) -> None:
    (shared / "relay.db.central").mkdir()
    make_writable(shared)
    make_read_only(shared / "relay.db.central")
    line = _refused(shared / "relay.db")
    assert "central writers" in line and "relay.db.central" in line, line


def test_a_missing_directory_says_to_create_it(shared: Path) -> None:
    result = run_restricted(RELAY.format(db=str(shared / "nope" / "relay.db")), timeout=30)
    assert result.returncode == 1, result.stderr
    assert "does not exist: create it" in result.stderr, result.stderr
    assert list(shared.iterdir()) == []
