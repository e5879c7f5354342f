"""The relay's side of the sync protocol (sans I/O).

States: ``new`` --HELLO--> ``authenticating`` --accept()--> ``open``
(--reject()/ERROR/BYE--> ``closed``).  Authentication, storage and fan-out
are the I/O layer's business; this class only enforces the conversation.
"""

from __future__ import annotations

from typing import Any

from tiendasync.protocol.connection import Connection
from tiendasync.protocol.events import Hello, UpdateReceived
from tiendasync.protocol.frames import CLOSE_VERSION, PROTOCOL_VERSION, FrameType

__all__ = ["RelayConnection"]


class RelayConnection(Connection):
    """Drive one replica's connection on the relay."""

    def accept(
        self, session_id: str, state_vectors: dict[str, bytes], config: dict[str, Any] | None
    ) -> None:
        """Welcome an authenticated replica with the relay's state vectors."""
        self._require("authenticating")
        self._send(FrameType.WELCOME, PROTOCOL_VERSION, session_id, state_vectors, config)
        self.state = "open"

    def reject(self, code: int, reason: str) -> None:
        """Refuse the HELLO (bad token, forbidden tenant...)."""
        self.fail(code, reason, remote=False)

    def send_update(self, doc: str, data: bytes) -> None:
        self._require("open")
        self._send(FrameType.UPDATE, self._doc_out(doc), data)

    def ack(self, doc: str, client_id: int, clock: int) -> None:
        """Tell the replica that ``doc`` is durably stored up to ``clock``."""
        self._require("open")
        self._send(FrameType.ACK, self._doc_out(doc), client_id, clock)

    def synced(self) -> None:
        """Every catch-up diff of this session has been sent."""
        self._require("open")
        self._send(FrameType.SYNCED)

    def request_sync(self, full: bool = False) -> None:
        self._require("open")
        self._send(FrameType.SYNC_NOW, full)

    def _handle(self, frame_type: FrameType, fields: list[Any]) -> None:
        if frame_type is FrameType.HELLO and self.state == "new":
            version, tenant, replica_id, token, client_id, svs, flags = fields
            if version != PROTOCOL_VERSION:
                self.fail(
                    CLOSE_VERSION,
                    f"protocol {version} not supported; relay speaks {PROTOCOL_VERSION}",
                )
                return
            self.state = "authenticating"
            self._events.append(
                Hello(
                    tenant,
                    replica_id,
                    token,
                    client_id,
                    svs,
                    full=flags["full"],
                    past_client_ids=tuple(flags["past"]),
                )
            )
        elif frame_type is FrameType.UPDATE and self.state == "open":
            self._events.append(UpdateReceived(self._doc_in(fields[0]), fields[1]))
        else:
            self._unexpected(frame_type)
