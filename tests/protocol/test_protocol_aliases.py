"""Document aliases on the wire: names cross once, and a lost message never misroutes."""

from __future__ import annotations

from tiendasync.protocol import (
    ProtocolFailure,
    RelayConnection,
    ReplicaConnection,
    UpdateReceived,
)


def connected() -> tuple[ReplicaConnection, RelayConnection]:
    replica, relay = ReplicaConnection(), RelayConnection()
    replica.hello(tenant="acme", replica_id="r", token="t", client_id=1, state_vectors={})
    relay.receive_data(replica.data_to_send())
    relay.events()
    relay.accept("s", {}, None)
    replica.receive_data(relay.data_to_send())
    replica.events()
    return replica, relay


def test_names_cross_once_then_aliases() -> None:
    replica, relay = connected()
    replica.send_update("stock/tienda-1", b"\x00\x00")
    first = replica.data_to_send()
    replica.send_update("stock/tienda-1", b"\x00\x00")
    second = replica.data_to_send()
    assert b"stock/tienda-1" in first and b"stock/tienda-1" not in second
    assert len(second) < len(first) - 10
    relay.receive_data(first + second)
    assert [e.doc for e in relay.events() if isinstance(e, UpdateReceived)] == [
        "stock/tienda-1",
        "stock/tienda-1",
    ]


def test_a_lost_declaration_is_a_protocol_error_not_a_wrong_document() -> None:
    replica, relay = connected()
    replica.send_update("stock/tienda-1", b"\x00\x00")
    replica.data_to_send()  # lost: the relay never learns alias 0
    replica.send_update("sales/tienda-1/2026-11", b"\x00\x00")  # declares alias 1
    replica.send_update("stock/tienda-1", b"\x00\x00")  # refers to alias 0
    relay.receive_data(replica.data_to_send())
    events = relay.events()
    assert [e.doc for e in events if isinstance(e, UpdateReceived)] == ["sales/tienda-1/2026-11"]
    failure = [e for e in events if isinstance(e, ProtocolFailure)]
    assert failure and failure[0].code == 1002 and "alias" in failure[0].reason
    assert relay.closed
