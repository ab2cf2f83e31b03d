"""Any node answers any route: nodes A and B (real apps on real sockets, fake engines), a locator
that says who owns what, and requests through A for sessions B owns."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.process.service import free_port
from tests.unit.messaging_helpers import CONTACT, OWN_PHONE, PNG, multipart
from tests.unit.nodes import DictLocator, Node, open_node
from waservice.cluster.forward import NODE_HEADER, Owner
from waservice.cluster.relay import FORWARDED_BY
from waservice.config import MediaConfig

KEY = "cluster-admin-key"
AUTH = {"X-API-Key": KEY}


@pytest.fixture
async def locator() -> DictLocator:
    return DictLocator()


@pytest.fixture
async def node_a(tmp_path: Path, locator: DictLocator) -> AsyncIterator[Node]:
    async with open_node("A", tmp_path / "a", locator, api_key=KEY) as node:
        yield node


@pytest.fixture
async def node_b(tmp_path: Path, locator: DictLocator) -> AsyncIterator[Node]:
    async with open_node("B", tmp_path / "b", locator, api_key=KEY) as node:
        yield node


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=AUTH, timeout=20) as client:
        yield client


async def wait_state(http: httpx.AsyncClient, node: Node, session_id: str, state: str) -> dict:
    with trio.fail_after(10):
        while True:
            body = (await http.get(f"{node.url}/status", params={"session_id": session_id})).json()
            if body.get("state") == state:
                return body
            await trio.sleep(0.01)


async def owned_by(http: httpx.AsyncClient, node: Node, session_id: str, *, connect: bool = True) -> None:
    """`session_id` exists on `node` and the locator says so; connected unless `connect` is False."""
    node.locator.owners[session_id] = node.owner
    assert (await http.post(f"{node.url}/connect", json={"session_id": session_id})).status_code == 200
    await wait_state(http, node, session_id, "qr_ready")
    if connect:
        node.engine.clients[session_id].scan(OWN_PHONE)
        await wait_state(http, node, session_id, "connected")


async def forwarded(http: httpx.AsyncClient, node: Node) -> dict[str, float]:
    """This node's waservice_forwarded_requests_total, by outcome."""
    text = (await http.get(f"{node.url}/metrics")).text
    found = re.findall(r'^waservice_forwarded_requests_total\{outcome="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {outcome: float(value) for outcome, value in found}


async def test_status_through_another_node_is_the_owners_answer(node_a, node_b, http):
    await owned_by(http, node_b, "b1")
    await owned_by(http, node_a, "a1")
    through_a = await http.get(f"{node_a.url}/status", params={"session_id": "b1"})
    direct = await http.get(f"{node_b.url}/status", params={"session_id": "b1"})
    assert through_a.status_code == 200 and through_a.json() == direct.json()
    assert through_a.json()["state"] == "connected"
    assert through_a.headers[NODE_HEADER] == "B" and direct.headers[NODE_HEADER] == "B"
    assert through_a.headers["Content-Type"] == direct.headers["Content-Type"]
    assert through_a.headers.get_list("Date") == [through_a.headers["Date"]]  # one, not the owner's too
    # A session A owns, and a route that names none, are answered by A.
    local = await http.get(f"{node_a.url}/status", params={"session_id": "a1"})
    assert (local.status_code, local.headers[NODE_HEADER]) == (200, "A")
    listed = await http.get(f"{node_a.url}/sessions")
    assert listed.headers[NODE_HEADER] == "A"
    assert {s["session_id"] for s in listed.json()["sessions"]} == {"default", "a1"}
    assert node_a.manager.sessions() and "b1" not in {s.session_id for s in node_a.manager.sessions()}
    assert await forwarded(http, node_a) == {
        "answered": 1,
        "unreachable": 0,
        "failed": 0,
        "timed_out": 0,
        "moving": 0,
    }


async def test_connect_through_another_node_creates_the_session_on_its_owner(node_a, node_b, http):
    node_b.locator.owners["new1"] = node_b.owner
    answer = await http.post(f"{node_a.url}/connect", json={"session_id": "new1"})
    assert answer.status_code == 200 and answer.headers[NODE_HEADER] == "B"
    assert ("new1", True) in node_a.locator.asked  # placed: an unknown session may be created
    await wait_state(http, node_b, "new1", "qr_ready")
    assert "new1" not in {s.session_id for s in node_a.manager.sessions()}


async def test_send_through_another_node_reaches_the_owners_engine(node_a, node_b, http):
    await owned_by(http, node_b, "b1")
    body = {"session_id": "b1", "number": CONTACT, "message": "through A"}
    answer = await http.post(f"{node_a.url}/send", json=body, headers={"Idempotency-Key": "k-1"})
    assert answer.status_code == 200, answer.text
    assert answer.headers[NODE_HEADER] == "B"
    assert answer.json()["result"]["id"].startswith("FAKE")
    assert node_b.engine.clients["b1"].sent[-1].text == "through A"
    assert "POST /send" in node_b.seen


async def test_an_owners_error_comes_back_unchanged(node_a, node_b, http):
    await owned_by(http, node_b, "b1")
    bad = {"session_id": "b1", "number": "12", "message": "x"}
    through_a = await http.post(f"{node_a.url}/send", json=bad)
    direct = await http.post(f"{node_b.url}/send", json=bad)
    assert through_a.status_code == direct.status_code == 400
    assert through_a.content == direct.content
    assert through_a.headers[NODE_HEADER] == "B"
    no_qr = await http.get(f"{node_a.url}/qr", params={"session_id": "b1"})  # connected: no QR
    assert no_qr.status_code == 404 and "no QR code" in no_qr.json()["error"]


async def test_qr_png_through_another_node_is_byte_identical(node_a, node_b, http):
    await owned_by(http, node_b, "b2", connect=False)
    through_a = await http.get(f"{node_a.url}/qr", params={"session_id": "b2"})
    direct = await http.get(f"{node_b.url}/qr", params={"session_id": "b2"})
    assert through_a.status_code == 200 and through_a.headers[NODE_HEADER] == "B"
    png = base64.b64decode(through_a.json()["qr"].split(",", 1)[1])
    assert png.startswith(b"\x89PNG") and png == base64.b64decode(direct.json()["qr"].split(",", 1)[1])


@pytest.mark.parametrize("where", ["part before the file", "query", "part after the file"])
async def test_multipart_upload_through_another_node(node_a, node_b, http, where):
    await owned_by(http, node_b, "b1")
    photo = PNG * 2000  # ~2 MiB: more than is read ahead in memory
    fields = {"chat": CONTACT, "type": "image", "caption": "via A"}
    params = {}
    if where == "query":
        params = {"session_id": "b1"}
        body, headers = multipart(fields, photo)
    elif where == "part before the file":
        body, headers = multipart({"session_id": "b1", **fields}, photo)
    else:
        body, headers = multipart(fields, photo)
        tail = b'--%s\r\nContent-Disposition: form-data; name="session_id"\r\n\r\nb1\r\n'
        boundary = headers["Content-Type"].split("boundary=")[1].encode()
        body = body[: body.rindex(b"--" + boundary + b"--")] + tail % boundary + b"--" + boundary + b"--\r\n"

    async def chunks() -> AsyncIterator[bytes]:  # streamed, as a large upload comes
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    headers = {**headers, "Content-Length": str(len(body))}
    answer = await http.post(f"{node_a.url}/send-media", params=params, content=chunks(), headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers[NODE_HEADER] == "B"
    sent = node_b.engine.clients["b1"].sent[-1]
    assert (sent.media_size, sent.media_sha256) == (len(photo), hashlib.sha256(photo).hexdigest())
    assert not any((node_a.manager.store.data_dir / ".spool").glob("*"))  # the read-ahead is gone


async def test_uploads_past_the_cap_are_413_from_the_owner_or_from_the_read_ahead(tmp_path, http):
    cap = MediaConfig(max_bytes=64 * 1024)
    async with (
        open_node("A", tmp_path / "a", DictLocator(), api_key=KEY, media=cap) as a,
        open_node("B", tmp_path / "b", a.locator, api_key=KEY, media=cap) as b,
    ):
        await owned_by(http, b, "b1")
        photo = PNG * 1000  # ~1 MiB
        body, headers = multipart({"chat": CONTACT, "type": "image"}, photo)
        # Routed by the query: streamed to B, whose route refuses it while it streams in.
        answer = await http.post(f"{a.url}/send-media?session_id=b1", content=body, headers=headers)
        assert (answer.status_code, answer.headers[NODE_HEADER]) == (413, "B"), answer.text
        # The session part after the file: A reads ahead, up to the cap plus the other parts.
        body, headers = multipart({"chat": CONTACT, "type": "image"}, PNG * 3000)
        boundary = headers["Content-Type"].split("boundary=")[1].encode()
        tail = b'--%s\r\nContent-Disposition: form-data; name="session_id"\r\n\r\nb1\r\n' % boundary
        body = body[: body.rindex(b"--" + boundary + b"--")] + tail + b"--" + boundary + b"--\r\n"
        answer = await http.post(f"{a.url}/send-media", content=body, headers=headers)
        assert (answer.status_code, answer.headers[NODE_HEADER]) == (413, "A"), answer.text

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: only the count stops it
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        answer = await http.post(f"{a.url}/send-media", content=chunked(), headers=headers)
        # The read-ahead's count, or quart's bound on what waits unread (whichever comes first).
        assert (answer.status_code, answer.headers[NODE_HEADER]) == (413, "A"), answer.text
        assert not any((a.manager.store.data_dir / ".spool").glob("*"))
        assert not b.engine.clients["b1"].sent


async def test_a_multipart_upload_for_a_local_session_reads_what_was_read_ahead(node_a, http):
    await owned_by(http, node_a, "a1")
    photo = PNG * 2000
    body, headers = multipart({"chat": CONTACT, "type": "image"}, photo)
    boundary = headers["Content-Type"].split("boundary=")[1].encode()
    tail = b'--%s\r\nContent-Disposition: form-data; name="session_id"\r\n\r\na1\r\n' % boundary
    body = body[: body.rindex(b"--" + boundary + b"--")] + tail + b"--" + boundary + b"--\r\n"
    answer = await http.post(f"{node_a.url}/send-media", content=body, headers=headers)
    assert answer.status_code == 200 and answer.headers[NODE_HEADER] == "A", answer.text
    assert node_a.engine.clients["a1"].sent[-1].media_sha256 == hashlib.sha256(photo).hexdigest()
    assert not any((node_a.manager.store.data_dir / ".spool").glob("*"))


async def test_media_download_streams_through_another_node(node_a, node_b, http):
    await owned_by(http, node_b, "b1")
    await node_b.engine.clients["b1"].incoming(
        CONTACT, "a photo", message_id="M1", kind="image", attachment=PNG, mimetype="image/png"
    )
    with trio.fail_after(10):
        while await node_b.messages.get("b1", "M1") is None:
            await trio.sleep(0.01)
    answer = await http.get(f"{node_a.url}/media/b1/M1")
    assert answer.status_code == 200 and answer.content == PNG
    assert answer.headers["Content-Type"] == "image/png"
    assert answer.headers["Content-Length"] == str(len(PNG))
    assert answer.headers[NODE_HEADER] == "B"


async def test_event_stream_through_another_node(node_a, node_b, http):
    await owned_by(http, node_b, "b1")
    url = f"{node_a.url}/events"
    with trio.fail_after(15):
        async with http.stream(
            "GET", url, params={"session_id": "b1", "types": "message.received"}
        ) as stream:
            assert stream.status_code == 200 and stream.headers[NODE_HEADER] == "B"
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            await node_b.engine.clients["b1"].incoming(CONTACT, "hello through A", message_id="E1")
            async for line in lines:
                if line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))
                    break
    assert (event["type"], event["session_id"]) == ("message.received", "b1")
    assert event["data"]["text"] == "hello through A"


