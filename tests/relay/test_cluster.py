"""Relay nodes sharing one PostgreSQL database (``relay.cluster``), in process: fan-out
between nodes, the catch-up of a node whose LISTEN connection was cut, in-memory docs
brought up to date before a catch-up, one review node, and the notices' parser."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.relay_client import Client, Writer, run, values
from tiendasync.errors import ConfigError
from tiendasync.protocol import Ack, UpdateReceived
from tiendasync.relay.auth import issue_token
from tiendasync.relay.cluster import ClusterNode, parse_notice
from tiendasync.relay.pgfeed import PgFeed
from tiendasync.relay.pgstore import PostgresRelayStore, update_notice
from tiendasync.relay.server import RelayServer


@asynccontextmanager
async def node(
    url: str, name: str, central: Path | None = None, *, retry: float = 0.5
) -> AsyncIterator[RelayServer]:
    store = PostgresRelayStore(url, node_id=name)
    cluster = ClusterNode(PgFeed(url, name), listen_retry_seconds=retry, review_check_seconds=0.2)
    server = RelayServer(store, port=0, cluster=cluster, central_dir=central)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        store.close()


def tokens(url: str, *replicas: str) -> dict[str, str]:
    with PostgresRelayStore(url) as store:
        return {r: issue_token(store, tenant="acme", replica_id=r) for r in replicas}


async def until(predicate: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.02)


async def next_update(client: Client) -> UpdateReceived:
    return await client.wait_for(UpdateReceived, timeout=10)


def test_an_update_acknowledged_on_one_node_reaches_sessions_of_another(pg_url: str) -> None:
    tok = tokens(pg_url, "t1", "t2")

    async def main() -> None:
        async with node(pg_url, "n1") as n1, node(pg_url, "n2") as n2:
            a = await Client.open(n1.port, replica="t1", token=tok["t1"], client_id=41)
            b = await Client.open(n2.port, replica="t2", token=tok["t2"], client_id=42)
            await a.until_synced()
            await b.until_synced()
            writer = Writer(41)
            await a.send_update("catalog", writer.set("CAFE", 3))
            assert (await a.wait_for(Ack)).clock == 1
            got = await next_update(b)
            assert got.doc == "catalog"
            b_doc = Writer(42)
            b_doc.doc.apply_update(got.data)
            assert values(b_doc.doc) == {"CAFE": 3}
            # n2 loads the doc; a later write on n1 must reach n2's loaded doc too
            n2.docs.get("acme", "catalog")
            await a.send_update("catalog", writer.set("CAFE", 4))
            await a.wait_for(Ack)
            await next_update(b)
            await until(
                lambda: (
                    n2.docs.get("acme", "catalog").state_vector()
                    == n1.docs.get("acme", "catalog").state_vector()
                ),
                "n2's in-memory doc holds n1's write",
            )
            await a.close()
            await b.close()

    run(main())


def test_a_node_whose_listen_was_cut_catches_up_from_the_table(pg_url: str) -> None:
    tok = tokens(pg_url, "t1", "t2")

    async def main() -> None:
        async with node(pg_url, "n1") as n1, node(pg_url, "n2", retry=1.5) as n2:
            b = await Client.open(n2.port, replica="t2", token=tok["t2"], client_id=42)
            await b.until_synced()
            assert n2.cluster is not None
            feed = n2.cluster.feed
            assert isinstance(feed, PgFeed) and feed.listen_pid is not None
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (feed.listen_pid,))
            await until(lambda: feed.listen_pid is None, "n2 noticed its LISTEN is gone")
            notices = n2.cluster.notices
            # while n2 is deaf: two writes on n1, acknowledged there
            a = await Client.open(n1.port, replica="t1", token=tok["t1"], client_id=41)
            await a.until_synced()
            writer = Writer(41)
            await a.send_update("catalog", writer.set("CAFE", 3))
            await a.send_update("catalog", writer.set("PAN", 1))
            await a.wait_for(Ack)
            await a.wait_for(Ack)
            assert feed.listen_pid is None, "n2 reconnected too soon for this test"
            seen = Writer(42)
            while values(seen.doc) != {"CAFE": 3, "PAN": 1}:
                seen.doc.apply_update((await next_update(b)).data)
            assert feed.connects == 2 and n2.cluster.catch_ups == 1
            assert n2.cluster.notices == notices  # not told: it read the table
            await a.close()
            await b.close()

    run(main())


def test_a_node_brings_its_loaded_docs_up_to_date_before_a_catch_up(pg_url: str) -> None:
    """Even deaf (its LISTEN cut, not back yet), a node serves a HELLO what every node
    stored: it reads the table for its loaded docs before the catch-up."""
    tok = tokens(pg_url, "t1", "t2")

    async def main() -> None:
        async with node(pg_url, "n1") as n1, node(pg_url, "n2", retry=5.0) as n2:
            assert n2.cluster is not None
            n2.docs.get("acme", "catalog")  # loaded (empty) on n2
            feed = n2.cluster.feed
            assert isinstance(feed, PgFeed)
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (feed.listen_pid,))
            await until(lambda: feed.listen_pid is None, "n2 deaf")
            a = await Client.open(n1.port, replica="t1", token=tok["t1"], client_id=41)
            await a.until_synced()
            await a.send_update("catalog", Writer(41).set("CAFE", 3))
            await a.wait_for(Ack)
            b = await Client.open(n2.port, replica="t2", token=tok["t2"], client_id=42)
            _, diffs = await b.until_synced()
            seen = Writer(42)
            for d in diffs:
                seen.doc.apply_update(d.data)
            assert values(seen.doc) == {"CAFE": 3}
            assert feed.listen_pid is None  # it read the table, not a notification
            await a.close()
            await b.close()

    run(main())


def test_one_node_reviews_and_another_takes_over(pg_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with node(pg_url, "n1", tmp_path / "c1") as n1:
            assert n1.cluster is not None
            await until(lambda: n1.cluster is not None and n1.cluster.reviewer, "n1 reviews")
            async with node(pg_url, "n2", tmp_path / "c2") as n2:
                assert n2.cluster is not None
                await asyncio.sleep(0.5)
                assert not n2.cluster.reviewer and n1.cluster.reviewer
                assert n1.core.reviews is not None and n1.core.reviews.enabled
                assert n2.core.reviews is not None and not n2.core.reviews.enabled
                with pytest.raises(ConfigError, match="does not run the invariant review"):
                    n2.central("acme")  # its admin API forwards to n1 (relay.forward)
                await n1.stop()  # its lock goes with its connection
                await until(lambda: n2.cluster is not None and n2.cluster.reviewer, "takeover")
                assert n2.core.reviews.enabled

    run(main())


def test_the_state_vector_row_keeps_what_every_node_stored(pg_url: str) -> None:
    """Two nodes' commits of one doc, each from its own in-memory doc: the row is the union."""
    from tiendasync.protocol.statevector import decode_state_vector, encode_state_vector
    from tiendasync.relay.records import AppendEntry

    with PostgresRelayStore(pg_url) as store:
        store.append_many(
            [AppendEntry("acme", "catalog", b"\x00\x00", "t1", encode_state_vector({1: 5}))]
        )
        store.append_many(
            [AppendEntry("acme", "catalog", b"\x00\x00", "t2", encode_state_vector({2: 7}))]
        )
        got = decode_state_vector(store.state_vectors("acme")["catalog"])
    assert got == {1: 5, 2: 7}


