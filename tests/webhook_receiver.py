"""A webhook receiver for tests: a small trio HTTP/1.1 server (h11) on a free port, answering from a
script, keeping every request and verifying its signature with the `standardwebhooks` library."""

from __future__ import annotations

import json
from collections.abc import Callable

import attrs
import h11
import trio
from standardwebhooks import Webhook


@attrs.frozen
class Answer:
    status: int = 200
    delay: float = 0.0  # seconds before answering (longer than the sender's timeout: a hung receiver)
    headers: tuple[tuple[str, str], ...] = ()


@attrs.define
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # trio time
    answered: int

    @property
    def event(self) -> dict:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class WebhookReceiver:
    """`script(...)` queues answers (then `default`); `received` is every request, in arrival order."""

    def __init__(self, secret: str | None = None, default: Answer = Answer()) -> None:
        self.secret = secret
        self.default = default
        self.received: list[Received] = []
        self.bad_signatures = 0
        self._script: list[Answer] = []
        self._changed = trio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def script(self, *answers: Answer) -> None:
        self._script.extend(answers)

    async def run(self, *, task_status: trio.TaskStatus[WebhookReceiver] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._serve, listeners, handler_nursery=nursery)

    async def wait_for(self, check: Callable[[list[Received]], bool], timeout: float = 60) -> None:
        """Until `check(received)` holds; the timeout is only a safety net."""
        with trio.fail_after(timeout):
            while not check(self.received):
                await self._changed.wait()

    def ok_ids(self) -> list[int]:
        return [int(r.webhook_id) for r in self.received if 200 <= r.answered < 300]

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read(conn, stream)
                if request is None:
                    return
                target, headers, body = request
                answer = self._script.pop(0) if self._script else self.default
                self._record(target, headers, body, answer.status)
                if answer.delay:
                    await trio.sleep(answer.delay)
                response = h11.Response(
                    status_code=answer.status, headers=[("content-length", "2"), *answer.headers]
                )
                await stream.send_all(
                    conn.send(response) + conn.send(h11.Data(data=b"ok")) + conn.send(h11.EndOfMessage())
                )
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def _read(self, conn: h11.Connection, stream: trio.SocketStream) -> tuple[str, dict, bytes] | None:
        target, headers, body = "", {}, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                target = event.target.decode()
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return target, headers, body
            elif isinstance(event, h11.ConnectionClosed):
                return None

    def _record(self, target: str, headers: dict, body: bytes, status: int) -> None:
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
            except Exception:
                self.bad_signatures += 1
        self.received.append(Received(target, headers, body, trio.current_time(), status))
        self._changed.set()
        self._changed = trio.Event()
