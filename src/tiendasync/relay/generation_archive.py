"""Archiving past generations out of the store of record (docs/generations.md).

Every rollover keeps the generation it cut (its whole state, and the late
updates logged to it since) so that a till offline across it can still be
carried.  Kept for ever, those cuts grow the store of record by a document's
size per rollover.  ``tiendasync relay archive-generations`` moves the old
ones to a file and drops them; ``restore-generations`` puts them back (a
till that comes back holding an archived generation is refused, keeping its
queue, until then).

* :func:`archivable` decides which (sans I/O): cut longer than the window
  ago, and never the one just before the current generation;
* :func:`archive_generations` writes them to a file (made durable before
  anything is dropped) and drops each one that got no late update meanwhile;
* :func:`read_archive` reads such a file back, checking every field and
  checksum (a file on disk is untrusted input); :func:`restore_generations`
  puts what it holds back.

The file: msgpack, a header map then one map per generation, each byte
string with its CRC-32 (:func:`tiendasync.relay.schema.checksum_of`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from tiendasync.errors import InvalidArgument, StorageError
from tiendasync.relay.records import PastGeneration
from tiendasync.relay.schema import checksum_of
from tiendasync.relay.storage import RelayStore

__all__ = [
    "ARCHIVE_FORMAT",
    "ArchiveReport",
    "ArchivedGeneration",
    "archivable",
    "archive_generations",
    "read_archive",
    "restore_generations",
]

#: The header's ``format``; :data:`ARCHIVE_VERSION` its ``version``.
ARCHIVE_FORMAT = "tiendasync.generations"
ARCHIVE_VERSION = 1
#: Bounds of what :func:`read_archive` accepts of one entry (a cut is a whole document).
MAX_ENTRY_BYTES = 1 << 30
MAX_LATE_UPDATES = 10_000_000


@dataclass(frozen=True)
class ArchivedGeneration:
    """One past generation as archived: its cut and its late updates, in order."""

    tenant: str
    doc: str
    generation: int
    cut_at: float
    cut: bytes
    late: tuple[tuple[bytes, str | None, float], ...]


@dataclass
class ArchiveReport:
    """What :func:`archive_generations` or :func:`restore_generations` did."""

    #: ``(doc, generation)`` archived and dropped (or restored)
    done: list[tuple[str, int]] = field(default_factory=list)
    #: ``(doc, generation, why)`` left as they were
    kept: list[tuple[str, int, str]] = field(default_factory=list)


def archivable(
    past: Sequence[PastGeneration],
    current: Mapping[str, int],
    *,
    now: float,
    older_than_s: float,
) -> list[PastGeneration]:
    """The past generations to archive: cut more than ``older_than_s`` seconds before
    ``now``, and not the one just before their document's ``current`` generation
    (stores move from that one as they reconnect)."""
    if not older_than_s >= 0:
        raise InvalidArgument(f"the window must be 0 s or more, got {older_than_s!r}")
    return [
        p
        for p in past
        if p.cut_at <= now - older_than_s and p.generation < current.get(p.doc, 0) - 1
    ]


def archive_generations(
    store: RelayStore, tenant: str, path: Path, *, older_than_s: float, now: float | None = None
) -> ArchiveReport:
    """Write the tenant's :func:`archivable` generations to ``path`` (a new file, made
    durable first), then drop each from ``store``.  One that got a late update
    after it was read, or whose stored bytes are damaged, stays in the store
    (named in :attr:`ArchiveReport.kept`; a damaged one is not archived).  Nothing
    is written when nothing is archivable."""
    if path.exists():
        raise InvalidArgument(f"{path} exists: archive to a new file")
    now = time.time() if now is None else now
    chosen = archivable(
        store.past_generations(tenant),
        store.generations(tenant),
        now=now,
        older_than_s=older_than_s,
    )
    report = ArchiveReport()
    entries: list[tuple[ArchivedGeneration, int]] = []
    for p in chosen:
        history = store.load_generation(tenant, p.doc, p.generation)
        if history.damaged or history.snapshot is None:
            report.kept.append((p.doc, p.generation, "damaged rows: kept in the store"))
            continue
        senders = store.late_update_senders(tenant, p.doc, p.generation)
        late = tuple((data, *senders.get(seq, (None, p.cut_at))) for seq, data in history.updates)
        entries.append(
            (
                ArchivedGeneration(tenant, p.doc, p.generation, p.cut_at, history.snapshot, late),
                history.last_seq,
            )
        )
    if not entries:
        return report
    _write_durably(path, [e for e, _ in entries], now)
    for entry, upto_seq in entries:
        if store.drop_generation(tenant, entry.doc, entry.generation, upto_seq=upto_seq):
            report.done.append((entry.doc, entry.generation))
        else:
            report.kept.append((entry.doc, entry.generation, "late updates since: archive again"))
    return report


def _write_durably(path: Path, entries: Sequence[ArchivedGeneration], now: float) -> None:
    """Write ``entries`` beside ``path``, fsync, then link the file into place (a link
    never replaces an existing file) and fsync the directory."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("xb") as out:
            out.write(msgpack.packb(_header(entries[0].tenant, now, len(entries))))
            for entry in entries:
                out.write(msgpack.packb(_entry_map(entry)))
            out.flush()
            os.fsync(out.fileno())
    except FileExistsError as exc:
        raise StorageError(f"{partial} exists: another archive run, or a stale one") from exc
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise StorageError(f"cannot write the archive {path}: {exc}") from exc
    try:
        os.link(partial, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except FileExistsError as exc:
        raise InvalidArgument(f"{path} exists: archive to a new file") from exc
    except OSError as exc:
        raise StorageError(f"cannot write the archive {path}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def _header(tenant: str, now: float, count: int) -> dict[str, Any]:
    return {
        "format": ARCHIVE_FORMAT,
        "version": ARCHIVE_VERSION,
        "tenant": tenant,
        "at": now,
        "count": count,
    }


def _entry_map(entry: ArchivedGeneration) -> dict[str, Any]:
    return {
        "doc": entry.doc,
        "generation": entry.generation,
        "cut_at": entry.cut_at,
        "cut": entry.cut,
        "cut_crc": checksum_of(entry.cut),
        "late": [[d, r, at, checksum_of(d)] for d, r, at in entry.late],
    }


def read_archive(path: Path) -> Iterator[ArchivedGeneration]:
    """The generations an archive file holds, in order.  Raises
    :class:`InvalidArgument` naming what is wrong (not an archive, a newer
    version, a field of the wrong type, a checksum that fails, a cut-off file)."""
    try:
        with path.open("rb") as source:
            yield from _read(source, path)
    except OSError as exc:
        raise StorageError(f"cannot read the archive {path}: {exc}") from exc


def _read(source: BinaryIO, path: Path) -> Iterator[ArchivedGeneration]:
    unpacker = msgpack.Unpacker(
        source, raw=False, max_buffer_size=MAX_ENTRY_BYTES, strict_map_key=True
    )
    try:
        header = next(unpacker, None)
        tenant, count = _check_header(header, path)
        seen, end = 0, unpacker.tell()
        for item in unpacker:
            seen, end = seen + 1, unpacker.tell()
            if seen > count:
                raise InvalidArgument(f"{path}: more entries than its header's {count}")
            yield _check_entry(item, tenant, path, seen)
    except (ValueError, msgpack.UnpackException) as exc:
        if isinstance(exc, InvalidArgument):
            raise
        raise InvalidArgument(f"{path}: not a readable archive ({exc})") from exc
    if seen != count:
        raise InvalidArgument(f"{path}: {seen} entries of its header's {count}: cut off")
    if end != os.fstat(source.fileno()).st_size:
        raise InvalidArgument(f"{path}: bytes after its last entry")


def _check_header(header: Any, path: Path) -> tuple[str, int]:
    if not isinstance(header, dict) or header.get("format") != ARCHIVE_FORMAT:
        raise InvalidArgument(f"{path} is not a tiendasync generations archive")
    if header.get("version") != ARCHIVE_VERSION:
        raise InvalidArgument(
            f"{path}: archive version {header.get('version')!r}; this tiendasync reads "
            f"{ARCHIVE_VERSION}"
        )
    tenant, count = header.get("tenant"), header.get("count")
    if not isinstance(tenant, str) or not tenant:
        raise InvalidArgument(f"{path}: its header names no tenant")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise InvalidArgument(f"{path}: its header's entry count is not a count")
    return tenant, count


def _check_entry(item: Any, tenant: str, path: Path, n: int) -> ArchivedGeneration:
    where = f"{path}, entry {n}"
    if not isinstance(item, dict):
        raise InvalidArgument(f"{where}: not a map")
    doc, generation, cut_at = item.get("doc"), item.get("generation"), item.get("cut_at")
    cut, late = item.get("cut"), item.get("late")
    if not isinstance(doc, str) or not 0 < len(doc) <= 512:
        raise InvalidArgument(f"{where}: 'doc' is not a document name")
    if (
        not isinstance(generation, int)
        or isinstance(generation, bool)
        or not 0 <= generation < 2**62
    ):
        raise InvalidArgument(f"{where}: 'generation' is not a generation")
    if not isinstance(cut_at, (int, float)) or isinstance(cut_at, bool):
        raise InvalidArgument(f"{where}: 'cut_at' is not a time")
    if not isinstance(cut, bytes) or checksum_of(cut) != item.get("cut_crc"):
        raise InvalidArgument(f"{where}: the cut's bytes do not match their checksum")
    if not isinstance(late, list) or len(late) > MAX_LATE_UPDATES:
        raise InvalidArgument(f"{where}: 'late' is not a list of late updates")
    rows: list[tuple[bytes, str | None, float]] = []
    for i, row in enumerate(late):
        if not (isinstance(row, list) and len(row) == 4):
            raise InvalidArgument(f"{where}: late update {i} is not [data, replica, at, crc]")
        data, replica, at, crc = row
        if not isinstance(data, bytes) or checksum_of(data) != crc:
            raise InvalidArgument(f"{where}: late update {i}'s bytes do not match their checksum")
        if replica is not None and not isinstance(replica, str):
            raise InvalidArgument(f"{where}: late update {i}'s replica is not a name")
        if not isinstance(at, (int, float)) or isinstance(at, bool):
            raise InvalidArgument(f"{where}: late update {i}'s time is not a time")
        rows.append((data, replica, float(at)))
    return ArchivedGeneration(tenant, doc, generation, float(cut_at), cut, tuple(rows))


def restore_generations(store: RelayStore, path: Path) -> ArchiveReport:
    """Put back every generation ``path`` holds that the store no longer keeps.  The
    whole file is read and checked first: a damaged archive restores nothing."""
    entries = list(read_archive(path))
    report = ArchiveReport()
    for entry in entries:
        if store.restore_generation(
            entry.tenant,
            entry.doc,
            entry.generation,
            cut=entry.cut,
            cut_at=entry.cut_at,
            late=entry.late,
        ):
            report.done.append((entry.doc, entry.generation))
        else:
            report.kept.append((entry.doc, entry.generation, "already kept by the store"))
    return report
