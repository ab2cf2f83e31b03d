"""Idempotency-Key on /send, through the app on the fake engine: replays, 422, 409, what is
remembered and what is not, a client that goes away mid-send, and a restart."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
from quart import Blueprint, current_app, request

from tests.unit.calls import call, wait_state
from waservice.api.app import create_app
from waservice.api.idempotency import UPFRONT_MAX, IdempotencyKeys, _BoundaryStripper, idempotent
from waservice.engine.content import Text
from waservice.engine.fake import FakeEngine
from waservice.events.hub import EventHub
from waservice.events.recorder import EventRecorder
from waservice.sessions.machine import ReconnectPolicy
from waservice.sessions.manager import SessionManager
from waservice.store import open_event_store, open_store
from waservice.store.idempotency import IdempotencyTable, StoredAnswer

BODY = {"session_id": "s1", "number": "12025550143", "message": "hello"}

# A route that streams its body, as a media upload does: the key is checked when it sends.
upload_bp = Blueprint("upload", __name__)


@upload_bp.post("/upload")
@idempotent
async def upload():
    digest, size = hashlib.sha256(), 0
    async for chunk in request.body:
        digest.update(chunk)
        size += len(chunk)
    manager = current_app.extensions["waservice.manager"]
    text = f"{size} bytes {digest.hexdigest()[:8]}"
    sent = await manager.send(request.args["session_id"], "12025550143@s.whatsapp.net", Text(text=text))
    return {"id": sent.id, "text": text}


def multipart(boundary: str, payload: bytes) -> bytes:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'.encode()
    return head + payload + f"\r\n--{boundary}--\r\n".encode()


async def upload_with(svc, key: str, boundary: str, payload: bytes, session_id: str = "s1"):
    response = await svc.client.post(
        f"/upload?session_id={session_id}",
        data=multipart(boundary, payload),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Idempotency-Key": key},
    )
    return response.status_code, await response.get_json(), response.headers


@attrs.frozen
class Service:
    client: object
    engine: FakeEngine
    keys: IdempotencyKeys
    app: object


@asynccontextmanager
async def service(data: Path, engine: FakeEngine | None = None) -> AsyncIterator[Service]:
    """The app over a data directory, as server.py wires it; closed (a restart) on exit."""
    engine = engine or FakeEngine()
    async with open_store(data) as store, open_event_store(data) as events, trio.open_nursery() as nursery:
        recorder = EventRecorder(events, EventHub(await events.last_id()))
        await nursery.start(recorder.run)
        manager = await nursery.start(
            SessionManager(engine, store, ReconnectPolicy(), record=recorder.record).run
        )
        keys = await IdempotencyKeys.open(events)
        app = create_app(manager, idempotency=keys)
        app.register_blueprint(upload_bp)
        app.config["MAX_CONTENT_LENGTH"] = 8 * UPFRONT_MAX  # the upload route's bodies
        yield Service(app.test_client(), engine, keys, app)
        await manager.stop(trio.current_time() + 5)
        nursery.cancel_scope.cancel()


async def connected(svc: Service, session_id: str = "s1") -> None:
    assert (await call(svc.client, "post", "/connect", json={"session_id": session_id}))[0] == 200
    await wait_state(svc.client, session_id, "qr_ready")
    svc.engine.clients[session_id].scan("573001234567")
    await wait_state(svc.client, session_id, "connected")


async def send(svc: Service, key: str | None, body: dict = BODY):
    headers = {} if key is None else {"Idempotency-Key": key}
    response = await svc.client.post("/send", json=body, headers=headers)
    return response.status_code, await response.get_json(), response.headers


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Service]:
    async with service(tmp_path / "data") as svc:
        await connected(svc)
        yield svc


def sent(svc: Service, session_id: str = "s1") -> list[str | None]:
    return [m.text for m in svc.engine.clients[session_id].sent]


async def test_the_same_key_twice_sends_once_and_answers_the_same(svc):
    first = await send(svc, "k-1")
    again = await send(svc, "k-1")
    assert first[0] == again[0] == 200 and first[1] == again[1]
    assert again[2]["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first[2]
    assert sent(svc) == ["hello"]
    assert (await send(svc, "k-2"))[0] == 200 and (await send(svc, None))[0] == 200
    assert sent(svc) == ["hello"] * 3


async def test_the_same_key_for_another_request_is_422(svc):
    assert (await send(svc, "k-1"))[0] == 200
    status, body, _ = await send(svc, "k-1", {**BODY, "message": "other"})
    assert status == 422 and "different request" in body["error"]
    assert sent(svc) == ["hello"]


async def test_a_key_is_per_session(svc):
    await connected(svc, "s2")
    assert (await send(svc, "k-1"))[0] == 200
    assert (await send(svc, "k-1", {**BODY, "session_id": "s2"}))[0] == 200
    assert sent(svc) == ["hello"] and sent(svc, "s2") == ["hello"]


async def test_while_the_first_is_in_flight_409(svc, nursery):
    svc.engine.ack_delay = 1.0
    first: list[object] = []

    async def first_send() -> None:
        first.append(await send(svc, "k-1"))

    nursery.start_soon(first_send)
    with trio.fail_after(5):
        while svc.engine.clients["s1"].pending_sends == 0:
            await trio.sleep(0.01)
    status, body, _ = await send(svc, "k-1")
    assert status == 409 and "still being processed" in body["error"]
    assert (await send(svc, "k-1", {**BODY, "message": "other"}))[0] == 422
    with trio.fail_after(5):
        while not first:
            await trio.sleep(0.01)
    assert first[0][0] == 200 and (await send(svc, "k-1"))[0] == 200
    assert sent(svc) == ["hello"]


async def test_retryable_failures_do_not_pin_the_key(svc):
    svc.engine.fail_sends = True
    assert (await send(svc, "k-1"))[0] == 502
    svc.engine.fail_sends = False
    assert (await send(svc, "k-1"))[0] == 200
    assert sent(svc) == ["hello"]


async def test_a_refusal_before_anything_was_sent_does_not_pin_the_key(svc):
    assert (await call(svc.client, "post", "/disconnect", json={"session_id": "s1"}))[0] == 200
    status, body, _ = await send(svc, "k-1")
    assert status == 400 and "not connected" in body["error"]
    await call(svc.client, "post", "/connect", json={"session_id": "s1"})
    await wait_state(svc.client, "s1", "connected")
    assert (await send(svc, "k-1"))[0] == 200 and sent(svc) == ["hello"]


async def test_a_client_that_goes_away_mid_send_still_pins_the_outcome(svc):
    svc.engine.ack_delay = 0.5
    with trio.move_on_after(0.2) as gave_up:
        await send(svc, "k-1")
    assert gave_up.cancelled_caught
    with trio.fail_after(5):
        while sent(svc) != ["hello"]:
            await trio.sleep(0.01)
        while True:  # the answer is remembered once the request has finished
            status, _, headers = await send(svc, "k-1")
            if status != 409:
                break
            await trio.sleep(0.01)
    assert status == 200 and headers["Idempotent-Replayed"] == "true" and sent(svc) == ["hello"]


async def test_a_client_that_goes_away_while_queued_sends_nothing(svc, nursery):
    svc.engine.ack_delay = 1.0
    nursery.start_soon(send, svc, None)
    with trio.fail_after(5):
        while svc.engine.clients["s1"].pending_sends == 0:
            await trio.sleep(0.01)
    with trio.move_on_after(0.2):
        await send(svc, "k-1", {**BODY, "message": "queued"})
    _, body = await call(svc.client, "get", "/status?session_id=s1")
    assert body["queue_depth"] == 1  # only the first, still waiting for its ack
    svc.engine.ack_delay = 0
    assert (await send(svc, "k-1", {**BODY, "message": "queued"}))[0] == 200  # the key was not pinned
    assert sent(svc) == ["hello", "queued"]


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
async def test_a_malformed_key_is_400(svc, key):
    status, body, _ = await send(svc, key)
    assert status == 400 and "1-255 printable ASCII" in body["error"]
    assert sent(svc) == []


async def test_a_key_survives_a_restart(tmp_path: Path):
    data = tmp_path / "data"
    async with service(data) as svc:
        await connected(svc)
        first = await send(svc, "k-restart")
        assert first[0] == 200 and sent(svc) == ["hello"]
    engine = svc.engine  # the paired device stays paired across the restart
    async with service(data, engine) as svc:
        await wait_state(svc.client, "s1", "connected")
        engine.clients["s1"].sent.clear()
        again = await send(svc, "k-restart")
        assert again[:2] == first[:2] and sent(svc) == []


async def test_expired_answers_are_ignored_and_pruned(event_store):
    table = await event_store.call(IdempotencyTable, event_store.connection)
    now = time.time()
    slot = ("admin", "s1", "k")
    await event_store.call(table.put, *slot, StoredAnswer(b"f", 200, b"{}", now - 100))
    assert await event_store.call(table.get, *slot, now - 200) is not None
    assert await event_store.call(table.get, *slot, now - 50) is None  # older than the TTL
    assert await event_store.call(table.prune, now - 50) == 1
    assert await event_store.call(table.get, *slot, now - 200) is None


async def test_a_streamed_body_is_checked_when_it_sends(svc):
    payload = random.Random(1).randbytes(2 * UPFRONT_MAX)  # past UPFRONT_MAX: not read up front
    first = await upload_with(svc, "k-up", "boundary-one", payload)
    assert first[0] == 200
    again = await upload_with(svc, "k-up", "another-boundary", payload)  # a browser's new boundary
    assert again[:2] == first[:2] and again[2]["Idempotent-Replayed"] == "true"
    assert sent(svc) == [first[1]["text"]]
    other = await upload_with(svc, "k-up", "boundary-one", payload[:-1] + b"x")
    assert other[0] == 422 and sent(svc) == [first[1]["text"]]
    await connected(svc, "s2")
    elsewhere = await upload_with(svc, "k-up", "boundary-one", payload, session_id="s2")
    assert elsewhere[0] == 200 and sent(svc, "s2") == [first[1]["text"]]  # keys are per session


async def test_a_small_form_is_checked_when_it_sends_with_its_session(svc):
    await connected(svc, "s2")
    payload = b"small upload"
    first = await upload_with(svc, "k-form", "b-1", payload)
    assert first[0] == 200 and (await upload_with(svc, "k-form", "b-2", payload))[2]["Idempotent-Replayed"]
    assert (await upload_with(svc, "k-form", "b-1", payload, session_id="s2"))[0] == 200
    assert sent(svc) == sent(svc, "s2") == [first[1]["text"]]


def test_the_boundary_stripper_does_not_depend_on_chunks():
    rng = random.Random(7)
    boundary = b"--XyZ-boundary"
    data = b"".join(rng.choice([boundary, rng.randbytes(rng.randrange(1, 40))]) for _ in range(300))
    for _ in range(50):
        stripper, out, at = _BoundaryStripper(boundary), [], 0
        while at < len(data):
            step = rng.randrange(1, 60)
            out.append(stripper.feed(data[at : at + step]))
            at += step
        assert b"".join(out) + stripper.tail == data.replace(boundary, b"")


async def test_openapi_documents_the_header_on_send_routes(svc):
    document = await (await svc.client.get("/openapi.json")).get_json()
    send = document["paths"]["/send"]["post"]
    (header,) = [p for p in send["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header" and header["schema"]["maxLength"] == 255
    assert {"409", "422", "429"} <= set(send["responses"])
    upload = document["paths"]["/upload"]["post"]  # any route marked idempotent
    assert upload["responses"]["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
    assert not any(
        p.get("name") == "Idempotency-Key"
        for p in document["paths"]["/connect"]["post"].get("parameters", [])
    )
