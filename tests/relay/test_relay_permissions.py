"""A relay that may not write its database or directory refuses to start, by name.

Before, a relay started as a user who could not write ``relay.db`` listened
"ok" and lost every update it acknowledged nothing of.  Run as ``nobody``
when the tests run as root (see :mod:`tests.support.asuser`).
"""

from __future__ import annotations

from pathlib import Path

from tests.support.asuser import make_read_only, make_writable, run_restricted
from tiendasync.relay import SqliteRelayStore
from tiendasync.relay.auth import issue_token

RELAY = (
    "import sys\nfrom tiendasync.cli import main\n"
    "sys.exit(main(['relay', '--db', {db!r}, '--port', '0']))\n"
)


def _refused(db: Path) -> str:
    result = run_restricted(RELAY.format(db=str(db)), timeout=30)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "listening" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("tiendasync: error: "), result.stderr
    return lines[0]


def test_an_unwritable_relay_db_is_refused(restricted_dir: Path) -> None:
    db = restricted_dir / "relay.db"
    with SqliteRelayStore(str(db)) as store:
        issue_token(store, tenant="acme", replica_id="t1")
    (restricted_dir / "relay.db.central").mkdir()
    before = sorted(p.name for p in restricted_dir.iterdir())
    make_read_only(restricted_dir, *restricted_dir.iterdir())
    line = _refused(db)
    assert f"cannot write {db}" in line and "uid " in line, line
    assert sorted(p.name for p in restricted_dir.iterdir()) == before


def test_an_unwritable_directory_is_refused_before_any_file(restricted_dir: Path) -> None:
    make_read_only(restricted_dir)
    line = _refused(restricted_dir / "relay.db")
    assert f"cannot create {restricted_dir / 'relay.db'}" in line, line
    assert list(restricted_dir.iterdir()) == []


def test_an_unwritable_central_directory_is_refused(restricted_dir: Path) -> None:
    (restricted_dir / "relay.db.central").mkdir()
    make_writable(restricted_dir)
    make_read_only(restricted_dir / "relay.db.central")
    line = _refused(restricted_dir / "relay.db")
    assert "central writers" in line and "relay.db.central" in line, line


def test_a_missing_directory_says_to_create_it(restricted_dir: Path) -> None:
    result = run_restricted(RELAY.format(db=str(restricted_dir / "nope" / "relay.db")), timeout=30)
    assert result.returncode == 1, result.stderr
    assert "does not exist: create it" in result.stderr, result.stderr
    assert list(restricted_dir.iterdir()) == []
