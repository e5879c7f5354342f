"""The replica's side of the sync protocol (sans I/O).

States: ``new`` --hello()--> ``hello_sent`` --WELCOME--> ``catching_up``
--SYNCED--> ``live`` ; any state --ERROR/BYE/fail()--> ``closed``.
"""

from __future__ import annotations

from typing import Any

from tiendasync.protocol.connection import Connection
from tiendasync.protocol.events import Ack, Synced, SyncRequested, UpdateReceived, Welcome
from tiendasync.protocol.frames import CLOSE_VERSION, PROTOCOL_VERSION, FrameType

__all__ = ["ReplicaConnection"]


class ReplicaConnection(Connection):
    """Drive one connection from a replica to the relay."""

    def hello(
        self,
        *,
        tenant: str,
        replica_id: str,
        token: str,
        client_id: int,
        state_vectors: dict[str, bytes],
        full: bool = False,
        past_client_ids: tuple[int, ...] = (),
    ) -> None:
        """Introduce ourselves; the relay answers WELCOME or ERROR."""
        self._require("new")
        self._send(
            FrameType.HELLO,
            PROTOCOL_VERSION,
            tenant,
            replica_id,
            token,
            client_id,
            state_vectors,
            {"full": full, "past": list(past_client_ids)},
        )
        self.state = "hello_sent"

    def send_update(self, doc: str, data: bytes) -> None:
        """Send a diff or a live update (only once the relay welcomed us)."""
        self._require("catching_up", "live")
        self._send(FrameType.UPDATE, self._doc_out(doc), data)

    def _handle(self, frame_type: FrameType, fields: list[Any]) -> None:
        if frame_type is FrameType.WELCOME and self.state == "hello_sent":
            version, session_id, svs, config = fields
            if version != PROTOCOL_VERSION:
                self.fail(
                    CLOSE_VERSION, f"relay speaks protocol {version}, we speak {PROTOCOL_VERSION}"
                )
                return
            self.state = "catching_up"
            self._events.append(Welcome(session_id, svs, config))
        elif frame_type is FrameType.UPDATE and self.state in ("catching_up", "live"):
            self._events.append(UpdateReceived(self._doc_in(fields[0]), fields[1]))
        elif frame_type is FrameType.ACK and self.state in ("catching_up", "live"):
            self._events.append(Ack(self._doc_in(fields[0]), fields[1], fields[2]))
        elif frame_type is FrameType.SYNCED and self.state == "catching_up":
            self.state = "live"
            self._events.append(Synced())
        elif frame_type is FrameType.SYNC_NOW and self.state in ("catching_up", "live"):
            self._events.append(SyncRequested(fields[0]))
        else:
            self._unexpected(frame_type)
