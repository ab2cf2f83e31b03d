"""This node among others on one PostgreSQL: its lease, the sessions it owns, failover and drain.

Every `lease_ttl / 4` seconds the node renews its lease in one transaction, which also says which of
its sessions are still its own, takes orphans (sessions whose owner's lease ran out) up to its fair
share, and lists what the registry says it owns. The node then makes the sessions it runs match:
it stops those it lost and starts those it gained (`SessionManager.adopt` / `relinquish`).

Three rules keep a WhatsApp device connected from one node at a time:
- A node that could not renew for 3/4 of the lease stops every session it runs (the watchdog),
  before the lease ends and another node may claim them: its database may be unreachable while
  WhatsApp is not. Times are measured from when the last successful renewal was *sent*.
- Nodes claim only sessions whose owner's lease has ended, by the server's clock.
- A draining node stops its sessions first, then releases them for the others to claim.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

import attrs
import psycopg
import trio

from ..errors import ClusterUnavailable, SessionMoving
from ..events.model import SESSION_STATUS, Activity
from . import leases, registry
from .database import Database, DatabaseError

if TYPE_CHECKING:
    from ..sessions.manager import SessionManager

log = logging.getLogger("waservice.cluster")
T = TypeVar("T")

STATE_BATCH_DELAY = 0.05  # seconds to gather state changes into one write


@attrs.frozen
class Renewal:
    still: set[str]  # of the sessions held when it was sent, those that are still this node's
    owned: dict[str, registry.Owned]  # everything the registry says this node owns now
    draining: bool


def _renew(conn: psycopg.Connection, node_id: str, url: str, ttl: float, held: dict[str, int]) -> Renewal:
    still = leases.renew(conn, node_id, url, ttl, held)
    draining = registry.is_draining(conn, node_id)
    if not draining and (share := registry.fair_share(conn, node_id)) > 0:  # at its share: no claim
        leases.claim(conn, node_id, share)
    return Renewal(still, registry.owned(conn, node_id), draining)


def _leave(conn: psycopg.Connection, node_id: str) -> None:
    leases.release(conn, node_id)
    conn.execute("UPDATE ws_nodes SET lease_until = now() WHERE node_id = %s", (node_id,))


class ClusterNode:
    def __init__(self, db: Database, node_id: str, url: str, ttl: float) -> None:
        self.db = db
        self.node_id = node_id
        self.url = url
        self.ttl = ttl
        self.held: dict[str, int] = {}  # session id -> epoch: the sessions this node runs
        self.draining = False
        self.renewed_at = -math.inf  # trio time the last successful renewal was sent
        self._renewed = trio.Event()  # replaced after each successful renewal
        self._manager: SessionManager | None = None
        self._nursery: trio.Nursery | None = None
        self._dirty: set[str] = set()  # sessions whose state must be written through
        self._wake_writer = trio.Event()
        self._failing_since: float | None = None

    @property
    def interval(self) -> float:
        return self.ttl / 4

    @property
    def stop_after(self) -> float:
        return self.ttl * 3 / 4

    # -- running --------------------------------------------------------------------------------

    async def run(
        self, manager: SessionManager, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Join the cluster, take this node's share of sessions, and keep the lease until cancelled."""
        self._manager = manager
        await manager.restored.wait()
        sent = trio.current_time()
        await self.db.call(registry.start_node, self.node_id, self.url, self.ttl)
        self.renewed_at = sent
        log.info("node %s joined the cluster as %s", self.node_id, self.url)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watchdog)
            nursery.start_soon(self._write_states)
            await self.renew()
            task_status.started()
            while True:
                await trio.sleep(self.interval)
                await self.renew()

    async def renew(self) -> None:
        """One renewal: keep the lease, then stop what was lost and start what was gained."""
        sent = trio.current_time()
        snapshot = dict(self.held)
        try:
            with trio.fail_after(self.interval * 2):
                renewal = await self.db.call(
                    _renew, self.node_id, self.url, self.ttl, snapshot, abandon_on_cancel=True
                )
        except (DatabaseError, trio.TooSlowError) as exc:
            self._renewal_failed(sent, exc)
            return
        if self._failing_since is not None:
            log.warning("node %s renewed its lease again", self.node_id)
            self._failing_since = None
        self.renewed_at = sent
        self._renewed.set()
        self._renewed = trio.Event()
        self.draining = renewal.draining
        lost = [
            sid for sid, epoch in snapshot.items() if sid not in renewal.still and self.held.get(sid) == epoch
        ]
        for sid in lost:
            del self.held[sid]
        if lost:
            log.warning("node %s lost %d session(s) to other nodes: %s", self.node_id, len(lost), _few(lost))
        if renewal.draining:
            await self._hand_over()
            return
        await self._relinquish(lost)
        for sid, owned in renewal.owned.items():
            if sid not in self.held:
                self.held[sid] = owned.epoch
                self._start(sid, owned)

    def _renewal_failed(self, sent: float, exc: BaseException) -> None:
        if self._failing_since is None:
            self._failing_since = sent
            log.error(
                "node %s could not renew its lease (%s); its sessions stop in %.0f s unless it can",
                self.node_id,
                exc if isinstance(exc, DatabaseError) else "no answer from the database",
                max(0.0, self.renewed_at + self.stop_after - trio.current_time()),
            )

    async def _watchdog(self) -> None:
        """Stop every session before a lease that could not be renewed can end."""
        while True:
            deadline = self.renewed_at + self.stop_after
            if trio.current_time() < deadline:
                await trio.sleep_until(deadline)
                continue
            if self.held:
                log.error(
                    "node %s: no lease renewal for %.0f s; stopping its %d session(s) before another "
                    "node may take them",
                    self.node_id,
                    trio.current_time() - self.renewed_at,
                    len(self.held),
                )
                ids = list(self.held)
                self.held.clear()
                await self._relinquish(ids)
            await self._renewed.wait()

    async def _hand_over(self) -> None:
        """Draining: stop every session, then release them all for the other nodes to claim."""
        ids = list(self.held)
        if ids:
            log.info("node %s draining: handing over %d session(s)", self.node_id, len(ids))
        await self._relinquish(ids)
        self.held.clear()
        try:
            await self.db.call(leases.release, self.node_id)
        except DatabaseError as exc:
            log.warning("node %s could not release its sessions yet: %s", self.node_id, exc)

    def _start(self, session_id: str, owned: registry.Owned) -> None:
        manager, nursery = self._running()
        nursery.start_soon(self._adopt, manager, session_id, owned)

    async def _adopt(self, manager: SessionManager, session_id: str, owned: registry.Owned) -> None:
        await manager.adopt(session_id, owned.autoconnect, owned.down_reason)
        self.state_changed(session_id)  # the registry still shows the former owner's last state

    async def _relinquish(self, session_ids: Iterable[str]) -> None:
        manager, _ = self._running()
        async with trio.open_nursery() as nursery:
            for sid in session_ids:
                nursery.start_soon(manager.relinquish, sid)

    def _running(self) -> tuple[SessionManager, trio.Nursery]:
        if self._manager is None or self._nursery is None:
            raise RuntimeError("the cluster node is not running")
        return self._manager, self._nursery

    async def leave(self) -> None:
        """At shutdown, once the sessions have stopped: release them and end the lease, so that the
        other nodes take them over at their next renewal instead of when the lease would end."""
        self.held.clear()
        with trio.CancelScope(shield=True), trio.move_on_after(self.interval):
            try:
                await self.db.call(_leave, self.node_id, abandon_on_cancel=True)
                log.info("node %s left the cluster", self.node_id)
            except DatabaseError as exc:
                log.warning(
                    "node %s could not release its sessions (%s); they move at lease end", self.node_id, exc
                )

    # -- what the sessions ask ------------------------------------------------------------------

    async def still_mine(self, session_id: str) -> bool:
        """Whether this node still owns the session (at the epoch it runs it at); no answer is no."""
        epoch = self.held.get(session_id)
        if epoch is None:
            return False
        try:
            with trio.fail_after(self.interval):
                return await self.db.call(
                    leases.still_mine, self.node_id, session_id, epoch, abandon_on_cancel=True
                )
        except (DatabaseError, trio.TooSlowError):
            return False

    async def take_here(self, session_id: str) -> bool:
        """Own and run a session nobody live owns (asked for on this node); False if none exists."""
        manager, _ = self._running()
        owned = await self.call(registry.take, self.node_id, session_id, connect=False)
        if owned is None:
            return False
        self.held[session_id] = owned.epoch
        await self._adopt(manager, session_id, owned)
        return True

    async def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``fn(connection, *args, **kwargs)`` in a transaction, its failures as the API's errors."""
        try:
            return await self.db.call(lambda conn: fn(conn, *args, **kwargs))
        except DatabaseError as exc:
            raise ClusterUnavailable(f"the cluster database cannot be reached: {exc}") from None
        except registry.OwnedElsewhere as exc:
            raise SessionMoving(
                f"session '{exc.session_id}' has just been taken by node {exc.owner}; retry"
            ) from None

    # -- state written through to the registry --------------------------------------------------

    def record(self, activity: Activity) -> None:
        """Sees every session event; a state change is written through to the registry."""
        if activity.type == SESSION_STATUS:
            self.state_changed(activity.session_id)

    def state_changed(self, session_id: str) -> None:
        self._dirty.add(session_id)
        self._wake_writer.set()

    async def _write_states(self) -> None:
        manager, _ = self._running()
        while True:
            await self._wake_writer.wait()
            self._wake_writer = trio.Event()
            await trio.sleep(STATE_BATCH_DELAY)
            dirty, self._dirty = self._dirty, set()
            states = {
                sid: (self.held[sid], state)
                for sid in dirty
                if sid in self.held and (state := manager.state_of(sid)) is not None
            }
            try:
                await self.db.call(registry.write_states, self.node_id, states)
            except DatabaseError:
                self._dirty |= dirty  # written once the database answers again
                await trio.sleep(self.interval)
                self._wake_writer.set()


def _few(ids: list[str], shown: int = 5) -> str:
    more = f" (+{len(ids) - shown} more)" if len(ids) > shown else ""
    return ", ".join(sorted(ids)[:shown]) + more
