"""The worker pool's pure decisions: placement, recycling, restart backoff, death reasons."""

from __future__ import annotations

from waservice.engine.policy import Limits, RestartBackoff, Usage, death_reason, pick_worker, recycle_reason

LIMITS = Limits(max_leaked_fds=900, max_rss_mb=1024, max_abandoned=16)


def test_least_loaded_worker_lowest_index_on_ties() -> None:
    assert pick_worker([0, 0, 0]) == 0
    assert pick_worker([1, 0, 0]) == 1
    assert pick_worker([2, 3, 2]) == 0
    assert pick_worker([5]) == 0


def test_recycle_on_any_threshold() -> None:
    assert recycle_reason(Usage(900, 1024.0, 16), LIMITS) is None  # at the limit is fine
    assert recycle_reason(Usage(901, 10.0, 0), LIMITS) == "901 open files > 900 for 0 clients"
    # Connected clients need their own files: 500 clients may use 8 each on top.
    assert recycle_reason(Usage(4900, 10.0, 0, clients=500), LIMITS) is None
    assert (
        recycle_reason(Usage(4901, 10.0, 0, clients=500), LIMITS) == "4901 open files > 4900 for 500 clients"
    )
    assert recycle_reason(Usage(10, 1500.4, 0), LIMITS) == "1500 MB resident > 1024 MB"
    assert recycle_reason(Usage(10, 10.0, 17), LIMITS) == "17 abandoned QR-phase clients > 16"


def test_recycle_on_stale_device_stores_only_with_a_shared_store() -> None:
    assert recycle_reason(Usage(10, 10.0, 0, stale_stores=10_000), LIMITS) is None  # SQLite: files count
    shared = Limits(max_leaked_fds=900, max_rss_mb=1024, max_abandoned=16, max_stale_stores=20)
    assert recycle_reason(Usage(10, 10.0, 0, clients=50, stale_stores=20), shared) is None
    assert (
        recycle_reason(Usage(10, 10.0, 0, clients=50, stale_stores=21), shared)
        == "21 device stores of past attempts keep their database connections > 20"
    )


def test_restart_backoff() -> None:
    backoff = RestartBackoff(delay=1.0, max_delay=8.0, stable_after=60.0)
    # The first crash restarts at once; crashes soon after a start back off, doubling, capped.
    assert [backoff.after_exit(lived=2.0, crashed=True) for _ in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.after_exit(lived=61.0, crashed=True) == 0.0  # it had been stable: start over
    assert [backoff.after_exit(lived=1.0, crashed=True) for _ in range(2)] == [0.0, 1.0]
    assert backoff.after_exit(lived=1.0, crashed=False) == 0.0  # recycling is not a crash
    assert backoff.crashes == 0


def test_death_reason_names_the_worker_signal_and_go_fault() -> None:
    tail = [
        "INFO waservice.engine.worker: started",
        "panic: runtime error: invalid memory address or nil pointer dereference",
        "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x7f]",
        "goroutine 17 [running]:",
    ]
    assert death_reason(2, -6, tail) == (
        "engine worker 2 exited (SIGABRT): panic: runtime error: "
        "invalid memory address or nil pointer dereference"
    )
    assert death_reason(0, -9, ["INFO x: y"]) == "engine worker 0 exited (SIGKILL)"
    assert death_reason(1, 2, []) == "engine worker 1 exited (exit code 2)"
    assert death_reason(1, None, ["fatal error: concurrent map writes"]) == (
        "engine worker 1 exited (stopped answering): fatal error: concurrent map writes"
    )
