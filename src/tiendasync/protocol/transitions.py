"""The two roles' state machines as data (h11-style transition tables).

:data:`RECEIVE` says, for each ``(role, state, frame type received)``, the
state the connection moves to and the event the frame becomes.  A pair that
is not in the table is a protocol error: the connection emits
:class:`ProtocolFailure`, queues an ERROR frame with
:attr:`CloseCode.PROTOCOL` and closes.  In the ``closed`` state all input is
ignored (no entries, no events).

:data:`SEND` says, for each ``(role, state, frame type sent)``, the state the
connection moves to.  Sending a frame whose pair is not in the table is a bug
in the caller (:class:`LocalProtocolError`).  ERROR and BYE may be sent in
every state but ``closed``, where ``fail()`` and ``bye()`` do nothing.

Replica: ``new`` --hello()--> ``hello_sent`` --WELCOME--> ``catching_up``
--SYNCED--> ``live``; relay: ``new`` --HELLO--> ``authenticating``
--accept()--> ``open``; both: any state --ERROR/BYE/fail()/bye()--> ``closed``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from tiendasync.protocol.codes import FrameType
from tiendasync.protocol.events import (
    Ack,
    ConnectionClosed,
    Event,
    GenerationsAnnounced,
    Hello,
    NextGenerationUpdate,
    ProtocolFailure,
    Synced,
    SyncRequested,
    UpdateReceived,
    Welcome,
)

__all__ = [
    "CLOSED",
    "INITIAL",
    "RECEIVE",
    "SEND",
    "STATES",
    "RelayState",
    "ReplicaState",
    "Role",
    "State",
    "Transition",
    "allowed_send_states",
]


class Role(enum.StrEnum):
    """Which end of the connection a state machine drives."""

    REPLICA = "replica"
    RELAY = "relay"


class ReplicaState(enum.StrEnum):
    """States of :class:`~tiendasync.protocol.ReplicaConnection` (compare equal to their names)."""

    NEW = "new"
    HELLO_SENT = "hello_sent"
    CATCHING_UP = "catching_up"
    LIVE = "live"
    CLOSED = "closed"


class RelayState(enum.StrEnum):
    """States of :class:`~tiendasync.protocol.RelayConnection` (compare equal to their names)."""

    NEW = "new"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


State: TypeAlias = ReplicaState | RelayState

#: Every state of each role, in declaration order.
STATES: Final[Mapping[Role, tuple[State, ...]]] = {
    Role.REPLICA: tuple(ReplicaState),
    Role.RELAY: tuple(RelayState),
}
INITIAL: Final[Mapping[Role, State]] = {Role.REPLICA: ReplicaState.NEW, Role.RELAY: RelayState.NEW}
CLOSED: Final[Mapping[Role, State]] = {
    Role.REPLICA: ReplicaState.CLOSED,
    Role.RELAY: RelayState.CLOSED,
}


@dataclass(frozen=True, slots=True)
class Transition:
    """Receiving a frame moves to ``next_state`` and emits an event of type ``event``."""

    next_state: State
    event: type[Event]


_R = Role.REPLICA
_S = Role.RELAY
_RS = ReplicaState
_LS = RelayState
_F = FrameType


def _closing(role: Role) -> dict[tuple[Role, State, FrameType], Transition]:
    """ERROR and BYE close the connection from every open state."""
    closed = CLOSED[role]
    table: dict[tuple[Role, State, FrameType], Transition] = {}
    for state in STATES[role]:
        if state != closed:
            table[role, state, _F.ERROR] = Transition(closed, ProtocolFailure)
            table[role, state, _F.BYE] = Transition(closed, ConnectionClosed)
    return table


RECEIVE: Final[Mapping[tuple[Role, State, FrameType], Transition]] = {
    # replica
    (_R, _RS.HELLO_SENT, _F.WELCOME): Transition(_RS.CATCHING_UP, Welcome),
    (_R, _RS.CATCHING_UP, _F.UPDATE): Transition(_RS.CATCHING_UP, UpdateReceived),
    (_R, _RS.CATCHING_UP, _F.ACK): Transition(_RS.CATCHING_UP, Ack),
    (_R, _RS.CATCHING_UP, _F.SYNCED): Transition(_RS.LIVE, Synced),
    (_R, _RS.CATCHING_UP, _F.SYNC_NOW): Transition(_RS.CATCHING_UP, SyncRequested),
    (_R, _RS.LIVE, _F.UPDATE): Transition(_RS.LIVE, UpdateReceived),
    (_R, _RS.LIVE, _F.ACK): Transition(_RS.LIVE, Ack),
    (_R, _RS.LIVE, _F.SYNC_NOW): Transition(_RS.LIVE, SyncRequested),
    (_R, _RS.CATCHING_UP, _F.GENERATIONS): Transition(_RS.CATCHING_UP, GenerationsAnnounced),
    (_R, _RS.LIVE, _F.GENERATIONS): Transition(_RS.LIVE, GenerationsAnnounced),
    (_R, _RS.CATCHING_UP, _F.NEXT_UPDATE): Transition(_RS.CATCHING_UP, NextGenerationUpdate),
    (_R, _RS.LIVE, _F.NEXT_UPDATE): Transition(_RS.LIVE, NextGenerationUpdate),
    **_closing(_R),
    # relay
    (_S, _LS.NEW, _F.HELLO): Transition(_LS.AUTHENTICATING, Hello),
    (_S, _LS.OPEN, _F.UPDATE): Transition(_LS.OPEN, UpdateReceived),
    **_closing(_S),
}


def _closing_sends(role: Role) -> dict[tuple[Role, State, FrameType], State]:
    closed = CLOSED[role]
    table: dict[tuple[Role, State, FrameType], State] = {}
    for state in STATES[role]:
        if state != closed:
            table[role, state, _F.ERROR] = closed
            table[role, state, _F.BYE] = closed
    return table


SEND: Final[Mapping[tuple[Role, State, FrameType], State]] = {
    # replica: hello(), send_update()
    (_R, _RS.NEW, _F.HELLO): _RS.HELLO_SENT,
    (_R, _RS.CATCHING_UP, _F.UPDATE): _RS.CATCHING_UP,
    (_R, _RS.LIVE, _F.UPDATE): _RS.LIVE,
    **_closing_sends(_R),
    # relay: accept(), send_update(), ack(), synced(), request_sync(), announce_generations(),
    # send_next()
    (_S, _LS.AUTHENTICATING, _F.WELCOME): _LS.OPEN,
    (_S, _LS.OPEN, _F.UPDATE): _LS.OPEN,
    (_S, _LS.OPEN, _F.ACK): _LS.OPEN,
    (_S, _LS.OPEN, _F.SYNCED): _LS.OPEN,
    (_S, _LS.OPEN, _F.SYNC_NOW): _LS.OPEN,
    (_S, _LS.OPEN, _F.GENERATIONS): _LS.OPEN,
    (_S, _LS.OPEN, _F.NEXT_UPDATE): _LS.OPEN,
    **_closing_sends(_S),
}


def allowed_send_states(role: Role, frame_type: FrameType) -> tuple[State, ...]:
    """The states in which ``role`` may send ``frame_type``, in declaration order."""
    return tuple(s for s in STATES[role] if (role, s, frame_type) in SEND)
