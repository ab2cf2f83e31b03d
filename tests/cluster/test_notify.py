"""`Listener` on the real server: notifications arrive, a killed connection is remade and reported as
a `Resync`, a slow subscriber is owed a `Resync` instead of holding the others up, cancel is prompt."""

from __future__ import annotations

import psycopg
import pytest
import trio

from waservice.cluster.database import DatabaseUnavailable
from waservice.cluster.notify import Backoff, Listener, Message, Notification, Resync, notify

pytestmark = pytest.mark.cluster

WAIT = 15.0  # generous: the box is shared; every wait ends as soon as the message is there


def send(url: str, channel: str, payload: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        notify(conn, channel, payload)


async def notify_from_elsewhere(url: str, channel: str, payload: str) -> None:
    await trio.to_thread.run_sync(send, url, channel, payload)


async def receive(messages: trio.MemoryReceiveChannel[Message]) -> Message:
    with trio.fail_after(WAIT):
        return await messages.receive()


def listener_for(url: str) -> Listener:
    return Listener(url, poll_interval=0.1, backoff=Backoff(initial=0.05, maximum=0.5))


async def test_a_notify_reaches_the_subscriber_after_a_first_resync(database_url: str) -> None:
    listener = listener_for(database_url)
    keys = listener.subscribe("keys")
    other = listener.subscribe("Other channel")  # any name: quoted as an identifier
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        assert isinstance(await receive(keys), Resync)  # LISTEN is active: load now
        assert isinstance(await receive(other), Resync)
        await notify_from_elsewhere(database_url, "keys", "k1 created")
        await notify_from_elsewhere(database_url, "Other channel", "x")
        assert await receive(keys) == Notification("keys", "k1 created")
        assert await receive(other) == Notification("Other channel", "x")
        nursery.cancel_scope.cancel()


async def test_a_notify_is_sent_only_if_its_transaction_commits(database_url: str) -> None:
    listener = listener_for(database_url)
    keys = listener.subscribe("keys")

    def rolled_back() -> None:
        with psycopg.connect(database_url) as conn:
            notify(conn, "keys", "never")
            conn.rollback()

    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        assert isinstance(await receive(keys), Resync)
        await trio.to_thread.run_sync(rolled_back)
        await notify_from_elsewhere(database_url, "keys", "committed")
        assert await receive(keys) == Notification("keys", "committed")
        nursery.cancel_scope.cancel()


async def test_a_subscriber_added_while_running_starts_with_a_resync(database_url: str) -> None:
    listener = listener_for(database_url)
    first = listener.subscribe("a")
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        assert isinstance(await receive(first), Resync)
        late = listener.subscribe("b")
        assert isinstance(await receive(late), Resync)
        await notify_from_elsewhere(database_url, "b", "hello")
        assert await receive(late) == Notification("b", "hello")
        nursery.cancel_scope.cancel()


def terminate_listener(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'waservice-listener' AND datname = current_database()"
        ).fetchall()
    return len(rows)


async def test_a_killed_connection_is_remade_and_reported_as_a_resync(database_url: str) -> None:
    listener = listener_for(database_url)
    keys = listener.subscribe("keys")
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        assert isinstance(await receive(keys), Resync)
        assert await trio.to_thread.run_sync(terminate_listener, database_url) == 1
        # A notify sent while it is down is lost: the Resync says so.
        assert isinstance(await receive(keys), Resync)
        assert listener.losses == 1
        await notify_from_elsewhere(database_url, "keys", "after")
        assert await receive(keys) == Notification("keys", "after")
        nursery.cancel_scope.cancel()


async def test_a_slow_subscriber_is_owed_a_resync_and_holds_no_one_up(database_url: str) -> None:
    listener = listener_for(database_url)
    slow = listener.subscribe("keys", buffer=1)
    quick = listener.subscribe("keys", buffer=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        assert isinstance(await receive(slow), Resync) and isinstance(await receive(quick), Resync)
        for n in range(3):
            await notify_from_elsewhere(database_url, "keys", str(n))
        assert [await receive(quick) for _ in range(3)] == [Notification("keys", str(n)) for n in range(3)]
        assert await receive(slow) == Notification("keys", "0")
        assert isinstance(await receive(slow), Resync)  # 1 and 2 did not fit: it must reload
        await notify_from_elsewhere(database_url, "keys", "3")
        assert await receive(slow) == Notification("keys", "3")
        nursery.cancel_scope.cancel()


async def test_a_closed_subscription_is_dropped(database_url: str) -> None:
    listener = listener_for(database_url)
    gone = listener.subscribe("keys", buffer=1)
    stays = listener.subscribe("keys")
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        assert isinstance(await receive(stays), Resync)
        await gone.aclose()
        await notify_from_elsewhere(database_url, "keys", "x")
        assert await receive(stays) == Notification("keys", "x")
        assert len(listener._subscribers["keys"]) == 1
        nursery.cancel_scope.cancel()


async def test_cancel_stops_it_within_a_poll_interval_and_closes_its_connection(database_url: str) -> None:
    listener = Listener(database_url, poll_interval=0.2)
    keys = listener.subscribe("keys")
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        assert isinstance(await receive(keys), Resync)
        started = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - started < 5.0  # one poll interval, plus a loaded box's slack

    def listeners() -> int:
        with psycopg.connect(database_url) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'waservice-listener'"
                " AND datname = current_database()"
            ).fetchone()[0]

    with trio.fail_after(WAIT):
        while await trio.to_thread.run_sync(listeners):  # the server notices the close at once
            await trio.sleep(0.05)


async def test_an_unreachable_server_fails_the_start_without_showing_the_password() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listener = Listener(f"postgresql://u:s3cret-pw@127.0.0.1:{port}/db", connect_timeout=2)
    async with trio.open_nursery() as nursery:
        with pytest.raises(DatabaseUnavailable) as caught:
            await nursery.start(listener.run)
    assert "s3cret-pw" not in str(caught.value)
