"""POST /send-media (base64, URL and multipart intake, the size cap, mimetypes, the SSRF guard on
real sockets) and GET /media (download through the engine, the cache), on the fake engine."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.unit.calls import call
from tests.unit.http_origin import Answer, start_origin
from tests.unit.messaging_helpers import CONTACT, PNG, connected, indexed, multipart
from waservice.api.app import MAX_BODY_BYTES, create_app
from waservice.config import MediaConfig
from waservice.engine.content import Media
from waservice.engine.fake import FakeEngine
from waservice.media import fetch
from waservice.media.intake import base64_size_limit

MAX = 8192
PDF = b"%PDF-1.7\n" + b"x" * 500


@pytest.fixture
def engine(recorder) -> FakeEngine:
    return FakeEngine(recorder.sink)


def app_with(manager, message_index, **media):
    config = MediaConfig(max_bytes=MAX, **media)
    return create_app(manager, messages=message_index, media_config=config)


@pytest.fixture
async def client(manager, message_index, engine):
    client = app_with(manager, message_index).test_client()
    await connected(client, engine)
    return client


@pytest.fixture
async def private_client(manager, message_index, engine):
    """URLs on loopback allowed (media.allow_private_urls), to fetch from the local origin."""
    client = app_with(manager, message_index, allow_private_urls=True, fetch_timeout=2.0).test_client()
    await connected(client, engine, "priv")
    return client


def sent_media(engine, session_id: str = "default") -> tuple[Media, str]:
    message = engine.clients[session_id].sent[-1]
    assert isinstance(message.content, Media)
    return message.content, message.media_sha256


def spool_is_empty(manager) -> bool:
    spool = manager.store.data_dir / ".spool"
    return not spool.exists() or not any(spool.iterdir())


async def unharmed(client, session_id: str = "default") -> None:
    _, body = await call(client, "get", f"/status?session_id={session_id}")
    assert body["state"] == "connected"


async def test_base64_image(client, engine, manager):
    data = base64.b64encode(PNG).decode()
    status, body = await call(
        client,
        "post",
        "/send-media",
        json={"chat": CONTACT, "type": "image", "caption": "look", "data": data},
    )
    assert status == 200 and body["message"] == "Media sent successfully", body
    media, digest = sent_media(engine)
    assert digest == hashlib.sha256(PNG).hexdigest() and media.size == len(PNG)
    assert (media.kind, media.mimetype, media.caption) == ("image", "image/png", "look")
    assert spool_is_empty(manager)  # deleted once sent


async def test_data_url_and_voice(client, engine):
    ogg = b"OggS" + b"\x00" * 200
    data = "data:audio/ogg;base64," + base64.b64encode(ogg).decode()
    status, body = await call(
        client, "post", "/send-media", json={"number": CONTACT, "type": "voice", "data": data}
    )
    assert status == 200, body
    assert sent_media(engine)[0].mimetype == "audio/ogg; codecs=opus"


async def test_multipart_document(client, engine, manager):
    raw, headers = multipart(
        {"chat": CONTACT, "type": "document", "mimetype": "application/pdf", "caption": "the report"},
        PDF,
        file_name="../../etc/report 2026.pdf",
    )
    status, body = await call(client, "post", "/send-media", data=raw, headers=headers)
    assert status == 200, body
    media, digest = sent_media(engine)
    assert digest == hashlib.sha256(PDF).hexdigest()
    assert (media.file_name, media.mimetype, media.caption) == (
        "report 2026.pdf",
        "application/pdf",
        "the report",
    )
    assert spool_is_empty(manager)


async def test_multipart_reply_in_a_group(client, engine, message_index):
    await engine.clients["default"].incoming(CONTACT, "send me the photo", message_id="Q1", group="1203630")
    await indexed(message_index, "default", "Q1")
    raw, headers = multipart({"chat": "1203630@g.us", "type": "image", "reply_to": "Q1"}, PNG)
    status, body = await call(client, "post", "/send-media", data=raw, headers=headers)
    assert status == 200, body
    assert sent_media(engine)[0].reply_to.text == "send me the photo"


async def test_multipart_may_name_its_session_in_the_query(client, engine, manager):
    await connected(client, engine, "other")
    raw, headers = multipart({"chat": CONTACT, "type": "image"}, PNG)
    status, body = await call(client, "post", "/send-media?session_id=other", data=raw, headers=headers)
    assert (status, body["session_id"]) == (200, "other"), body
    assert sent_media(engine, "other")[1] == hashlib.sha256(PNG).hexdigest()
    raw, headers = multipart({"session_id": "default", "chat": CONTACT, "type": "image"}, PNG)
    for query, fragment in (
        ("session_id=other", "differs between the query and the form"),
        ("session_id=other&session_id=default", "more than once"),
        ("chat=x", "unexpected query parameter 'chat'"),
    ):
        status, body = await call(client, "post", f"/send-media?{query}", data=raw, headers=headers)
        assert status == 400 and fragment in body["error"], body
    assert spool_is_empty(manager)


@pytest.mark.parametrize(
    ("fields", "file", "fragment"),
    [
        ({"chat": CONTACT, "type": "image"}, None, "part named 'file'"),
        ({"chat": CONTACT, "type": "gif"}, PNG, "type"),
        ({"chat": CONTACT, "type": "image", "url": "http://x"}, PNG, "neither `url` nor `data`"),
        ({"chat": CONTACT, "type": "image", "colour": "red"}, PNG, "unknown field 'colour'"),
        ({"type": "image"}, PNG, "exactly one of `chat` and `number`"),
    ],
)
async def test_bad_multipart(client, engine, manager, fields, file, fragment):
    raw, headers = multipart(fields, file)
    status, body = await call(client, "post", "/send-media", data=raw, headers=headers)
    assert status == 400 and fragment in body["error"], body
    assert not engine.clients["default"].sent and spool_is_empty(manager)
    await unharmed(client)


async def test_truncated_multipart(client, manager):
    raw, headers = multipart({"chat": CONTACT, "type": "image"}, PNG)
    status, body = await call(client, "post", "/send-media", data=raw[:-40], headers=headers)
    assert status == 400 and "malformed multipart" in body["error"]
    assert spool_is_empty(manager)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"mimetype": "image"}, "invalid mimetype"),
        ({"mimetype": "image/png<script>"}, "invalid mimetype"),
        ({"mimetype": "application/pdf"}, "does not fit type 'image'"),
        ({"type": "sticker", "mimetype": "image/png"}, "image/webp"),
        ({"type": "voice", "mimetype": "audio/mpeg"}, "audio/ogg"),
        ({"data": base64.b64encode(PDF).decode()}, "looks like application/pdf"),
        ({"data": "not base64!"}, "not valid base64"),
        ({"data": ""}, "data is empty"),
        ({"data": None, "url": None}, "exactly one of `url` and `data`"),
    ],
)
async def test_bad_media_json(client, engine, manager, extra, fragment):
    body = {"chat": CONTACT, "type": "image", "data": base64.b64encode(PNG).decode(), **extra}
    status, answer = await call(client, "post", "/send-media", json=body)
    assert status == 400 and fragment in answer["error"], answer
    assert not engine.clients["default"].sent and spool_is_empty(manager)
    await unharmed(client)


async def test_oversized_media(client, engine, manager):
    big = bytes(MAX + 1)
    status, body = await call(
        client,
        "post",
        "/send-media",
        json={"chat": CONTACT, "type": "document", "data": base64.b64encode(big).decode()},
    )
    assert status == 413 and "media.max_bytes" in body["error"]
    raw, headers = multipart({"chat": CONTACT, "type": "document"}, big)
    status, body = await call(client, "post", "/send-media", data=raw, headers=headers)
    assert status == 413 and "media.max_bytes" in body["error"]
    # Larger than any media body may be: refused from its Content-Length, before it is read.
    too_long = base64_size_limit(MAX) + MAX_BODY_BYTES + 1
    status, body = await call(client, "post", "/send-media", data=bytes(too_long), headers=headers)
    assert status == 413
    assert not engine.clients["default"].sent and spool_is_empty(manager)
    await unharmed(client)


async def test_other_routes_keep_the_small_body_limit(client):
    status, _ = await call(
        client,
        "post",
        "/send-location",
        data=b" " * (2 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert status == 413


# -- URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://example.com/a.png", "http:// or https://"),
        ("not a url", "http:// or https://"),
        ("http://user:pw@example.com/a.png", "credentials"),
        ("http://127.0.0.1/a.png", "loopback"),
        ("http://localhost/a.png", "loopback"),
        ("http://[::1]/a.png", "loopback"),
        ("http://[::ffff:127.0.0.1]/a.png", "loopback"),
        ("http://10.1.2.3/a.png", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://224.0.0.1/a.png", "multicast"),
        ("http://0.0.0.0/a.png", "unspecified"),
        ("http://" + "a" * 2100 + ".com/", "2048"),
    ],
)
async def test_refused_urls(client, engine, url, fragment):
    status, body = await call(
        client, "post", "/send-media", json={"chat": CONTACT, "type": "image", "url": url}
    )
    assert status == 400 and fragment in body["error"], body
    assert not engine.clients["default"].sent
    await unharmed(client)


async def test_private_url_is_refused_on_a_real_socket(client, nursery):
    origin = await start_origin(nursery)
    origin.routes["/a.png"] = Answer(body=PNG)
    status, body = await call(
        client, "post", "/send-media", json={"chat": CONTACT, "type": "image", "url": origin.url("/a.png")}
    )
    assert status == 400 and "loopback" in body["error"]
    assert origin.requests == []  # never connected


async def test_url_fetch(private_client, engine, nursery):
    origin = await start_origin(nursery)
    origin.routes["/files/report.pdf"] = Answer(body=PDF, headers={"Content-Type": "application/pdf"})
    origin.routes["/start"] = Answer(status=302, headers={"Location": "/files/report.pdf"})
    body = {"session_id": "priv", "chat": CONTACT, "type": "document", "url": origin.url("/start")}
    status, answer = await call(private_client, "post", "/send-media", json=body)
    assert status == 200, answer
    media, digest = sent_media(engine, "priv")
    assert digest == hashlib.sha256(PDF).hexdigest()
    assert (media.file_name, media.mimetype) == ("report.pdf", "application/pdf")
    # It connected to the checked address and named the host only in the Host header.
    assert [path for path, _ in origin.requests] == ["/start", "/files/report.pdf"]
    assert origin.requests[0][1]["host"] == f"127.0.0.1:{origin.port}"


@pytest.mark.parametrize(
    ("answer", "status", "fragment"),
    [
        (Answer(status=404), 400, "HTTP 404"),
        (Answer(headers={"Content-Length": str(MAX + 1)}, body=b"x" * 10), 413, "media.max_bytes"),
        (
            Answer(
                headers={"Transfer-Encoding": "chunked"},
                body=b"%x\r\n" % (MAX + 1) + bytes(MAX + 1) + b"\r\n0\r\n\r\n",
            ),
            413,
            "media.max_bytes",
        ),
        (Answer(stall=True, headers={"Content-Length": "1000"}), 400, "media.fetch_timeout"),
        (Answer(status=301, headers={"Location": "/loop"}), 400, "too many redirects"),
        (Answer(status=302, headers={"Location": "gopher://x/"}), 400, "http:// or https://"),
    ],
)
async def test_bad_url_answers(private_client, engine, nursery, answer, status, fragment):
    origin = await start_origin(nursery)
    origin.routes["/loop"] = answer
    body = {"session_id": "priv", "chat": CONTACT, "type": "document", "url": origin.url("/loop")}
    code, result = await call(private_client, "post", "/send-media", json=body)
    assert code == status and fragment in result["error"], result
    assert not engine.clients["priv"].sent
    await unharmed(private_client, "priv")


async def test_every_redirect_hop_is_checked(client, engine, nursery, monkeypatch):
    """The first hop is allowed, the redirect's target is not: nothing is fetched from it."""
    origin = await start_origin(nursery)
    origin.routes["/a.png"] = Answer(
        status=302, headers={"Location": f"http://127.0.0.2:{origin.port}/b.png"}
    )
    monkeypatch.setattr(fetch, "refused", lambda address: "private" if str(address) == "127.0.0.2" else None)
    status, body = await call(
        client, "post", "/send-media", json={"chat": CONTACT, "type": "image", "url": origin.url("/a.png")}
    )
    assert status == 400 and "127.0.0.2, a private address" in body["error"], body
    assert [path for path, _ in origin.requests] == ["/a.png"]


