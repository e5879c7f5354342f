"""The replica's side of the sync protocol (sans I/O).

States (:class:`ReplicaState`): ``new`` --hello()--> ``hello_sent``
--WELCOME--> ``catching_up`` --SYNCED--> ``live``; any state
--ERROR/BYE/fail()--> ``closed``.  The rows for ``Role.REPLICA`` in
:mod:`tiendasync.protocol.transitions` are the whole conversation.
"""

from __future__ import annotations

from typing import ClassVar

from tiendasync.protocol.codes import PROTOCOL_VERSION, FrameType
from tiendasync.protocol.connection import Connection
from tiendasync.protocol.frames import HelloFrame, UpdateFrame
from tiendasync.protocol.transitions import ReplicaState, Role

__all__ = ["ReplicaConnection"]


class ReplicaConnection(Connection):
    """Drive one connection from a replica to the relay."""

    ROLE: ClassVar[Role] = Role.REPLICA

    state: ReplicaState

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
        self._send(
            HelloFrame(
                PROTOCOL_VERSION,
                tenant,
                replica_id,
                token,
                client_id,
                state_vectors,
                full=full,
                past_client_ids=tuple(past_client_ids),
            )
        )

    def send_update(self, doc: str, data: bytes) -> None:
        """Send a diff or a live update (only once the relay welcomed us)."""
        next_state = self._next_state_for_send(FrameType.UPDATE)
        self._send(UpdateFrame(self._doc_out(doc), data), next_state)
