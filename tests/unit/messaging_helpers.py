"""Helpers of the messaging tests: a connected fake session, waiting for the message index, and
multipart bodies built by hand (the test client sends bytes as given)."""

from __future__ import annotations

import trio

from tests.unit.calls import call, wait_state
from waservice.engine.fake import FakeEngine
from waservice.store.messages import IndexedMessage, MessageIndex

OWN_PHONE = "573001234567"
CONTACT = "14155552671"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


async def connected(client, engine: FakeEngine, session_id: str = "default", phone: str = OWN_PHONE) -> None:
    assert (await call(client, "post", "/connect", json={"session_id": session_id}))[0] == 200
    await wait_state(client, session_id, "qr_ready")
    engine.clients[session_id].scan(phone)
    await wait_state(client, session_id, "connected")


async def indexed(index: MessageIndex, session_id: str, message_id: str) -> IndexedMessage:
    """Wait until the recorder has logged (and so indexed) a received message."""
    with trio.fail_after(5):
        while (found := await index.get(session_id, message_id)) is None:
            await trio.sleep(0.005)
    return found


def multipart(
    fields: dict[str, str], file: bytes | None, file_name: str = "photo.png", file_type: str = ""
) -> tuple[bytes, dict]:
    boundary = "----waservice-test-boundary"
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    if file is not None:
        header = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        if file_type:
            header += f"Content-Type: {file_type}\r\n"
        parts.append(header.encode() + b"\r\n" + file + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