async def test_a_caller_leaving_an_event_stream_closes_it_on_the_owner(node_a, node_b, http):
    await owned_by(http, node_b, "b1")
    with trio.fail_after(15):
        async with http.stream("GET", f"{node_a.url}/events", params={"session_id": "b1"}) as stream:
            assert stream.status_code == 200
            while node_b.live.open != 1:
                await trio.sleep(0.01)
        while node_b.live.open != 0:  # A let go of its connection to B
            await trio.sleep(0.01)


async def test_relayed_event_streams_end_when_the_node_stops(node_a, node_b, http):
    await owned_by(http, node_b, "b1")
    with trio.fail_after(15):
        async with http.stream("GET", f"{node_a.url}/events", params={"session_id": "b1"}) as stream:
            while node_b.live.open != 1:
                await trio.sleep(0.01)
            node_a.forwarding.close()  # what the server does at SIGTERM
            async for _ in stream.aiter_raw():
                pass  # until the stream ends (else fail_after)
        while node_b.live.open != 0:
            await trio.sleep(0.01)
    assert (await http.get(f"{node_a.url}/health")).status_code == 200  # only streams end


async def test_head_through_another_node(node_a, node_b, http):
    await owned_by(http, node_b, "b1")
    answer = await http.head(f"{node_a.url}/status", params={"session_id": "b1"})
    assert (answer.status_code, answer.content, answer.headers[NODE_HEADER]) == (200, b"", "B")


