"""The lease SQL on the real server: one owner per session, epochs that fence stale owners, takeover
of an expired node's sessions, drain. Nodes are separate connections; races run in released threads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

import psycopg
import pytest

from tests.cluster.racing import run_together
from waservice.cluster import leases
from waservice.cluster.database import Database
from waservice.cluster.leases import Claim, LeaseLost

pytestmark = pytest.mark.cluster

TTL = 30.0


class Node:
    """One node's connection, each lease function in its own transaction, as `Database.call` runs it."""

    def __init__(self, url: str, node_id: str) -> None:
        self.id = node_id
        self.conn = psycopg.connect(url, autocommit=True)

    def run(self, fn, *args, **kwargs):
        with self.conn.transaction():
            return fn(self.conn, *args, **kwargs)

    def heartbeat(self, ttl: float = TTL):
        return self.run(leases.heartbeat, self.id, f"http://{self.id}.internal:3002", ttl)

    def claim(self, limit: int = 100) -> list[Claim]:
        return self.run(leases.claim, self.id, limit)

    def still_mine(self, session_id: str, epoch: int) -> bool:
        return self.run(leases.still_mine, self.id, session_id, epoch)

    def renew(self, held: dict[str, int], ttl: float = TTL) -> set[str]:
        return self.run(leases.renew, self.id, f"http://{self.id}.internal:3002", ttl, held)

    def write(self, session_id: str, epoch: int, **values: object) -> None:
        self.run(leases.fenced_update, self.id, session_id, epoch, **values)

    def expire(self) -> None:
        """What a crash looks like from the database: the lease simply runs out."""
        self.conn.execute(
            "UPDATE ws_nodes SET lease_until = now() - interval '1 second' WHERE node_id = %s", (self.id,)
        )


@pytest.fixture
def nodes(url: str) -> Iterator[tuple[Node, Node]]:
    a, b = Node(url, "node-a"), Node(url, "node-b")
    a.heartbeat()
    b.heartbeat()
    yield a, b
    a.conn.close()
    b.conn.close()


def add(node: Node, *session_ids: str, autoconnect: bool = True) -> None:
    for session_id in session_ids:
        assert node.run(leases.add_session, session_id, autoconnect=autoconnect)


def row(node: Node, session_id: str) -> tuple:
    return node.conn.execute(
        "SELECT owner, epoch, state, state_at FROM ws_sessions WHERE id = %s", (session_id,)
    ).fetchone()


