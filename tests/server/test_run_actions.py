"""Actions on runs that only touch the journal: cancel, signal, fork, delete (server ops)."""

from __future__ import annotations

import json
import os

import pytest

from durable_nb.errors import RunBusy, RunFinished, RunNotFound
from durable_nb.server.client import JournalClient


def make_run(client: JournalClient, harness, workflow: str = "wf", steps: int = 3,
             pid: int | None = None) -> str:
    run_id = client.call("create_run", event={
        **harness.event(), "kind": "run_started", "run_id": "", "name": workflow,
        "meta": json.dumps({"pid": pid or os.getpid()})})["run_id"]
    events = []
    for seq in range(steps):
        for kind in ("step_started", "step_completed"):
            events.append({**harness.event(run_id), "kind": kind, "seq": seq, "attempt": 1,
                           "name": "act", "data_json": json.dumps(seq * 10)})
    client.append(events)
    return run_id


def status(client: JournalClient, run_id: str) -> str:
    return client.query("SELECT status FROM runs WHERE run_id = ?", [run_id]).to_pylist()[0][
        "status"]


def test_cancel_marks_a_running_run_and_refuses_a_finished_one(harness, client):
    run_id = make_run(client, harness)
    reply = client.call("cancel_run", run_id=run_id)
    assert reply["previous_status"] == "running" and status(client, run_id) == "cancelled"
    with pytest.raises(RunFinished, match="already cancelled"):
        client.call("cancel_run", run_id=run_id)
    with pytest.raises(RunNotFound):
        client.call("cancel_run", run_id="nope-1")


def test_the_owner_of_a_cancelled_run_learns_it_from_its_next_acknowledgement(harness, client):
    run_id = make_run(client, harness)
    other = harness.client()
    other.call("cancel_run", run_id=run_id)
    client.append([{**harness.event(run_id), "kind": "step_started", "seq": 9, "attempt": 1,
                    "name": "act"}])
    assert run_id in client.cancelled


def test_signal_is_recorded_with_its_json_value(harness, client):
    run_id = make_run(client, harness)
    client.call("signal", run_id=run_id, name="approve", value={"by": "ana", "ok": True})
    rows = client.query("SELECT name, data_json FROM events WHERE kind = 'signal'").to_pylist()
    assert rows == [{"name": "approve", "data_json": '{"by": "ana", "ok": true}'}]
    with pytest.raises(ValueError, match="'name' must be a non-empty string"):
        client.call("signal", run_id=run_id, name="  ", value=1)


def test_fork_copies_the_steps_before_n_into_a_new_run(harness, client):
    run_id = make_run(client, harness, steps=4)
    reply = client.call("fork_run", run_id=run_id, at=2, eid="fork-once")
    new = reply["run_id"]
    assert new != run_id and reply["steps_copied"] == 2
    again = client.call("fork_run", run_id=run_id, at=2, eid="fork-once")
    assert again["run_id"] == new  # a resent fork is one fork
    seqs = client.query("SELECT seq, result FROM steps WHERE run_id = ? ORDER BY seq",
                        [new]).to_pylist()
    assert seqs == [{"seq": 0, "result": "0"}, {"seq": 1, "result": "10"}]
    with pytest.raises(ValueError, match="step number"):
        client.call("fork_run", run_id=run_id, at=-1)


def test_a_fork_nobody_executes_is_unfinished_and_keeps_the_parents_notebook(harness, client):
    run_id = client.call("create_run", event={
        **harness.event(), "kind": "run_started", "run_id": "", "name": "nb",
        "meta": json.dumps({"pid": os.getpid(), "notebook": "work/sweep.ipynb"})})["run_id"]
    new = client.call("fork_run", run_id=run_id, at=0)["run_id"]  # no pid: the sidebar
    row = client.query("SELECT status, notebook, error FROM runs WHERE run_id = ?",
                       [new]).to_pylist()[0]
    assert row["status"] == "interrupted" and row["notebook"] == "work/sweep.ipynb"
    assert f"forked from {run_id} at step 0" in row["error"]


def test_delete_removes_every_event_but_refuses_a_run_with_a_live_process(harness, client):
    live = make_run(client, harness)  # owned by this (live) test process
    with pytest.raises(RunBusy, match="cancel it first"):
        client.call("delete_run", run_id=live)
    client.call("cancel_run", run_id=live)
    reply = client.call("delete_run", run_id=live)
    assert reply["events_deleted"] == 1 + 6 + 1
    assert client.query("SELECT count(*) AS n FROM events WHERE run_id = ?",
                        [live]).to_pylist() == [{"n": 0}]
    with pytest.raises(RunNotFound):
        client.call("delete_run", run_id=live)
