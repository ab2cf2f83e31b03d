"""WhatsApp media: the file encryption both sides use, and the simulator's HTTPS media host.

A sender encrypts a file with a random 32-byte media key (HKDF-SHA256 with a per-kind info string →
IV, AES-256-CBC key, HMAC key), appends the first 10 bytes of HMAC(iv ‖ ciphertext), and uploads
that blob (``POST /mms/<type>/<base64url(sha256(blob))>``); the message carries the key, both
hashes and the ``direct_path`` that serves the blob back. whatsmeow learns the host from the
``media_conn`` IQ, so no binary patch is needed; it checks TLS (see :mod:`.tls`).

The host speaks HTTP/1.1 over TLS without ALPN (Go falls back to HTTP/1.1), keeps each connection
open for further requests, and keeps every blob for the simulator's lifetime.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .noise import hkdf
from .tls import HOST_IP, TestCA, test_ca

log = logging.getLogger("wasim.media")

MAC_LENGTH = 10
MAX_UPLOAD = 128 << 20
# Message kind → whatsmeow's media type (HKDF info) and the upload path's mms type.
KEY_INFO = {
    "image": b"WhatsApp Image Keys",
    "sticker": b"WhatsApp Image Keys",
    "video": b"WhatsApp Video Keys",
    "audio": b"WhatsApp Audio Keys",
    "voice": b"WhatsApp Audio Keys",
    "document": b"WhatsApp Document Keys",
}
MMS_TYPE = {
    "image": "image",
    "sticker": "image",
    "video": "video",
    "audio": "audio",
    "voice": "audio",
    "document": "document",
}
DIRECT_PREFIX = "/v/t62.sim-24/"


class MediaError(ValueError):
    """A blob that does not match its key or hashes, or a kind without media keys."""


@dataclass(frozen=True)
class EncryptedMedia:
    """What an upload produces: the blob to store and the fields the message carries."""

    media_key: bytes
    blob: bytes  # AES-CBC ciphertext ‖ 10-byte MAC
    file_sha256: bytes
    file_enc_sha256: bytes
    file_length: int


def media_keys(media_key: bytes, kind: str) -> tuple[bytes, bytes, bytes]:
    """(iv, cipher key, MAC key) of a media key for a message kind (image, video, audio, document...)."""
    info = KEY_INFO.get(kind)
    if info is None:
        raise MediaError(f"no media keys for kind {kind!r}")
    expanded = hkdf(media_key, None, info, 112)
    return expanded[:16], expanded[16:48], expanded[48:80]


def encrypt_media(data: bytes, kind: str, media_key: bytes | None = None) -> EncryptedMedia:
    """Encrypt ``data`` as WhatsApp does for a message of this kind (a fresh key unless given)."""
    media_key = media_key or os.urandom(32)
    iv, cipher_key, mac_key = media_keys(media_key, kind)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    blob = ciphertext + hmac.new(mac_key, iv + ciphertext, hashlib.sha256).digest()[:MAC_LENGTH]
    return EncryptedMedia(
        media_key, blob, hashlib.sha256(data).digest(), hashlib.sha256(blob).digest(), len(data)
    )


def decrypt_media(
    blob: bytes,
    media_key: bytes,
    kind: str,
    file_sha256: bytes | None = None,
    file_enc_sha256: bytes | None = None,
) -> bytes:
    """The plaintext of an uploaded blob; checks the MAC and, when given, both hashes."""
    if len(blob) <= MAC_LENGTH:
        raise MediaError("blob too short")
    if file_enc_sha256 is not None and hashlib.sha256(blob).digest() != file_enc_sha256:
        raise MediaError("fileEncSHA256 does not match the blob")
    iv, cipher_key, mac_key = media_keys(media_key, kind)
    ciphertext, mac = blob[:-MAC_LENGTH], blob[-MAC_LENGTH:]
    expected = hmac.new(mac_key, iv + ciphertext, hashlib.sha256).digest()[:MAC_LENGTH]
    if not hmac.compare_digest(expected, mac):
        raise MediaError("media MAC mismatch (wrong key or kind)")
    decryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        data = unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise MediaError("bad padding") from exc
    if file_sha256 is not None and hashlib.sha256(data).digest() != file_sha256:
        raise MediaError("fileSHA256 does not match the plaintext")
    return data


@dataclass
class StoredBlob:
    object_id: str
    mms_type: str
    blob: bytes
    direct_path: str


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class MediaHost:
    """The HTTPS host named in ``media_conn`` answers: uploads and downloads of encrypted blobs."""

    ca: TestCA = field(default_factory=test_ca)
    port: int | None = None
    auth: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    blobs: dict[str, StoredBlob] = field(default_factory=dict)  # by direct path without its query
    uploads: int = 0
    downloads: int = 0

    @property
    def hostname(self) -> str:
        """``host:port`` as ``media_conn`` announces it."""
        return f"{HOST_IP}:{self.port}"

    def store(self, blob: bytes, mms_type: str) -> StoredBlob:
        """Keep a blob; returns it with its ``direct_path`` (which contains ``?``, as whatsmeow's
        download URL appends ``&hash=...``)."""
        object_id = secrets.token_hex(12)
        path = f"{DIRECT_PREFIX}{object_id}.enc"
        stored = StoredBlob(object_id, mms_type, blob, f"{path}?ccb=11-4&oh=sim&oe=0")
        self.blobs[path] = stored
        return stored

    def url(self, stored: StoredBlob) -> str:
        return f"https://{self.hostname}{stored.direct_path}"

    def blob(self, direct_path_or_url: str) -> bytes:
        """A stored blob by its ``direct_path`` or URL (``KeyError`` if none)."""
        return self.blobs[urlsplit(direct_path_or_url).path].blob

    def fetch(
        self,
        direct_path_or_url: str,
        media_key: bytes,
        kind: str,
        file_sha256: bytes | None = None,
        file_enc_sha256: bytes | None = None,
    ) -> bytes:
        """The plaintext of a stored blob, decrypted and checked as a recipient would."""
        return decrypt_media(self.blob(direct_path_or_url), media_key, kind, file_sha256, file_enc_sha256)

    # -------------------------------------------------------------- serving

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ca.cert_file, self.ca.key_file)
        return context  # no ALPN: Go's client then speaks HTTP/1.1

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free port of 127.0.0.1 until cancelled; ``nursery.start`` returns the port."""
        listeners = await trio.open_ssl_over_tcp_listeners(
            0, self.ssl_context(), host=HOST_IP, https_compatible=True
        )
        self.port = listeners[0].transport_listener.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._connection, listeners)
            task_status.started(self.port)

    async def _connection(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        reader = _RequestReader(stream)
        try:
            while (request := await reader.next()) is not None:
                method, target, body = request
                response = self._respond(method, target, body)
                reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required"}
                head = (
                    f"HTTP/1.1 {response.status} {reason.get(response.status, 'Error')}\r\n"
                    f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n\r\n"
                )
                await stream.send_all(head.encode() + response.body)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, _BadRequest) as exc:
            log.debug("media connection ended: %r", exc)
        finally:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(1),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError),
            ):
                await stream.aclose()

    def _respond(self, method: str, target: str, body: bytes) -> _Response:
        url = urlsplit(target)
        if method == "POST" and url.path.startswith("/mms/"):
            return self._upload(url.path, url.query, body)
        if method == "GET":
            stored = self.blobs.get(url.path)
            if stored is not None:
                self.downloads += 1
                return _Response(200, stored.blob, "application/octet-stream")
        return _Response(404, json.dumps({"error": f"no media at {url.path}"}).encode())

    def _upload(self, path: str, query: str, body: bytes) -> _Response:
        parts = path.split("/")  # "", "mms", type, token
        if len(parts) != 4:
            return _Response(404, b'{"error": "bad upload path"}')
        mms_type, token = parts[2], parts[3]
        if f"auth={self.auth}" not in query:
            return _Response(400, b'{"error": "bad auth"}')
        try:
            claimed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            claimed = b""
        if claimed != hashlib.sha256(body).digest():
            return _Response(400, b'{"error": "token is not the sha256 of the body"}')
        stored = self.store(body, mms_type)
        self.uploads += 1
        answer = {
            "url": self.url(stored),
            "direct_path": stored.direct_path,
            "handle": secrets.token_urlsafe(16),
            "object_id": stored.object_id,
        }
        return _Response(200, json.dumps(answer).encode())


class _BadRequest(Exception):
    pass


class _RequestReader:
    """HTTP/1.1 requests off one stream, with a Content-Length body (enough for Go's client)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> bool:
        chunk = await self.stream.receive_some(1 << 16)
        self.buffer += chunk
        return bool(chunk)

    async def next(self) -> tuple[str, str, bytes] | None:
        """The next (method, target, body), or None once the client closed the connection."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                return None
            if len(self.buffer) > 1 << 16 and b"\r\n\r\n" not in self.buffer:
                raise _BadRequest("header too large")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if "chunked" in headers.get("transfer-encoding", ""):
            raise _BadRequest("chunked bodies are not supported")
        length = int(headers.get("content-length", "0"))
        if length > MAX_UPLOAD:
            raise _BadRequest("body too large")
        while len(self.buffer) < length:
            if not await self._fill():
                raise _BadRequest("connection closed inside a body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return method.upper(), target, body
