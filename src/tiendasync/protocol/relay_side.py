"""The relay's side of the sync protocol (sans I/O).

States (:class:`RelayState`): ``new`` --HELLO--> ``authenticating``
--accept()--> ``open`` (--reject()/ERROR/BYE--> ``closed``); the rows for
``Role.RELAY`` in :mod:`tiendasync.protocol.transitions` are the whole
conversation.  Authentication, storage and fan-out are the I/O layer's
business; this class only enforces the conversation.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tiendasync.protocol.codes import MAX_WELCOME_SV_BYTES, PROTOCOL_VERSION, FrameType
from tiendasync.protocol.connection import Connection
from tiendasync.protocol.frames import (
    AckFrame,
    GenerationsFrame,
    NextUpdateFrame,
    SyncedFrame,
    SyncNowFrame,
    UpdateFrame,
    WelcomeFrame,
    fit_state_vectors,
)
from tiendasync.protocol.transitions import RelayState, Role

__all__ = ["RelayConnection"]


class RelayConnection(Connection):
    """Drive one replica's connection on the relay."""

    ROLE: ClassVar[Role] = Role.RELAY

    state: RelayState

    def accept(
        self, session_id: str, state_vectors: dict[str, bytes], config: dict[str, Any] | None
    ) -> None:
        """Welcome an authenticated replica with the relay's state vectors.

        At most :data:`~tiendasync.protocol.codes.MAX_DOCS_PER_HELLO` documents
        and :data:`~tiendasync.protocol.codes.MAX_WELCOME_SV_BYTES` bytes of them
        are sent (the first ones, in the map's order), so that the WELCOME
        always fits the replica's decoder; the replica re-sends its own writes
        of a document left out.
        """
        svs = fit_state_vectors(state_vectors, MAX_WELCOME_SV_BYTES)
        self._send(WelcomeFrame(PROTOCOL_VERSION, session_id, svs, config))

    def reject(self, code: int, reason: str) -> None:
        """Refuse the HELLO (bad token, forbidden tenant...)."""
        self.fail(code, reason, remote=False)

    def send_update(self, doc: str, data: bytes) -> None:
        next_state = self._next_state_for_send(FrameType.UPDATE)
        self._send(UpdateFrame(self._doc_out(doc), data), next_state)

    def ack(self, doc: str, client_id: int, clock: int) -> None:
        """Tell the replica that ``doc`` is durably stored up to ``clock``."""
        next_state = self._next_state_for_send(FrameType.ACK)
        self._send(AckFrame(self._doc_out(doc), client_id, clock), next_state)

    def synced(self) -> None:
        """Every catch-up diff of this session has been sent."""
        self._send(SyncedFrame())

    def announce_generations(self, generations: dict[str, int]) -> None:
        """Tell the replica each document's generation past 0 (only to a replica whose
        HELLO told its own: an older one does not know the frame)."""
        self._send(GenerationsFrame(dict(generations)))

    def send_next(self, doc: str, generation: int, data: bytes) -> None:
        """An update of ``generation`` of ``doc``, to a replica holding the one before."""
        next_state = self._next_state_for_send(FrameType.NEXT_UPDATE)
        self._send(NextUpdateFrame(self._doc_out(doc), generation, data), next_state)

    def request_sync(self, full: bool = False) -> None:
        self._send(SyncNowFrame(full))
