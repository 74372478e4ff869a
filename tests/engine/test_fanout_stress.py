"""``durable_nb.map`` at real fan-out: many threads share one journal client."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import durable_nb
from durable_nb.server.client import JournalClient


@durable_nb.activity
def double(i: int) -> int:
    return 2 * i


@pytest.mark.parametrize("workers", [2, 8, 64])
def test_map_at_many_workers_records_every_step_once_with_results_in_order(
        journal_home: Path, workers: int):
    @durable_nb.workflow(name=f"fan{workers}")
    def fan(n: int) -> list[int]:
        return durable_nb.map(double, range(n), max_workers=workers)

    assert fan(2000) == [2 * i for i in range(2000)]
    rows = durable_nb.sql("SELECT count(*) AS n, count(DISTINCT seq) AS seqs, min(seq) AS lo, "
                          "max(seq) AS hi FROM steps WHERE status = 'completed'")
    assert rows.iloc[0].tolist() == [2000, 2000, 0, 1999]


def test_ten_thousand_steps_at_64_workers_three_runs(journal_home: Path):
    @durable_nb.workflow
    def sweep(n: int, run: int) -> list[int]:
        return durable_nb.map(double, range(n), max_workers=64)

    for run in range(3):
        assert sweep(10_000, run) == [2 * i for i in range(10_000)]
    counts = durable_nb.sql("SELECT run_id, count(*) AS n FROM steps "
                            "WHERE status = 'completed' GROUP BY run_id ORDER BY run_id")
    assert counts.n.tolist() == [10_000] * 3
    # A second call of a finished run replays it: nothing runs, the results are the same.
    assert sweep(10_000, 1) == [2 * i for i in range(10_000)]
    assert sweep.last_run is not None and sweep.last_run.executed == 0
    assert sweep.last_run.replayed == 10_000


def test_threads_sharing_one_client_each_get_their_own_replies(journal_home: Path):
    """Raw requests from 32 threads: each reply reaches the thread that asked."""
    client = JournalClient(journal_home)
    mismatches: list[str] = []

    def ask(t: int) -> None:
        for i in range(200):
            sql = f"SELECT {t} AS t, {i} AS i"
            row = client.query(sql).to_pylist()[0]
            if row != {"t": t, "i": i}:
                mismatches.append(f"{sql} -> {row}")

    threads = [threading.Thread(target=ask, args=(t,)) for t in range(32)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    client.close()
    assert mismatches == []
