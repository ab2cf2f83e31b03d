"""Run functions in threads released at the same instant, as several nodes would hit the database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def run_together(fns: Sequence[Callable[[], T]], timeout: float = 30.0) -> list[T]:
    """Each function's result, in order; the first exception any of them raised is raised here."""
    start = threading.Barrier(len(fns))
    results: list[T | None] = [None] * len(fns)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait(timeout)
            results[index] = fns[index]()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"a racer was still running after {timeout} s")
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]
