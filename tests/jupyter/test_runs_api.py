"""Reading the journal through the sidebar API: run lists, run details, live event tails."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import durable_nb
from durable_nb.engine.identity import open_run
from durable_nb.server.client import JournalClient
from tests.jupyter.journal_runs import event, make_run

RUN_KEYS = {"run_id", "workflow", "status", "started_at", "ended_at", "notebook",
            "steps_completed", "error", "duration_s"}
STEP_KEYS = {"run_id", "seq", "name", "status", "attempts", "started_at", "ended_at",
             "duration_s", "args", "result", "error", "traceback", "attempt_s", "heartbeat",
             "heartbeat_at", "heartbeats", "heartbeat_progress"}
DETAIL_RUN_KEYS = RUN_KEYS | {"executing", "replayed_steps", "saved_s"}


def answer(response: Any) -> Any:
    return json.loads(response.body)


async def test_runs_are_listed_newest_first_with_total_and_duration(api, journal):
    t0 = time.time() - 100
    make_run(journal, "sweep-1", started=t0, status="completed", steps=3)
    make_run(journal, "sweep-2", started=t0 + 10)
    r = await api("GET", "runs")
    assert r.code == 200 and r.headers["Content-Type"].startswith("application/json")
    got = answer(r)
    assert got["total"] == 2
    assert [run["run_id"] for run in got["runs"]] == ["sweep-2", "sweep-1"]
    running, done = got["runs"]
    assert set(done) == RUN_KEYS
    assert done["status"] == "completed" and done["steps_completed"] == 3
    assert done["duration_s"] == pytest.approx(3.0, abs=0.01)
    assert done["started_at"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(t0)))
    assert done["started_at"].endswith("+00:00") and done["notebook"] == "nb.ipynb"
    assert running["status"] == "running"
    assert running["ended_at"] is None and running["duration_s"] is None


async def test_an_empty_journal_lists_no_runs(api):
    r = await api("GET", "runs")
    assert answer(r) == {"runs": [], "total": 0}


async def test_runs_filter_by_status_workflow_notebook_and_text(api, journal):
    make_run(journal, "sweep-1", status="completed")
    make_run(journal, "sweep-2", status="failed", fail_last=True)
    make_run(journal, "train_50%-1", workflow="train_50%", notebook="other.ipynb")
    make_run(journal, "trainx50-1", workflow="trainx50", status="cancelled")

    async def ids(**params: str) -> list[str]:
        got = answer(await api("GET", "runs", params=params))
        assert got["total"] == len(got["runs"])
        return sorted(run["run_id"] for run in got["runs"])

    assert await ids(status="failed") == ["sweep-2"]
    assert await ids(status="completed,cancelled") == ["sweep-1", "trainx50-1"]
    assert await ids(status="", workflow="", q="") == [
        "sweep-1", "sweep-2", "train_50%-1", "trainx50-1"]
    assert await ids(workflow="sweep") == ["sweep-1", "sweep-2"]
    assert await ids(notebook="other.ipynb") == ["train_50%-1"]
    assert await ids(q="SWEEP-2") == ["sweep-2"]  # case-insensitive, on the run id
    assert await ids(q="train") == ["train_50%-1", "trainx50-1"]  # on the workflow
    assert await ids(q="_50%") == ["train_50%-1"]  # LIKE wildcards are plain characters
    assert await ids(workflow="sweep", status="running") == []


async def test_runs_page_with_limit_and_offset_and_keep_the_total(api, journal):
    t0 = time.time() - 1000
    journal.append([e for n in range(12) for e in [
        event(f"wf-{n}", "run_started", name="wf", ts=t0 + n, meta=json.dumps({"pid": 1}))]])

    async def page(limit: int, offset: int) -> dict[str, Any]:
        return answer(await api("GET", "runs", params={"limit": limit, "offset": offset}))

    first, second, last = await page(5, 0), await page(5, 5), await page(5, 10)
    assert [r["run_id"] for r in first["runs"]] == [f"wf-{n}" for n in (11, 10, 9, 8, 7)]
    assert [r["run_id"] for r in second["runs"]] == [f"wf-{n}" for n in (6, 5, 4, 3, 2)]
    assert [r["run_id"] for r in last["runs"]] == ["wf-1", "wf-0"]
    assert first["total"] == second["total"] == last["total"] == 12
    assert await page(5, 50) == {"runs": [], "total": 12}  # past the end
    assert len((await page(500, 0))["runs"]) == 12
    assert len(answer(await api("GET", "runs"))["runs"]) == 12  # default limit 50


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": "0"}, "'limit' must be between 1 and 500"),
    ({"limit": "501"}, "'limit' must be between 1 and 500"),
    ({"limit": "ten"}, "'limit' must be an integer"),
    ({"offset": "-1"}, "'offset' must be >= 0"),
    ({"offset": "1.5"}, "'offset' must be an integer"),
    ({"offset": "1e23"}, "'offset' must be an integer, got '1e23'"),
    ({"offset": "100000000000000000000000"}, "'offset' must be between 0 and"),
    ({"limit": "abc"}, "'limit' must be an integer, got 'abc'"),
    ({"limit": "9" * 5000}, "'limit' must be an integer"),
    ({"status": "done"}, "'status' must be among cancelled, completed, failed"),
    ({"status": "running,nope"}, "got nope"),
])
async def test_bad_run_list_parameters_are_400_naming_the_field(api, journal, params, field):
    make_run(journal, "sweep-1")
    r = await api("GET", "runs", params=params)
    assert r.code == 400
    message = answer(r)["message"]
    assert field in message
    assert "SELECT" not in message and "Error" not in message  # never the database's text


async def test_run_detail_has_the_run_and_its_steps_with_the_failure_traceback(api, journal):
    make_run(journal, "sweep-1", steps=3, status="failed", fail_last=True)
    r = await api("GET", "runs", "sweep-1")
    assert r.code == 200
    got = answer(r)
    assert set(got) == {"run", "steps"}
    assert got["run"]["run_id"] == "sweep-1" and got["run"]["status"] == "failed"
    assert got["run"]["error"] == "step failed" and set(got["run"]) == DETAIL_RUN_KEYS
    assert (got["run"]["replayed_steps"], got["run"]["saved_s"]) == (0, 0.0)
    steps = got["steps"]
    assert [s["seq"] for s in steps] == [0, 1, 2] and set(steps[0]) == STEP_KEYS
    assert steps[0]["status"] == "completed" and steps[0]["traceback"] is None
    assert steps[0]["args"] == "[0]" and json.loads(steps[0]["result"]) == {"loss": 0.0}
    assert steps[0]["duration_s"] == pytest.approx(0.4, abs=0.01)
    assert steps[2]["status"] == "failed" and steps[2]["error"] == "ValueError: bad lr"
    assert steps[2]["traceback"].endswith("ValueError: bad lr") and steps[2]["result"] is None


async def test_run_detail_says_what_the_last_resume_replayed_and_saved(api, journal):
    make_run(journal, "sweep-1", steps=3, status="interrupted", started=1000.0)
    # Resumed at 1005 (a claim): steps 0-2 (0.4 s attempts each) are what it replayed.
    journal.append([event("sweep-1", "run_status", name="sweep", status="running", ts=1005.0,
                          meta=json.dumps({"pid": 1})),
                    event("sweep-1", "step_started", seq=3, attempt=1, name="train",
                          ts=1005.5),
                    event("sweep-1", "step_completed", seq=3, attempt=1, name="train",
                          ts=1009.5, data_json="1")])
    run = answer(await api("GET", "runs", "sweep-1"))["run"]
    assert run["replayed_steps"] == 3
    assert run["saved_s"] == pytest.approx(1.2, abs=0.01)


async def test_run_detail_tells_the_last_attempt_from_the_time_since_the_first_start(
        api, journal):
    """A step left in flight by a dead kernel and completed after a resume: ``duration_s``
    counts from its first start, ``attempt_s`` only its last attempt; the resumed execution
    replayed the step completed before it, and its live process (this one) executes it."""
    t0 = time.time() - 200
    make_run(journal, "k-1", steps=1, started=t0, pid=2**22 + 12345)  # a pid nobody has
    journal.append([
        event("k-1", "step_started", seq=1, attempt=1, name="train", ts=t0 + 2),
        event("k-1", "run_status", name="sweep", status="interrupted", ts=t0 + 60),
    ])
    run = answer(await api("GET", "runs", "k-1"))["run"]
    assert (run["status"], run["executing"], run["replayed_steps"]) == ("interrupted", False, 0)
    journal.append([
        event("k-1", "run_status", name="sweep", status="running", ts=t0 + 120,
              meta=json.dumps({"pid": os.getpid()})),
        event("k-1", "step_started", seq=1, attempt=2, name="train", ts=t0 + 124),
        event("k-1", "step_completed", seq=1, attempt=2, name="train", ts=t0 + 126,
              data_json="1"),
    ])
    got = answer(await api("GET", "runs", "k-1"))
    assert (got["run"]["executing"], got["run"]["replayed_steps"]) == (True, 1)
    assert got["run"]["saved_s"] == pytest.approx(0.4, abs=0.01)
    step = got["steps"][1]
    assert step["attempts"] == 2 and step["duration_s"] == pytest.approx(124, abs=0.01)
    assert step["attempt_s"] == pytest.approx(2, abs=0.01)
    assert got["steps"][0]["attempt_s"] == pytest.approx(0.4, abs=0.01)


async def test_a_retried_step_that_completed_shows_no_traceback(api, journal):
    make_run(journal, "r-1", steps=0)
    journal.append([
        event("r-1", "step_started", seq=0, attempt=1, name="flaky"),
        event("r-1", "step_failed", seq=0, attempt=1, name="flaky", error="ConnectionError",
              traceback="Traceback ...", meta=json.dumps({"final": False})),
        event("r-1", "step_started", seq=0, attempt=2, name="flaky"),
    ])
    step = answer(await api("GET", "runs", "r-1"))["steps"][0]
    assert (step["status"], step["attempts"], step["traceback"]) == ("running", 2, None)
    journal.append([event("r-1", "step_completed", seq=0, attempt=2, name="flaky",
                          data_json='"ok"')])
    step = answer(await api("GET", "runs", "r-1"))["steps"][0]
    assert (step["status"], step["result"], step["traceback"]) == ("completed", '"ok"', None)


async def test_a_run_made_by_the_engine_shows_its_real_traceback(api, journal_home: Path):
    @durable_nb.activity(retries=0)
    def divide(x: int) -> float:
        return 1 / x

    ctx = open_run("engine-made")
    with pytest.raises(durable_nb.ActivityFailed):
        ctx.execute(lambda: [divide(2), divide(0)])
    got = answer(await api("GET", "runs", ctx.run_id))
    assert (got["run"]["workflow"], got["run"]["status"]) == ("engine-made", "failed")
    failed = [s for s in got["steps"] if s["status"] == "failed"]
    assert failed and "ZeroDivisionError" in failed[0]["traceback"]
    assert [s["result"] for s in got["steps"] if s["status"] == "completed"] == ["0.5"]



async def test_a_running_steps_latest_heartbeat_and_its_progress_are_in_the_run_detail(
        api, journal_home: Path):
    beat, go = threading.Event(), threading.Event()

    @durable_nb.activity
    def train(epochs: int) -> float:
        for epoch in range(1, epochs + 1):
            durable_nb.heartbeat({"epoch": epoch, "of": epochs, "loss": 1 / epoch})
            beat.set()  # heartbeat() returned: the journal holds it
            assert go.wait(60)
            go.clear()
        return 0.1

    ctx = open_run("beats")
    runner = threading.Thread(target=ctx.execute, args=(lambda: train(3),), daemon=True)
    runner.start()
    try:
        for epoch in (1, 2):
            assert await asyncio.to_thread(beat.wait, 60)
            beat.clear()
            got = answer(await api("GET", "runs", ctx.run_id))
            (step,) = got["steps"]
            assert step["status"] == "running" and step["heartbeats"] == epoch
            assert json.loads(step["heartbeat"]) == {"epoch": epoch, "of": 3,
                                                     "loss": 1 / epoch}
            assert step["heartbeat_progress"] == {"done": epoch, "total": 3, "unit": "epoch"}
            assert step["heartbeat_at"] >= step["started_at"]
            go.set()
        assert await asyncio.to_thread(beat.wait, 60)
        go.set()
        await asyncio.to_thread(runner.join, 60)
    finally:
        go.set()
    (step,) = answer(await api("GET", "runs", ctx.run_id))["steps"]
    # A completed step keeps its last heartbeat.
    assert (step["status"], step["heartbeats"]) == ("completed", 3)
    assert step["heartbeat_progress"] == {"done": 3, "total": 3, "unit": "epoch"}


async def test_heartbeat_details_that_state_no_progress_are_shown_without_it(api, journal):
    make_run(journal, "b-1", steps=0)
    journal.append([
        event("b-1", "step_started", seq=0, attempt=1, name="crawl"),
        event("b-1", "step_heartbeat", seq=0, attempt=1, name="crawl",
              data_json='{"page": "https://example.org/7"}'),
        event("b-1", "step_started", seq=1, attempt=1, name="crawl"),
        event("b-1", "step_heartbeat", seq=1, attempt=1, name="crawl",
              preview="<Cursor at 7>"),  # pickled details: their preview
        event("b-1", "step_started", seq=2, attempt=1, name="crawl"),
    ])
    steps = answer(await api("GET", "runs", "b-1"))["steps"]
    assert [(json.loads(s["heartbeat"]) if s["heartbeat"] else None, s["heartbeats"],
             s["heartbeat_progress"]) for s in steps] == [
        ({"page": "https://example.org/7"}, 1, None), ("<Cursor at 7>", 1, None), (None, 0, None)]
    assert steps[2]["heartbeat_at"] is None

async def test_events_since_returns_the_newer_events_of_the_run_and_the_last_id(api, journal):
    make_run(journal, "sweep-1", steps=1)
    make_run(journal, "other-1", steps=1)
    r = await api("GET", "runs", "sweep-1", "events")
    assert r.code == 200
    got = answer(r)
    assert [e["kind"] for e in got["events"]] == ["run_started", "step_started",
                                                   "step_completed"]
    assert set(got["events"][0]) == {"id", "kind", "seq", "attempt", "name", "status", "ts",
                                     "preview", "error"}
    assert got["last_id"] == got["events"][-1]["id"]
    assert got["events"][0]["ts"].endswith("+00:00")

    tail = answer(await api("GET", "runs", "sweep-1", "events",
                            params={"since": got["last_id"]}))
    assert tail == {"events": [], "last_id": got["last_id"]}
    journal.append([event("sweep-1", "run_status", name="sweep", status="completed")])
    tail = answer(await api("GET", "runs", "sweep-1", "events",
                            params={"since": got["last_id"]}))
    assert [(e["kind"], e["status"]) for e in tail["events"]] == [("run_status", "completed")]
    assert tail["last_id"] > got["last_id"]

    limited = answer(await api("GET", "runs", "sweep-1", "events", params={"limit": 2}))
    assert len(limited["events"]) == 2 and limited["last_id"] == limited["events"][1]["id"]


@pytest.mark.parametrize(("params", "field"), [
    ({"since": "-1"}, "'since' must be >= 0"),
    ({"since": "x"}, "'since' must be an integer"),
    ({"since": "1" + "0" * 30}, "'since' must be between 0 and"),
    ({"limit": "0"}, "'limit' must be between 1 and 500"),
])
async def test_bad_event_parameters_are_400_naming_the_field(api, journal, params, field):
    make_run(journal, "sweep-1")
    r = await api("GET", "runs", "sweep-1", "events", params=params)
    assert r.code == 400 and field in answer(r)["message"]
    assert "SELECT" not in answer(r)["message"]


async def test_run_ids_with_odd_characters_round_trip(raw_fetch, journal: JournalClient):
    make_run(journal, "a b/c%d-1", workflow="a b/c%d")
    r = await raw_fetch("GET", "runs/" + quote("a b/c%d-1", safe=""), token=True)
    assert r.code == 200 and answer(r)["run"]["run_id"] == "a b/c%d-1"
    r = await raw_fetch("GET", "runs/" + quote("a b/c%d-1", safe="") + "/events", token=True)
    assert r.code == 200 and answer(r)["events"][0]["kind"] == "run_started"
