"""The Quart-Trio application: routes, API-key check, JSON errors, web page and offline Swagger UI."""

from __future__ import annotations

import functools
import hmac
import logging
import mimetypes
from pathlib import Path

import msgspec
from quart import Response, request
from quart_schema import APIKeySecurityScheme, Info, OpenAPIProvider, QuartSchema
from quart_trio import QuartTrio
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.security import safe_join

from .. import __version__
from ..errors import ServiceError, Unauthorized
from ..sessions.manager import SessionManager
from . import models, routes

log = logging.getLogger("waservice.api")

# Pages and assets that hold no data stay public, so the web page can load and ask for the key.
PUBLIC_PATHS = ("/health", "/", "/openapi.json", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/", "/api-docs")
MAX_BODY_BYTES = 1024 * 1024


def web_root() -> Path:
    installed = Path(__file__).resolve().parent.parent / "web"  # inside a built wheel
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "web"


class _Provider(OpenAPIProvider):
    """quart-schema inlines each msgspec model but drops the nested ones it refers to; add them.

    The document is built once: routes do not change after start, and building it takes ~3 ms
    of the event loop on a public route.
    """

    _built: dict | None = None

    def schema(self) -> dict:
        if self._built is None:
            self._built = self._build()
        return self._built

    def _build(self) -> dict:
        schema = super().schema()
        _, components = msgspec.json.schema_components(
            [models.SendResult, models.SessionView], ref_template="#/components/schemas/{name}"
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        return schema


def create_app(manager: SessionManager, api_key: str = "") -> QuartTrio:
    app = QuartTrio("waservice", static_folder=None)  # our /static/ serves web/
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = "/api-docs/assets/swagger-ui-bundle.js"
    app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = "/api-docs/assets/swagger-ui.css"
    app.extensions["waservice.manager"] = manager
    QuartSchema(
        app,
        info=Info(title="waservice", version=__version__, description="Multi-session WhatsApp REST API"),
        swagger_ui_path="/api-docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
        conversion_preference="msgspec",
        security_schemes={"ApiKey": APIKeySecurityScheme(in_="header", name="X-API-Key")},
        security=[{"ApiKey": []}],
        openapi_provider_class=_Provider,
    )
    app.register_blueprint(routes.bp)
    _add_pages(app)
    _add_errors(app)
    if api_key:
        _require_api_key(app, api_key)
    if manager.engine.name == "fake":
        from .fake import bp as fake_bp

        app.register_blueprint(fake_bp)
    return app


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


def _add_pages(app: QuartTrio) -> None:
    @app.get("/")
    async def index() -> Response:
        return _asset(web_root(), "index.html")

    @app.get("/static/<path:name>")
    async def static_file(name: str) -> Response:
        return _asset(web_root(), name)

    @app.get("/api-docs/assets/<path:name>")
    async def swagger_asset(name: str) -> Response:
        return _asset(Path(str(swagger_ui_path)), name)

    for view in (index, static_file, swagger_asset):
        view.__dict__["_quart_schema_hidden"] = True  # not part of the API document


def _error(message: str, status: int) -> tuple[dict, int]:
    return {"success": False, "error": message}, status


def _add_errors(app: QuartTrio) -> None:
    @app.errorhandler(ServiceError)
    async def service_error(error: ServiceError):
        return _error(error.message, error.status_code)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException):
        if isinstance(error, NotFound):
            return _error(f"not found: {request.method} {request.path}", 404)
        return _error(error.description or error.name, error.code or 500)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error("internal server error", 500)


def _require_api_key(app: QuartTrio, api_key: str) -> None:
    expected = api_key.encode()

    @app.before_request
    async def check_api_key() -> None:
        path = request.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return
        given = request.headers.get("X-API-Key", "")
        if not given:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode(), expected):
            raise Unauthorized("missing or invalid API key (send X-API-Key or Authorization: Bearer)")