async def test_events_without_a_session_are_answered_locally(node_a, node_b, http):
    async with http.stream("GET", f"{node_a.url}/events") as stream:
        assert stream.status_code == 200 and stream.headers[NODE_HEADER] == "A"
    for path in ("/health", "/sessions", "/openapi.json"):
        assert (await http.get(node_a.url + path)).headers[NODE_HEADER] == "A"
    assert node_a.locator.asked == []
    assert not [seen for seen in node_b.seen if not seen.startswith("GET /status")]


async def test_a_wrong_key_is_refused_by_the_node_asked(node_a, node_b, http):
    await owned_by(http, node_b, "b1")
    before = len(node_b.seen)
    answer = await http.get(
        f"{node_a.url}/status", params={"session_id": "b1"}, headers={"X-API-Key": "wrong"}
    )
    assert answer.status_code == 401 and answer.headers[NODE_HEADER] == "A"
    no_key = await httpx.AsyncClient().get(f"{node_a.url}/status", params={"session_id": "b1"})
    assert no_key.status_code == 401 and no_key.headers[NODE_HEADER] == "A"
    assert len(node_b.seen) == before  # nothing reached the owner
    bearer = await http.get(
        f"{node_a.url}/status",
        params={"session_id": "b1"},
        headers={"X-API-Key": "", "Authorization": f"Bearer {KEY}"},
    )
    assert bearer.status_code == 200 and bearer.headers[NODE_HEADER] == "B"  # the credentials went on
    # Credentials in an owner's URL never replace the caller's.
    node_a.locator.owners["b1"] = Owner("B", node_b.url.replace("http://", "http://user:pw@"))
    again = await http.get(
        f"{node_a.url}/status",
        params={"session_id": "b1"},
        headers={"X-API-Key": "", "Authorization": f"Bearer {KEY}"},
    )
    assert again.status_code == 200 and again.headers[NODE_HEADER] == "B"


