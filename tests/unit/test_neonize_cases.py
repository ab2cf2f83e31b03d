"""Cases that build neonize's protobufs (normalize_cases.py: the normaliser; outgoing_cases.py: the
outgoing builders; device_jid_cases.py: the account JID handed to Go) run in a process of their
own: importing any part of neonize loads the Go library, which the test process (it spawns workers
and simulators) must never hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


@pytest.mark.parametrize("cases", ["normalize_cases.py", "outgoing_cases.py", "device_jid_cases.py"])
def test_cases_in_a_process_that_may_load_neonize(cases: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / cases)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]
