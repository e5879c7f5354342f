"""The replica's side of the sync protocol (sans I/O).

States (:class:`ReplicaState`): ``new`` --hello()--> ``hello_sent``
--WELCOME--> ``catching_up`` --SYNCED--> ``live``; any state
--ERROR/BYE/fail()--> ``closed``.  The rows for ``Role.REPLICA`` in
:mod:`tiendasync.protocol.transitions` are the whole conversation.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgpack

from tiendasync.protocol.codes import (
    MAX_DOCS_PER_HELLO,
    MAX_HELLO_BYTES,
    MAX_NAME,
    MAX_TOKEN,
    PROTOCOL_VERSION,
    FrameType,
)
from tiendasync.protocol.connection import Connection
from tiendasync.protocol.frames import HelloFrame, UpdateFrame, fit_state_vectors
from tiendasync.protocol.transitions import ReplicaState, Role

__all__ = ["ReplicaConnection"]

#: What a HELLO's state vectors may take: the rest (token, names, the past client
#: ids: at most MAX_DOCS_PER_HELLO of 9 bytes each) always fits beside them.
_HELLO_SV_BUDGET = MAX_HELLO_BYTES - 4 * (MAX_TOKEN + 3 * MAX_NAME) - 9 * MAX_DOCS_PER_HELLO - 1024


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
        config: dict[str, Any] | None = None,
        sales_from: str | None = None,
        generations: dict[str, int] | None = None,
    ) -> None:
        """Introduce ourselves; the relay answers WELCOME or ERROR.

        ``config``: the store config we run with, told so the relay's console
        shows what the store really uses.  ``sales_from``: the oldest sales
        period we keep (``YYYY-MM``); the relay sends nothing of older ones.
        ``generations``: the generation of
        every document we hold, 0 included (``{}`` if none); given, it also tells the
        relay we understand its GENERATIONS frames.

        The HELLO stays within :data:`~tiendasync.protocol.codes.MAX_HELLO_BYTES`
        and :data:`~tiendasync.protocol.codes.MAX_DOCS_PER_HELLO` documents:
        past them the last state vectors (in the map's order) are left out,
        and the relay sends those documents whole.  ``generations`` is sent
        whole (at most that many documents); it takes its room from theirs.
        """
        # The generations map takes its room from the state vectors' (it is never cut:
        # a document left out of it would be caught up with the wrong generation).
        gens_bytes = 0 if generations is None else len(msgpack.packb(generations))
        svs = fit_state_vectors(state_vectors, _HELLO_SV_BUDGET - gens_bytes)
        self._send(
            HelloFrame(
                PROTOCOL_VERSION,
                tenant,
                replica_id,
                token,
                client_id,
                svs,
                full=full,
                past_client_ids=tuple(past_client_ids),
                config=config,
                sales_from=sales_from,
                generations=None if generations is None else dict(generations),
            )
        )

    def send_update(self, doc: str, data: bytes) -> None:
        """Send a diff or a live update (only once the relay welcomed us)."""
        next_state = self._next_state_for_send(FrameType.UPDATE)
        self._send(UpdateFrame(self._doc_out(doc), data), next_state)
