"""A worker loads neonize's binding, event types and protobufs without neonize's whole client."""

from __future__ import annotations

import json
import subprocess
import sys

# Run in a fresh interpreter, as a worker starts: neonize loads Go, and never into the test process.
WORKER_IMPORTS = """
import json, sys, threading
from waservice.engine.worker.lean import register_bare_packages
register_bare_packages()
import waservice.engine.worker.loop
from neonize._binder import gocode
print(json.dumps({
    "modules": sorted(sys.modules),
    "go_version": gocode.GetVersion().decode(),
    "python_threads": threading.active_count(),
}))
"""

# What `import neonize` brings with it and a worker never uses.
CLIENT_ONLY = ("neonize.client", "neonize.utils.ffmpeg", "neonize.utils.log", "httpx", "bs4", "linkpreview")


def test_a_worker_imports_only_what_it_uses_from_neonize() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WORKER_IMPORTS], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(done.stdout.splitlines()[-1])
    modules = set(loaded["modules"])
    assert {"neonize._binder", "neonize.events", "neonize.proto.Neonize_pb2"} <= modules
    assert not [name for name in CLIENT_ONLY if name in modules]
    assert loaded["go_version"]  # the binding works: Go answered
    assert loaded["python_threads"] == 1  # neonize's log set-up starts a thread; it never ran
