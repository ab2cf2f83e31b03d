"""Entry point of an engine worker: process-wide set-up first, then the command loop."""

from __future__ import annotations

import faulthandler
import logging
import os
import resource
import signal
import sys


def _setup() -> None:
    # Go writes to fd 1 (goneonize fmt.Println()s login events and pairing codes), so fd 1 is not a
    # channel to anything: it points at /dev/null. The protocol is the socketpair; logs go to stderr,
    # which the pool reads (Go panics land there too).
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    # A Go fatal error aborts (SIGABRT): no core dump of a process holding device keys.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Hundreds of clients need several files each; the pool recycles a worker that leaks them.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    # Ctrl+C and systemd's SIGTERM reach the whole process group; the API process decides when a
    # worker stops (Shutdown, or EOF on the socket when it is gone), after stopping its clients.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # `kill -USR1 <pid>` prints every Python thread's stack to stderr (the pool logs it).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    level = os.environ.get("WASERVICE_WORKER_LOG_LEVEL", "INFO")
    logging.basicConfig(stream=sys.stderr, level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("whatsmeow").setLevel(os.environ.get("WASERVICE_ENGINE_LOG_LEVEL", "WARNING"))


def main() -> None:
    fd, activity_fd = int(sys.argv[1]), int(sys.argv[2])
    _setup()
    import trio  # after the set-up: neonize (imported by loop) starts Go threads at import

    from .lean import register_bare_packages

    register_bare_packages()  # before loop imports neonize's binding
    from .loop import serve

    try:
        trio.run(serve, fd, activity_fd)
    except KeyboardInterrupt:
        pass
    finally:
        logging.shutdown()
        # Go's threads may still be inside Neonize() (a QR loop, a parked goroutine); Python's
        # interpreter teardown must not run under them, so leave at once.
        os._exit(0)


if __name__ == "__main__":
    main()
