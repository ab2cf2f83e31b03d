"""The cluster's event log (issue 10): appends per second when several nodes append at once.

Every append locks the one row of ws_event_head (so ids become visible in order), so appends from
all nodes take turns: this measures what that costs. N appender threads, each its own pool (a
node), append batches of --batch events for --seconds; a follower reads `id > cursor` meanwhile and
must see every id. On a throwaway PostgreSQL with fsync off: commit latency of a real disk comes on top.

    python bench/cluster_events.py [--appenders 1 3] [--batch 1 20] [--seconds 5]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.cluster.pgserver import postgres_server
from waservice.cluster.eventlog import PgEventLog
from waservice.cluster.migrations import migrate
from waservice.events.model import Activity


class _ThreadDatabase:
    """`Database.run` without trio: one connection per appender, as a node's append share has."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)

    def run(self, fn, *args):  # type: ignore[no-untyped-def]
        with self.conn.transaction():
            return fn(self.conn, *args)


def measure(url: str, appenders: int, batch: int, seconds: float) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE ws_events; UPDATE ws_event_head SET last_id = 0")
    stop = time.monotonic() + seconds
    counts = [0] * appenders
    done = threading.Event()
    seen: list[int] = []

    def append(n: int) -> None:
        log = PgEventLog(_ThreadDatabase(url))  # type: ignore[arg-type]
        i = 0
        while time.monotonic() < stop:
            log.append(
                [
                    Activity(session_id=f"n{n}", type="message.ack", timestamp=time.time(), data={"i": i + k})
                    for k in range(batch)
                ]
            )
            i += batch
            counts[n] += 1

    def follow() -> None:
        log = PgEventLog(_ThreadDatabase(url))  # type: ignore[arg-type]
        cursor = 0
        while True:
            finished = done.is_set()
            for event in log.after(cursor, 5000):
                seen.append(event.id)
                cursor = event.id
            if finished:
                return

    threads = [threading.Thread(target=append, args=(n,)) for n in range(appenders)]
    follower = threading.Thread(target=follow)
    follower.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    follower.join()
    with psycopg.connect(url) as conn:
        logged = [row[0] for row in conn.execute("SELECT id FROM ws_events ORDER BY id")]
    assert seen == logged, "the follower missed or reordered ids"
    appends = sum(counts)
    return (
        f"{appenders} appender(s), batches of {batch}: {appends / seconds:.0f} appends/s, "
        f"{appends * batch / seconds:.0f} events/s; follower saw all {len(logged)} ids in order"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--appenders", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with postgres_server() as server:
        url = server.url()
        with psycopg.connect(url) as conn:
            migrate(conn)
        for batch in args.batch:
            for appenders in args.appenders:
                print(measure(url, appenders, batch, args.seconds), flush=True)


if __name__ == "__main__":
    main()
