"""The durability rule and cancellation, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

import durable_nb
from durable_nb.engine.identity import open_run
from durable_nb.server.client import JournalClient


def test_workflow_sees_a_result_only_once_its_record_is_durable(journal_home: Path):
    """After each call returns, an independent client already finds the completed step."""
    observer = JournalClient(journal_home)
    seen: list[int] = []

    @durable_nb.activity
    def work(i: int) -> int:
        return i

    def body() -> None:
        for i in range(5):
            work(i)
            rows = observer.query(
                "SELECT count(*) AS n FROM steps WHERE status = 'completed'").to_pylist()
            seen.append(rows[0]["n"])

    open_run("durable").execute(body)
    observer.close()
    assert seen == [1, 2, 3, 4, 5]


def test_cancelled_run_stops_at_the_next_step_and_stays_cancelled(journal_home: Path):
    done: list[int] = []
    canceller = JournalClient(journal_home)

    @durable_nb.activity
    def step(i: int) -> int:
        if i == 2:  # someone cancels from the sidebar or CLI while step 2 runs
            from durable_nb.journal.schema import event

            canceller.append([event(durable_nb.current_step().run_id, "run_status",
                                    status="cancelled", name="cancel-me")])
        done.append(i)
        return i

    ctx = open_run("cancel-me")
    with pytest.raises(durable_nb.RunCancelled):
        ctx.execute(lambda: [step(i) for i in range(10)])
    canceller.close()
    assert done == [0, 1, 2]
    assert durable_nb.runs(workflow="cancel-me").iloc[0].status == "cancelled"
    # Re-running after a cancel starts a new run.
    again = open_run("cancel-me")
    assert again.run_id != ctx.run_id
