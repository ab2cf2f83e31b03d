"""API overhead: waservice (fake engine) against a bare hypercorn + quart-trio route, same run.

Measures requests/s and p50/p99 latency with wrk for `GET /status` and `POST /send` at 1 and 50
concurrent connections, then prints our/bare ratios. Targets: throughput >= 0.7x, p99 <= 1.5x.

    python bench/api.py [--duration 10] [--repeat 3]      (needs `wrk`: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.process.service import ServiceProcess, free_port

SEND_BODY = {"session_id": "bench", "number": "573001234567", "message": "benchmark"}

BARE_APP = textwrap.dedent(
    """
    from quart import request
    from quart_trio import QuartTrio

    app = QuartTrio("bare")
    STATUS = {"success": True, "session_id": "bench", "state": "connected", "phone_number": "15550001111",
              "has_qr": False, "reconnect_attempts": 0, "last_error": None,
              "state_changed_at": "2026-01-01T00:00:00Z"}

    @app.get("/status")
    async def status():
        return STATUS

    @app.post("/send")
    async def send():
        body = await request.get_json()
        return {"success": True, "session_id": body["session_id"], "message": "Message sent successfully",
                "result": {"id": "FAKE000000000001", "timestamp": 1, "to": body["number"]}}
    """
)


def wrk_script(method: str, body: dict | None) -> str:
    if body is None:
        return ""
    return (
        f'wrk.method = "{method}"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )


def run_wrk(url: str, connections: int, duration: int, script: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", "-s", f.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"errors during the run:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"rps": rps, "p50": _latency(out, "50%"), "p99": _latency(out, "99%")}


def _latency(out: str, label: str) -> float:
    value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def start_bare(workdir: Path) -> tuple[subprocess.Popen, str]:
    (workdir / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hypercorn",
            "--worker-class",
            "trio",
            "-b",
            f"127.0.0.1:{port}",
            "bare_app:app",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(url + "/status", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("bare app did not start")


def start_service(workdir: Path) -> ServiceProcess:
    service = ServiceProcess(
        workdir / "data", env={"WASERVICE_ENGINE": "fake", "WASERVICE_LOG_LEVEL": "warning"}
    )
    service.start()
    httpx.post(service.url + "/connect", json={"session_id": "bench"})
    time.sleep(0.2)
    httpx.post(service.url + "/_fake/scan", json={"session_id": "bench", "phone": "15550001111"})
    assert httpx.get(service.url + "/status", params={"session_id": "bench"}).json()["state"] == "connected"
    return service


def _cells(r: dict[str, float]) -> str:
    return f"     {r['rps']:>9.0f} {r['p50']:>7.2f} {r['p99']:>7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is reported")
    parser.add_argument("--only", help="run only the cases whose name contains this, e.g. send")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")

    cases = [
        ("GET /status", "/status?session_id=bench", wrk_script("GET", None)),
        ("POST /send", "/send", wrk_script("POST", SEND_BODY)),
    ]
    cases = [c for c in cases if not args.only or args.only in c[0]]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bare, bare_url = start_bare(workdir)
        service = start_service(workdir)
        try:
            side = f"{'rps':>9} {'p50 ms':>7} {'p99 ms':>7}"
            print(
                f"{'case':<12} {'conns':>5} | ours {side} | bare {side} | {'rps ratio':>9} {'p99 ratio':>9}"
            )
            for name, path, script in cases:
                for connections in (1, 50):
                    ours, bare_runs = [], []
                    for _ in range(args.repeat):  # interleaved, so drift hits both alike
                        ours.append(run_wrk(service.url + path, connections, args.duration, script))
                        bare_runs.append(run_wrk(bare_url + path, connections, args.duration, script))
                    o = {k: statistics.median(r[k] for r in ours) for k in ours[0]}
                    b = {k: statistics.median(r[k] for r in bare_runs) for k in bare_runs[0]}
                    ratios = f"{o['rps'] / b['rps']:>9.2f} {o['p99'] / b['p99']:>9.2f}"
                    print(f"{name:<12} {connections:>5} | {_cells(o)} | {_cells(b)} | {ratios}")
        finally:
            service.stop()
            bare.terminate()
            bare.wait()


if __name__ == "__main__":
    main()