@given(
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=40),
    st.integers(min_value=1, max_value=2**62),
)
def test_update_notices_round_trip(tenant: str, doc: str, seq: int) -> None:
    notice = parse_notice(update_notice("n1", tenant, doc, seq))
    assert notice is not None and notice.kind == "u" and notice.node == "n1"
    assert (notice.fields["t"], notice.fields["d"], notice.fields["s"]) == (tenant, doc, seq)


@given(
    st.one_of(
        st.text(max_size=50),
        st.builds(
            json.dumps,
            st.fixed_dictionaries(
                {"k": st.just("u"), "n": st.text(max_size=5)},
                optional={
                    "t": st.one_of(st.none(), st.integers(), st.just("")),
                    "d": st.one_of(st.none(), st.integers(), st.just("")),
                    "s": st.one_of(st.none(), st.booleans(), st.integers(max_value=0), st.text()),
                },
            ),
        ),
    )
)
def test_malformed_notices_are_refused(payload: str) -> None:
    assert parse_notice(payload) is None


def test_other_kinds_of_messages_reach_their_handler(pg_url: str) -> None:
    async def main() -> None:
        async with node(pg_url, "n1") as n1, node(pg_url, "n2") as n2:
            assert n1.cluster is not None and n2.cluster is not None
            got: list[tuple[str, object]] = []
            n2.cluster.on("sync-now", lambda n: got.append((n.node, n.fields["replica"])))
            await n1.cluster.send("sync-now", {"replica": "t9"})
            await until(lambda: bool(got), "n2 handled the message")
            assert got == [("n1", "t9")]

    run(main())