# -- a session key and a multipart upload ---------------------------------------------------------


async def test_a_session_key_uploads_only_to_its_session(manager, message_index, engine):
    admin = {"X-API-Key": "admin-key"}
    client = create_app(manager, api_key="admin-key", messages=message_index).test_client()
    await call(client, "post", "/connect", json={"session_id": "alice"}, headers=admin)
    await call(client, "post", "/connect", json={"session_id": "bob"}, headers=admin)
    _, created = await call(client, "post", "/sessions/alice/keys", headers=admin)
    key = {"X-API-Key": created["key"]}
    raw, headers = multipart({"session_id": "bob", "chat": CONTACT, "type": "image"}, PNG)
    status, body = await call(client, "post", "/send-media", data=raw, headers={**headers, **key})
    assert status == 403 and "acts on session 'alice' only" in body["error"]
    raw, headers = multipart({"chat": CONTACT, "type": "image"}, PNG)  # names none: default
    status, body = await call(client, "post", "/send-media", data=raw, headers={**headers, **key})
    assert status == 403
    raw, headers = multipart({"session_id": "alice", "chat": CONTACT, "type": "image"}, PNG)
    status, body = await call(client, "post", "/send-media", data=raw, headers={**headers, **key})
    assert status == 400 and "not connected" in body["error"]  # allowed; alice is not paired


