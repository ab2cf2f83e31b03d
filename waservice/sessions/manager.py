"""The registry of sessions. Owns the nursery in which every session supervisor runs.

Creating, disconnecting and deleting a session hold that id's lock, so they happen one after the
other; they run as tasks of the manager, so a request that gives up (the client went away) never
leaves one half-done. The sessions in memory and the sessions stored are the same set whenever no
lock is held.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio

from ..engine import Engine, SentMessage
from ..engine.content import Content
from ..errors import (
    ProtectedSession,
    ServiceError,
    SessionIdCollision,
    TooManySessions,
    UnknownSession,
)
from ..events.model import Activity
from ..ids import DEFAULT_SESSION, case_key, validate_session_id
from ..metrics import Metrics
from ..store import SessionStore
from .locks import KeyedLock
from .machine import ReconnectPolicy
from .sendqueue import DEFAULT_QUEUE_SIZE, Pacing
from .supervisor import SessionSupervisor, UnlinkResult

log = logging.getLogger("waservice.sessions")
T = TypeVar("T")

DEFAULT_MAX_SESSIONS = 10_000
UNLINK_TIMEOUT = 20.0  # DELETE connects a paired session this long, at most, to unlink it


@attrs.frozen
class DeleteResult:
    unlinked: bool
    warning: str | None = None


class SessionManager:
    def __init__(
        self,
        engine: Engine,
        store: SessionStore,
        policy: ReconnectPolicy,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        unlink_timeout: float = UNLINK_TIMEOUT,
        record: Callable[[Activity], None] | None = None,
        metrics: Metrics | None = None,
        pacing: Pacing | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        still_mine: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.engine = engine
        self.still_mine = still_mine  # several nodes: the lease check (see SessionSupervisor)
        self.pacing = pacing or Pacing()  # every session's send queue
        self.queue_size = queue_size
        self.store = store
        self.policy = policy
        self.max_sessions = max_sessions
        self.unlink_timeout = unlink_timeout
        self.record = record  # every session's state changes, as events
        self._sessions: dict[str, SessionSupervisor] = {}
        self._by_case: dict[str, str] = {}  # case_key -> id, to refuse ids that differ only by case
        self._creating = 0  # new sessions past the limit check, not yet registered
        self._locks = KeyedLock()
        self._nursery: trio.Nursery | None = None
        self.metrics = metrics or Metrics()
        self.restored = trio.Event()  # the stored sessions are back (GET /ready waits for it)

    async def run(self, *, task_status: trio.TaskStatus[SessionManager] = trio.TASK_STATUS_IGNORED) -> None:
        """Restore the stored sessions, report ready, then supervise until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._restore()
            self.restored.set()
            task_status.started(self)
            await trio.sleep_forever()

    async def stop(self, deadline: float) -> None:
        """Stop every session at once; whatever has not stopped by `deadline` is cancelled."""
        with trio.move_on_at(deadline) as scope:
            async with trio.open_nursery() as nursery:
                for session in list(self._sessions.values()):
                    nursery.start_soon(session.disconnect)
        if scope.cancelled_caught:
            log.warning("sessions still stopping at the shutdown deadline: cancelled")
        if self._nursery is not None:  # None: stopped before it began restoring
            self._nursery.cancel_scope.cancel()

    async def _restore(self) -> None:
        await self.store.ensure(DEFAULT_SESSION)
        stored = await self.store.list()
        for row in stored:
            await self._start(row.id, row.down_reason)
        async with trio.open_nursery() as nursery:  # the credential probes touch disk: in parallel
            for row in stored:
                if row.autoconnect:
                    nursery.start_soon(self._connect_if_paired, self._sessions[row.id])
        log.info("restored %d session(s)", len(self._sessions))

    async def _connect_if_paired(self, session: SessionSupervisor) -> None:
        if await session.may_be_paired():  # a device store it cannot read fails its own session only
            session.connect()

    async def _start(self, session_id: str, down_reason: str | None = None) -> SessionSupervisor:
        session = SessionSupervisor(
            session_id,
            self.engine,
            self.store,
            self.policy,
            down_reason=down_reason,
            record=self.record,
            metrics=self.metrics,
            pacing=self.pacing,
            queue_size=self.queue_size,
            still_mine=self.still_mine,
        )
        await self._require_nursery().start(session.supervise)
        self._sessions[session_id] = session
        self._by_case.setdefault(case_key(session_id), session_id)
        return session

    def _forget(self, session_id: str) -> None:
        """No longer run here (deleted, or owned by another node): free the id and its case key."""
        del self._sessions[session_id]
        if self._by_case.get(case_key(session_id)) == session_id:
            del self._by_case[case_key(session_id)]

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the session manager is not running")
        return self._nursery

    async def _to_completion(self, work: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run `work` as the manager's task: if the caller is cancelled, the work still finishes."""
        result: list[T] = []
        error: list[Exception] = []
        finished = trio.Event()

        async def run() -> None:
            try:
                result.append(await work(*args))
            except Exception as exc:
                error.append(exc)
            finally:
                finished.set()

        self._require_nursery().start_soon(run)
        await finished.wait()
        if error:
            raise error[0]
        if not result:
            raise ServiceError("the service is stopping; the request did not finish")
        return result[0]

    # -- what the cluster node calls (cluster/node.py) ------------------------------------------

    async def adopt(self, session_id: str, autoconnect: bool, down_reason: str | None) -> None:
        """Run a session this node has just come to own (claimed, or its own after a restart)."""
        async with self._locks.hold(case_key(session_id)):
            if session_id in self._sessions:
                return
            session = await self._start(session_id, down_reason)
        if autoconnect:
            await self._connect_if_paired(session)

    async def relinquish(self, session_id: str) -> None:
        """Stop a session this node no longer owns, leaving the registry and the device alone."""
        async with self._locks.hold(case_key(session_id)):
            session = self._sessions.get(session_id)
            if session is None:
                return
            self._forget(session_id)
            await session.close()
        log.info("session=%s handed over", session_id)

    # -- what the API calls ---------------------------------------------------------------------

    def sessions(self) -> list[SessionSupervisor]:
        return list(self._sessions.values())

    def state_of(self, session_id: str) -> str | None:
        """The session's state, if it runs here."""
        session = self._sessions.get(session_id)
        return None if session is None else session.machine.state.value

    def get(self, session_id: str) -> SessionSupervisor:
        session = self._sessions.get(validate_session_id(session_id))
        if session is None:
            raise UnknownSession(f"session '{session_id}' not found; POST /connect creates it")
        return session

    async def connect(self, session_id: str) -> SessionSupervisor:
        return await self._to_completion(self._connect, validate_session_id(session_id))

    async def _connect(self, session_id: str) -> SessionSupervisor:
        async with self._locks.hold(case_key(session_id)):
            session = self._sessions.get(session_id)
            if session is None:
                session = await self._create(session_id)
            else:
                await session.set_autoconnect(True)
            session.connect()
            return session

    async def _create(self, session_id: str) -> SessionSupervisor:
        other = self._by_case.get(case_key(session_id))
        if other is not None:
            raise SessionIdCollision(
                f"session_id '{session_id}' differs from the existing session '{other}' only by letter "
                "case; both would share one folder on a case-insensitive filesystem, so use another id"
            )
        if len(self._sessions) + self._creating >= self.max_sessions:
            raise TooManySessions(
                f"too many sessions ({self.max_sessions}, the sessions.max setting); delete one first"
            )
        self._creating += 1
        try:
            await self.store.add(session_id, autoconnect=True)  # StorageFailed: nothing registered
            return await self._start(session_id)
        finally:
            self._creating -= 1

    async def disconnect(self, session_id: str) -> SessionSupervisor:
        return await self._to_completion(self._disconnect, validate_session_id(session_id))

    async def _disconnect(self, session_id: str) -> SessionSupervisor:
        async with self._locks.hold(case_key(session_id)):
            session = self.get(session_id)
            await session.set_autoconnect(False)
            await session.disconnect()
            return session

    def reset_reconnect(self, session_id: str) -> SessionSupervisor:
        session = self.get(session_id)
        session.reset_reconnect()
        return session

    async def delete(self, session_id: str) -> DeleteResult:
        validate_session_id(session_id)
        if session_id == DEFAULT_SESSION:
            raise ProtectedSession("the 'default' session cannot be deleted")
        return await self._to_completion(self._delete, session_id)

    async def _delete(self, session_id: str) -> DeleteResult:
        async with self._locks.hold(case_key(session_id)):
            session = self.get(session_id)
            unlink = await session.unlink(self.unlink_timeout)
            if unlink.warning:
                log.warning("session=%s %s", session_id, unlink.warning)
            await session.disconnect()
            await session.forget_device()
            # StorageFailed: the session stays, disconnected, and the client sees why.
            leftovers = await self.store.remove(session_id)
            self._forget(session_id)
            await session.close()
        log.info("session=%s deleted", session_id)
        return _delete_result(unlink, leftovers)

    async def send(self, session_id: str, chat: str, content: Content) -> SentMessage:
        return await self.get(session_id).send(chat, content)


def _delete_result(unlink: UnlinkResult, leftovers: list[str]) -> DeleteResult:
    warnings = [unlink.warning] if unlink.warning else []
    if leftovers:
        for leftover in leftovers:
            log.error("could not delete %s", leftover)
        warnings.append(
            f"{len(leftovers)} file(s) could not be deleted (first: {leftovers[0]}); the next start retries"
        )
    return DeleteResult(unlinked=unlink.unlinked, warning="; ".join(warnings) or None)
