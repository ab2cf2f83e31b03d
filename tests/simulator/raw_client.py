"""Raw neonize, no service: any number of ``NewClient``s in one plain Python process.

The one driver behind the simulator tests (one client per process, ``tests/simulator/clients.py``) and
the benchmarks' baseline (many clients, ``bench/_harness.py``). Run it with the patched neonize first
on ``PYTHONPATH`` (``tests.wasim.lease_patched_neonize``) so that ``import neonize`` dials the simulator.

It prints one JSON object per line on stdout (``{"event": ..., "t": seconds since start, ...}``), and
reads JSON commands on stdin, each run on its own thread (a neonize call that blocks, as
``disconnect()`` can, must not stop the driver from taking further commands):

- ``{"cmd": "connect", "ids": [...]}``: a ``NewClient`` per new id (``DATA_DIR/<id>/whatsmeow.db``),
  then ``connect()`` on its own thread (again for a known id). Events, each with ``client`` (the id):
  ``qr {qr}``, ``connected``, ``pair_status``, ``disconnected``, ``logged_out``, ... with the event as
  ``data``, and ``connect_called``, ``connect_returned``, ``connect_error {error, type}``.
- ``{"cmd": "send", "to": "15559998888", "text": "hi", "client": ...}`` → ``send_result {id, ...}`` (the
  message id) or ``send_error {error}``; ``client`` may be left out when the process has one.
- ``{"cmd": "chat_presence", "to": "155...", "state": "composing"|"paused", "media": "text"|"audio"}`` →
  ``chat_presence_sent``; ``{"cmd": "mark_read", "ids": [...], "chat": JID, "sender": JID, "type": "read"}``
  (JIDs as the dicts events carry) → ``mark_read_sent``; ``{"cmd": "is_on_whatsapp", "numbers": [...]}``
  → ``is_on_whatsapp {results}``; each may answer ``command_error``. ``client`` as for ``send``.
- ``{"cmd": "send_content", "to": "155...", "kind": ..., ...}`` → ``send_result`` / ``send_error`` like
  ``send``, for the other kinds: ``reply {text, reply_to, quoted_sender, quoted_text}``, ``location
  {latitude, longitude, name?, address?}``, ``contact {name, phone}`` (``send_contact``), ``reaction
  {message_id, emoji, sender?}``, ``edit {message_id, text}``, ``revoke {message_id, sender?}``
  (``sender``: the author's phone, default the client's own), and media ``image | video | audio |
  voice | document | sticker {data_b64, mimetype, caption?, file_name?}`` (``upload`` + the message).
- ``{"cmd": "download", "id": MSG_ID}``: ``download_any`` on a received MessageEv's message →
  ``downloaded {id, size, sha256, data_b64}`` or ``download_error {id, error}``.
- ``{"cmd": "pair_phone", "phone": "155..."}``: ``PairPhone(phone, True, LINUX, CHROME)`` → ``pair_code
  {code}`` or ``pair_phone_error {error}`` (send it after the first ``qr``).
- ``{"cmd": "disconnect" | "stop" | "logout", "ids": [...]}`` (every client without ``ids``) →
  ``done {cmd, ids}`` once all returned.
- ``{"cmd": "send_bench", "ids": [...], "contacts": {id: number}, "loops": L, "warmup": s,
  "duration": s}``: L threads per client call ``send_message`` in a loop; answers ``send_bench`` with
  the latencies and message ids of the measured window plus the ids sent during the warm-up.
- ``{"cmd": "exit"}`` (or EOF) ends the process at once.

Usage: ``python raw_client.py DATA_DIR``. Prints ``ready`` once neonize is imported.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

# Go and neonize print banners on stdout; keep stdout for our JSON lines, and the banners on stderr.
_out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

_lock = threading.Lock()
_start = time.monotonic()
START_HOLD = 0.02  # seconds, as the service gives each client start the bridge alone


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "t": round(time.monotonic() - _start, 3), **fields}, default=str)
    with _lock:
        try:
            _out.write(line + "\n")
            _out.flush()
        except (BrokenPipeError, ValueError):
            os._exit(0)  # the test or benchmark went away


class Driver:
    def __init__(self, data_dir: Path) -> None:
        from google.protobuf.json_format import MessageToDict
        from neonize.client import NewClient
        from neonize.events import (
            CallOfferEv,
            ChatPresenceEv,
            ClientOutdatedEv,
            ConnectedEv,
            ConnectFailureEv,
            DisconnectedEv,
            KeepAliveRestoredEv,
            KeepAliveTimeoutEv,
            LoggedOutEv,
            MessageEv,
            OfflineSyncCompletedEv,
            OfflineSyncPreviewEv,
            PairStatusEv,
            PresenceEv,
            ReceiptEv,
            StreamErrorEv,
            StreamReplacedEv,
            TemporaryBanEv,
            UndecryptableMessageEv,
        )

        self._new_client = NewClient
        self._to_dict = MessageToDict
        self._events = [
            ("connected", ConnectedEv),
            ("pair_status", PairStatusEv),
            ("disconnected", DisconnectedEv),
            ("logged_out", LoggedOutEv),
            ("stream_replaced", StreamReplacedEv),
            ("stream_error", StreamErrorEv),
            ("connect_failure", ConnectFailureEv),
            ("keepalive_timeout", KeepAliveTimeoutEv),
            ("keepalive_restored", KeepAliveRestoredEv),
            ("temporary_ban", TemporaryBanEv),
            ("client_outdated", ClientOutdatedEv),
            # What the simulator's contacts send (tests/simulator/test_wasim_contacts.py).
            ("message", MessageEv),
            ("receipt", ReceiptEv),
            ("chat_presence", ChatPresenceEv),
            ("presence", PresenceEv),
            ("call_offer", CallOfferEv),
            ("offline_preview", OfflineSyncPreviewEv),
            ("offline_completed", OfflineSyncCompletedEv),
            ("undecryptable", UndecryptableMessageEv),
        ]
        self.data_dir = data_dir
        self.clients: dict[str, Any] = {}
        self.received: dict[str, Any] = {}  # message id -> the MessageEv's waE2E.Message, for download
        # Go's bridge registers each client in process-wide maps without a lock: two Neonize() calls at
        # once end the process ("fatal error: concurrent map writes"). One start at a time, as the service.
        self._start_lock = threading.Lock()

    # -- clients --------------------------------------------------------------------------------

    def _make_client(self, sid: str, started: threading.Event) -> Any:
        directory = self.data_dir / sid
        directory.mkdir(parents=True, exist_ok=True)
        client = self._new_client(str(directory.resolve() / "whatsmeow.db"), uuid=sid)

        def on_qr(_client: Any, data: bytes) -> None:
            started.set()
            emit("qr", client=sid, qr=data.decode())

        def forward(name: str) -> Any:
            def handler(_client: Any, message: Any) -> None:
                started.set()
                if name == "message":
                    self.received[message.Info.ID] = message.Message
                emit(name, client=sid, data=self._to_dict(message, preserving_proto_field_name=True))

            return handler

        # Plain closures, owned by the client for its whole life: neonize holds bound methods weakly.
        client.event.qr(on_qr)
        for name, event_type in self._events:
            client.event(event_type)(forward(name))
        return client

    def _run_connect(self, sid: str, client: Any) -> None:
        emit("connect_called", client=sid)
        try:
            client.connect()
        except Exception as exc:  # report precisely what neonize raises
            emit("connect_error", client=sid, error=str(exc), type=type(exc).__name__)
        else:
            emit("connect_returned", client=sid)

    def connect(self, ids: list[str]) -> None:
        for sid in ids:
            with self._start_lock:
                started = threading.Event()
                if sid not in self.clients:
                    self.clients[sid] = self._make_client(sid, started)
                thread = threading.Thread(
                    target=self._run_connect,
                    args=(sid, self.clients[sid]),
                    name=f"connect-{sid}",
                    daemon=True,
                )
                thread.start()
                started.wait(START_HOLD)  # the bridge alone until the first callback, or this long

    def _ids(self, command: dict[str, Any]) -> list[str]:
        return list(command["ids"]) if "ids" in command else list(self.clients)

    # -- commands -------------------------------------------------------------------------------

    def send(self, command: dict[str, Any]) -> None:
        sid = command.get("client") or next(iter(self.clients))
        try:
            response = self.clients[sid].send_message(command["to"], command["text"])
        except Exception as exc:
            emit("send_error", client=sid, error=str(exc), type=type(exc).__name__, to=command["to"])
        else:
            emit("send_result", client=sid, id=response.ID, timestamp=response.Timestamp, to=command["to"])

    def send_content(self, command: dict[str, Any]) -> None:
        from neonize.utils.jid import build_jid

        sid = command.get("client") or next(iter(self.clients))
        client, to, kind = self.clients[sid], build_jid(command["to"]), command["kind"]
        try:
            if kind == "contact":
                response = client.send_contact(to, command["name"], command["phone"])
            elif kind == "edit":
                new = self._proto("Message")(conversation=command["text"])
                response = client.edit_message(to, command["message_id"], new)
            elif kind == "revoke":
                response = client.revoke_message(to, self._author(sid, command), command["message_id"])
            elif kind == "reaction":
                sender = self._author(sid, command)
                message = client.build_reaction(to, sender, command["message_id"], command["emoji"])
                response = client.send_message(to, message)
            else:
                response = client.send_message(to, self._build(client, kind, command))
        except Exception as exc:
            emit("send_error", client=sid, error=str(exc), type=type(exc).__name__, to=command["to"])
        else:
            emit("send_result", client=sid, id=response.ID, timestamp=response.Timestamp, to=command["to"])

    def _author(self, sid: str, command: dict[str, Any]) -> Any:
        """The JID of a message's author: ``sender`` (a phone), else this client's own phone JID
        (a LID would make a revoke an admin revoke)."""
        from neonize.utils.jid import build_jid

        sender = command.get("sender") or self.clients[sid].get_me().JID.User
        return build_jid(sender)

    @staticmethod
    def _proto(name: str) -> Any:
        from neonize.proto.waE2E import WAWebProtobufsE2E_pb2

        return getattr(WAWebProtobufsE2E_pb2, name)

    def _build(self, client: Any, kind: str, command: dict[str, Any]) -> Any:
        import base64

        message = self._proto("Message")
        if kind == "reply":
            context = self._proto("ContextInfo")(
                stanzaID=command["reply_to"],
                participant=command["quoted_sender"],
                quotedMessage=message(conversation=command["quoted_text"]),
            )
            extended = self._proto("ExtendedTextMessage")(text=command["text"], contextInfo=context)
            return message(extendedTextMessage=extended)
        if kind == "location":
            location = self._proto("LocationMessage")(
                degreesLatitude=command["latitude"],
                degreesLongitude=command["longitude"],
                name=command.get("name"),
                address=command.get("address"),
            )
            return message(locationMessage=location)
        from neonize.utils.enum import MediaType

        data = base64.b64decode(command["data_b64"])
        media_type = {
            "image": MediaType.MediaImage,
            "sticker": MediaType.MediaImage,
            "video": MediaType.MediaVideo,
            "audio": MediaType.MediaAudio,
            "voice": MediaType.MediaAudio,
            "document": MediaType.MediaDocument,
        }[kind]
        up = client.upload(data, media_type)
        common = {
            "URL": up.url,
            "directPath": up.DirectPath,
            "mediaKey": up.MediaKey,
            "fileEncSHA256": up.FileEncSHA256,
            "fileSHA256": up.FileSHA256,
            "fileLength": up.FileLength,
            "mimetype": command["mimetype"],
        }
        caption = command.get("caption")
        if kind == "image":
            return message(imageMessage=self._proto("ImageMessage")(caption=caption, **common))
        if kind == "video":
            return message(videoMessage=self._proto("VideoMessage")(caption=caption, **common))
        if kind in ("audio", "voice"):
            return message(audioMessage=self._proto("AudioMessage")(PTT=kind == "voice", **common))
        if kind == "sticker":
            return message(stickerMessage=self._proto("StickerMessage")(**common))
        name = command.get("file_name")
        document = self._proto("DocumentMessage")(caption=caption, fileName=name, title=name, **common)
        return message(documentMessage=document)

    def download(self, command: dict[str, Any]) -> None:
        import base64
        import hashlib

        sid = command.get("client") or next(iter(self.clients))
        msg_id = command["id"]
        try:
            data = self.clients[sid].download_any(self.received[msg_id])
        except Exception as exc:
            emit("download_error", client=sid, id=msg_id, error=str(exc), type=type(exc).__name__)
            return
        emit(
            "downloaded",
            client=sid,
            id=msg_id,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            data_b64=base64.b64encode(data).decode(),
        )

    def pair_phone(self, command: dict[str, Any]) -> None:
        from neonize.utils.enum import ClientName, ClientType

        sid = command.get("client") or next(iter(self.clients))
        try:
            code = self.clients[sid].PairPhone(command["phone"], True, ClientName.LINUX, ClientType.CHROME)
        except Exception as exc:
            emit("pair_phone_error", client=sid, error=str(exc), type=type(exc).__name__)
        else:
            emit("pair_code", client=sid, code=code)

    def chat_presence(self, command: dict[str, Any]) -> None:
        from neonize.utils.enum import ChatPresence, ChatPresenceMedia
        from neonize.utils.jid import build_jid

        sid = command.get("client") or next(iter(self.clients))
        state = ChatPresence[f"CHAT_PRESENCE_{command.get('state', 'composing').upper()}"]
        media = ChatPresenceMedia[f"CHAT_PRESENCE_MEDIA_{command.get('media', 'text').upper()}"]
        self.clients[sid].send_chat_presence(build_jid(command["to"]), state, media)
        emit("chat_presence_sent", client=sid)

    def mark_read(self, command: dict[str, Any]) -> None:
        from google.protobuf.json_format import ParseDict
        from neonize.proto.Neonize_pb2 import JID
        from neonize.utils.enum import ReceiptType

        sid = command.get("client") or next(iter(self.clients))
        chat = ParseDict(command["chat"], JID(), ignore_unknown_fields=True)
        sender = ParseDict(command["sender"], JID(), ignore_unknown_fields=True)
        receipt = ReceiptType[command.get("type", "read").upper()]
        self.clients[sid].mark_read(*command["ids"], chat=chat, sender=sender, receipt=receipt)
        emit("mark_read_sent", client=sid)

    def is_on_whatsapp(self, command: dict[str, Any]) -> None:
        sid = command.get("client") or next(iter(self.clients))
        results = self.clients[sid].is_on_whatsapp(*command["numbers"])
        emit("is_on_whatsapp", client=sid, results=[self._to_dict(r) for r in results])

    def call_each(self, name: str, ids: list[str]) -> None:
        for sid in ids:
            try:
                getattr(self.clients[sid], name)()
            except Exception as exc:
                emit("command_error", client=sid, cmd=name, error=str(exc))
        emit("done", cmd=name, ids=ids)

    def send_bench(self, command: dict[str, Any]) -> None:
        from neonize.utils.jid import build_jid

        ids, contacts, loops = command["ids"], command["contacts"], int(command.get("loops", 1))
        start = time.monotonic()
        measure_from = start + float(command["warmup"])
        end = measure_from + float(command["duration"])
        results: list[tuple[list, list, list, list]] = []  # per thread: latencies, sent, warm-up, errors

        def loop(sid: str, number: int) -> None:
            client, jid, to = self.clients[sid], build_jid(contacts[sid]), contacts[sid]
            result: tuple[list, list, list, list] = ([], [], [], [])
            results.append(result)
            latencies, sent, warm, errors = result
            n = 0
            while (t0 := time.monotonic()) < end:
                text = f"raw {sid} {number} {n}"
                n += 1
                try:
                    response = client.send_message(jid, text)
                except Exception as exc:
                    errors.append(str(exc)[:200])
                    continue
                t1 = time.monotonic()
                if t0 >= measure_from and t1 <= end:
                    latencies.append(t1 - t0)
                    sent.append([response.ID, to, text])
                else:
                    warm.append([response.ID, to, text])

        threads = [
            threading.Thread(target=loop, args=(sid, i), name=f"send-{sid}-{i}")
            for sid in ids
            for i in range(loops)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        emit(
            "send_bench",
            latencies=[x for r in results for x in r[0]],
            sent=[x for r in results for x in r[1]],
            warmup_sent=[x for r in results for x in r[2]],
            errors=[x for r in results for x in r[3]],
        )

    def run(self, command: dict[str, Any]) -> None:
        name = command.get("cmd")
        try:
            if name == "connect":
                self.connect(self._ids(command))
            elif name == "send":
                self.send(command)
            elif name in ("disconnect", "stop", "logout"):
                self.call_each(name, self._ids(command))
            elif name == "send_bench":
                self.send_bench(command)
            elif name in (
                "chat_presence",
                "mark_read",
                "is_on_whatsapp",
                "send_content",
                "download",
                "pair_phone",
            ):
                getattr(self, name)(command)
            else:
                emit("unknown_command", command=command)
        except Exception:
            emit("command_error", cmd=name, traceback=traceback.format_exc())


def main() -> None:
    # The service's engine log level, so that neither pays for Go's debug logs.
    for name in ("neonize", "neonize.utils.log", "whatsmeow", "Whatsmeow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import neonize

    driver = Driver(Path(sys.argv[1]))
    emit("ready", neonize_file=neonize.__file__, pid=os.getpid())
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            command = json.loads(line)
        except ValueError:
            emit("bad_command", line=line)
            continue
        if command.get("cmd") == "exit":
            break
        threading.Thread(
            target=driver.run, args=(command,), name=str(command.get("cmd")), daemon=True
        ).start()
    emit("exiting")


if __name__ == "__main__":
    try:
        main()
    finally:
        # Skip interpreter teardown: neonize's connect worker is a non-daemon thread blocked in Go,
        # so a normal exit would hang once stdin is closed.
        os._exit(0)