# -- GET /media -----------------------------------------------------------------------------------


async def test_download_received_media(client, engine, message_index, manager):
    online = engine.clients["default"]
    await online.incoming(
        CONTACT, "a photo", message_id="M1", kind="image", attachment=PNG, mimetype="image/png"
    )
    await online.incoming(CONTACT, "text only", message_id="T1")
    await indexed(message_index, "default", "T1")
    for _ in range(2):
        response = await client.get("/media/default/M1")
        assert response.status_code == 200
        assert await response.get_data() == PNG
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["Content-Length"] == str(len(PNG))
        assert "sandbox" in response.headers["Content-Security-Policy"]
    assert online.downloads == 1  # the second came from the cache
    status, body = await call(client, "get", "/media/default/T1")
    assert status == 404 and "no media" in body["error"]
    status, body = await call(client, "get", "/media/default/NOPE")
    assert status == 404 and "no message NOPE" in body["error"]
    status, body = await call(client, "get", "/media/default/bad%20id")
    assert status == 400
    cache = manager.store.data_dir / ".media-cache"
    assert [p.stat().st_mode & 0o777 for p in cache.iterdir()] == [0o600]


async def test_a_document_downloads_as_an_attachment(client, engine, message_index):
    html = b"<html><script>alert(1)</script></html>"
    await engine.clients["default"].incoming(
        CONTACT, None, message_id="H1", kind="document", attachment=html, mimetype="text/html"
    )
    await indexed(message_index, "default", "H1")
    response = await client.get("/media/default/H1")
    assert response.status_code == 200 and await response.get_data() == html
    assert response.headers["Content-Disposition"].startswith("attachment")


async def test_failed_download_is_a_502_and_caches_nothing(client, engine, message_index, manager):
    await engine.clients["default"].incoming(
        CONTACT, None, message_id="F1", kind="image", attachment=PNG, mimetype="image/png"
    )
    await indexed(message_index, "default", "F1")
    engine.fail_downloads = True
    status, body = await call(client, "get", "/media/default/F1")
    assert status == 502 and "media download failed" in body["error"]
    cache = manager.store.data_dir / ".media-cache"
    assert not any(cache.iterdir())
    engine.fail_downloads = False
    assert (await client.get("/media/default/F1")).status_code == 200
