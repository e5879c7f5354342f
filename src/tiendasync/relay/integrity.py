"""The relay's start-up check: every state vector it will announce can be served.

The relay announces the stored ``docs.state_vector`` of each document in its
WELCOME, and serves the document rebuilt from its snapshot and update log.
:func:`verify_store` rebuilds every stored document and compares.  A stored
update that cannot be applied (a garbage row) is quarantined
(:class:`~tiendasync.errors.CorruptData`, logged loudly, its bytes kept in
the ``quarantine`` table), and a state vector that claims more than the log
rebuilds is replaced by what the log does rebuild: the relay never starts
"ok" while announcing items it cannot serve.  Blocking storage I/O: the
server runs it in a worker thread before it listens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.relay.docs import replay
from tiendasync.relay.storage import RelayStore

__all__ = ["VerifyReport", "verify_store"]

log = logging.getLogger("tiendasync.relay.integrity")


@dataclass
class VerifyReport:
    """What :func:`verify_store` found (and repaired)."""

    docs: int = 0
    #: ``(tenant, doc, seq)`` of each stored update quarantined (seq 0: a snapshot)
    quarantined: list[tuple[str, str, int]] = field(default_factory=list)
    #: ``(tenant, doc)`` whose stored state vector claimed what the log lacks
    overclaimed: list[tuple[str, str]] = field(default_factory=list)
    #: ``(tenant, doc)`` whose stored state vector was rewritten
    repaired: list[tuple[str, str]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.repaired


def _claims_more(stored: dict[int, int], rebuilt: dict[int, int]) -> bool:
    return any(clock > rebuilt.get(client, 0) for client, clock in stored.items())


def verify_store(store: RelayStore, *, repair_underclaims: bool = True) -> VerifyReport:
    """Rebuild every stored document; quarantine garbage and fix state vectors.

    ``repair_underclaims=False`` (a relay cluster: other nodes write meanwhile) leaves a
    stored state vector that claims *less* than the log rebuilds as it is: a commit
    between the two reads looks like one, and rewriting it could undo that commit's."""
    report = VerifyReport()
    for (tenant, doc), stored_sv in store.all_state_vectors().items():
        report.docs += 1
        rebuilt, bad = replay(store.load_doc(tenant, doc), tenant, doc, origin="verify")
        sv = bytes(rebuilt.get_state())
        try:
            stored = decode_state_vector(stored_sv)
        except ValueError:
            stored = {-1: 1}  # undecodable: rewrite it
        rebuilt_clocks = decode_state_vector(sv)
        if not bad and stored == rebuilt_clocks:
            continue
        if not bad and not repair_underclaims and not _claims_more(stored, rebuilt_clocks):
            continue
        if _claims_more(stored, rebuilt_clocks):
            report.overclaimed.append((tenant, doc))
            log.error(
                "CORRUPT relay data %s/%s: the stored state vector claims updates its log "
                "cannot rebuild; announcing only what it can serve",
                tenant,
                doc,
            )
        store.repair_doc(tenant, doc, sv, [(seq, str(exc)) for seq, exc in bad])
        report.quarantined.extend((tenant, doc, seq) for seq, _ in bad)
        report.repaired.append((tenant, doc))
    if report.clean:
        log.info("relay database verified: %d documents", report.docs)
    else:
        log.error(
            "relay database verified: %d documents, %d repaired, %d stored updates quarantined",
            report.docs,
            len(report.repaired),
            len(report.quarantined),
        )
    return report
