"""Fixtures shared by the whole suite (helpers live in :mod:`tests.support`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.asuser import restricted_dir
from tests.support.postgres import PgMissing, PgServer
from tiendasync import Replica


@pytest.fixture(name="restricted_dir")
def _restricted_dir() -> Iterator[Path]:
    """A directory a restricted child process can enter (see tests/support/asuser.py)."""
    with restricted_dir() as path:
        yield path


@pytest.fixture
def open_replica(tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    """Factory: ``open_replica("a", location="tienda-1")`` -> an open Replica.

    Databases live in ``tmp_path``; every replica opened through the factory
    is closed at the end of the test.
    """
    opened: list[Replica] = []
    counter = itertools.count()

    def factory(name: str | None = None, **kwargs: Any) -> Replica:
        name = name or f"r{next(counter)}"
        kwargs.setdefault("tenant", "acme")
        kwargs.setdefault("replica_id", name)
        kwargs.setdefault("location", name)
        path = kwargs.pop("path", tmp_path / f"{name}.db")
        replica = Replica.open(path, **kwargs)
        opened.append(replica)
        return replica

    yield factory
    for replica in opened:
        replica.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server for the session (tests/support/postgres.py).

    Without PostgreSQL's server binaries the tests that need it fail, naming
    the install command: they never skip.
    """
    try:
        server = PgServer()
    except PgMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a new, empty database on :func:`pg_server`."""
    return pg_server.new_database()
