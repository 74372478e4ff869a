"""Reads run beside the write path: a slow query holds up no acknowledgement."""

from __future__ import annotations

import statistics
import threading
import time

from durable_nb.server.client import JournalClient

SLOW_QUERY = "SELECT sum(hash(i)) AS h FROM range(1500000000) t(i)"  # seconds of CPU


def test_appends_are_acknowledged_while_a_slow_query_runs(harness) -> None:
    reader, writer = harness.client(), harness.client()
    writer.call("ping")
    query_done = threading.Event()

    def slow() -> None:
        reader.query(SLOW_QUERY)
        query_done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)  # the query is on a reader thread now
    latencies = []
    for i in range(50):
        t = time.perf_counter()
        writer.append([harness.event("w-1", seq=i, attempt=1, name="s")], wait=True)
        latencies.append(time.perf_counter() - t)
    finished_during_query = not query_done.is_set()
    thread.join(300)
    assert query_done.is_set()
    print(f"append latency while a slow query runs: median "
          f"{statistics.median(latencies) * 1e3:.2f} ms, max {max(latencies) * 1e3:.2f} ms")
    assert finished_during_query, "the appends waited for the slow query"
    # The reader still sees everything acknowledged before it asked.
    rows = reader.query("SELECT count(*) AS n FROM events WHERE run_id = 'w-1'").to_pylist()
    assert rows == [{"n": 50}]


def test_a_read_sees_every_write_acknowledged_before_it(harness) -> None:
    writer: JournalClient = harness.client()
    other = harness.client()
    for i in range(200):
        writer.append([harness.event("seen", seq=i, attempt=1, name="s")], wait=True)
        rows = other.query("SELECT count(*) AS n FROM events WHERE run_id = 'seen'")
        assert rows.to_pylist() == [{"n": i + 1}]
