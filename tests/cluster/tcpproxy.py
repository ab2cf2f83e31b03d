"""A TCP proxy that tests can cut, to put one node's database access behind a network partition.

:class:`Proxy` forwards ``127.0.0.1:<port>`` to a target ``host:port`` inside a trio loop;
:class:`TcpProxy` runs one in its own thread with its own trio loop, for plain (non-trio) tests and for
a node running in another process. ``block()`` cuts it in one of two ways:

- ``"stall"`` (the default) is a partition: nothing crosses, either way, on existing or new
  connections. Connections are kept, not closed, so clients see timeouts rather than errors: a query
  on an open connection never answers, and a new connection completes its TCP handshake (the kernel
  accepts it) but the server never speaks, so the client's ``connect_timeout`` expires. ``unblock()``
  heals the partition: held bytes flow again, as TCP resumes after a short outage, and held new
  connections are dialled through.
- ``"reset"`` is a server that went away: existing connections are reset (RST), new ones are reset as
  soon as they are accepted, so clients fail at once with "connection reset"/"closed unexpectedly".

Usage::

    with TcpProxy.to_url(database_url) as proxy:  # a thread; proxy.url is database_url through it
        node = start_node(database_url=proxy.url)
        proxy.block()   # or proxy.block("reset")
        ...
        proxy.unblock()

    async with open_proxy("127.0.0.1", pg_port) as proxy:  # inside a trio test
        ...
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import trio

Mode = Literal["stall", "reset"]
CHUNK = 65536


@dataclass(eq=False)  # kept in a set, by identity
class _Link:
    """One client connection and, once dialled, its upstream connection."""

    client: trio.SocketStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    upstream: trio.SocketStream | None = None


class Proxy:
    """The proxy inside a trio loop: ``await nursery.start(proxy.serve)`` returns the bound port.

    ``block``/``unblock`` must be called from the same trio thread (see :class:`TcpProxy` otherwise).
    """

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port: int | None = None
        self.mode: Mode | None = None  # None while traffic flows
        self.accepted = 0  # connections accepted so far (reset ones included)
        self._links: set[_Link] = set()
        self._healed = trio.Event()  # set while not blocked; replaced by a fresh one on each block
        self._healed.set()

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def block(self, mode: Mode = "stall") -> None:
        """Cut the proxy (see the module docstring for what each mode does to clients)."""
        if mode not in ("stall", "reset"):
            raise ValueError(f"mode must be 'stall' or 'reset', not {mode!r}")
        if self.mode is None:
            self._healed = trio.Event()
        self.mode = mode
        if mode == "reset":
            for link in list(self._links):
                _linger_zero(link.client)  # the link's own close then sends an RST
                link.scope.cancel()

    def unblock(self) -> None:
        """Let traffic flow again; stalled connections resume where they stopped."""
        self.mode = None
        self._healed.set()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and forward until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        if self.mode == "reset":
            _linger_zero(client)
            await client.aclose()
            return
        link = _Link(client)
        self._links.add(link)
        try:
            with link.scope:
                await self._healed_wait()  # a new connection during a partition hangs here
                link.upstream = await trio.open_tcp_stream(*self.target)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, link.upstream, nursery.cancel_scope.cancel)
                    nursery.start_soon(self._pump, link.upstream, client, nursery.cancel_scope.cancel)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # either side went away (or the target refused): the link just ends
        finally:
            self._links.discard(link)
            with trio.CancelScope(shield=True):
                if link.upstream is not None:
                    await link.upstream.aclose()
                await client.aclose()

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, done: Callable[[], None]
    ) -> None:
        """Copy one direction; a held chunk waits for the partition to heal, and meanwhile nothing is
        read, so the sender's kernel buffers fill as they would with an unreachable peer."""
        try:
            while chunk := await source.receive_some(CHUNK):
                await self._healed_wait()
                await sink.send_all(chunk)
            await self._healed_wait()  # a close does not cross a partition either
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await sink.send_eof()  # half-close, so the other direction can still finish
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self._healed_wait()
            done()

    async def _healed_wait(self) -> None:
        while self.mode is not None:
            await self._healed.wait()


def _linger_zero(stream: trio.SocketStream) -> None:
    """Make the next close send an RST, as a host that dropped the connection would answer."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@asynccontextmanager
async def open_proxy(target_host: str, target_port: int) -> AsyncIterator[Proxy]:
    """A :class:`Proxy` serving for the duration of the block (inside a trio test)."""
    proxy = Proxy(target_host, target_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


class TcpProxy:
    """A :class:`Proxy` in its own thread and trio loop; every method is safe from any other thread."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._proxy = Proxy(target_host, target_port)
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._url: str | None = None

    @classmethod
    def to_url(cls, url: str) -> TcpProxy:
        """A proxy to a ``postgresql://`` URL's host and port; :attr:`url` is the same URL through it."""
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError("the URL needs an explicit host and port")
        proxy = cls(parts.hostname, parts.port)
        proxy._url = url
        return proxy

    @property
    def port(self) -> int:
        if self._proxy.port is None:
            raise RuntimeError("the proxy is not started")
        return self._proxy.port

    @property
    def url(self) -> str:
        """The URL given to :meth:`to_url`, with its host and port replaced by the proxy's."""
        if self._url is None:
            raise RuntimeError("no URL: the proxy was not made with TcpProxy.to_url")
        parts = urlsplit(self._url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def mode(self) -> Mode | None:
        return self._proxy.mode

    @property
    def accepted(self) -> int:
        return self._proxy.accepted

    def start(self, timeout: float = 10.0) -> TcpProxy:
        """Start the thread; returns once the proxy listens (``port`` is then set)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name=f"tcpproxy-{self._proxy.target}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the proxy did not start in time")
        if self._error is not None:
            raise RuntimeError("the proxy failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and the listener, and end the thread."""
        if self._thread is None or self._token is None or self._stop is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._stop.cancel, trio_token=self._token)
        self._thread.join(timeout)
        self._thread = None
        if self._error is not None:  # the loop died while serving: the test must not pass unaware
            raise RuntimeError("the proxy's loop failed") from self._error

    def block(self, mode: Mode = "stall") -> None:
        self._call(lambda: self._proxy.block(mode))

    def unblock(self) -> None:
        self._call(self._proxy.unblock)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, fn: Callable[[], None]) -> None:
        if self._token is None:
            raise RuntimeError("the proxy is not started")
        trio.from_thread.run_sync(fn, trio_token=self._token)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by start() or stop(): never a silent death
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._stop:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._proxy.serve)
                self._ready.set()
