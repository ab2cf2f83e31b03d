"""A bare neonize client for simulator tests, run as a subprocess.

Run it with ``PYTHONPATH=<patched neonize dir>`` (see ``tests.wasim.patched_neonize``) so that
``import neonize`` loads the copy whose Go library dials the simulator. It prints one JSON object per
line on stdout (``{"event": ..., "t": monotonic seconds, ...}``) and reads JSON commands on stdin:

- ``{"cmd": "send", "to": "15559998888", "text": "hi"}`` → ``{"event": "send_result", "id": ..., ...}``
  or ``{"event": "send_error", "error": ...}``
- ``{"cmd": "disconnect"}`` / ``{"cmd": "stop"}`` / ``{"cmd": "logout"}`` / ``{"cmd": "connect"}``
- ``{"cmd": "exit"}`` (or EOF) ends the process.

Usage: ``python raw_client.py DB_PATH UUID``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from typing import Any

# Go and neonize print banners on stdout; keep stdout for our JSON lines only.
_out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

_lock = threading.Lock()
_start = time.monotonic()


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "t": round(time.monotonic() - _start, 3), **fields}, default=str)
    with _lock:
        try:
            _out.write(line + "\n")
            _out.flush()
        except (BrokenPipeError, ValueError):
            pass  # the test runner went away; the process is about to end anyway


def main() -> None:
    db_path, uuid = sys.argv[1], sys.argv[2]
    import neonize
    from google.protobuf.json_format import MessageToDict
    from neonize.client import NewClient
    from neonize.events import (
        ClientOutdatedEv,
        ConnectedEv,
        ConnectFailureEv,
        DisconnectedEv,
        KeepAliveRestoredEv,
        KeepAliveTimeoutEv,
        LoggedOutEv,
        PairStatusEv,
        StreamErrorEv,
        StreamReplacedEv,
        TemporaryBanEv,
    )

    emit("started", neonize_file=neonize.__file__, pid=os.getpid())
    client = NewClient(db_path, uuid=uuid)

    def on_qr(_client: Any, data: bytes) -> None:
        emit("qr", qr=data.decode())

    client.event.qr(on_qr)

    def forward(name: str, event_type: Any) -> None:
        def handler(_client: Any, message: Any) -> None:
            emit(name, data=MessageToDict(message, preserving_proto_field_name=True))

        client.event(event_type)(handler)

    for name, event_type in [
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
    ]:
        forward(name, event_type)

    def run_connect() -> None:
        emit("connect_called")
        try:
            client.connect()
        except Exception as exc:  # report precisely what neonize raises
            emit("connect_error", error=str(exc), type=type(exc).__name__)
        else:
            emit("connect_returned")

    threading.Thread(target=run_connect, name="connect", daemon=True).start()

    def run_command(command: dict[str, Any]) -> None:
        name = command.get("cmd")
        try:
            if name == "send":
                try:
                    response = client.send_message(command["to"], command["text"])
                except Exception as exc:
                    emit("send_error", error=str(exc), type=type(exc).__name__, to=command["to"])
                else:
                    emit("send_result", id=response.ID, timestamp=response.Timestamp, to=command["to"])
            elif name in ("disconnect", "stop", "logout"):
                getattr(client, name)()
                emit("done", cmd=name)
            elif name == "connect":
                run_connect()
            else:
                emit("unknown_command", command=command)
        except Exception:
            emit("command_error", cmd=name, traceback=traceback.format_exc())

    # Each command runs on its own thread: a neonize call that blocks (seen with disconnect()) must
    # not stop the driver from taking further commands.
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
            target=run_command, args=(command,), name=str(command.get("cmd")), daemon=True
        ).start()
    emit("exiting")


if __name__ == "__main__":
    try:
        main()
    finally:
        # Skip interpreter teardown: neonize's connect worker is a non-daemon thread blocked in Go,
        # so a normal exit would hang once stdin is closed.
        os._exit(0)
