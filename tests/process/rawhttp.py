"""Raw HTTP/1.x connections for tests and benchmarks that care about the socket, not just the answer."""

from __future__ import annotations

import resource

import trio


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft open-file limit towards `wanted` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def request(path: str = "/health", version: str = "1.1", headers: str = "") -> bytes:
    host = "Host: 127.0.0.1\r\n" if version == "1.1" else ""
    return f"GET {path} HTTP/{version}\r\n{host}{headers}\r\n".encode()


async def read_response(stream: trio.SocketStream) -> bytes:
    """One response with a Content-Length body (what the service sends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a body")
        body += chunk
    return head + b"\r\n\r\n" + body


async def wait_closed(stream: trio.SocketStream) -> None:
    """Until the server closes the connection (EOF or reset); extra bytes are an error."""
    try:
        extra = await stream.receive_some(65536)
    except trio.BrokenResourceError:
        return
    if extra:
        raise AssertionError(f"unexpected bytes instead of a close: {extra!r}")


async def one_request(port: int, payload: bytes | None = None) -> trio.SocketStream:
    """Connect, send one request, read its response; the connection is left open."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(payload or request())
    response = await read_response(stream)
    if not response.startswith(b"HTTP/1.1 200"):
        raise AssertionError(f"unexpected response: {response[:200]!r}")
    return stream


async def open_idle(port: int, count: int) -> list[trio.SocketStream]:
    """`count` connections that each made one request and stay open, 100 connecting at a time
    (more would overflow the listen backlog)."""
    limiter = trio.CapacityLimiter(100)
    streams: list[trio.SocketStream] = []

    async def connect() -> None:
        async with limiter:
            streams.append(await one_request(port))

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(connect)
    return streams
