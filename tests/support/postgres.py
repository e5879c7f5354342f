"""A throwaway PostgreSQL server for the tests: initdb into a temp dir, pg_ctl start.

The server listens on a unix socket in its own temp directory only (no TCP
port to collide with another run), trusts local connections, and skips
fsync (the tests check the relay's transactions, not the disk's).  As root
(CI), the server runs as the ``postgres`` user (PostgreSQL refuses root),
else as the current user.  Each test gets a database of its own
(:meth:`PgServer.new_database`).

The binaries come from ``TIENDASYNC_PG_BINDIR`` (only there, when set), else the newest Debian
``/usr/lib/postgresql/N/bin``, else ``pg_config --bindir``.  When there are
none, :func:`find_bindir` raises :class:`PgMissing` with the install command:
the tests using the server fail, they never skip.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

__all__ = ["PgMissing", "PgServer", "find_bindir"]

ROOT = os.getuid() == 0


class PgMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    if env := os.environ.get("TIENDASYNC_PG_BINDIR"):
        candidates = [Path(env)]  # only there, as scripts/prereqs.sh looks
    else:
        candidates = _default_bindirs()
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise PgMissing(
        "the PostgreSQL store tests need a PostgreSQL server (initdb, pg_ctl, postgres), "
        f"found none (looked in {', '.join(map(str, candidates)) or 'no directory'}). "
        "Run scripts/prereqs.sh (as root, or: sudo apt-get install -y postgresql), "
        "or set TIENDASYNC_PG_BINDIR"
    )


def _default_bindirs() -> list[Path]:
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates = list(debian)
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    return candidates


class PgServer:
    """A running throwaway server; :meth:`stop` removes it and its files."""

    def __init__(self, *, durable: bool = False) -> None:
        """``durable``: fsync as a production server does (benchmarks); the tests skip it."""
        self.bindir = find_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="tiendasync-pg-"))
        self.user: str | None = None
        if ROOT:
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)  # Debian's package creates it
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self.data = self.base / "data"
        self.socket_dir = str(self.base)
        self._names = itertools.count(1)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            )
            options = f"-k {self.socket_dir} -c listen_addresses=''"
            if not durable:
                options += " -c fsync=off"
            self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.base / "server.log"),
                "-w",
                "-t",
                "30",
                "start",
            )
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise

    def _run(self, tool: str, *args: str) -> None:
        proc = subprocess.run(
            [str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            check=False,
            user=self.user,
            cwd=self.base,
        )
        if proc.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr}{tail}")

    def url(self, dbname: str = "postgres") -> str:
        """A ``postgresql://`` URL of ``dbname`` over the server's unix socket."""
        return f"postgresql://postgres@/{dbname}?host={urllib.parse.quote(self.socket_dir)}"

    def new_database(self) -> str:
        """Create an empty database; its URL."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # the name is ours: t + a number
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (one :meth:`new_database` made), connections and all."""
        import psycopg

        name = urllib.parse.urlsplit(url).path.lstrip("/")
        if not name.startswith("t") or not name[1:].isdigit():
            raise ValueError(f"not a database of this server's: {name!r}")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
