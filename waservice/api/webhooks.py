"""The webhook routes: validate, one call into the webhook service, shape the JSON."""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Blueprint, current_app, request
from quart_schema import document_querystring, document_request, document_response, tag

from ..errors import Forbidden, InvalidRequest
from ..store.webhooks import Delivery, StoredWebhook
from ..webhooks.service import WebhookService, WebhookSpec
from .caller import caller, filtered_by_caller
from .routes import errors, iso_seconds
from .validation import read_body
from .webhook_models import (
    DeliveriesQuery,
    DeliveriesResponse,
    DeliveryView,
    RedeliverRequest,
    RedeliverResponse,
    WebhookCreated,
    WebhookDeleted,
    WebhookRequest,
    WebhookResponse,
    WebhooksResponse,
    WebhookView,
)

bp = Blueprint("webhooks", __name__)


def service() -> WebhookService:
    return current_app.extensions["waservice.webhooks"]


def _visible(webhook: StoredWebhook) -> StoredWebhook:
    """The one authorisation point for a webhook by id: a session key reaches only the webhooks
    filtered to its own session (one for every session is the admin's)."""
    who = caller()
    if not who.is_admin and webhook.session_id != who.session_id:
        raise Forbidden(f"this key acts on session '{who.session_id}' only, and this webhook is not its")
    return webhook


def _scope() -> str | None:
    """The session whose webhooks the caller may list; None: all."""
    return caller().session_id


def _view(webhook: StoredWebhook) -> WebhookView:
    return WebhookView(
        id=webhook.id,
        url=webhook.url,
        events=list(webhook.events),
        session_id=webhook.session_id,
        created_at=iso_seconds(webhook.created_at),
        source=webhook.source,
    )


def _delivery(d: Delivery) -> DeliveryView:
    return DeliveryView(
        event_id=d.event_id,
        event_type=d.event_type,
        session_id=d.session_id,
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=iso_seconds(d.next_attempt_at) if d.next_attempt_at is not None else None,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        updated_at=iso_seconds(d.updated_at),
    )


async def _webhook(webhook_id: str) -> StoredWebhook:
    return _visible(await service().get(webhook_id))


@bp.post("/webhooks")
@tag(["Webhooks"])
@document_request(WebhookRequest)
@document_response(WebhookCreated, 201)
@errors(400, 401, 403, 415, 503)
async def create_webhook() -> tuple[WebhookCreated, int]:
    """Deliver events to a URL, signed by the Standard Webhooks specification.

    The response carries the signing secret: it is shown this once."""
    body = await read_body(WebhookRequest)
    if body.session_id is None and not caller().is_admin:  # the body's own session_id is checked before
        raise Forbidden("a webhook for every session needs the admin API key; give your session_id")
    spec = WebhookSpec(body.url, tuple(body.events), body.session_id, body.secret)
    webhook, secret = await service().create(spec)
    return WebhookCreated(webhook=_view(webhook), secret=secret), 201


@bp.get("/webhooks")
@tag(["Webhooks"])
@document_response(WebhooksResponse)
@errors(401, 403, 503)
@filtered_by_caller
async def list_webhooks() -> WebhooksResponse:
    """Every webhook (secrets are never shown again)."""
    return WebhooksResponse(webhooks=[_view(w) for w in await service().webhooks(_scope())])


@bp.get("/webhooks/<webhook_id>")
@tag(["Webhooks"])
@document_response(WebhookResponse)
@errors(401, 403, 404, 503)
@filtered_by_caller
async def get_webhook(webhook_id: str) -> WebhookResponse:
    """One webhook."""
    return WebhookResponse(webhook=_view(await _webhook(webhook_id)))


@bp.delete("/webhooks/<webhook_id>")
@tag(["Webhooks"])
@document_response(WebhookDeleted)
@errors(400, 401, 403, 404, 503)
@filtered_by_caller
async def delete_webhook(webhook_id: str) -> WebhookDeleted:
    """Stop delivering to it and forget its deliveries (a config.toml webhook is removed there)."""
    await _webhook(webhook_id)
    await service().delete(webhook_id)
    return WebhookDeleted()


@bp.get("/webhooks/<webhook_id>/deliveries")
@tag(["Webhooks"])
@document_querystring(DeliveriesQuery)
@document_response(DeliveriesResponse)
@errors(400, 401, 403, 404, 503)
@filtered_by_caller
async def list_deliveries(webhook_id: str) -> DeliveriesResponse:
    """Its deliveries, newest event first: status, attempts, next attempt, last answer."""
    query = _deliveries_query()
    await _webhook(webhook_id)
    page, total = await service().deliveries(webhook_id, query.status, query.limit, query.offset)
    return DeliveriesResponse(deliveries=[_delivery(d) for d in page], total=total)


@bp.post("/webhooks/<webhook_id>/redeliver")
@tag(["Webhooks"])
@document_request(RedeliverRequest)
@document_response(RedeliverResponse)
@errors(400, 401, 403, 404, 415, 503)
@filtered_by_caller
async def redeliver(webhook_id: str) -> RedeliverResponse:
    """Send dead deliveries again now (or one event's, whatever its status), in log order."""
    body = await read_body(RedeliverRequest)
    await _webhook(webhook_id)
    return RedeliverResponse(redelivered=await service().redeliver(webhook_id, body.event_id))


def _deliveries_query() -> DeliveriesQuery:
    try:
        query = msgspec.convert(request.args.to_dict(), DeliveriesQuery, strict=False)
    except msgspec.ValidationError as exc:
        problem = str(exc).replace("`$.", "`").replace(" - at ", " for ")
        raise InvalidRequest(f"invalid query: {problem}") from None
    return query


def link_routes(paths: dict[str, Any]) -> None:
    """A webhook created by POST /webhooks can be read, listed, redelivered and deleted: say so
    (OpenAPI links), so clients and fuzzers reach those routes with an id that exists."""
    by_id = {"parameters": {"webhook_id": "$response.body#/webhook/id"}}
    links = {
        name: {"operationId": operation, **by_id}
        for name, operation in [
            ("GetWebhook", "get_get_webhook"),
            ("ListDeliveries", "get_list_deliveries"),
            ("Redeliver", "post_redeliver"),
            ("DeleteWebhook", "delete_delete_webhook"),
        ]
    }
    responses = paths.get("/webhooks", {}).get("post", {}).get("responses", {})
    response = responses.get(201, responses.get("201"))  # int keys until serialised
    if response is not None:
        response["links"] = links
