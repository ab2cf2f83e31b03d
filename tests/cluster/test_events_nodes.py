"""Two real service processes on one PostgreSQL (fake engine): the event log is the cluster's. A
webhook created through one node gets every event of both nodes once, under the log's ids, and
GET /events on either node streams them all."""

from __future__ import annotations

import collections
import re

import httpx
import psycopg
import pytest

from tests.cluster.nodes import Cluster
from tests.cluster.receiver import Receiver

pytestmark = pytest.mark.cluster


def _logged(database_url: str) -> list[tuple[int, str]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT id, session_id FROM ws_events ORDER BY id").fetchall()


def _stream_ids(cluster: Cluster, node_id: str, count: int) -> list[int]:
    ids: list[int] = []
    url = cluster.nodes[node_id].url + "/events"
    with httpx.stream("GET", url, params={"after": 0}, timeout=30) as response:
        assert response.status_code == 200
        pending = None  # an `id:` line is an event's when an `event:` line follows (else a cursor move)
        for line in response.iter_lines():
            if line.startswith("event:") and pending is not None:
                ids.append(pending)
            pending = int(match[1]) if (match := re.fullmatch(r"id: (\d+)", line)) else None
            if len(ids) >= count:
                return ids
    return ids


def test_a_webhook_and_the_streams_carry_every_nodes_events_once(
    cluster: Cluster, receiver: Receiver, database_url: str
) -> None:
    cluster.start("a")
    cluster.start("b")
    created = cluster.post("b", "/webhooks", url=receiver.url, events=["*"])
    assert created.status_code in (200, 201), created.text
    cluster.pair_fake("a", "s1", "15550000001")
    cluster.pair_fake("b", "s2", "15550000002")
    logged = _logged(database_url)
    assert {session for _, session in logged} >= {"s1", "s2"}  # both nodes logged, one sequence
    ids = [event_id for event_id, _ in logged]
    cluster.wait(lambda: set(receiver.ids()) >= set(ids), timeout=30, what="every event delivered")
    for node_id in ("a", "b"):
        assert _stream_ids(cluster, node_id, len(ids))[: len(ids)] == ids, node_id
    counted = collections.Counter(receiver.ids())
    assert [i for i, c in counted.items() if c > 1] == []  # once across the cluster
    assert all(event["id"] == event_id for event_id, event in receiver.received)  # the log's ids
    per_session = collections.defaultdict(list)
    for event_id, event in receiver.received:
        per_session[event["session_id"]].append(event_id)
    assert all(seq == sorted(seq) for seq in per_session.values())  # in order per lane
