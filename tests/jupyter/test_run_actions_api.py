"""Actions on runs through the sidebar API: cancel, signal, fork, delete; unknown runs."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from durable_nb.server.client import JournalClient
from tests.jupyter.journal_runs import make_run


def answer(response: Any) -> Any:
    return json.loads(response.body)


def run_status(journal: JournalClient, run_id: str) -> str:
    return journal.query("SELECT status FROM runs WHERE run_id = ?", [run_id]).to_pylist()[0][
        "status"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_cancel_marks_the_run_cancelled_and_a_second_cancel_is_409(api, journal):
    make_run(journal, "sweep-1")
    r = await api("POST", "runs", "sweep-1", "cancel")
    assert r.code == 200
    assert answer(r) == {"run_id": "sweep-1", "status": "cancelled",
                         "previous_status": "running"}
    assert run_status(journal, "sweep-1") == "cancelled"
    r = await api("POST", "runs", "sweep-1", "cancel")
    assert r.code == 409 and "already cancelled" in answer(r)["message"]


async def test_cancel_of_a_completed_run_is_409(api, journal):
    make_run(journal, "sweep-1", status="completed")
    r = await api("POST", "runs", "sweep-1", "cancel")
    assert r.code == 409
    assert answer(r)["message"] == ("run sweep-1 is already completed; there is nothing to "
                                    "cancel")
    assert run_status(journal, "sweep-1") == "completed"


async def test_cancel_takes_an_optional_reason(api, journal):
    make_run(journal, "sweep-1")
    r = await api("POST", "runs", "sweep-1", "cancel", body={"reason": "wrong grid"})
    assert r.code == 200
    assert journal.query("SELECT error FROM runs").to_pylist() == [{"error": "wrong grid"}]
    make_run(journal, "sweep-2")
    r = await api("POST", "runs", "sweep-2", "cancel", body={"reason": 3})
    assert r.code == 400 and "'reason' must be a string" in answer(r)["message"]
    r = await api("POST", "runs", "sweep-2", "cancel", raw="nope")
    assert r.code == 400 and "not valid JSON" in answer(r)["message"]


async def test_signal_is_recorded_with_its_json_value(api, journal):
    make_run(journal, "sweep-1")
    r = await api("POST", "runs", "sweep-1", "signal",
                  body={"name": "approve", "value": {"by": "ana", "ok": True}})
    assert r.code == 200 and answer(r) == {"run_id": "sweep-1", "name": "approve"}
    r = await api("POST", "runs", "sweep-1", "signal", body={"name": "go"})  # value: null
    assert r.code == 200
    rows = journal.query("SELECT name, data_json FROM events WHERE kind = 'signal' "
                         "ORDER BY id").to_pylist()
    assert rows == [{"name": "approve", "data_json": '{"by": "ana", "ok": true}'},
                    {"name": "go", "data_json": "null"}]


@pytest.mark.parametrize(("raw", "message"), [
    ("{not json", "the request body is not valid JSON"),
    ("", "the request body must be a JSON object"),
    ("[1, 2]", "the request body must be a JSON object, got list"),
    ('{"value": 1}', "'name' must be a non-empty string of at most 200 characters, got "
                     "nothing"),
    ('{"name": "  "}', "'name' must be a non-empty string"),
    ('{"name": 7}', "'name' must be a non-empty string of at most 200 characters, got 7"),
    (json.dumps({"name": "x" * 201}), "at most 200 characters"),
    ('{"name": "\\udce9"}', "the signal name '\\xe9' holds a lone surrogate U+DCE9"),
    ('{"name": "go", "value": ["caf\\udce9"]}', "the signal value holds a lone surrogate"),
])
async def test_bad_signal_bodies_are_400_with_a_message(api, journal, raw, message):
    make_run(journal, "sweep-1")
    r = await api("POST", "runs", "sweep-1", "signal", raw=raw)
    assert r.code == 400
    assert message in answer(r)["message"]
    assert journal.query("SELECT count(*) AS n FROM events WHERE kind = 'signal'").to_pylist(
        ) == [{"n": 0}]


async def test_a_signal_to_a_finished_run_is_409(api, journal):
    make_run(journal, "sweep-1", status="completed")
    r = await api("POST", "runs", "sweep-1", "signal", body={"name": "go", "value": 1})
    assert r.code == 409 and "takes no more signals" in answer(r)["message"]


async def test_fork_answers_201_with_a_new_run_holding_the_steps_before_at(api, journal):
    make_run(journal, "sweep-1", steps=4, status="completed")
    r = await api("POST", "runs", "sweep-1", "fork", body={"at": 2})
    assert r.code == 201
    got = answer(r)
    assert got == {"run_id": got["run_id"], "parent_run_id": "sweep-1", "at": 2,
                   "steps_copied": 2}
    assert got["run_id"] != "sweep-1"
    assert r.headers["Location"].endswith(f"/durable-nb/api/runs/{got['run_id']}")
    steps = answer(await api("GET", "runs", got["run_id"]))["steps"]
    assert [(s["seq"], s["status"]) for s in steps] == [(0, "completed"), (1, "completed")]
    again = answer(await api("POST", "runs", "sweep-1", "fork", body={"at": 2}))
    assert again["run_id"] not in ("sweep-1", got["run_id"])  # each request is a new fork


@pytest.mark.parametrize(("raw", "message"), [
    ('{"at": -1}', "'at' must be a step number (an integer >= 0), got -1"),
    ('{"at": "x"}', "'at' must be a step number (an integer >= 0), got \"x\""),
    ('{"at": 1.5}', "got 1.5"),
    ('{"at": true}', "got true"),
    ("{}", "got null"),
    ("at=1", "the request body is not valid JSON"),
    ('"at"', "the request body must be a JSON object, got str"),
])
async def test_bad_fork_bodies_are_400_with_a_message(api, journal, raw, message):
    make_run(journal, "sweep-1", status="completed")
    r = await api("POST", "runs", "sweep-1", "fork", raw=raw)
    assert r.code == 400
    assert message in answer(r)["message"]
    assert answer(await api("GET", "runs"))["total"] == 1


async def test_delete_answers_204_and_removes_the_run(api, journal):
    make_run(journal, "sweep-1", status="completed")
    make_run(journal, "sweep-2", pid=dead_pid(), status="failed")
    for run_id in ("sweep-1", "sweep-2"):
        r = await api("DELETE", "runs", run_id)
        assert r.code == 204 and r.body == b""
    assert answer(await api("GET", "runs")) == {"runs": [], "total": 0}
    assert (await api("GET", "runs", "sweep-1")).code == 404


async def test_delete_of_a_run_whose_process_is_alive_is_409(api, journal):
    make_run(journal, "sweep-1")  # executed by this live test process
    r = await api("DELETE", "runs", "sweep-1")
    assert r.code == 409 and "cancel it first" in answer(r)["message"]
    assert run_status(journal, "sweep-1") == "running"
    assert (await api("POST", "runs", "sweep-1", "cancel")).code == 200
    assert (await api("DELETE", "runs", "sweep-1")).code == 204


@pytest.mark.parametrize(("method", "path", "payload"), [
    ("GET", (), None),
    ("GET", ("events",), None),
    ("POST", ("cancel",), None),
    ("POST", ("signal",), {"name": "go"}),
    ("POST", ("fork",), {"at": 0}),
    ("DELETE", (), None),
])
async def test_unknown_run_ids_are_404_with_a_json_message(api, journal, method, path,
                                                           payload):
    make_run(journal, "sweep-1")
    r = await api(method, "runs", "nope-7", *path, body=payload)
    assert r.code == 404
    assert r.headers["Content-Type"].startswith("application/json")
    assert "no run 'nope-7'" in answer(r)["message"]
