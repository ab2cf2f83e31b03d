"""The registry of sessions. Owns the nursery in which every session supervisor runs."""

from __future__ import annotations

import logging

import trio

from ..engine import Engine, SentMessage
from ..errors import ProtectedSession, UnknownSession
from ..store import SessionStore
from .ids import DEFAULT_SESSION, validate_session_id
from .machine import ReconnectPolicy
from .supervisor import SessionSupervisor

log = logging.getLogger("waservice.sessions")


class SessionManager:
    def __init__(self, engine: Engine, store: SessionStore, policy: ReconnectPolicy) -> None:
        self.engine = engine
        self.store = store
        self.policy = policy
        self._sessions: dict[str, SessionSupervisor] = {}
        self._started: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[SessionManager] = trio.TASK_STATUS_IGNORED) -> None:
        """Restore the stored sessions, report ready, then supervise until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._restore()
            task_status.started(self)
            await trio.sleep_forever()

    async def _restore(self) -> None:
        self.store.add(DEFAULT_SESSION)
        for stored in self.store.list():
            session = await self._add(stored.id, persist=False)
            if stored.autoconnect and await self.engine.has_credentials(session.directory):
                session.connect()
        log.info("restored %d session(s)", len(self._sessions))

    async def _add(self, session_id: str, persist: bool = True) -> SessionSupervisor:
        if session_id in self._sessions:
            await self._started[session_id].wait()
            return self._sessions[session_id]
        if self._nursery is None:
            raise RuntimeError("the session manager is not running")
        session = SessionSupervisor(session_id, self.engine, self.store.directory(session_id), self.policy)
        self._sessions[session_id] = session
        self._started[session_id] = started = trio.Event()
        if persist:
            self.store.add(session_id)
        await self._nursery.start(session.supervise)
        started.set()
        return session

    # -- what the API calls ---------------------------------------------------------------------

    def sessions(self) -> list[SessionSupervisor]:
        return [s for s in self._sessions.values() if self._started[s.session_id].is_set()]

    def get(self, session_id: str) -> SessionSupervisor:
        session = self._sessions.get(validate_session_id(session_id))
        if session is None or not self._started[session_id].is_set():
            raise UnknownSession(f"session '{session_id}' not found; POST /connect creates it")
        return session

    async def connect(self, session_id: str) -> SessionSupervisor:
        session = await self._add(validate_session_id(session_id))
        self.store.set_autoconnect(session_id, True)
        session.connect()
        return session

    async def disconnect(self, session_id: str) -> SessionSupervisor:
        session = self.get(session_id)
        self.store.set_autoconnect(session_id, False)
        await session.disconnect()
        return session

    def reset_reconnect(self, session_id: str) -> SessionSupervisor:
        session = self.get(session_id)
        session.reset_reconnect()
        return session

    async def delete(self, session_id: str) -> None:
        session = self.get(session_id)
        if session_id == DEFAULT_SESSION:
            raise ProtectedSession("the 'default' session cannot be deleted")
        del self._sessions[session_id]
        del self._started[session_id]
        await session.logout()
        await session.close()
        self.store.remove(session_id)  # deletes the folder, credentials included
        log.info("session=%s deleted", session_id)

    async def send_text(self, session_id: str, number: str, text: str) -> SentMessage:
        return await self.get(session_id).send_text(number, text)
