"""A small HTTP/1.1 server on a real socket, for the media URL fetch: each path answers what the
test put in `routes` (a status, headers and a body; or a stall)."""

from __future__ import annotations

import functools

import attrs
import trio


@attrs.define
class Answer:
    status: int = 200
    headers: dict[str, str] = attrs.Factory(dict)
    body: bytes = b""
    stall: bool = False  # send the headers, then nothing


@attrs.define
class Origin:
    port: int = 0
    routes: dict[str, Answer] = attrs.Factory(dict)
    requests: list[tuple[str, dict[str, str]]] = attrs.Factory(list)  # (path, headers) as received

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        path = head[0].split(" ")[1]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        self.requests.append((path, headers))
        answer = self.routes.get(path, Answer(status=404, body=b"not here"))
        lines = [f"HTTP/1.1 {answer.status} X", "Connection: close"]
        if "content-length" not in {k.lower() for k in answer.headers} and not answer.stall:
            lines.append(f"Content-Length: {len(answer.body)}")
        lines += [f"{k}: {v}" for k, v in answer.headers.items()]
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + answer.body)
        if answer.stall:
            await trio.sleep_forever()
        await stream.aclose()


async def start_origin(nursery: trio.Nursery) -> Origin:
    origin = Origin()
    listeners = await nursery.start(functools.partial(trio.serve_tcp, origin.handle, 0, host="127.0.0.1"))
    origin.port = listeners[0].socket.getsockname()[1]
    return origin
