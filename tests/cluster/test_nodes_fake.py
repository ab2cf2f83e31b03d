"""Three real service processes on one PostgreSQL with the fake engine: what a user of a cluster sees
through the API (the real engine and the simulator: test_nodes_real.py)."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.cluster.nodes import Cluster
from tests.cluster.tcpproxy import TcpProxy

pytestmark = pytest.mark.cluster


def test_a_killed_nodes_sessions_reconnect_on_the_others(cluster: Cluster, database_url: str):
    cluster.start("a")  # alone: /connect places a new session on the least-loaded live node
    for n in range(6):
        cluster.pair_fake("a", f"s{n}", f"1555000000{n}")
    cluster.start("b")
    cluster.start("c")
    owners = cluster.owners("b")
    assert {owners[f"s{n}"] for n in range(6)} == {"a"}
    nodes = cluster.get("c", "/nodes").json()["nodes"]
    assert {n["node_id"]: n["live"] for n in nodes} == {"a": True, "b": True, "c": True}

    cluster.kill("a")

    def moved() -> bool:
        sessions = cluster.sessions("b")
        return all(
            sessions[f"s{n}"]["node"] in ("b", "c") and sessions[f"s{n}"]["state"] == "connected"
            for n in range(6)
        )

    cluster.wait(moved, timeout=30, what="a's sessions connected on b and c")
    owners = cluster.owners("c")
    spread = [owners[f"s{n}"] for n in range(6)]
    assert spread.count("b") >= 2 and spread.count("c") >= 2, spread  # shared out, not all on one
    with psycopg.connect(database_url) as conn:
        epochs = dict(conn.execute("SELECT id, epoch FROM ws_sessions WHERE id LIKE 's%'").fetchall())
    assert set(epochs.values()) == {2}

    cluster.start("a")  # it comes back: it takes nothing back
    cluster.wait(lambda: {n["node_id"]: n["live"] for n in cluster.get("b", "/nodes").json()["nodes"]}["a"])
    before = cluster.owners("b")
    time.sleep(cluster.ttl)  # several renewals of every node
    assert cluster.owners("b") == before


def test_drain_through_the_api_hands_everything_over(cluster: Cluster):
    cluster.start("a")
    for n in range(4):
        cluster.pair_fake("a", f"s{n}", f"1555000000{n}")
    cluster.start("b")
    response = cluster.post("b", "/nodes/a/drain")
    assert response.status_code == 200, response.text

    def drained() -> bool:
        sessions = cluster.sessions("a")  # a keeps answering the API
        return all(
            sessions[f"s{n}"]["node"] == "b" and sessions[f"s{n}"]["state"] == "connected" for n in range(4)
        )

    cluster.wait(drained, timeout=30, what="a's sessions on b")
    nodes = {n["node_id"]: n for n in cluster.get("a", "/nodes").json()["nodes"]}
    assert nodes["a"]["draining"] and nodes["a"]["sessions"] == 0 and nodes["a"]["live"]
    assert cluster.post("a", "/nodes/nope/drain").status_code == 404


def test_a_stopped_node_hands_its_sessions_over_at_once(cluster: Cluster):
    cluster.start("a")
    cluster.pair_fake("a", "s1", "15550000001")
    cluster.start("b")
    assert cluster.nodes["a"].stop() == 0
    # Released at shutdown: taken at b's next renewal (ttl / 4), not when a's lease would end.
    cluster.wait(
        lambda: (
            cluster.sessions("b")["s1"]["node"] == "b" and cluster.sessions("b")["s1"]["state"] == "connected"
        ),
        timeout=cluster.ttl,
        what="s1 on b within one lease",
    )


def test_a_partitioned_node_stops_its_sessions_before_another_takes_them(cluster: Cluster, database_url: str):
    with TcpProxy.to_url(database_url) as proxy:
        cluster.start("a", database_url=proxy.url)
        cluster.pair_fake("a", "s1", "15550000001")
        cluster.start("b")
        proxy.block()  # a's database stops answering; WhatsApp still does
        cut_at = time.monotonic()
        cluster.wait(
            lambda: (
                cluster.sessions("b")["s1"]["node"] == "b"
                and cluster.sessions("b")["s1"]["state"] == "connected"
            ),
            timeout=cluster.ttl * 4,
            what="s1 taken over by b",
        )
        taken_after = time.monotonic() - cut_at
        log = cluster.log("a")
        assert "no lease renewal" in log and "session=s1 handed over" in log, log[-2000:]
        assert taken_after >= cluster.ttl * 0.75, "taken over before a could have stopped"
        proxy.unblock()
        # Back in touch: a renews again and takes nothing back.
        cluster.wait(lambda: "renewed its lease again" in cluster.log("a"), timeout=cluster.ttl * 4)
        time.sleep(cluster.ttl / 2)
        assert cluster.sessions("a")["s1"]["node"] == "b"
