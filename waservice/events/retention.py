"""Old events leave the log in the background, a bounded chunk at a time."""

from __future__ import annotations

import logging
import time

import trio

from ..errors import StorageFailed
from ..store import EventStore

log = logging.getLogger("waservice.events")

PRUNE_INTERVAL = 600.0


async def prune_forever(store: EventStore, retention_days: float, interval: float = PRUNE_INTERVAL) -> None:
    while True:
        try:
            before = time.time() - retention_days * 86400
            while (pruned := await store.prune(before)) > 0:
                log.info("pruned %d event(s) older than %g day(s)", pruned, retention_days)
                await trio.sleep(0)  # big backlogs go in chunks; let others write between them
        except StorageFailed as exc:
            log.warning("could not prune the event log: %s", exc)
        await trio.sleep(interval)
