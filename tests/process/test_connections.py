"""The real service closes connections: after Connection: close, HTTP/1.0, idle keep-alive, slow
clients and on SIGTERM; fd exhaustion and slow uploads leave a clean log."""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import trio

from .rawhttp import one_request, open_idle, raise_fd_limit, read_response, request, wait_closed
from .service import ServiceProcess

# Safety nets only: every wait below ends on an event (a close, an exit) long before these.
SLACK = 20.0


def _start(tmp_path: Path, **server: object) -> ServiceProcess:
    lines = "".join(f"{key} = {value!r}\n" for key, value in server.items())
    tmp_path.mkdir(parents=True)
    config = tmp_path / "config.toml"
    config.write_text(f"[server]\n{lines}")
    return ServiceProcess(tmp_path / "data", env={"WASERVICE_ENGINE": "fake"}, config=config).start()


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator:
    started: list[ServiceProcess] = []

    def make(**server: object) -> ServiceProcess:
        service = _start(tmp_path / f"s{len(started)}", **server)
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


async def test_thousand_one_request_connections_are_all_closed_by_the_server(service_factory):
    raise_fd_limit(4096)
    service = service_factory(keep_alive_timeout=2.0)
    limiter = trio.CapacityLimiter(100)  # do not overflow the listen backlog
    closed_after: list[float] = []

    async def client() -> None:
        async with limiter:
            stream = await one_request(service.port)
        answered = trio.current_time()
        async with stream:
            await wait_closed(stream)
        closed_after.append(trio.current_time() - answered)

    with trio.fail_after(SLACK * 3):
        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(client)
    assert len(closed_after) == 1000
    assert min(closed_after) >= 1.0  # the idle timer closed them, not something sooner
    assert "Traceback" not in service.log()


@pytest.mark.parametrize(
    "payload", [request(headers="Connection: close\r\n"), request(version="1.0")], ids=["close", "http1.0"]
)
async def test_close_requested_means_closed_at_once(service_factory, payload):
    service = service_factory(keep_alive_timeout=60.0)
    for _ in range(3):
        stream = await trio.open_tcp_stream("127.0.0.1", service.port)
        async with stream:
            await stream.send_all(payload)
            assert (await read_response(stream)).split(b"\r\n")[0].endswith(b"200 ")
            with trio.fail_after(5):  # far below the 60 s idle timeout
                await wait_closed(stream)


async def test_sigterm_with_500_idle_connections_exits_within_2_s(service_factory):
    raise_fd_limit(4096)
    service = service_factory(keep_alive_timeout=60.0, shutdown_grace=10.0)
    streams = await open_idle(service.port, 500)
    assert service.proc is not None
    started = time.monotonic()
    code = service.stop(timeout=SLACK)
    took = time.monotonic() - started
    for stream in streams:
        await stream.aclose()
    assert code == 0, service.log()
    assert took <= 2.0, f"SIGTERM took {took:.2f} s with 500 idle connections"


async def test_in_flight_request_finishes_during_shutdown(service_factory):
    service = service_factory(keep_alive_timeout=60.0, body_timeout=30.0)
    stream = await trio.open_tcp_stream("127.0.0.1", service.port)
    body = b'{"session_id": "late"}'
    head = (
        "POST /connect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    await stream.send_all(head.encode())  # the request is in flight: its body is still coming
    await trio.sleep(0.5)
    assert service.proc is not None
    service.proc.send_signal(15)
    await trio.sleep(0.5)
    await stream.send_all(body)
    with trio.fail_after(SLACK):
        response = await read_response(stream)
        assert response.startswith(b"HTTP/1.1 200"), response
        await wait_closed(stream)  # shutting down: closed once answered
    assert service.proc.wait(SLACK) == 0, service.log()


async def test_slowloris_on_a_kept_alive_connection_is_cut(service_factory):
    service = service_factory(keep_alive_timeout=1.0)
    stream = await one_request(service.port)
    trickled = 0

    async def trickle() -> None:
        nonlocal trickled
        for byte in request():
            await stream.send_all(bytes([byte]))  # never completes: 40 bytes over 8 s
            trickled += 1
            await trio.sleep(0.2)

    started = trio.current_time()
    with trio.fail_after(SLACK):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            await wait_closed(stream)
            nursery.cancel_scope.cancel()
    assert trio.current_time() - started < 4 and trickled < len(request())


async def test_slow_uploads_get_408_and_no_traceback(service_factory):
    raise_fd_limit(4096)
    service = service_factory(body_timeout=1.0, create_rate=0)
    head = (
        b"POST /connect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    statuses: list[bytes] = []

    async def upload() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", service.port)
        async with stream:
            await stream.send_all(head)
            # Give up right when the server does: the race that made the server's close and
            # the 408 collide (a BusyResourceError traceback in the log).
            with trio.move_on_after(1.0 + random.uniform(-0.03, 0.03)), suppress(trio.BrokenResourceError):
                statuses.append((await stream.receive_some(100))[:12])

    with trio.fail_after(SLACK * 2):
        async with trio.open_nursery() as nursery:
            for _ in range(400):
                nursery.start_soon(upload)
        # Then a patient one sees its 408.
        stream = await trio.open_tcp_stream("127.0.0.1", service.port)
        async with stream:
            await stream.send_all(head)
            assert (await read_response(stream)).startswith(b"HTTP/1.1 408")
            await wait_closed(stream)
    log = service.log()
    assert "Traceback" not in log and "BusyResourceError" not in log, log[-3000:]


async def test_out_of_fds_is_one_log_line_and_recovers(service_factory):
    service = service_factory(keep_alive_timeout=2.0)
    assert service.proc is not None
    pid = service.proc.pid
    open_fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds + 5, hard))
    held: list[trio.SocketStream] = []
    with trio.fail_after(SLACK):
        for _ in range(5):
            held.append(await one_request(service.port))
        # The service is out of fds now: this one waits in the listen backlog.
        waiting = await trio.open_tcp_stream("127.0.0.1", service.port)
        await waiting.send_all(request())
        await trio.sleep(1.0)  # ~10 failed accepts
        # The idle timer frees the held connections, then the waiting request is answered.
        assert (await read_response(waiting)).startswith(b"HTTP/1.1 200")
    for stream in [*held, waiting]:
        await stream.aclose()
    log = service.log()
    lines = [line for line in log.splitlines() if "cannot accept connections" in line]
    assert len(lines) == 1 and "EMFILE" in lines[0], log[-3000:]
    assert "Traceback" not in log
