"""The worker's activity socket writer: whole frames from many threads; a gone reader is not a crash."""

from __future__ import annotations

import socket
import threading

from waservice.engine import protocol as p
from waservice.engine.worker.activity import ActivityWriter
from waservice.events.model import Activity


def activity(n: int) -> Activity:
    return Activity(
        session_id="s1", type="message.received", timestamp=n, data={"text": "x" * 5000}, key=str(n)
    )


def test_frames_from_many_threads_arrive_whole() -> None:
    ours, theirs = socket.socketpair()
    writer = ActivityWriter(theirs)
    threads = [
        threading.Thread(target=lambda t=t: [writer.write(activity(t * 100 + i)) for i in range(50)])
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    decoder, got = p.FrameDecoder(), []
    ours.settimeout(10)
    while len(got) < 200:
        got += decoder.feed(ours.recv(65536))
    for thread in threads:
        thread.join(10)
    assert sorted(int(m.activity.key) for m in got) == sorted(
        t * 100 + i for t in range(4) for i in range(50)
    )


def test_a_closed_reader_is_logged_not_raised() -> None:
    ours, theirs = socket.socketpair()
    writer = ActivityWriter(theirs)
    ours.close()
    writer.write(activity(1))  # the API process is gone: the worker is about to exit anyway
    writer.write(activity(2))
    writer.close()
