"""The Quart-Trio application: routes, request guards, API-key check, JSON errors, web page and
offline Swagger UI."""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import mimetypes
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from quart import Request, Response, request
from quart_schema import APIKeySecurityScheme, Info, OpenAPIProvider, QuartSchema
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing.converters import BaseConverter
from werkzeug.security import safe_join

from .. import __version__
from ..config import MediaConfig, MetricsConfig
from ..errors import ClusterUnavailable, SendQueueFull, ServiceError, SessionMoving
from ..media.cache import MediaCache
from ..media.fetch import FetchPolicy
from ..media.intake import base64_size_limit
from ..media.spool import Spool
from ..messaging import Messaging
from ..sessions.manager import SessionManager
from ..store.messages import MessageIndex
from ..webhooks.service import WebhookService
from . import keys, media, messaging, models, routes, stream, webhook_models, webhooks
from .caller import Authenticator
from .event_schemas import event_components
from .guards import HostGuard, OriginGuard
from .idempotency import IdempotencyKeys, document_idempotency, install_idempotency
from .ops import document_metrics, install_ops
from .status import status_for

if TYPE_CHECKING:  # only a node of a cluster imports them (they need PostgreSQL's driver)
    from ..cluster.forward import Forwarding
    from ..cluster.service import Cluster

log = logging.getLogger("waservice.api")

# Pages and assets that hold no data stay public, so the web page can load and ask for the key.
PUBLIC_PATHS = ("/health", "/ready", "/", "/openapi.json", "/favicon.ico")
# Answered at once while the stored sessions are being restored (with the public paths).
RESTORE_FREE_PATHS = ("/metrics", *PUBLIC_PATHS)
PUBLIC_PREFIXES = ("/static/", "/api-docs")
MAX_BODY_BYTES = 1024 * 1024
LARGE_BODY_PATHS = frozenset({messaging.MEDIA_PATH})  # their bodies stream (see _request_class)

# On every response, pages, API and errors alike. The page and Swagger UI load only their own
# files (no inline script or style, nothing from another origin); QR codes are data: images.
SECURITY_HEADERS = {
    "Content-Security-Policy": "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
}


def web_root() -> Path:
    installed = Path(__file__).resolve().parent.parent / "web"  # inside a built wheel
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "web"


