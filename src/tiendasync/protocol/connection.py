"""What both protocol roles share: decoding, buffering, failing."""

from __future__ import annotations

from typing import Any

from tiendasync.errors import LocalProtocolError, RemoteProtocolError
from tiendasync.protocol.events import ConnectionClosed, Event, ProtocolFailure
from tiendasync.protocol.frames import (
    CLOSE_NORMAL,
    MAX_DOCS_PER_HELLO,
    MAX_FRAME_BYTES,
    FrameDecoder,
    FrameType,
    encode,
)

__all__ = ["Connection"]


class Connection:
    """Base of the two roles.  Subclasses implement ``_handle(frame_type, fields)``.

    ``receive_data`` never raises for bad input: a malformed or unexpected
    frame becomes a :class:`ProtocolFailure` event, an ERROR frame is queued
    for the peer, and the connection is closed (further input is ignored).
    """

    state: str

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._decoder = FrameDecoder(max_frame_bytes=max_frame_bytes)
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self.state = "new"
        self.close_code: int | None = None
        self.close_reason = ""
        self.bytes_received = 0
        self.bytes_sent = 0
        self._names_out: dict[str, int] = {}  # document aliases we assigned
        self._names_in: dict[int, str] = {}  # document names the peer declared, by alias

    @property
    def closed(self) -> bool:
        return self.state == "closed"

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the peer (any chunking)."""
        if self.closed:
            return
        self.bytes_received += len(data)
        try:
            self._decoder.feed(data)
            for frame_type, fields in self._decoder.frames():
                if self.closed:
                    return
                self._dispatch(frame_type, fields)
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
        self.bytes_sent += len(data)
        return data

    def fail(self, code: int, reason: str, *, remote: bool = True) -> None:
        """Close because of an error: tell the peer, emit ProtocolFailure."""
        if self.closed:
            return
        self._send(FrameType.ERROR, code, reason[:1024])
        self._close(code, reason)
        self._events.append(ProtocolFailure(code, reason, remote=remote))

    def bye(self, reason: str = "") -> None:
        """Close normally."""
        if self.closed:
            return
        self._send(FrameType.BYE, reason[:1024])
        self._close(CLOSE_NORMAL, reason)

    # -- for subclasses --------------------------------------------------------------

    def _send(self, frame_type: FrameType, *fields: Any) -> None:
        self._out.append(encode(frame_type, *fields))

    def _doc_out(self, name: str) -> list[Any] | int:
        """``[alias, name]`` the first time, the alias after (see ``frames``)."""
        alias = self._names_out.get(name)
        if alias is None:
            alias = self._names_out[name] = len(self._names_out)
            return [alias, name]
        return alias

    def _doc_in(self, value: str | int | tuple[int, str]) -> str:
        if isinstance(value, str):  # a plain name: allowed, no alias
            return value
        if isinstance(value, int):
            name = self._names_in.get(value)
            if name is None:
                raise RemoteProtocolError(f"unknown document alias {value}", 1002)
            return name
        alias, name = value
        known = self._names_in.get(alias)
        if known is not None and known != name:
            raise RemoteProtocolError(f"document alias {alias} redefined", 1002)
        if known is None and len(self._names_in) >= MAX_DOCS_PER_HELLO:
            raise RemoteProtocolError("too many documents on one connection", 1002)
        self._names_in[alias] = name
        return name

    def _close(self, code: int, reason: str) -> None:
        self.state = "closed"
        self.close_code = code
        self.close_reason = reason

    def _require(self, *states: str) -> None:
        if self.state not in states:
            raise LocalProtocolError(
                f"not allowed in state {self.state!r} (needs {' or '.join(states)})"
            )

    def _dispatch(self, frame_type: FrameType, fields: list[Any]) -> None:
        if frame_type is FrameType.ERROR:
            code, reason = fields
            self._close(code, reason)
            self._events.append(ProtocolFailure(code, reason, remote=True))
        elif frame_type is FrameType.BYE:
            self._close(CLOSE_NORMAL, fields[0])
            self._events.append(ConnectionClosed(fields[0]))
        else:
            self._handle(frame_type, fields)

    def _handle(self, frame_type: FrameType, fields: list[Any]) -> None:
        raise NotImplementedError

    def _unexpected(self, frame_type: FrameType) -> None:
        raise RemoteProtocolError(f"unexpected {frame_type.name} frame in state {self.state}", 1002)
