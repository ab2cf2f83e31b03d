"""The worker's bridge lock: holds end when Go calls back on the calling thread, or on return."""

from __future__ import annotations

import queue
import resource
import threading
import time

from waservice.engine.worker.bridge import AFTER_START_WRITES, BridgeLock

WAIT = 10.0  # a safety net only: every wait below is for an event that must happen


def test_reader_hold_ends_at_its_own_callback_not_at_return() -> None:
    lock = BridgeLock()
    entered, passed, finish = threading.Event(), threading.Event(), threading.Event()

    def send() -> None:  # a send: reads the map, calls back (a log line), waits 60 s for its ack
        with lock.call(exclusive=False):
            entered.set()
            lock.passed("log")
            passed.set()
            finish.wait(WAIT)

    reader = threading.Thread(target=send)
    reader.start()
    assert passed.wait(WAIT)
    assert not lock.busy  # a writer (start/stop) may go while the send still waits
    with lock.call(exclusive=True):
        assert lock.busy
    finish.set()
    reader.join(WAIT)


def test_callbacks_on_other_threads_do_not_release() -> None:
    lock = BridgeLock()
    inside, finish = threading.Event(), threading.Event()

    def send() -> None:
        with lock.call(exclusive=False):
            inside.set()
            finish.wait(WAIT)

    reader = threading.Thread(target=send)
    reader.start()
    assert inside.wait(WAIT)
    lock.passed("log")  # another goroutine's log line, on another thread
    assert lock.busy
    finish.set()
    reader.join(WAIT)
    assert not lock.busy  # released on return


def test_start_waits_for_readers_and_ignores_its_own_logs() -> None:
    lock = BridgeLock()
    order: list[str] = []
    reader_in, writer_released = threading.Event(), threading.Event()
    reader_go = threading.Event()

    def read() -> None:
        with lock.call(exclusive=False):
            reader_in.set()
            reader_go.wait(WAIT)
            order.append("read done")

    def start() -> None:
        with lock.call(exclusive=True, release_on=AFTER_START_WRITES):
            order.append("start writes")
            lock.passed("log")  # Neonize() logs between its map writes: still held
            assert lock.busy
            lock.passed("qr")  # the first QR code: past the writes
            writer_released.set()
            assert not lock.busy

    r = threading.Thread(target=read)
    r.start()
    assert reader_in.wait(WAIT)
    w = threading.Thread(target=start)
    w.start()
    reader_go.set()
    r.join(WAIT)
    w.join(WAIT)
    assert writer_released.is_set()
    assert order == ["read done", "start writes"]


def test_start_turns_shared_when_it_dials_so_sends_go_on_and_starts_wait() -> None:
    lock = BridgeLock()
    dialed, finish = threading.Event(), threading.Event()

    def start() -> None:  # Neonize(): writes the maps, dials, handshakes, reads the maps, first event
        with lock.call(exclusive=True, release_on=AFTER_START_WRITES):
            lock.passed("log")  # a log line between its writes: the hold stays exclusive
            assert lock.busy
            lock.downgrade()  # "Dialing ...": the writes are over
            dialed.set()
            finish.wait(WAIT)  # the handshake
            lock.passed("event")  # the first event: the reads are over too

    starter = threading.Thread(target=start)
    starter.start()
    assert dialed.wait(WAIT)
    with lock.call(exclusive=False):  # a send of another session does not wait for the handshake
        pass
    other_start = threading.Event()

    def start_another() -> None:
        with lock.call(exclusive=True):
            other_start.set()

    second = threading.Thread(target=start_another)
    second.start()
    assert not other_start.wait(0.2)  # another start waits: the first one's reads are still ahead
    finish.set()
    assert other_start.wait(WAIT)
    starter.join(WAIT)
    second.join(WAIT)
    assert not lock.busy


def test_a_lookup_on_a_callback_thread_gives_up_on_a_long_writer_and_keeps_the_threads_hold() -> None:
    lock = BridgeLock()
    writing, finish = threading.Event(), threading.Event()

    def stop() -> None:  # a Stop: exclusive for as long as Go takes
        with lock.call(exclusive=True, release_on=frozenset()):
            writing.set()
            finish.wait(WAIT)

    writer = threading.Thread(target=stop)
    writer.start()
    assert writing.wait(WAIT)
    with lock.shared_within(0.01) as held:
        assert not held  # the LID is reported without its number rather than wait on the stop
    finish.set()
    writer.join(WAIT)
    with lock.call(exclusive=False, release_on=frozenset()):  # this thread's own hold (a send)
        with lock.shared_within(WAIT) as held:
            assert held
        assert lock.busy  # the lookup's end left the send's hold in place
    assert not lock.busy


def test_queued_starts_are_woken_one_at_a_time_not_all_at_every_release() -> None:
    """A restore queues hundreds of starts on one worker's lock, each holding it through its
    handshake. Waking every waiter at each release made the restore of 1,000 sessions O(N²) in
    thread switches (about a million, most of the workers' CPU); a release must wake only the start
    that can go next. Counted as the process's voluntary context switches: a waiting thread that is
    woken and finds the lock taken costs at least one."""
    lock = BridgeLock()
    starts = 200
    inside: queue.Queue[threading.Event] = queue.Queue()
    queued = threading.Barrier(starts + 1)

    def start() -> None:  # holds the lock until the test lets its "handshake" end
        handshake = threading.Event()
        queued.wait(WAIT)
        with lock.call(exclusive=True, release_on=AFTER_START_WRITES):
            inside.put(handshake)
            handshake.wait(WAIT)

    threads = [threading.Thread(target=start) for _ in range(starts)]
    for thread in threads:
        thread.start()
    queued.wait(WAIT)
    first = inside.get(timeout=WAIT)
    while len(lock._writer_ok._waiters) < starts - 1:  # every other start waits on the lock
        time.sleep(0.01)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    first.set()
    for _ in range(starts - 1):
        inside.get(timeout=WAIT).set()  # one start at a time is inside: let it finish
    for thread in threads:
        thread.join(WAIT)
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before
    # One by one: a few switches per start (the GIL's included). All at once: ~starts²/2 = 20,000.
    assert switches < 20 * starts, switches
    assert not lock.busy
