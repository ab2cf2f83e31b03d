"""A multipart upload over media.max_bytes is refused while it streams in, before the client has
sent the whole body: the app served by hypercorn on a real socket, the client writing slowly."""

from __future__ import annotations

import functools

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from tests.unit.messaging_helpers import CONTACT, connected
from waservice.api.app import create_app
from waservice.config import MediaConfig

MAX = 64 * 1024


async def test_oversized_upload_is_refused_before_the_body_ends(manager, message_index, engine, nursery):
    app = create_app(manager, messages=message_index, media_config=MediaConfig(max_bytes=MAX))
    await connected(app.test_client(), engine)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    (bound,) = await nursery.start(functools.partial(serve, app, config, shutdown_trigger=stop.wait))
    port = int(bound.rsplit(":", 1)[1])

    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="chat"\r\n\r\n{CONTACT}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ndocument\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    ).encode()
    # Within what the route's body may be (so not refused from Content-Length alone), over the cap.
    declared = len(head) + 10 * MAX
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        (
            f"POST /send-media HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n\r\n"
        ).encode()
        + head
    )
    answer = b""
    with trio.fail_after(20):
        sent = 0
        async with trio.open_nursery() as writer:

            async def trickle() -> None:
                nonlocal sent
                while sent < 5 * MAX:  # half the declared body at most, 16 KiB at a time
                    await stream.send_all(bytes(16 * 1024))
                    sent += 16 * 1024
                    await trio.sleep(0.001)

            writer.start_soon(trickle)
            while b"}" not in answer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                answer += chunk
            writer.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"media.max_bytes" in answer
    assert sent < 5 * MAX  # refused while the body was still coming
    assert not any((manager.store.data_dir / ".spool").iterdir())
    await stream.aclose()
    stop.set()


async def test_an_upload_that_trickles_forever_is_cut_at_the_body_timeout(
    manager, message_index, engine, nursery
):
    app = create_app(manager, messages=message_index, media_config=MediaConfig(max_bytes=MAX))
    app.config["BODY_TIMEOUT"] = 0.5
    await connected(app.test_client(), engine)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    (bound,) = await nursery.start(functools.partial(serve, app, config, shutdown_trigger=stop.wait))
    port = int(bound.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
    await stream.send_all(
        f"POST /send-media HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {len(head) + 1000}\r\n\r\n".encode()
        + head
    )  # and nothing more
    answer = b""
    with trio.fail_after(10):
        while b"}" not in answer:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"server.body_timeout" in answer, answer
    assert not any((manager.store.data_dir / ".spool").iterdir())
    await stream.aclose()
    stop.set()
