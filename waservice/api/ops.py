"""Operating the service: `GET /metrics` (Prometheus) and `GET /ready` (may traffic be sent here).

`/health` (routes.py) says the process answers; `/ready` says it can do its work. Readiness is a
list of checks, each returning why the service is not ready or None; a later part (a database, a
cluster lease) appends its own with `readiness_checks(app).append(check)`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, current_app
from quart_schema import document_response, security_scheme, tag
from quart_trio import QuartTrio

from ..config import MetricsConfig
from ..metrics import SessionCollector, WorkerCollector
from ..sessions.machine import State
from ..sessions.manager import SessionManager
from .caller import admin_only
from .routes import errors, manager

ReadinessCheck = Callable[[], Awaitable[str | None]]

bp = Blueprint("ops", __name__)
_CHECKS = "waservice.readiness"


@attrs.define
class ReadyResponse:
    ready: bool = True
    success: bool = True


@attrs.define
class NotReadyResponse:
    error: str  # the reasons, joined
    reasons: list[str]
    ready: bool = False
    success: bool = False


def readiness_checks(app: QuartTrio) -> list[ReadinessCheck]:
    return app.extensions[_CHECKS]


def install_ops(app: QuartTrio, manager: SessionManager, config: MetricsConfig) -> None:
    """The /metrics and /ready routes, the collectors read at scrape time, the default checks."""
    metrics = manager.metrics
    sessions = manager.sessions
    metrics.add(
        "sessions",
        SessionCollector(
            lambda: [(s.session_id, s.machine.state.value, s.machine.reconnect_attempts) for s in sessions()],
            [state.value for state in State],
            config.per_session_max,
        ),
    )
    stats = getattr(manager.engine, "stats", None)
    if stats is not None:  # the worker pool; the fake engine runs in-process
        metrics.add("workers", WorkerCollector(stats, lambda: dict(manager.engine.restart_causes)))
    app.extensions[_CHECKS] = [_sessions_restored(manager), _workers_up(manager)]
    app.register_blueprint(bp)


def document_metrics(paths: dict[str, Any]) -> None:
    """quart-schema documents JSON bodies only: say what /metrics answers."""
    operation = paths.get("/metrics", {}).get("get")
    if operation is not None:
        content = {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}
        responses = operation.setdefault("responses", {})
        responses[200] = {
            "description": "Prometheus text format",
            "content": content,
        }  # int keys, as the rest


def _sessions_restored(manager: SessionManager) -> ReadinessCheck:
    async def check() -> str | None:
        return None if manager.restored.is_set() else "restoring the stored sessions"

    return check


def _workers_up(manager: SessionManager) -> ReadinessCheck:
    async def check() -> str | None:
        stats = getattr(manager.engine, "stats", None)
        if stats is None:
            return None
        workers = stats()
        if any(w.state == "running" for w in workers):
            return None
        states = ", ".join(f"worker {w.index} {w.state}" for w in workers)
        return f"no engine worker is running ({states})"

    return check


@bp.get("/metrics")
@tag(["Health"])
@admin_only  # unless `[metrics] public`: then a public path (app.py), which no key check reaches
@errors(401, 403)
async def metrics_view() -> Response:
    """Prometheus metrics (text format). Needs the admin key unless `[metrics] public = true`."""
    body = generate_latest(manager().metrics.registry)
    return Response(body, content_type=CONTENT_TYPE_LATEST)


@bp.get("/ready")
@tag(["Health"])
@security_scheme([])
@document_response(ReadyResponse)
@document_response(NotReadyResponse, 503)
@errors(403)
async def ready() -> tuple[ReadyResponse | NotReadyResponse, int]:
    """200 once the service can do its work (sessions restored, engine workers up); else 503 with
    the reasons. Never needs the API key: a load balancer asks it."""
    reasons = [reason for check in readiness_checks(current_app) if (reason := await check()) is not None]
    if reasons:
        return NotReadyResponse(error="not ready: " + "; ".join(reasons), reasons=reasons), 503
    return ReadyResponse(), 200
