"""The outgoing builders' cases (outgoing_cases.py) run in a process of their own: they build
neonize's protobufs, and importing any part of neonize loads the Go library, which the test process
(it spawns workers and simulators) must never hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CASES = Path(__file__).with_name("outgoing_cases.py")
ROOT = Path(__file__).resolve().parents[2]


def test_outgoing_cases_in_a_process_that_may_load_neonize() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]