def test_two_nodes_racing_for_one_session_exactly_one_wins_every_round(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    wins = {a.id: 0, b.id: 0}
    for round_ in range(60):
        session = f"race-{round_}"
        add(a, session)
        got_a, got_b = run_together([lambda: a.claim(1), lambda: b.claim(1)])
        assert sorted([got_a, got_b], key=len) == [[], [Claim(session, 1)]], (round_, got_a, got_b)
        winner = a if got_a else b
        wins[winner.id] += 1
        assert row(a, session)[:2] == (winner.id, 1)
        # The loser keeps trying while the winner lives, and gets nothing.
        loser = b if winner is a else a
        assert loser.claim() == []
    assert sum(wins.values()) == 60


def test_many_sessions_split_between_racing_nodes_without_overlap(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    for round_ in range(10):
        sessions = {f"bulk-{round_}-{i:02}" for i in range(40)}
        add(a, *sorted(sessions))
        got_a, got_b = run_together([lambda: a.claim(25), lambda: b.claim(25)])
        ids_a = {c.session_id for c in got_a}
        ids_b = {c.session_id for c in got_b}
        assert not ids_a & ids_b
        assert ids_a | ids_b == sessions
        assert all(c.epoch == 1 for c in got_a + got_b)


def test_the_epoch_increases_on_every_takeover(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    add(a, "s")
    owner, other = a, b
    epochs = []
    for _ in range(6):
        owner.heartbeat()
        [claim] = owner.claim()
        epochs.append(claim.epoch)
        assert owner.still_mine("s", claim.epoch)
        owner.expire()
        owner, other = other, owner
    # A release hands over too, and counts as a change of owner.
    owner.heartbeat()
    [claim] = owner.claim()
    assert owner.run(leases.release, owner.id) == {"s"}
    other.heartbeat()
    [after_release] = other.claim()
    assert epochs == [1, 2, 3, 4, 5, 6]
    assert (claim.epoch, after_release.epoch) == (7, 8)


def test_a_stale_owners_fenced_write_is_refused_and_changes_nothing(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    add(a, "s")
    [mine] = a.claim()
    a.write("s", mine.epoch, state="connected", jid="111@s.whatsapp.net")
    assert row(a, "s")[:3] == ("node-a", 1, "connected")

    a.expire()
    [taken] = b.claim()
    assert taken == Claim("s", 2)
    b.write("s", taken.epoch, state="connecting")
    before = row(b, "s")

    with pytest.raises(LeaseLost) as lost:
        a.write("s", mine.epoch, state="connected")
    assert (lost.value.session_id, lost.value.node_id, lost.value.epoch) == ("s", "node-a", 1)
    # Back alive, the old owner still cannot write with its old epoch, nor guess the new one.
    a.heartbeat()
    with pytest.raises(LeaseLost):
        a.write("s", mine.epoch, state="stopped")
    with pytest.raises(LeaseLost):
        a.write("s", taken.epoch, state="stopped")
    assert row(b, "s") == before
    assert before[:3] == ("node-b", 2, "connecting")


def test_an_owner_whose_lease_ran_out_cannot_write_even_before_anyone_takes_over(
    nodes: tuple[Node, Node],
) -> None:
    a, _ = nodes
    add(a, "s")
    [mine] = a.claim()
    a.expire()
    with pytest.raises(LeaseLost):
        a.write("s", mine.epoch, state="connected")
    assert row(a, "s")[2] == "disconnected"  # as the claim left it: nothing written


def test_a_node_whose_lease_expired_loses_its_sessions_to_a_live_node(url: str) -> None:
    a, b = Node(url, "short"), Node(url, "live")
    with a.conn, b.conn:
        a.heartbeat(ttl=0.5)
        b.heartbeat()
        add(a, "s1", "s2", "s3")
        held = {c.session_id: c.epoch for c in a.claim()}
        assert held == {"s1": 1, "s2": 1, "s3": 1}
        assert b.claim() == []  # not while the owner lives
        assert a.renew(held, ttl=0.5) == {"s1", "s2", "s3"}

        time.sleep(0.7)  # no renewal: the server's clock runs the lease out
        taken = b.claim()
        assert taken == [Claim("s1", 2), Claim("s2", 2), Claim("s3", 2)]
        assert not any(a.still_mine(s, e) for s, e in held.items())
        assert all(b.still_mine(c.session_id, c.epoch) for c in taken)
        # The old owner's next renewal tells it to stop all three, and it claims nothing back.
        assert a.renew(held) == set()
        assert a.claim() == []


def test_a_new_owner_does_not_show_the_former_owners_state(url: str) -> None:
    """Until the new owner writes its own, a taken session reads 'disconnected', not what the dead
    owner last wrote (a client polling GET /sessions would see 'connected' before it is)."""
    from waservice.cluster import registry

    a, b = Node(url, "short"), Node(url, "live")
    with a.conn, b.conn:
        a.heartbeat(ttl=0.5)
        b.heartbeat()
        add(a, "s1", "s2")
        held = {c.session_id: c.epoch for c in a.claim()}
        a.run(registry.write_states, a.id, {sid: (epoch, "connected") for sid, epoch in held.items()})
        assert a.run(registry.session, "s1").state == "connected"
        time.sleep(0.7)
        b.claim(limit=1)  # s1, by the claim
        b.run(registry.take, b.id, "s2", connect=False)  # s2, asked for on b
        for sid in ("s1", "s2"):
            row = b.run(registry.session, sid)
            assert (row.owner, row.state) == ("live", "disconnected")


def test_still_mine_is_false_for_an_expired_owner_nobody_has_replaced(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    add(a, "s")
    [mine] = a.claim()
    assert a.still_mine("s", 1)
    assert not a.still_mine("s", 2)
    assert not a.still_mine("missing", 1)
    a.expire()
    assert not a.still_mine("s", mine.epoch)


def test_renew_reports_only_sessions_still_held_at_the_same_epoch(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    add(a, "s1", "s2", "s3")
    held = {c.session_id: c.epoch for c in a.claim()}
    a.conn.execute("DELETE FROM ws_sessions WHERE id = 's2'")
    a.run(leases.release, a.id, ["s3"])
    [moved] = b.claim()
    assert moved == Claim("s3", 2)
    assert a.renew(held) == {"s1"}
    assert a.renew({}) == set()


def test_claims_skip_sessions_that_do_not_autoconnect_and_nodes_that_are_not_live(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    add(a, "manual", autoconnect=False)
    add(a, "auto")
    b.expire()
    assert b.claim() == []
    assert a.claim() == [Claim("auto", 1)]
    ghost = Node(a.conn.info.dsn, "never-heartbeat")
    with ghost.conn:
        add(a, "later")
        assert ghost.claim() == []


def test_a_drained_node_hands_everything_over_and_claims_nothing_more(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    add(a, "s1", "s2")
    assert len(a.claim()) == 2
    assert a.run(leases.drain, a.id) == {"s1", "s2"}
    add(a, "s3")
    a.heartbeat()  # still live and answering, but not taking sessions
    assert a.claim() == []
    assert b.claim() == [Claim("s1", 2), Claim("s2", 2), Claim("s3", 1)]


def test_the_node_lease_is_server_time_plus_the_ttl(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    until = a.heartbeat(ttl=20)
    server_now = a.conn.execute("SELECT now()").fetchone()[0]
    assert 19 <= (until - server_now).total_seconds() <= 20.5
    url_now = a.conn.execute("SELECT url FROM ws_nodes WHERE node_id = 'node-a'").fetchone()[0]
    assert url_now == "http://node-a.internal:3002"


def test_fenced_update_writes_only_registry_columns(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    add(a, "s")
    [mine] = a.claim()
    with pytest.raises(ValueError, match="owner"):
        a.write("s", mine.epoch, owner="node-b")
    with pytest.raises(ValueError):
        a.write("s", mine.epoch)


async def test_the_lease_functions_run_through_database_call(url: str) -> None:
    async with Database.open(url, size=2) as db:
        await db.call(leases.heartbeat, "n1", "http://n1:3002", TTL)
        await db.call(leases.add_session, "s")
        [claim] = await db.call(leases.claim, "n1", 10)
        await db.call(partial(leases.fenced_update, state="connected"), "n1", "s", claim.epoch)
        assert await db.call(leases.still_mine, "n1", "s", claim.epoch)
        assert await db.call(leases.renew, "n1", "http://n1:3002", TTL, {"s": claim.epoch}) == {"s"}


def test_a_burst_of_placements_spreads_over_the_live_nodes(url: str):
    """Placements take turns and each counts the ones before it (30 at once: 10 per node)."""
    from waservice.cluster import registry

    for node_id in ("a", "b", "c"):
        Node(url, node_id).heartbeat()
    placers = [Node(url, f"client{n}") for n in range(30)]
    placed = run_together([partial(p.run, registry.place, f"new{n}") for n, p in enumerate(placers)])
    counts = {node_id: sum(1 for target in placed if target.node_id == node_id) for node_id in "abc"}
    assert counts == {"a": 10, "b": 10, "c": 10}
    again = placers[0].run(registry.place, "new0")  # an existing session: its owner, nothing new
    assert again.node_id == placed[0].node_id