def test_rows_folded_into_a_snapshot_while_a_node_was_deaf_reach_it_by_reload(
    pg_url: str,
) -> None:
    """A long outage: the rows a node never read were compacted away meanwhile; it
    reloads the doc from storage and sends its sessions what the reload added."""
    from tiendasync.relay.docs import compact

    tok = tokens(pg_url, "t1", "t2")

    async def main() -> None:
        async with node(pg_url, "n1") as n1, node(pg_url, "n2", retry=1.5) as n2:
            assert n2.cluster is not None
            a = await Client.open(n1.port, replica="t1", token=tok["t1"], client_id=41)
            b = await Client.open(n2.port, replica="t2", token=tok["t2"], client_id=42)
            await a.until_synced()
            await b.until_synced()
            writer, seen = Writer(41), Writer(42)
            await a.send_update("catalog", writer.set("CAFE", 3))
            await a.wait_for(Ack)
            seen.doc.apply_update((await next_update(b)).data)
            n2.docs.get("acme", "catalog")  # loaded on n2: rebuilt, not only published
            feed = n2.cluster.feed
            assert isinstance(feed, PgFeed)
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (feed.listen_pid,))
            await until(lambda: feed.listen_pid is None, "n2 deaf")
            await a.send_update("catalog", writer.set("PAN", 1))
            await a.wait_for(Ack)
            assert await asyncio.to_thread(compact, n1.store, "acme", "catalog") == 2
            assert feed.listen_pid is None, "n2 reconnected too soon for this test"
            while values(seen.doc) != {"CAFE": 3, "PAN": 1}:
                seen.doc.apply_update((await next_update(b)).data)
            assert n2.cluster.reloads == 1
            rdoc = n2.docs.current("acme", "catalog")
            assert rdoc is not None and values(rdoc.doc) == {"CAFE": 3, "PAN": 1}
            await a.close()
            await b.close()

    run(main())


def test_the_reviewer_reviews_rows_it_loaded_unread_then_found_folded_into_a_snapshot(
    pg_url: str, tmp_path: Path
) -> None:
    """The reviewing node, deaf, loads a doc from storage (its rows included, unread by
    its cluster cursor and unreviewed); the rows are then compacted into a snapshot.
    At the catch-up it reloads the doc: the review gets the whole doc, not only what
    the reload added (nothing, here), so the central writer merges those rows too.
    The soak profile of the cluster convergence machine found it."""
    from tiendasync.protocol.statevector import decode_state_vector
    from tiendasync.relay.docs import compact

    tok = tokens(pg_url, "t1")

    async def main() -> None:
        async with (
            node(pg_url, "n1", tmp_path / "c1", retry=1.5) as n1,
            node(pg_url, "n2") as n2,
        ):
            assert n1.cluster is not None
            await until(lambda: n1.cluster is not None and n1.cluster.reviewer, "n1 reviews")
            central = n1.central("acme")  # open before the rows come
            a = await Client.open(n2.port, replica="t1", token=tok["t1"], client_id=41)
            await a.until_synced()
            writer = Writer(41)
            await a.send_update("catalog", writer.set("CAFE", 3))
            await a.wait_for(Ack)

            def merged() -> int:
                sv = central.state_vector("catalog")
                return 0 if sv is None else decode_state_vector(sv).get(41, 0)

            await until(lambda: merged() == 1, "the first row reviewed")
            feed = n1.cluster.feed
            assert isinstance(feed, PgFeed)
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (feed.listen_pid,))
            await until(lambda: feed.listen_pid is None, "n1 deaf")
            await a.send_update("catalog", writer.set("PAN", 1))
            await a.wait_for(Ack)
            n1.docs.evict("acme", "catalog")
            loaded = n1.docs.get("acme", "catalog")  # from storage: PAN in, unread
            assert values(loaded.doc) == {"CAFE": 3, "PAN": 1}
            assert await asyncio.to_thread(compact, n2.store, "acme", "catalog") == 2
            assert feed.listen_pid is None, "n1 reconnected too soon for this test"
            reloads = n1.cluster.reloads
            await until(lambda: n1.cluster is not None and n1.cluster.reloads > reloads, "reload")
            await until(lambda: merged() == 2, "the folded row reviewed", timeout=5)
            await a.close()

    run(main())


def test_racing_nodes_keep_every_writer_in_the_state_vector(pg_url: str) -> None:
    import threading

    from tiendasync.protocol.statevector import decode_state_vector, encode_state_vector
    from tiendasync.relay.records import AppendEntry

    stores = [PostgresRelayStore(pg_url, node_id=f"n{i}") for i in range(4)]
    start = threading.Barrier(len(stores))

    def write(i: int) -> None:
        start.wait()
        for clock in range(1, 11):
            sv = encode_state_vector({100 + i: clock})
            stores[i].append_many([AppendEntry("acme", "catalog", b"\x00\x00", f"t{i}", sv)])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        got = decode_state_vector(stores[0].state_vectors("acme")["catalog"])
    finally:
        for s in stores:
            s.close()
    assert got == {100 + i: 10 for i in range(4)}
