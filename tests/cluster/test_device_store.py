"""whatsmeow's devices in a real PostgreSQL, through the real engine (worker pool) against the simulator.

The registry rows (`ws_sessions`) are inserted here: in the service the coordinator's registry
creates them before a session starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import psycopg
import pytest
import trio

from tests.simulator.engine_harness import Device, pair, pool_on
from tests.wasim import Simulator
from waservice.cluster.database import Database, DatabaseUnavailable
from waservice.cluster.devices import PostgresDevices
from waservice.cluster.migrations import migrate
from waservice.engine import Connected, EngineError, QrCode
from waservice.engine.devices import DeviceSpec
from waservice.engine.pool import WorkerPool

pytestmark = [pytest.mark.cluster, pytest.mark.simulator, pytest.mark.trio]


def phone(i: int) -> str:
    return f"1555200{i:04d}"


@contextlib.asynccontextmanager
async def registry(url: str, *sessions: str, acquire_timeout: float = 10.0) -> AsyncIterator[Database]:
    async with Database.open(url, size=2, acquire_timeout=acquire_timeout) as db:
        await db.call(migrate)
        await db.call(add_sessions, sessions)
        yield db


def add_sessions(conn: psycopg.Connection, sessions: tuple[str, ...], jid: str | None = None) -> None:
    for session in sessions:
        conn.execute("INSERT INTO ws_sessions (id, jid) VALUES (%s, %s)", (session, jid))


def registry_jids(conn: psycopg.Connection) -> dict[str, str | None]:
    return dict(conn.execute("SELECT id, jid FROM ws_sessions").fetchall())


def stored_devices(conn: psycopg.Connection) -> set[str]:
    return {jid for (jid,) in conn.execute("SELECT jid FROM whatsmeow_device").fetchall()}


def rows_of(conn: psycopg.Connection, jid: str) -> int:
    """The account's rows in whatsmeow's tables that key on our device (its keys and sessions)."""
    tables = ("whatsmeow_device", "whatsmeow_identity_keys", "whatsmeow_pre_keys", "whatsmeow_sessions")
    total = 0
    for table in tables:
        column = "jid" if table in ("whatsmeow_device", "whatsmeow_pre_keys") else "our_jid"
        total += conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = %s", (jid,)).fetchone()[0]
    return total


async def start(nursery: trio.Nursery, pool, session: str, tmp_path: Path) -> Device:  # type: ignore[no-untyped-def]
    device = Device(pool, session, tmp_path / session)
    await nursery.start(device.run)
    return device


async def stop(device: Device) -> None:
    device.stop()
    with trio.fail_after(30):
        await device.done.wait()


async def test_paired_accounts_are_restored_by_jid_on_a_fresh_engine(
    sim: Simulator,
    patched_dir: Path,
    database_url: str,
    tmp_path: Path,
) -> None:
    async with registry(database_url, "s0", "s1") as db:
        devices = PostgresDevices(db, database_url)
        go_url = f"{database_url}?sslmode=prefer"  # lib/pq's default would be "require"
        assert await devices.spec("s0", tmp_path) == DeviceSpec(db=go_url, new_device=True)
        assert not await devices.has_credentials("s0", tmp_path)  # no whatsmeow table yet: no device

        # Two sessions paired in one database: two accounts, each JID in the registry.
        async with pool_on(patched_dir, devices=devices) as pool, trio.open_nursery() as nursery:
            for i in range(2):
                await pair(sim, await start(nursery, pool, f"s{i}", tmp_path), phone(i))
            nursery.cancel_scope.cancel()
        jids = await db.call(registry_jids)
        for i in range(2):
            user, _, rest = str(jids[f"s{i}"]).partition(":")
            assert user == phone(i) and rest.endswith("@s.whatsapp.net"), jids
        assert await db.call(stored_devices) == set(jids.values())
        assert await devices.has_credentials("s0", tmp_path)
        assert await devices.spec("s1", tmp_path) == DeviceSpec(db=go_url, jid=jids["s1"])

        # A registry JID whatsmeow has no device for: a new device (QR), not a crashed worker.
        await db.call(add_sessions, ("s2",), f"{phone(9)}:3@s.whatsapp.net")
        assert not await devices.has_credentials("s2", tmp_path)

        # A fresh engine (a restart, or another node): each session logs in as its own account.
        logins = len(sim.events("login"))
        registrations = len(sim.events("registration"))
        async with pool_on(patched_dir, devices=devices) as pool, trio.open_nursery() as nursery:
            restored = [await start(nursery, pool, f"s{i}", tmp_path) for i in range(2)]
            for i, device in enumerate(restored):
                assert await device.wait(Connected) == Connected(phone(i))
            stranger = await start(nursery, pool, "s2", tmp_path)
            await stranger.wait(QrCode)
            assert all(device.connected for device in restored)  # the worker did not crash
            assert all(slot.restarts == 0 for slot in pool._slots)
            assert all(device.count(QrCode) == 0 for device in restored)
            assert len(sim.events("registration")) == registrations + 1  # the stranger's only
            seen = {(e["phone"], e["device"]) for e in sim.events("login")[logins:]}
            expected = {(phone(i), int(str(jids[f"s{i}"]).split(":")[1].split("@")[0])) for i in range(2)}
            assert seen == expected

            # Forget one: its rows go, the registry forgets its JID, the other stays.
            await stop(restored[0])
            await devices.forget("s0", tmp_path / "s0")
            assert await db.call(rows_of, jids["s0"]) == 0
            assert await db.call(rows_of, jids["s1"]) > 0
            assert (await db.call(registry_jids))["s0"] is None
            assert not await devices.has_credentials("s0", tmp_path)
            again = await start(nursery, pool, "s0", tmp_path)
            await again.wait(QrCode)  # a new device: the account is gone
            assert restored[1].connected
            nursery.cancel_scope.cancel()


async def test_lib_pq_binary_parameters_pairs_restores_and_sends(
    sim: Simulator,
    patched_dir: Path,
    database_url: str,
    tmp_path: Path,
) -> None:
    """`binary_parameters=yes` (lib/pq sends Parse and Bind together: PgBouncer's transaction mode
    needs it, facts-scale.md section 2) is accepted, and whatsmeow's keys work through it. The URL's
    password (ignored: the test server trusts) has characters Go's URL parser takes only encoded."""
    async with registry(database_url, "s0") as db:
        odd = database_url.replace("postgres@", "postgres:p[w]%20x@", 1)
        devices = PostgresDevices(db, f"{odd}?binary_parameters=yes")
        async with pool_on(patched_dir, devices=devices) as pool, trio.open_nursery() as nursery:
            await pair(sim, await start(nursery, pool, "s0", tmp_path), phone(0))
            nursery.cancel_scope.cancel()
        registrations = len(sim.events("registration"))
        async with pool_on(patched_dir, devices=devices) as pool, trio.open_nursery() as nursery:
            device = await start(nursery, pool, "s0", tmp_path)
            assert await device.wait(Connected) == Connected(phone(0))
            sent = await device.send_text("15559998888", "through binary parameters")
            assert (await sim.wait_message(to="15559998888", text="through binary parameters")).id == sent.id
            assert len(sim.events("registration")) == registrations and device.count(QrCode) == 0
            nursery.cancel_scope.cancel()


