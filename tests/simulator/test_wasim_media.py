"""Media through the simulator's HTTPS host with the real neonize: a device uploads and sends files
the simulator decrypts, and a contact's files the device downloads byte for byte."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
import trio

from tests.simulator.conftest import StartClient
from tests.simulator.test_neonize_e2e import PHONE, pair
from tests.simulator.test_wasim_control import control_call
from tests.wasim import Simulator
from tests.wasim.control import serve_control
from tests.wasim.media import MediaError, decrypt_media, encrypt_media
from tests.wasim.tls import tls_env

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

CONTACT = "15557770000"


async def test_media_encryption_round_trip_and_checks() -> None:
    data = os.urandom(5000)
    encrypted = encrypt_media(data, "document")
    assert len(encrypted.blob) % 16 == 10  # CBC blocks + the 10-byte MAC
    args = (encrypted.file_sha256, encrypted.file_enc_sha256)
    assert decrypt_media(encrypted.blob, encrypted.media_key, "document", *args) == data
    with pytest.raises(MediaError):  # another kind derives other keys
        decrypt_media(encrypted.blob, encrypted.media_key, "image")
    with pytest.raises(MediaError):
        decrypt_media(encrypted.blob[:-1] + b"\0", encrypted.media_key, "document")


async def test_device_uploads_and_the_recipient_decrypts(
    sim: Simulator, start_client: StartClient, tmp_path: Path
) -> None:
    client = await start_client("a", env=tls_env(tmp_path))
    await pair(sim, client)
    image = os.urandom(70_000)
    sent = await client.send_content(
        CONTACT, "image", data_b64=base64.b64encode(image).decode(), mimetype="image/jpeg", caption="a cat"
    )
    assert sent["event"] == "send_result", sent
    message = await sim.wait_message(to=CONTACT, id=sent["id"], kind="image")
    assert message.content is not None and message.content.media is not None
    media = message.content.media
    assert (media.caption, media.mimetype, media.file_length) == ("a cat", "image/jpeg", len(image))
    assert media.direct_path is not None and "?" in media.direct_path
    assert hashlib.sha256(sim.fetch_media(message)).digest() == hashlib.sha256(image).digest()
    assert sim.media.uploads == 1

    doc = b"%PDF-1.4 not really\n" * 50
    sent = await client.send_content(
        CONTACT,
        "document",
        data_b64=base64.b64encode(doc).decode(),
        mimetype="application/pdf",
        file_name="report.pdf",
    )
    assert sent["event"] == "send_result", sent
    message = await sim.wait_message(id=sent["id"], kind="document")
    assert message.content is not None and message.content.media is not None
    assert (message.content.media.file_name, message.content.media.mimetype) == (
        "report.pdf",
        "application/pdf",
    )
    assert sim.fetch_media(message) == doc


@pytest.mark.parametrize(
    ("kind", "mimetype"),
    [("image", "image/png"), ("voice", "audio/ogg; codecs=opus"), ("document", "text/plain")],
)
async def test_contact_media_downloads_byte_for_byte(
    sim: Simulator, start_client: StartClient, kind: str, mimetype: str
) -> None:
    client = await start_client("a", env=tls_env())  # the bundle beside the test CA
    await pair(sim, client)
    data = os.urandom(40_000)

    msg_id = await sim.send_media(PHONE, CONTACT, kind, data, mimetype, caption="look", file_name="f.bin")
    event = await client.wait("message", where=lambda e: e["data"]["Info"]["ID"] == msg_id)
    message = event["data"]["Message"]
    field = {"image": "imageMessage", "voice": "audioMessage", "document": "documentMessage"}[kind]
    assert message[field]["mimetype"] == mimetype
    if kind == "voice":
        assert message[field]["PTT"] is True
    if kind == "document":
        assert (message[field]["fileName"], message[field]["caption"]) == ("f.bin", "look")

    got = await client.download(msg_id)
    assert got["event"] == "downloaded", got
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert base64.b64decode(got["data_b64"]) == data
    assert sim.media.downloads >= 1


async def test_without_the_test_ca_the_upload_is_refused(sim: Simulator, start_client: StartClient) -> None:
    """Go verifies the media host's certificate: a process started without the bundle fails."""
    client = await start_client("a")
    await pair(sim, client)
    sent = await client.send_content(
        CONTACT, "image", data_b64=base64.b64encode(b"x" * 100).decode(), mimetype="image/jpeg"
    )
    assert sent["event"] == "send_error", sent
    assert "certificate" in sent["error"], sent
    assert sim.media.uploads == 0


async def test_media_over_the_control_api(
    sim: Simulator, start_client: StartClient, tmp_path: Path, nursery: trio.Nursery
) -> None:
    port = await nursery.start(serve_control, sim, 0)
    client = await start_client("a", env=tls_env(tmp_path))
    await pair(sim, client)
    data = os.urandom(3000)

    body = {"to": PHONE, "from": CONTACT, "kind": "document", "mimetype": "text/plain", "file_name": "a.txt"}
    status, sent = await control_call(
        port, "POST", "/contact-media", {**body, "data_b64": base64.b64encode(data).decode()}
    )
    assert status == 200, sent
    await client.wait("message", where=lambda e: e["data"]["Info"]["ID"] == sent["id"])
    got = await client.download(sent["id"])
    assert got["event"] == "downloaded" and base64.b64decode(got["data_b64"]) == data, got
    assert (await control_call(port, "POST", "/contact-media", {**body, "data_b64": "*"}))[0] == 400

    up = await client.send_content(
        CONTACT, "image", data_b64=base64.b64encode(data).decode(), mimetype="image/png"
    )
    assert up["event"] == "send_result", up
    await sim.wait_message(id=up["id"], kind="image")
    status, found = await control_call(port, "GET", f"/messages?kind=image&to={CONTACT}")
    assert status == 200 and [m["id"] for m in found] == [up["id"]], found
    media = found[0]["content"]["media"]
    assert media["mimetype"] == "image/png" and media["file_length"] == len(data)
    assert base64.b64decode(media["file_sha256"]) == hashlib.sha256(data).digest()
    status, host = await control_call(port, "GET", "/media")
    assert status == 200 and host["uploads"] == 1 and host["blobs"] == 2, host
