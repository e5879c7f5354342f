"""What both protocol roles share: decoding, the transition tables, document aliases, failing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from tiendasync.errors import LocalProtocolError, RemoteProtocolError
from tiendasync.protocol.codes import (
    MAX_DOCS_PER_HELLO,
    MAX_FRAME_BYTES,
    MAX_REASON,
    PROTOCOL_VERSION,
    CloseCode,
    FrameType,
)
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
from tiendasync.protocol.frames import (
    AckFrame,
    ByeFrame,
    DocRef,
    ErrorFrame,
    Frame,
    FrameDecoder,
    GenerationsFrame,
    HelloFrame,
    NextUpdateFrame,
    SyncNowFrame,
    UpdateFrame,
    WelcomeFrame,
)
from tiendasync.protocol.transitions import (
    CLOSED,
    INITIAL,
    RECEIVE,
    SEND,
    Role,
    State,
    allowed_send_states,
)

__all__ = ["Connection"]


class Connection:
    """Base of the two roles; ``ROLE`` picks the rows of the transition tables.

    ``receive_data`` never raises for bad input: a malformed frame, or a frame
    the :data:`~tiendasync.protocol.transitions.RECEIVE` table does not allow
    in the current state, becomes a :class:`ProtocolFailure` event, an ERROR
    frame is queued for the peer, and the connection is closed (further input
    is ignored).  Sending a frame the
    :data:`~tiendasync.protocol.transitions.SEND` table does not allow raises
    :class:`LocalProtocolError` (a bug in the caller) and sends nothing.

    ``close_code`` (and ``ProtocolFailure.code``) is always a plain ``int``.
    """

    ROLE: ClassVar[Role]

    state: State

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._decoder = FrameDecoder(max_frame_bytes=max_frame_bytes)
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._events: list[Event] = []
        self.state = INITIAL[self.ROLE]
        self._closed_state = CLOSED[self.ROLE]
        self.close_code: int | None = None
        self.close_reason = ""
        self.bytes_received = 0
        self.bytes_sent = 0
        self._names_out: dict[str, int] = {}  # document aliases we assigned
        self._names_in: dict[int, str] = {}  # document names the peer declared, by alias

    @property
    def closed(self) -> bool:
        return self.state == self._closed_state

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the peer (any chunking)."""
        if self.closed:
            return
        self.bytes_received += len(data)
        try:
            pos = 0
            while pos < len(data):
                # In pieces the decoder's buffer holds: a message may carry any
                # number of frames, each up to the frame limit.
                room = self._decoder.room()
                if room <= 0:
                    raise RemoteProtocolError("frame too large", CloseCode.TOO_BIG)
                self._decoder.feed(data[pos : pos + room] if pos or room < len(data) else data)
                pos += room
                for frame in self._decoder.records():
                    if self.closed:
                        return
                    self._receive(frame)
        except RemoteProtocolError as exc:
            self.fail(exc.code, exc.reason)

    def events(self) -> list[Event]:
        """Events produced since the last call, in order."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> bytes:
        """Bytes to send to the peer now (possibly several frames)."""
        data = b"".join(self._out)
        self._out.clear()
        self._out_bytes = 0
        self.bytes_sent += len(data)
        return data

    def messages_to_send(self, max_bytes: int) -> list[bytes]:
        """What :meth:`data_to_send` returns, cut at frame boundaries into messages of
        at most ``max_bytes`` (a larger frame is a message of its own)."""
        messages: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        for frame in self._out:
            if batch and size + len(frame) > max_bytes:
                messages.append(b"".join(batch))
                batch, size = [], 0
            batch.append(frame)
            size += len(frame)
        if batch:
            messages.append(b"".join(batch))
        self._out.clear()
        self._out_bytes = 0
        self.bytes_sent += sum(len(m) for m in messages)
        return messages

    @property
    def pending_bytes(self) -> int:
        """Bytes queued for the peer and not yet taken by the I/O layer."""
        return self._out_bytes

    def discard_output(self) -> int:
        """Drop what is queued for the peer (its socket is gone); returns the bytes dropped."""
        dropped = self._out_bytes
        self._out.clear()
        self._out_bytes = 0
        return dropped

    def fail(self, code: int, reason: str, *, remote: bool = True) -> None:
        """Close because of an error: tell the peer, emit ProtocolFailure."""
        if self.closed:
            return
        self._send(ErrorFrame(int(code), reason[:MAX_REASON]))
        self._close(code, reason)
        self._events.append(ProtocolFailure(int(code), reason, remote=remote))

    def bye(self, reason: str = "") -> None:
        """Close normally."""
        if self.closed:
            return
        self._send(ByeFrame(reason[:MAX_REASON]))
        self._close(CloseCode.NORMAL, reason)

    # -- for subclasses --------------------------------------------------------------

    def _next_state_for_send(self, frame_type: FrameType) -> State:
        """The state after sending ``frame_type`` now; LocalProtocolError if not allowed."""
        next_state = SEND.get((self.ROLE, self.state, frame_type))
        if next_state is None:
            needs = " or ".join(allowed_send_states(self.ROLE, frame_type))
            raise LocalProtocolError(f"not allowed in state {str(self.state)!r} (needs {needs})")
        return next_state

    def _send(self, frame: Frame, next_state: State | None = None) -> None:
        """Queue ``frame`` and move on per the SEND table.

        ``next_state`` comes from an earlier :meth:`_next_state_for_send` when
        building the frame has side effects (assigning a document alias) that
        must not happen for a frame that is not allowed.
        """
        if next_state is None:
            next_state = self._next_state_for_send(frame.TYPE)
        data = frame.encode()
        self._out.append(data)
        self._out_bytes += len(data)
        self.state = next_state

    def _doc_out(self, name: str) -> DocRef:
        """``(alias, name)`` the first time, the alias after (see ``frames``).

        Past the aliases a peer accepts on one connection
        (:data:`~tiendasync.protocol.codes.MAX_DOCS_PER_HELLO`) the plain name
        is sent: a busy connection never fails for naming many documents.
        """
        alias = self._names_out.get(name)
        if alias is None:
            if len(self._names_out) >= MAX_DOCS_PER_HELLO:
                return name
            alias = self._names_out[name] = len(self._names_out)
            return alias, name
        return alias

    def _doc_in(self, value: DocRef) -> str:
        if isinstance(value, str):  # a plain name: allowed, no alias
            return value
        if isinstance(value, int):
            name = self._names_in.get(value)
            if name is None:
                raise RemoteProtocolError(f"unknown document alias {value}", CloseCode.PROTOCOL)
            return name
        alias, name = value
        known = self._names_in.get(alias)
        if known is not None and known != name:
            raise RemoteProtocolError(f"document alias {alias} redefined", CloseCode.PROTOCOL)
        if known is None and len(self._names_in) >= MAX_DOCS_PER_HELLO:
            raise RemoteProtocolError("too many documents on one connection", CloseCode.PROTOCOL)
        self._names_in[alias] = name
        return name

    def _close(self, code: int, reason: str) -> None:
        self.state = self._closed_state
        self.close_code = int(code)
        self.close_reason = reason

    def _receive(self, frame: Frame) -> None:
        """Apply the RECEIVE table to one well-formed frame."""
        transition = RECEIVE.get((self.ROLE, self.state, frame.TYPE))
        if transition is None:
            raise RemoteProtocolError(
                f"unexpected {frame.TYPE.name} frame in state {self.state}", CloseCode.PROTOCOL
            )
        event = self._BUILDERS[transition.event](self, frame)
        if transition.next_state == self._closed_state:
            self._close(*_close_args(event))
        else:
            self.state = transition.next_state
        self._events.append(event)

    # -- one event builder per event kind of the RECEIVE table -----------------------
    # A builder turns the frame into its event; it raises RemoteProtocolError
    # (with the close code) when the frame is well-formed but unacceptable.

    def _on_hello(self, frame: HelloFrame) -> Hello:
        if frame.version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"protocol {frame.version} not supported; relay speaks {PROTOCOL_VERSION}",
                CloseCode.VERSION,
            )
        return Hello(
            frame.tenant,
            frame.replica_id,
            frame.token,
            frame.client_id,
            frame.state_vectors,
            full=frame.full,
            past_client_ids=frame.past_client_ids,
            config=frame.config,
            sales_from=frame.sales_from,
            generations=frame.generations,
        )

    def _on_welcome(self, frame: WelcomeFrame) -> Welcome:
        if frame.version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"relay speaks protocol {frame.version}, we speak {PROTOCOL_VERSION}",
                CloseCode.VERSION,
            )
        return Welcome(frame.session_id, frame.state_vectors, frame.config)

    def _on_update(self, frame: UpdateFrame) -> UpdateReceived:
        return UpdateReceived(self._doc_in(frame.doc), frame.data)

    def _on_ack(self, frame: AckFrame) -> Ack:
        return Ack(self._doc_in(frame.doc), frame.client_id, frame.clock)

    def _on_synced(self, frame: Frame) -> Synced:
        return Synced()

    def _on_sync_now(self, frame: SyncNowFrame) -> SyncRequested:
        return SyncRequested(frame.full)

    def _on_generations(self, frame: GenerationsFrame) -> GenerationsAnnounced:
        return GenerationsAnnounced(dict(frame.generations))

    def _on_next_update(self, frame: NextUpdateFrame) -> NextGenerationUpdate:
        return NextGenerationUpdate(self._doc_in(frame.doc), frame.generation, frame.data)

    def _on_error(self, frame: ErrorFrame) -> ProtocolFailure:
        return ProtocolFailure(frame.code, frame.reason, remote=True)

    def _on_bye(self, frame: ByeFrame) -> ConnectionClosed:
        return ConnectionClosed(frame.reason)

    _BUILDERS: ClassVar[Mapping[type[Event], Callable[[Connection, Any], Event]]] = {
        Hello: _on_hello,
        Welcome: _on_welcome,
        UpdateReceived: _on_update,
        Ack: _on_ack,
        Synced: _on_synced,
        SyncRequested: _on_sync_now,
        GenerationsAnnounced: _on_generations,
        NextGenerationUpdate: _on_next_update,
        ProtocolFailure: _on_error,
        ConnectionClosed: _on_bye,
    }


def _close_args(event: Event) -> tuple[int, str]:
    """Close code and reason for an event that closes the connection."""
    if isinstance(event, ProtocolFailure):
        return event.code, event.reason
    if isinstance(event, ConnectionClosed):
        return CloseCode.NORMAL, event.reason
    raise AssertionError(f"{type(event).__name__} does not close a connection")  # pragma: no cover
