"""Several real `waservice` processes on one PostgreSQL: the cluster tests' and bench/cluster.py's harness.

Each node is a `ServiceProcess` with its own port, node id and (real engine) data directory; with the
fake engine they share one data directory, where the fake keeps its devices' pairings (the real
engine keeps them in PostgreSQL). `kill()` is `kill -9`; `stop()` is SIGTERM.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.process.service import ServiceProcess

# Short leases: failover in a few seconds instead of ~25. Reconnects fast, no limit on new sessions.
CLUSTER_CONFIG = """
[cluster]
lease_ttl = {ttl}

[reconnect]
initial_delay = 0.4
factor = 2.0
max_delay = 2.0
max_attempts = 20

[server]
create_rate = 0
"""


class Cluster:
    def __init__(
        self,
        tmp_path: Path,
        database_url: str,
        *,
        engine: str = "fake",
        pythonpath: Path | None = None,
        ttl: float = 4.0,
        env: dict[str, str] | None = None,
        config: str = "",
    ) -> None:
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.engine = engine
        self.pythonpath = pythonpath
        self.ttl = ttl
        self.env = env or {}
        self.config = tmp_path / "cluster.toml"
        self.config.write_text(CLUSTER_CONFIG.format(ttl=ttl) + config)
        self.nodes: dict[str, ServiceProcess] = {}

    def start(self, node_id: str, database_url: str | None = None) -> ServiceProcess:
        """Start (or restart, on the same port) node `node_id`; returns once it answers /health."""
        node = self.nodes.get(node_id)
        if node is None:
            shared = self.engine == "fake"
            data = self.tmp_path / ("data" if shared else f"data-{node_id}")
            env = {
                "WASERVICE_ENGINE": self.engine,
                "WASERVICE_NODE_ID": node_id,
                "WASERVICE_DATABASE_URL": database_url or self.database_url,
                **self.env,
            }
            node = ServiceProcess(
                data,
                env=env,
                config=self.config,
                pythonpath=self.pythonpath,
                log_path=self.tmp_path / f"node-{node_id}.log",
            )
            self.nodes[node_id] = node
        node.start()
        return node

    def kill(self, node_id: str) -> None:
        """kill -9: no goodbye, the lease simply runs out. Its engine workers see their socket close
        and exit (they never outlive the service)."""
        node = self.nodes[node_id]
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait()

    def stop_all(self) -> dict[str, int | None]:
        return {node_id: node.stop() for node_id, node in self.nodes.items()}

    def live(self) -> Iterator[tuple[str, ServiceProcess]]:
        for node_id, node in self.nodes.items():
            if node.proc is not None and node.proc.poll() is None:
                yield node_id, node

    def get(self, node_id: str, path: str, **params: object) -> httpx.Response:
        return httpx.get(self.nodes[node_id].url + path, params=params, timeout=30)

    def post(self, node_id: str, path: str, **body: object) -> httpx.Response:
        return httpx.post(self.nodes[node_id].url + path, json=body, timeout=30)

    def sessions(self, node_id: str) -> dict[str, dict]:
        """GET /sessions on that node: every session of the cluster, by id."""
        response = self.get(node_id, "/sessions")
        assert response.status_code == 200, response.text
        return {s["session_id"]: s for s in response.json()["sessions"]}

    def owners(self, node_id: str) -> dict[str, str | None]:
        return {sid: s["node"] for sid, s in self.sessions(node_id).items()}

    def wait(self, condition, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        logs = "\n".join(f"--- {n}\n{node.log_tail(30)}" for n, node in self.nodes.items())
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    def log(self, node_id: str) -> str:
        return self.nodes[node_id].log()

    def pair_fake(self, node_id: str, session_id: str, phone: str) -> None:
        """/connect through `node_id`, the fake phone scans the QR, wait until connected."""
        assert self.post(node_id, "/connect", session_id=session_id).status_code == 200
        self.wait(lambda: self.state(node_id, session_id) == "qr_ready", what=f"{session_id}'s QR")
        assert self.post(node_id, "/_fake/scan", session_id=session_id, phone=phone).status_code == 200
        self.wait(lambda: self.state(node_id, session_id) == "connected", what=f"{session_id} connected")

    def state(self, node_id: str, session_id: str) -> str | None:
        return self.get(node_id, "/status", session_id=session_id).json().get("state")
