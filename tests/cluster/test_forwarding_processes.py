"""Two real service processes (fake engine) on the real PostgreSQL: every session answers through
either node, the one that does not own it forwarding to the owner the registry names."""

from __future__ import annotations

from functools import partial

import httpx
import pytest

from tests.cluster.nodes import Cluster

pytestmark = pytest.mark.cluster

SESSIONS = [f"s{n}" for n in range(6)]


@pytest.fixture
def cluster(cluster: Cluster) -> Cluster:
    """Two nodes, a and b (conftest's cluster, started)."""
    cluster.start("a")
    cluster.start("b")
    return cluster


def _status_through_both(cluster: Cluster, session_id: str) -> dict[str, httpx.Response]:
    """The session's /status asked of a and of b, once both show its QR."""
    answers: dict[str, httpx.Response] = {}

    def both_show_its_qr() -> bool:
        answers.update({n: cluster.get(n, "/status", session_id=session_id) for n in "ab"})
        return all(a.status_code == 200 and a.json()["state"] == "qr_ready" for a in answers.values())

    cluster.wait(both_show_its_qr, timeout=30, what=f"{session_id} showing a QR through a and b")
    return answers


def _connected(cluster: Cluster, node_id: str, session_id: str) -> bool:
    return cluster.get(node_id, "/status", session_id=session_id).json()["state"] == "connected"


def test_every_session_answers_through_either_node(cluster: Cluster):
    for n, session_id in enumerate(SESSIONS):  # placed on the least-loaded node, whichever is asked
        assert cluster.post("ab"[n % 2], "/connect", session_id=session_id).status_code == 200
    owners: dict[str, str] = {}
    for session_id in SESSIONS:
        answers = _status_through_both(cluster, session_id)
        owner = answers["a"].headers["X-Waservice-Node"]
        assert answers["b"].headers["X-Waservice-Node"] == owner
        assert answers["a"].json() == answers["b"].json() and answers["a"].json()["node"] == owner
        owners[session_id] = owner
    assert set(owners.values()) == {"a", "b"}, owners  # on both: each node forwards to the other

    for session_id, owner in owners.items():
        other = "b" if owner == "a" else "a"
        scanned = cluster.post(other, "/_fake/scan", session_id=session_id)  # the owner's fake engine
        assert scanned.status_code == 200 and scanned.headers["X-Waservice-Node"] == owner
        cluster.wait(partial(_connected, cluster, other, session_id), what=f"{session_id} seen connected")
        sent = cluster.post(
            other, "/send", session_id=session_id, number="14155552671", message="via the other"
        )
        assert sent.status_code == 200 and sent.headers["X-Waservice-Node"] == owner, sent.text
        on_owner = cluster.get(other, "/_fake/sent", session_id=session_id).json()["messages"]
        assert [m["text"] for m in on_owner] == ["via the other"]
