"""Messaging end to end: the real service on the real engine, each route driven over HTTP, and the
simulator's contact decrypting what arrived (issue 9's list): the pairing code, the number check,
image bytes by hash and caption, a document's name and mimetype, a location, the vCard, a reply's
quoted id, a reaction, an edit, a revoke, a read receipt; a contact's image downloaded through
GET /media; and the validation list, each a clear 4xx that leaves the session connected."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.process.service import ServiceProcess
from tests.simulator.service_api import FAST_RECONNECT, Api
from tests.wasim import Simulator, waproto
from tests.wasim.tls import tls_env

pytestmark = [pytest.mark.simulator, pytest.mark.trio]

PHONE = "14155552671"
CAROL = "12025550143"  # a contact of the simulator: on WhatsApp
NOBODY = "447911123456"  # never seen by the simulator: not on WhatsApp
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(50_000)
PDF = b"%PDF-1.7\n" + os.urandom(20_000)


@asynccontextmanager
async def running(patched_dir: Path, tmp_path: Path, config_text: str = "") -> AsyncIterator[Api]:
    """The service, started with the media host's CA in its environment (Go reads it at exec;
    the URL fetch trusts it through SSL_CERT_FILE too)."""
    config = tmp_path / "config.toml"
    config.write_text(FAST_RECONNECT + config_text)
    service = ServiceProcess(tmp_path / "data", env=tls_env(), config=config, pythonpath=patched_dir)
    await trio.to_thread.run_sync(service.start)
    api = Api(service)
    try:
        yield api
    finally:
        await api.http.aclose()
        code = await trio.to_thread.run_sync(service.stop)
        assert code == 0, service.log()[-3000:]
        assert "Traceback" not in service.log(), service.log()[-6000:]


@pytest.fixture
async def api(patched_dir: Path, tmp_path: Path) -> AsyncIterator[Api]:
    async with running(patched_dir, tmp_path) as api:
        yield api


async def linked_by_code(api: Api, sim: Simulator) -> None:
    response = await api.post("/pair-code", session_id="s1", number=PHONE)
    assert response.status_code == 200, response.text
    code = response.json()["code"]
    assert len(code) == 9 and code[4] == "-", code
    await sim.wait_pair_code_request(PHONE)
    await sim.enter_pair_code(PHONE, code)
    status = await api.wait_state("s1", "connected")
    assert status["phone_number"] == PHONE
    assert not sim.events("scanned") and sim.events("code_paired")


async def sent_id(response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["result"]["id"]


async def test_every_route_end_to_end(api: Api, sim: Simulator) -> None:
    await linked_by_code(api, sim)
    carol = sim.contact(CAROL)

    checked = await api.post("/check-numbers", session_id="s1", numbers=[CAROL, NOBODY])
    assert checked.status_code == 200, checked.text
    assert [(r["number"], r["on_whatsapp"]) for r in checked.json()["results"]] == [
        (CAROL, True),
        (NOBODY, False),
    ]
    refused = await api.post("/send", session_id="s1", number=NOBODY, message="void", check_number=True)
    assert refused.status_code == 400 and "not on WhatsApp" in refused.text

    first = await sent_id(await api.post("/send", session_id="s1", number=CAROL, message="original"))
    reply = await sent_id(
        await api.post("/send", session_id="s1", chat=CAROL, message="answer", reply_to=first)
    )
    context = (await sim.wait_message(to=CAROL, id=reply)).content.context
    assert (context.stanza_id, context.quoted_text) == (first, "original")

    files = {"file": ("shop.png", PNG, "image/png")}
    form = {"session_id": "s1", "chat": CAROL, "type": "image", "caption": "our shop"}
    image = await sent_id(await api.http.post("/send-media", data=form, files=files))
    got = await sim.wait_message(to=CAROL, id=image, kind="image")
    assert got.content.media.caption == "our shop" and got.content.media.mimetype == "image/png"
    assert hashlib.sha256(sim.fetch_media(got)).digest() == hashlib.sha256(PNG).digest()

    document = await sent_id(
        await api.post(
            "/send-media", session_id="s1", chat=CAROL, type="document", file_name="q3 report.pdf",
            data=base64.b64encode(PDF).decode(),
        )
    )  # fmt: skip
    got = await sim.wait_message(to=CAROL, id=document, kind="document")
    assert (got.content.media.file_name, got.content.media.mimetype) == ("q3 report.pdf", "application/pdf")
    assert sim.fetch_media(got) == PDF

    place = await sent_id(
        await api.post("/send-location", session_id="s1", chat=CAROL, lat=4.6097, lng=-74.0817, name="Shop")
    )
    location = (await sim.wait_message(to=CAROL, id=place)).content.location
    assert (location.latitude, location.longitude, location.name) == (4.6097, -74.0817, "Shop")

    card = await sent_id(
        await api.post("/send-contact", session_id="s1", chat=CAROL, name="Ana; Gómez", phone="573007654321")
    )
    contact = (await sim.wait_message(to=CAROL, id=card)).content.contact
    assert contact.display_name == "Ana; Gómez"
    assert "FN:Ana\\; Gómez" in contact.vcard and "waid=573007654321:+573007654321" in contact.vcard

    reaction = await sent_id(
        await api.post("/react", session_id="s1", chat=CAROL, message_id=first, emoji="👍")
    )
    got = (await sim.wait_message(to=CAROL, id=reaction)).content
    assert (got.kind, got.reaction, got.key.id, got.key.from_me) == ("reaction", "👍", first, True)

    edit = await sent_id(
        await api.post("/edit", session_id="s1", chat=CAROL, message_id=first, message="edited")
    )
    got = (await sim.wait_message(to=CAROL, id=edit)).content
    assert (got.kind, got.text, got.key.id) == ("edit", "edited", first)

    revoke = await sent_id(await api.post("/delete-message", session_id="s1", chat=CAROL, message_id=first))
    got = (await sim.wait_message(to=CAROL, id=revoke)).content
    assert (got.kind, got.key.id, got.key.from_me) == ("revoke", first, True)

    # Carol writes: the service reads it (a read receipt) and downloads her photo.
    photo = os.urandom(80_000)
    theirs = await sim.send_media(PHONE, carol, "image", photo, "image/png", caption="from carol")
    text = await sim.send_message(PHONE, carol, waproto.text("read me"))
    with trio.fail_after(30):
        while (response := await api.http.get(f"/media/s1/{theirs}")).status_code == 404:
            await trio.sleep(0.05)  # until the message is logged (and indexed)
    assert response.status_code == 200, response.text
    assert response.content == photo and response.headers["content-type"] == "image/png"
    after = len(sim.history)
    with trio.fail_after(30):
        while (
            read := await api.post("/read", session_id="s1", chat=CAROL, message_ids=[text])
        ).status_code == 404:
            await trio.sleep(0.05)
    assert read.status_code == 200, read.text
    receipt = await sim.wait_event("device_receipt", after=after, type="read")
    assert receipt["ids"] == [text]
    assert (await api.post("/typing", session_id="s1", chat=CAROL, state="composing")).status_code == 200
    await api.wait_state("s1", "connected")


async def test_bad_requests_leave_the_session_connected(api: Api, sim: Simulator) -> None:
    await linked_by_code(api, sim)
    sim.contact(CAROL)
    too_big = base64.b64encode(bytes(64 * 1024 * 1024 + 1)).decode()
    for path, body, status, fragment in [
        (
            "/send-media",
            {"type": "image", "data": base64.b64encode(PDF).decode()},
            400,
            "looks like application/pdf",
        ),
        ("/send-media", {"type": "image", "mimetype": "image", "data": "AAAA"}, 400, "invalid mimetype"),
        ("/send-media", {"type": "image", "url": "http://127.0.0.1:9/a.png"}, 400, "loopback"),
        ("/send-media", {"type": "image", "url": "not a url"}, 400, "http:// or https://"),
        ("/send-media", {"type": "document", "data": too_big}, 413, "media.max_bytes"),
        ("/react", {"message_id": "NOSUCHID", "emoji": "👍"}, 404, "no message NOSUCHID"),
        ("/typing", {"state": "dancing"}, 400, "state"),
    ]:
        response = await api.post(path, session_id="s1", chat=CAROL, **body)
        assert response.status_code == status and fragment in response.json()["error"], (path, response.text)
    # A group WhatsApp does not know (whatsmeow asks for its members first): the caller's mistake.
    group = await api.post("/send-location", session_id="s1", chat="120363000000000000@g.us", lat=0.5, lng=0)
    assert group.status_code == 404 and "no group 120363000000000000@g.us" in group.json()["error"], (
        group.text
    )
    assert (await api.status("s1"))["state"] == "connected"
    fine = await sent_id(await api.post("/send", session_id="s1", chat=CAROL, message="still here"))
    assert (await sim.wait_message(to=CAROL, id=fine)).text == "still here"


async def test_media_from_an_https_url(sim: Simulator, patched_dir: Path, tmp_path: Path) -> None:
    """The service fetches the file itself over verified TLS (the simulator's HTTPS host, which is
    on loopback: allowed here by media.allow_private_urls), then uploads it as a document."""
    async with running(patched_dir, tmp_path, "\n[media]\nallow_private_urls = true\n") as api:
        await linked_by_code(api, sim)
        sim.contact(CAROL)
        stored = sim.media.store(PDF, "document")
        url = sim.media.url(stored)  # https://127.0.0.1:<port>/<object>.enc?...
        fetched = await api.post("/send-media", session_id="s1", chat=CAROL, type="document", url=url)
        got = await sim.wait_message(to=CAROL, id=await sent_id(fetched), kind="document")
        assert sim.fetch_media(got) == PDF
        media = got.content.media
        assert (media.file_name, media.mimetype) == (f"{stored.object_id}.enc", "application/pdf")