def swagger_ui_root() -> Path:
    """Swagger UI 5 (reads OpenAPI 3.1), from flask-swagger-ui's copy of swagger-ui-dist.

    Only its files are used; finding the package without importing it keeps Flask out.
    """
    spec = importlib.util.find_spec("flask_swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("flask-swagger-ui is not installed (it ships Swagger UI's files)")
    return Path(next(iter(spec.submodule_search_locations))) / "dist"


class _Provider(OpenAPIProvider):
    """The document states every rule the API enforces, and what quart-schema leaves out.

    It is built once: routes do not change after start, and building it takes ~3 ms of the event
    loop on a public route.
    """

    _built: dict | None = None

    def schema(self) -> dict:
        if self._built is None:
            self._built = self._build()
        return self._built

    def _build(self) -> dict:
        schema = super().schema()
        # quart-schema inlines each msgspec model but drops the nested ones it refers to.
        _, components = msgspec.json.schema_components(
            [
                models.SendResult,
                models.SessionView,
                models.NumberCheckView,
                keys.KeyView,
                webhook_models.WebhookView,
                webhook_models.DeliveryView,
            ],
            ref_template="#/components/schemas/{name}",
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        schema["components"]["schemas"].update(event_components())
        _link_session_routes(schema["paths"])
        webhooks.link_routes(schema["paths"])
        document_metrics(schema["paths"])
        stream.document_event_stream(schema["paths"])
        media.document_media(schema["paths"])
        messaging.document_recipients(schema["paths"])
        document_idempotency(self._app, schema["paths"])
        return schema

    def build_request_body(self, model: type, source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        body, components = super().build_request_body(model, source)
        # A body with required fields cannot be left out; the others may be (the seed's defaults).
        if msgspec.json.schema(model).get("$defs", {}).get(model.__name__, {}).get("required"):
            body["required"] = True
        return body, components

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if name == "session_id":
            (parameter["schema"],) = msgspec.json.schema_components([models.SessionId])[0]
        return parameter


def _link_session_routes(paths: dict[str, Any]) -> None:
    """A session created by /connect can be looked at and deleted: say so (OpenAPI links), so
    clients and fuzzers reach those routes with an id that exists."""
    by_session = {"parameters": {"session_id": "$response.body#/session_id"}}
    links = {
        "GetStatus": {"operationId": "get_status", **by_session},
        "GetQr": {"operationId": "get_qr", **by_session},
        "DeleteSession": {"operationId": "delete_delete_session", **by_session},
    }
    responses = paths.get("/connect", {}).get("post", {}).get("responses", {})
    response = responses.get(200, responses.get("200"))  # int keys until serialised
    if response is not None:
        response["links"] = links


def create_app(
    manager: SessionManager,
    api_key: str = "",
    allowed_hosts: Iterable[str] = (),
    *,
    webhook_service: WebhookService | None = None,
    metrics: MetricsConfig | None = None,
    live: stream.LiveEvents | None = None,
    messages: MessageIndex | None = None,
    media_config: MediaConfig | None = None,
    check_number: bool = False,
    idempotency: IdempotencyKeys | None = None,
    cluster: Cluster | None = None,
    forwarding: Forwarding | None = None,
) -> QuartTrio:
    """`webhook_service` and `live` (the event log and its hub) add /webhooks and GET /events;
    `messages` (the message index beside the log) lets replies, reactions, edits, deletes, reads
    and media downloads find the messages they name; `idempotency` makes the send routes honour
    Idempotency-Key (else the header is ignored); `forwarding` (a node of a cluster) sends a
    request for a session another node owns to that node."""
    metrics = metrics or MetricsConfig()
    media_config = media_config or MediaConfig()
    app = QuartTrio("waservice", static_folder=None)  # our /static/ serves web/
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.request_class = _request_class(app.request_class, media_config.max_bytes)
    app.extensions["waservice.manager"] = manager
    _add_messaging(app, manager, messages, media_config, check_number)
    QuartSchema(
        app,
        info=Info(title="waservice", version=__version__, description="Multi-session WhatsApp REST API"),
        swagger_ui_path=None,  # served by _add_pages, without inline script
        redoc_ui_path=None,
        scalar_ui_path=None,
        conversion_preference="msgspec",
        security_schemes={"ApiKey": APIKeySecurityScheme(in_="header", name="X-API-Key")},
        security=[{"ApiKey": []}],
        openapi_provider_class=_Provider,
    )
    if idempotency is not None:
        install_idempotency(app, idempotency)
    app.register_blueprint(routes.bp)
    app.register_blueprint(messaging.bp)
    app.register_blueprint(media.bp)
    if webhook_service is not None:
        app.extensions["waservice.webhooks"] = webhook_service
        app.register_blueprint(webhooks.bp)
    app.register_blueprint(keys.bp)
    if cluster is not None:
        from . import nodes  # psycopg is loaded only for a cluster

        app.extensions["waservice.cluster"] = cluster
        app.register_blueprint(nodes.bp)
    install_ops(app, manager, metrics)
    if live is not None:
        app.extensions["waservice.live"] = live
        app.register_blueprint(stream.bp)
    _add_pages(app)
    _add_errors(app)
    app.after_request(_add_security_headers)
    _add_guards(app, api_key, allowed_hosts)
    public = (*PUBLIC_PATHS, "/metrics") if metrics.public else PUBLIC_PATHS
    app.before_request(Authenticator(api_key, manager.store, public, PUBLIC_PREFIXES).check)
    app.before_request(_restored(manager))
    if manager.engine.name == "fake":
        from .fake import bp as fake_bp

        app.register_blueprint(fake_bp)
    if forwarding is not None:  # last: after the guards, the key check and the restore wait
        forwarding.install(app)
    return app


def _add_messaging(
    app: QuartTrio,
    manager: SessionManager,
    messages: MessageIndex | None,
    config: MediaConfig,
    check_number: bool,
) -> None:
    data_dir = manager.store.data_dir
    cache = MediaCache(data_dir, config.cache_max_bytes, config.cache_max_age_hours * 3600)
    app.extensions["waservice.messaging"] = Messaging(manager, messages, Spool(data_dir), cache, check_number)
    app.extensions["waservice.fetch_policy"] = FetchPolicy(
        config.fetch_timeout, config.max_redirects, config.allow_private_urls
    )
    app.extensions["waservice.max_media_bytes"] = config.max_bytes


def _request_class(base: type[Request], max_media_bytes: int) -> type[Request]:
    """Requests whose body may be as large as media (base64 in JSON, or a multipart upload) on
    /send-media; every other route keeps MAX_BODY_BYTES. The multipart upload streams, and its
    cap is counted as it does (media.max_bytes); this bound only refuses a larger Content-Length
    before anything is read."""
    media_body = base64_size_limit(max_media_bytes) + MAX_BODY_BYTES

    class _Request(base):  # type: ignore[misc,valid-type]
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
            if path in LARGE_BODY_PATHS:
                kwargs["max_content_length"] = media_body
            super().__init__(method, scheme, path, *args, **kwargs)

    return _Request


@functools.lru_cache(maxsize=64)
def _read_asset(path: Path) -> bytes:
    return path.read_bytes()


def _asset(root: Path, name: str) -> Response:
    """A file from a directory of static assets (small, read once, kept in memory)."""
    path = safe_join(str(root), name)
    if path is None or not Path(path).is_file():
        raise NotFound()
    mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    response = Response(_read_asset(Path(path)), mimetype=mimetype)
    response.headers["Cache-Control"] = "no-cache"
    return response


async def _add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _add_pages(app: QuartTrio) -> None:
    @app.get("/")
    async def index() -> Response:
        return _asset(web_root(), "index.html")

    @app.get("/static/<path:name>")
    async def static_file(name: str) -> Response:
        return _asset(web_root(), name)

    @app.get("/api-docs")
    async def api_docs() -> Response:
        return _asset(web_root(), "api-docs.html")

    @app.get("/api-docs/init.js")
    async def api_docs_init() -> Response:
        return _asset(web_root(), "api-docs.js")

    @app.get("/api-docs/assets/<path:name>")
    async def swagger_asset(name: str) -> Response:
        return _asset(swagger_ui_root(), name)

    for view in (index, static_file, api_docs, api_docs_init, swagger_asset):
        view.__dict__["_quart_schema_hidden"] = True  # not part of the API document


def _error(message: str, status: int) -> tuple[dict, int]:
    return {"success": False, "error": message}, status


def _add_errors(app: QuartTrio) -> None:
    @app.errorhandler(ServiceError)
    async def service_error(error: ServiceError):
        body, status = _error(error.message, status_for(error))
        if isinstance(error, SendQueueFull):  # when a slot is likely to free up
            return body, status, {"Retry-After": str(math.ceil(error.retry_after))}
        if isinstance(error, SessionMoving | ClusterUnavailable):
            return body, status, {"Retry-After": "1"}
        return body, status

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException):
        if isinstance(error, NotFound):
            return _error(f"not found: {request.method} {request.path}", 404)
        return _error(error.description or error.name, error.code or 500)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error("internal server error", 500)


def _add_guards(app: QuartTrio, api_key: str, allowed_hosts: Iterable[str]) -> None:
    @app.before_request
    async def read_body_first() -> None:
        # Answering before the body is in (a 405, a 403) leaves h11 unable to start the next
        # request on the connection, so hypercorn must close it, and quart-trio's cancellation
        # on http.disconnect can lose that close (the client then waits forever; schemathesis's
        # read timeouts). Reading the body first (bounded by MAX_CONTENT_LENGTH) keeps every
        # answered connection reusable. Media uploads stream instead, under their own cap.
        if request.path not in LARGE_BODY_PATHS:
            await request.get_data(cache=True)

    if not api_key:  # with a key, a rebound page cannot read anything anyway
        app.before_request(HostGuard(allowed_hosts).check)
    app.before_request(OriginGuard(allowed_hosts).check)


def _restored(manager: SessionManager) -> Callable[[], Awaitable[None]]:
    async def wait_for_restore() -> None:
        # The server answers while the sessions are restored (so /ready can say so); a request
        # about sessions waits until they are back rather than see a half-restored list.
        path = request.path
        if path not in RESTORE_FREE_PATHS and not path.startswith(PUBLIC_PREFIXES):
            await manager.restored.wait()

    return wait_for_restore
