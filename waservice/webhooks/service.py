"""What the routes call: webhooks created, listed, deleted; their deliveries listed and redelivered.

The secret is returned by `create` once and never again (no view of a webhook carries it).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence

import attrs
import trio

from ..config import WebhookConfig, WebhookDeliveryConfig
from ..errors import InvalidRequest, UnknownWebhook
from ..events.hub import EventHub
from ..ids import validate_session_id
from ..metrics import Metrics
from ..store import EventStore
from ..store.webhooks import Delivery, StoredWebhook, WebhookTables
from . import rules, signing
from .dispatcher import WEBHOOK_SHARE, Dispatcher, LaneClaims
from .schedule import RetryPolicy
from .sender import HttpSender


@attrs.frozen
class WebhookSpec:
    """A webhook as asked for (API body or config file), not yet stored."""

    url: str
    events: tuple[str, ...]
    session_id: str | None = None
    secret: str | None = attrs.field(default=None, repr=False)


class WebhookService:
    def __init__(self, store: EventStore, tables: WebhookTables, dispatcher: Dispatcher) -> None:
        self.store = store
        self.tables = tables
        self.dispatcher = dispatcher

    async def create(self, spec: WebhookSpec) -> tuple[StoredWebhook, str]:
        """Store a webhook; returns it and its secret (generated when the spec has none)."""
        webhook = stored(spec, "wh_" + secrets.token_hex(8), "api")
        if await self.store.call(self.tables.count) >= rules.MAX_WEBHOOKS:
            raise InvalidRequest(f"at most {rules.MAX_WEBHOOKS} webhooks; delete one first")
        await self.store.call(self.tables.create, webhook)
        return webhook, webhook.secret

    async def webhooks(self, session_id: str | None = None) -> list[StoredWebhook]:
        return await self.store.call(self.tables.enabled, session_id)

    async def get(self, webhook_id: str) -> StoredWebhook:
        webhook = await self.store.call(self.tables.get, webhook_id)
        if webhook is None:
            raise UnknownWebhook(f"no webhook '{webhook_id[:80]}'")
        return webhook

    async def delete(self, webhook_id: str) -> None:
        webhook = await self.get(webhook_id)
        if webhook.source == "config":
            raise InvalidRequest("this webhook is defined in config.toml: remove it there and restart")
        await self.store.call(self.tables.delete, webhook_id)
        self.dispatcher.forget(webhook_id)

    async def deliveries(
        self, webhook_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[list[Delivery], int]:
        await self.get(webhook_id)
        return await self.store.call(self.tables.deliveries, webhook_id, status, limit, offset)

    async def redeliver(self, webhook_id: str, event_id: int | None) -> int:
        """Dead deliveries, or the one of `event_id`, are sent again now; returns how many."""
        await self.get(webhook_id)
        count = await self.store.call(self.tables.redeliver, webhook_id, event_id)
        if event_id is not None and count == 0:
            raise UnknownWebhook(f"webhook '{webhook_id}' has no delivery of event {event_id}")
        await self.dispatcher.poke(webhook_id)
        return count

    async def configure(self, specs: Sequence[WebhookSpec]) -> None:
        """The config file's webhooks, under ids derived from (url, session): their delivery state
        carries over restarts."""
        configured = [stored(spec, config_id(spec.url, spec.session_id), "config") for spec in specs]
        await self.store.call(self.tables.sync_config, configured)


def config_id(url: str, session_id: str | None) -> str:
    digest = hashlib.sha256(f"{url}\n{session_id or ''}".encode()).hexdigest()
    return "wh_cfg_" + digest[:16]


def stored(spec: WebhookSpec, webhook_id: str, source: str) -> StoredWebhook:
    """Validate a spec into a storable webhook; raises InvalidRequest naming the field."""
    try:
        url = rules.check_url(spec.url)
        events = rules.check_events(spec.events)
        secret = spec.secret or signing.new_secret()
        signing.secret_key(secret)
    except ValueError as exc:  # InvalidWebhook, InvalidSecret
        raise InvalidRequest(str(exc)) from None
    session_id = None if spec.session_id is None else validate_session_id(spec.session_id)
    return StoredWebhook(webhook_id, url, events, session_id, secret, time.time(), source)


async def run_webhooks(
    store: EventStore,
    tables: WebhookTables,
    hub: EventHub,
    delivery: WebhookDeliveryConfig,
    configured: Sequence[WebhookConfig] = (),
    *,
    metrics: Metrics | None = None,
    claims: LaneClaims | None = None,
    task_status: trio.TaskStatus[WebhookService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The config file's webhooks stored, then delivery until cancelled; started() gives the service.
    `claims`: in a cluster, how the nodes share the lanes (cluster/lanes.py)."""
    sender = HttpSender(delivery.timeout, connections=max(1, delivery.concurrency // WEBHOOK_SHARE))
    policy = RetryPolicy(max_age=delivery.max_age_hours * 3600)
    dispatcher = Dispatcher(
        store, tables, hub, sender, policy, delivery.concurrency, metrics=metrics, claims=claims
    )
    service = WebhookService(store, tables, dispatcher)
    try:
        await service.configure([WebhookSpec(c.url, c.events, c.session_id, c.secret) for c in configured])
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run)
            task_status.started(service)
    finally:
        with trio.CancelScope(shield=True):
            await sender.aclose()
