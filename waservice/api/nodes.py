"""The cluster's nodes (several nodes on one PostgreSQL): list them, drain one for maintenance."""

from __future__ import annotations

from datetime import datetime

import attrs
from quart import Blueprint, current_app
from quart_schema import document_response, tag

from ..cluster import registry
from ..cluster.service import Cluster
from ..errors import UnknownNode
from .caller import admin_only
from .models import SessionView
from .routes import errors, iso_seconds


@attrs.define
class NodeView:
    node_id: str
    url: str  # where the other nodes reach its API
    live: bool  # its lease lasts: it owns sessions and answers for them
    draining: bool  # handing its sessions over (POST /nodes/{node_id}/drain); until it restarts
    lease_until: str  # ISO 8601, UTC, by the database's clock
    started_at: str
    sessions: int  # sessions it owns


@attrs.define
class NodesResponse:
    node_id: str  # the node that answered
    nodes: list[NodeView]
    success: bool = True


@attrs.define
class DrainResponse:
    node_id: str
    message: str
    success: bool = True


bp = Blueprint("nodes", __name__)


def cluster() -> Cluster:
    return current_app.extensions["waservice.cluster"]


def _iso(moment: datetime) -> str:
    """The API's format (UTC, to the second), whatever time zone the database answers in."""
    return iso_seconds(moment.timestamp())


@bp.get("/nodes")
@tag(["Cluster"])
@admin_only
@document_response(NodesResponse)
@errors(401, 403, 503)
async def list_nodes() -> NodesResponse:
    """The cluster's nodes, their lease and how many sessions each owns."""
    rows = await cluster().node.call(registry.nodes)
    views = [
        NodeView(r.node_id, r.url, r.live, r.draining, _iso(r.lease_until), _iso(r.started_at), r.sessions)
        for r in rows
    ]
    return NodesResponse(node_id=cluster().node.node_id, nodes=views)


@bp.post("/nodes/<node_id>/drain")
@tag(["Cluster"])
@admin_only
@document_response(DrainResponse)
@errors(401, 403, 404, 503)
async def drain_node(node_id: str) -> DrainResponse:
    """Hand a node's sessions over to the others, for maintenance; it keeps answering the API.

    The node stops its sessions at its next lease renewal (within a quarter of `cluster.lease_ttl`),
    then releases them, and the others connect them from the stored keys, with no QR. It takes no
    session until it restarts. `GET /nodes` shows its sessions going to 0."""
    if not await cluster().node.call(registry.set_draining, node_id):
        raise UnknownNode(f"no node '{node_id}' in the cluster; GET /nodes lists them")
    return DrainResponse(
        node_id=node_id,
        message=f"node {node_id} hands its sessions over at its next lease renewal; GET /nodes shows it",
    )


async def registry_views(clustered: Cluster) -> list[SessionView]:
    """Every session of the cluster as the registry has it (GET /sessions on any node)."""
    rows = await clustered.node.call(registry.sessions)
    return [_session_view(row) for row in rows]


def _session_view(row: registry.SessionRow) -> SessionView:
    return SessionView(
        session_id=row.id,
        state=row.state,
        phone_number=row.jid.split("@")[0].split(":")[0] if row.jid else None,
        has_qr=row.state == "qr_ready",
        reconnect_attempts=0,
        last_error=row.down_reason,
        state_changed_at=_iso(row.state_at),
        node=row.owner,
    )