async def test_a_session_key_cannot_reach_another_session_through_a_node(node_a, node_b, http):
    await owned_by(http, node_a, "a1")
    await owned_by(http, node_b, "b1")
    key = (await http.post(f"{node_a.url}/sessions/a1/keys")).json()["key"]
    assert (
        await http.get(f"{node_a.url}/status", params={"session_id": "a1"}, headers={"X-API-Key": key})
    ).status_code == 200
    before = len(node_b.seen)
    body, headers = multipart({"session_id": "b1", "chat": CONTACT, "type": "image"}, PNG)
    for answer in (
        await http.get(f"{node_a.url}/status", params={"session_id": "b1"}, headers={"X-API-Key": key}),
        await http.post(f"{node_a.url}/send-media", content=body, headers={**headers, "X-API-Key": key}),
    ):
        assert answer.status_code == 403 and answer.headers[NODE_HEADER] == "A", answer.text
    assert len(node_b.seen) == before


async def test_a_forwarded_request_is_never_forwarded_again(tmp_path, http):
    # A thinks B owns s1, B thinks A does (ownership is moving): one hop, then a 503 to retry.
    async with (
        open_node("A", tmp_path / "a", DictLocator(), api_key=KEY) as a,
        open_node("B", tmp_path / "b", DictLocator(), api_key=KEY) as b,
    ):
        a.locator.owners["s1"], b.locator.owners["s1"] = b.owner, a.owner
        answer = await http.get(f"{a.url}/status", params={"session_id": "s1"})
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert answer.headers[NODE_HEADER] == "B"  # B's refusal, passed on by A
        assert answer.json() == {"success": False, "error": "session 's1' is moving to another node; retry"}
        assert b.seen.count("GET /status") == 1 and a.seen.count("GET /status") == 1
        assert (await forwarded(http, b))["moving"] == 1 and (await forwarded(http, a))["answered"] == 1
        # A client cannot make a node forward what names it as the sender either.
        spoofed = await http.get(f"{a.url}/status", params={"session_id": "s1"}, headers={FORWARDED_BY: "X"})
        assert spoofed.status_code == 503 and spoofed.headers[NODE_HEADER] == "A"