def cut_off(database_url: str, cut: bool) -> None:
    """The database refuses new connections and drops the ones it has; or takes them again."""
    server, name = database_url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not cut).lower()}')
        if cut:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )


async def test_a_pairing_the_registry_missed_is_recorded_at_the_next_start(
    database_url: str, tmp_path: Path
) -> None:
    """No engine here: a one-column `whatsmeow_device` stands in for whatsmeow's (the store reads
    only that); the real one is in the test above."""
    jid = f"{phone(1)}:4@s.whatsapp.net"
    async with registry(database_url, "s0", "s1", acquire_timeout=1.0) as db:
        await db.call(lambda conn: conn.execute("CREATE TABLE whatsmeow_device (jid text PRIMARY KEY)"))
        await db.call(lambda conn: conn.execute("INSERT INTO whatsmeow_device VALUES (%s)", (jid,)))
        devices = PostgresDevices(db, database_url)
        cut_off(database_url, True)
        try:
            await devices.paired("s0", jid)  # never raises: the session is connected either way
            assert await devices.has_credentials("s0", tmp_path)  # known here, not yet in the registry
            with pytest.raises(EngineError, match="PostgreSQL unavailable"):  # the supervisor retries
                await devices.spec("s0", tmp_path)
        finally:
            cut_off(database_url, False)
        with trio.fail_after(30):  # the pool reconnects with a backoff of its own
            while True:
                try:
                    jids = await db.call(registry_jids)
                    break
                except DatabaseUnavailable:
                    await trio.sleep(0.1)
        assert jids["s0"] is None
        spec = await devices.spec("s0", tmp_path)  # the next start writes it, then restores it
        assert spec.jid == jid and not spec.new_device
        assert (await db.call(registry_jids))["s0"] == jid

        # A registry JID that is no device JID at all: a new device, never handed to Go.
        await db.call(lambda conn: conn.execute("UPDATE ws_sessions SET jid = 'garbage' WHERE id = 's1'"))
        assert (await devices.spec("s1", tmp_path)).new_device

        await devices.forget("s0", tmp_path)
        assert await db.call(stored_devices) == set()
        assert (await db.call(registry_jids))["s0"] is None
        assert (await devices.spec("s0", tmp_path)).new_device


