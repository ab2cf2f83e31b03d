"""Raw neonize baseline for the benchmarks: many NewClients in ONE plain Python process, no service.

Run it with the patched neonize first on ``PYTHONPATH`` (``tests.wasim.patched_neonize``); the
benchmark driver (``bench/_harness.py``) does that. It prints one JSON object per line on stdout and
reads JSON commands on stdin:

- ``{"cmd": "connect", "ids": [...]}``: one ``NewClient`` per id (``DATA_DIR/<id>/whatsmeow.db``),
  each ``connect()`` on its own thread, back to back. Events: ``qr {id, qr}``, ``connected {id}``,
  ``disconnected {id}``, ``logged_out {id}``, ``connect_error {id, error}``.
- ``{"cmd": "send_bench", "ids": [...], "contacts": {id: number}, "loops": L, "warmup": s,
  "duration": s}``: L threads per client call ``send_message`` in a loop; answers ``send_bench`` with
  the latencies and message ids of the measured window plus the ids sent during the warm-up.
- ``{"cmd": "stop"}``: ``stop()`` every client (their state is saved), answers ``stopped``.
- ``{"cmd": "exit"}`` (or EOF) ends the process at once.

Usage: ``python bench/raw_neonize.py DATA_DIR``. Prints ``ready`` once neonize is imported.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Go and neonize print banners on stdout; keep stdout for our JSON lines only.
_out = os.fdopen(os.dup(1), "w", buffering=1)
_devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(_devnull, 1)
sys.stdout = os.fdopen(_devnull, "w")  # neonize print()s per connect; the service drops that too
_lock = threading.Lock()
START_HOLD = 0.02  # seconds, as the service (waservice/engine/neonize.py START_HOLD)


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, **fields}, default=str)
    with _lock:
        try:
            _out.write(line + "\n")
            _out.flush()
        except (BrokenPipeError, ValueError):
            os._exit(0)  # the benchmark went away


def main() -> None:
    data_dir = Path(sys.argv[1])
    os.environ.setdefault("NEONIZE_BOT_TAG", "off")  # as the service does
    from neonize.client import NewClient
    from neonize.events import ConnectedEv, DisconnectedEv, LoggedOutEv
    from neonize.utils.jid import build_jid

    # The same engine log level the service uses (warning), so neither pays for debug logs.
    for name in ("neonize", "neonize.utils.log", "whatsmeow", "Whatsmeow"):
        logging.getLogger(name).setLevel(logging.WARNING)

    clients: dict[str, Any] = {}

    def make_client(sid: str, started: threading.Event) -> Any:
        directory = data_dir / sid
        directory.mkdir(parents=True, exist_ok=True)
        client = NewClient(str(directory.resolve() / "whatsmeow.db"), uuid=sid)

        def on(event: str) -> Any:
            def handler(_client: Any, data: Any) -> None:
                started.set()
                if event == "qr":
                    emit("qr", id=sid, qr=data.decode())
                else:
                    emit(event, id=sid)

            return handler

        # Plain closures: neonize holds bound methods only weakly.
        client.event.qr(on("qr"))
        client.event(ConnectedEv)(on("connected"))
        client.event(DisconnectedEv)(on("disconnected"))
        client.event(LoggedOutEv)(on("logged_out"))
        return client

    def run_connect(sid: str, client: Any) -> None:
        try:
            client.connect()
        except Exception as exc:
            emit("connect_error", id=sid, error=str(exc))

    def connect(ids: list[str]) -> None:
        # Go's bridge registers each client in process-wide maps without a lock: two Neonize() calls
        # at once end the process ("fatal error: concurrent map writes", seen here with 200 clients).
        # Like the service, give each start the bridge alone until its first callback or START_HOLD.
        for sid in ids:
            started = threading.Event()
            clients[sid] = client = make_client(sid, started)
            threading.Thread(
                target=run_connect, args=(sid, client), name=f"connect-{sid}", daemon=True
            ).start()
            started.wait(START_HOLD)

    def send_bench(command: dict[str, Any]) -> None:
        ids, contacts, loops = command["ids"], command["contacts"], int(command.get("loops", 1))
        warmup, duration = float(command["warmup"]), float(command["duration"])
        start = time.monotonic()
        measure_from, end = start + warmup, start + warmup + duration
        results: list[list[Any]] = []  # per thread: [latencies, sent, warmup_sent, errors]

        def loop(sid: str, number: int) -> None:
            client, jid, to = clients[sid], build_jid(contacts[sid]), contacts[sid]
            latencies: list[float] = []
            sent: list[list[str]] = []
            warm: list[list[str]] = []
            errors: list[str] = []
            results.append([latencies, sent, warm, errors])
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

    def stop() -> None:
        for client in clients.values():
            try:
                client.stop()
            except Exception as exc:
                emit("stop_error", error=str(exc))
        emit("stopped")

    emit("ready", pid=os.getpid())
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        command = json.loads(line)
        name = command.get("cmd")
        if name == "exit":
            break
        if name == "connect":
            connect(command["ids"])
        elif name == "send_bench":
            threading.Thread(target=send_bench, args=(command,), daemon=True).start()
        elif name == "stop":
            stop()
        else:
            emit("unknown_command", command=command)


if __name__ == "__main__":
    try:
        main()
    finally:
        # neonize's connect worker is a non-daemon thread blocked in Go: skip interpreter teardown.
        os._exit(0)