async def test_an_owner_that_is_down_is_a_quick_503(node_a, http):
    node_a.locator.owners["c1"] = Owner("C", f"http://user:secret@127.0.0.1:{free_port()}")
    started = trio.current_time()
    answer = await http.get(f"{node_a.url}/status", params={"session_id": "c1"})
    assert trio.current_time() - started < 3
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    error = answer.json()["error"]
    assert "'c1'" in error and "'C'" in error and "secret" not in error and "127.0.0.1" not in error
    assert (await forwarded(http, node_a))["unreachable"] == 1
    for url in ("", "not a url", "ftp://127.0.0.1/"):  # a registry row without a usable address
        node_a.locator.owners["c1"] = Owner("C", url)
        answer = await http.get(f"{node_a.url}/status", params={"session_id": "c1"})
        assert answer.status_code == 503 and "'C'" in answer.json()["error"], answer.text
    assert answer.headers[NODE_HEADER] == "A"


async def test_a_lost_registry_is_a_503(node_a, http):
    node_a.locator.unavailable = True
    answer = await http.get(f"{node_a.url}/status", params={"session_id": "b1"})
    assert answer.status_code == 503 and "Retry-After" in answer.headers
    assert "database is unavailable" in answer.json()["error"] and "connection refused" not in answer.text


async def _silent_owner(nursery: trio.Nursery, answer: bytes | None) -> Owner:
    """An owner that takes the request, then says nothing (`answer` None) or `answer` and hangs up."""

    async def handle(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        if answer is None:
            await trio.sleep_forever()
        await stream.send_all(answer)
        await stream.aclose()

    (listener,) = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return Owner("D", f"http://127.0.0.1:{listener.socket.getsockname()[1]}")


async def test_an_owner_that_does_not_answer_is_a_504_after_the_timeout(tmp_path, http, nursery):
    async with open_node("A", tmp_path / "a", DictLocator(), api_key=KEY, timeout=0.5) as a:
        a.locator.owners["d1"] = await _silent_owner(nursery, None)
        answer = await http.get(f"{a.url}/status", params={"session_id": "d1"})
        assert answer.status_code == 504 and "within 0.5 s" in answer.json()["error"]
        a.locator.owners["d2"] = await _silent_owner(nursery, b"")  # hangs up without a word
        answer = await http.get(f"{a.url}/status", params={"session_id": "d2"})
        assert answer.status_code == 502 and "outcome unknown" in answer.json()["error"]
        counted = await forwarded(http, a)
        assert (counted["timed_out"], counted["failed"], counted["answered"]) == (1, 1, 0)


async def test_a_request_that_names_several_sessions_is_answered_locally(node_a, node_b, http):
    await owned_by(http, node_b, "b1")
    answer = await http.post(
        f"{node_a.url}/send?session_id=b2", json={"session_id": "b1", "number": CONTACT, "message": "x"}
    )
    assert answer.status_code == 400 and answer.headers[NODE_HEADER] == "A"


async def test_single_box_answers_have_no_node_header(client):
    response = await client.get("/health")
    assert NODE_HEADER not in response.headers