async def test_forget_before_whatsmeow_made_its_tables(database_url: str, tmp_path: Path) -> None:
    async with registry(database_url, "s0") as db:
        devices = PostgresDevices(db, database_url)
        await db.call(
            lambda conn: conn.execute("UPDATE ws_sessions SET jid = %s", (f"{phone(0)}:2@s.whatsapp.net",))
        )
        assert not await devices.has_credentials("s0", tmp_path)
        await devices.forget("s0", tmp_path)
        assert (await db.call(registry_jids))["s0"] is None


async def test_the_worker_refuses_a_shared_store_with_neither_account_nor_new_device(
    sim: Simulator,
    patched_dir: Path,
    database_url: str,
    tmp_path: Path,
) -> None:
    """The last line of defence against logging in as the store's first account (someone else's)."""

    class Careless(PostgresDevices):
        async def spec(self, session_id: str, directory: Path) -> DeviceSpec:
            return attrs.evolve(await super().spec(session_id, directory), jid=None, new_device=False)

    async with registry(database_url, "s0", "s1") as db:
        devices = PostgresDevices(db, database_url)
        async with pool_on(patched_dir, devices=devices) as pool, trio.open_nursery() as nursery:
            await pair(sim, await start(nursery, pool, "s0", tmp_path), phone(0))
            nursery.cancel_scope.cancel()
        logins = len(sim.events("login"))
        careless = Careless(db, database_url)
        async with pool_on(patched_dir, devices=careless) as pool, trio.open_nursery() as nursery:
            device = await start(nursery, pool, "s1", tmp_path)
            with trio.fail_after(30):
                while not device.ends:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert "needs the account's JID or a new device" in device.ends[0]
        assert device.count(QrCode) == device.count(Connected) == 0
        assert len(sim.events("login")) == logins  # s0's account was not opened for s1


async def all_show_a_qr(
    nursery: trio.Nursery, pools: list[WorkerPool], sessions: list[str], tmp_path: Path
) -> None:
    """Start every session at once, spread over `pools` in turn; each shows a QR and no attempt ends."""
    started: list[Device] = []
    async with trio.open_nursery() as together:
        for n, session in enumerate(sessions):
            device = Device(pools[n % len(pools)], session, tmp_path / session)
            started.append(device)
            together.start_soon(nursery.start, device.run)
    for device in started:
        await device.wait(QrCode)
    assert [device.ends for device in started] == [[]] * len(sessions)


async def test_sessions_starting_together_on_an_empty_store_all_show_a_qr(
    sim: Simulator,
    patched_dir: Path,
    database_url: str,
    tmp_path: Path,
) -> None:
    """whatsmeow's first schema upgrades collide when run at once (23505, measured): the first start
    creates the tables, the others wait for them, so no attempt fails."""
    sessions = [f"s{i}" for i in range(6)]
    async with registry(database_url, *sessions) as db:
        devices = PostgresDevices(db, database_url)
        async with pool_on(patched_dir, devices=devices) as pool, trio.open_nursery() as nursery:
            await all_show_a_qr(nursery, [pool], sessions, tmp_path)
            nursery.cancel_scope.cancel()


async def test_two_nodes_starting_together_on_an_empty_store_all_show_a_qr(
    sim: Simulator,
    patched_dir: Path,
    database_url: str,
    tmp_path: Path,
) -> None:
    """The same across nodes: one start in the whole cluster creates whatsmeow's tables (its node
    claims the turn in ws_device_store_upgrade); the other node's starts wait for them."""
    sessions = [f"s{i}" for i in range(6)]
    async with registry(database_url, *sessions) as db:
        first, second = PostgresDevices(db, database_url, "a"), PostgresDevices(db, database_url, "b")
        async with (
            pool_on(patched_dir, devices=first) as pool_a,
            pool_on(patched_dir, devices=second) as pool_b,
            trio.open_nursery() as nursery,
        ):
            await all_show_a_qr(nursery, [pool_b, pool_a], sessions, tmp_path)
            nursery.cancel_scope.cancel()
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT node FROM ws_device_store_upgrade").fetchone()[0] in ("a", "b")
