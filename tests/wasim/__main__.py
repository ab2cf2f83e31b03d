"""Run the simulator as its own process: ``python -m tests.wasim --port PORT [--control-port PORT]``.

(``PYTHONPATH=tests python -m wasim ...`` works too.) Prints one JSON line once the listeners are up
(``port``, ``control_port``, ``media_host``, and ``tls_env``: the ``SSL_CERT_FILE``/``SSL_CERT_DIR`` a
neonize process must start with to use media), then serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
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


async def run(args: argparse.Namespace) -> None:
    sim = Simulator()
    async with trio.open_nursery() as nursery:
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
