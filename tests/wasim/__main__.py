"""Run the simulator as its own process: ``python -m tests.wasim --port PORT [--control-port PORT]``.

(``PYTHONPATH=tests python -m wasim ...`` works too.) Prints one JSON line once the listeners are up
(``port``, ``control_port``, ``media_host``, and ``tls_env``: the ``SSL_CERT_FILE``/``SSL_CERT_DIR`` a
neonize process must start with to use media), then serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import sys

import trio

from .control import serve_control
from .server import Simulator
from .tls import tls_env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wasim", description="WhatsApp Web protocol simulator (tests only)")
    parser.add_argument(
        "--port", type=int, required=True, help="websocket port (the one compiled into the patched neonize)"
    )
    parser.add_argument("--control-port", type=int, default=0, help="HTTP/JSON control port (0: pick one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


# A full collection walks every object of every live connection: with 1,000 connected devices, each
# one stopped the simulator for 0.3-0.4 s, twice in a restore of 1,000 sessions, and took 40 % of
# its CPU (measured with perf). Every client's handshake waited meanwhile: a stall WhatsApp's own
# servers do not cause. So in its own process the old generation is collected only once the
# simulator has been idle for IDLE_FOR_FULL_GC, or after FULL_GC_AT_LEAST_EVERY of steady traffic.
IDLE_FOR_FULL_GC = 0.25  # seconds with nothing recorded (no connection, login or message)
FULL_GC_AT_LEAST_EVERY = 60.0  # seconds


async def collect_when_idle(sim: Simulator) -> None:
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1 << 30)  # the young generations stay automatic
    seen, collected_at, dirty = len(sim.history), trio.current_time(), False
    while True:
        await trio.sleep(IDLE_FOR_FULL_GC)
        busy, seen = len(sim.history) != seen, len(sim.history)
        dirty = dirty or busy
        if dirty and (not busy or trio.current_time() - collected_at >= FULL_GC_AT_LEAST_EVERY):
            gc.collect()
            collected_at, dirty = trio.current_time(), False


async def run(args: argparse.Namespace) -> None:
    sim = Simulator()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_when_idle, sim)
        port = await nursery.start(sim.serve, args.port, args.host)
        control_port = await nursery.start(serve_control, sim, args.control_port, args.host)
        ready = {"port": port, "control_port": control_port, "media_host": sim.media.hostname}
        # This process's test CA signs the media host: neonize processes must start with this env.
        print(json.dumps({**ready, "tls_env": tls_env()}), flush=True)


def raise_file_limit() -> None:
    """Each client connection is a socket; lift the soft descriptor limit so ~1000 devices fit."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard)
            )
    except (ImportError, ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_file_limit()
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run, args)


if __name__ == "__main__":
    main()
