"""The durability rule against a real SIGKILL of the journal server.

An acknowledged append is durable: whatever dies afterwards, it is in the journal exactly
once. A client whose server dies starts a new one and resends what was not acknowledged.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from durable_nb.errors import RunBusy
from durable_nb.journal.home import SERVER_FILE
from durable_nb.journal.schema import EVENT_COLUMNS
from durable_nb.journal.segment import Segment
from durable_nb.server.client import JournalClient
from durable_nb.server.discovery import pid_alive

pytestmark = pytest.mark.timeout(120)

SLEEPER = "import time; print('up', flush=True); time.sleep(120)"


def eids_in_journal(client: JournalClient) -> list[str]:
    return client.query("SELECT eid FROM events ORDER BY id").column("eid").to_pylist()


def test_acknowledged_events_survive_server_sigkill(harness, home: Path) -> None:
    client = harness.client()
    pid = client.server_pid
    sent = [harness.event("r", seq=i, attempt=1, name="a") for i in range(200)]
    for i in range(0, 190, 10):
        client.append(sent[i:i + 10], wait=True)
    client.append(sent[190:], wait=True)
    harness.sigkill(pid)  # at once: well inside the 50 ms before DuckDB sees them
    assert (home / SERVER_FILE).exists()  # a SIGKILLed server leaves a stale server.json

    fresh = harness.client()
    assert fresh.server_pid != pid
    assert sorted(eids_in_journal(fresh)) == sorted(e["eid"] for e in sent)


def test_client_survives_server_sigkill_mid_stream(harness) -> None:
    writer = harness.client()
    first_pid = writer.server_pid
    acked: list[str] = []
    failures: list[BaseException] = []
    halfway = threading.Event()

    def stream() -> None:
        try:
            for i in range(300):
                ev = harness.event("stream", seq=i, attempt=1, name="a")
                writer.append([ev], wait=True)
                acked.append(ev["eid"])
                if i == 50:
                    halfway.set()
        except BaseException as exc:  # reported below
            failures.append(exc)
            halfway.set()

    thread = threading.Thread(target=stream)
    thread.start()
    assert halfway.wait(60)
    harness.sigkill(first_pid)
    thread.join(timeout=90)
    assert not thread.is_alive(), "the writer hung after the server died"
    assert not failures, failures
    assert len(acked) == 300

    reader = harness.client()
    assert reader.server_pid != first_pid
    assert writer.server_pid == reader.server_pid
    rows = reader.query("SELECT eid, count(*) AS n FROM events GROUP BY eid").to_pylist()
    assert {r["eid"]: r["n"] for r in rows} == dict.fromkeys(acked, 1)


def test_unacknowledged_append_is_resent_to_the_new_server_exactly_once(harness) -> None:
    client = harness.client()
    pid = client.server_pid
    events = [harness.event("r", seq=i, attempt=1, name="a") for i in range(5)]
    rid = client.send("append", events=events)
    harness.sigkill(pid)  # it may or may not have reached the server: either way, once
    reply, _ = client.wait(rid, timeout=60)
    assert reply["ok"] is True
    assert client.server_pid != pid
    assert eids_in_journal(client) == [e["eid"] for e in events]


def test_create_run_resent_after_a_crash_gives_one_run(harness) -> None:
    client = harness.client()
    pid = client.server_pid
    ev = harness.event("", "run_started", name="wf", meta=json.dumps({"pid": os.getpid()}))
    rid = client.send("create_run", event=ev)
    harness.sigkill(pid)
    reply, _ = client.wait(rid, timeout=60)
    assert reply["run_id"] == "wf-1"
    assert client.query("SELECT run_id FROM runs").to_pylist() == [{"run_id": "wf-1"}]


def test_events_left_in_the_segment_are_loaded_when_the_server_starts(harness,
                                                                      home: Path) -> None:
    home.mkdir(mode=0o700)
    events = []
    for i in range(4):
        ev = dict.fromkeys(EVENT_COLUMNS)
        ev.update(id=i + 1, eid=f"left-{i}", ts=1_700_000_000.0 + i, run_id="r",
                  kind="step_started", seq=i, attempt=1, name="a")
        events.append(ev)
    leftover = harness.leftover_segment(home)
    seg = Segment(leftover)
    seg.append([events[:2], events[2:]])
    seg.close()
    with open(leftover, "ab") as f:
        f.write(b"\x40\x00\x00\x00torn")  # a last record the dead server never acknowledged

    client = harness.client()
    assert eids_in_journal(client) == ["left-0", "left-1", "left-2", "left-3"]
    ids = client.call("append", events=[harness.event("r", seq=9, attempt=1, name="a")])["ids"]
    assert ids == [5]  # numbering continues after the loaded events
    assert not leftover.exists(), "a loaded segment is removed once DuckDB holds its events"


def test_run_numbering_continues_after_a_server_restart(harness) -> None:
    client = harness.client()

    def create() -> str:
        ev = harness.event("", "run_started", name="sweep",
                           meta=json.dumps({"pid": os.getpid()}))
        return str(client.call("create_run", event=ev)["run_id"])

    assert [create(), create()] == ["sweep-1", "sweep-2"]
    old = client.server_pid
    harness.sigkill(old)
    assert create() == "sweep-3"
    assert client.server_pid != old


def test_run_ownership_survives_a_server_restart(harness) -> None:
    owner = harness.python(SLEEPER)
    assert owner.stdout is not None and owner.stdout.readline() == "up\n"
    client = harness.client()
    ev = harness.event("", "run_started", name="wf", meta=json.dumps({"pid": owner.pid}))
    run_id = client.call("create_run", event=ev)["run_id"]
    harness.sigkill(client.server_pid)
    with pytest.raises(RunBusy):
        client.call("claim_run", run_id=run_id, pid=os.getpid(), eid=harness.event()["eid"])
    statuses = client.query("SELECT status FROM runs").column("status").to_pylist()
    assert statuses == ["running"]


def test_a_stale_server_json_is_replaced_by_the_new_server(harness, home: Path) -> None:
    client = harness.client()
    old = client.server_pid
    harness.sigkill(old)
    assert json.loads((home / SERVER_FILE).read_text())["pid"] == old
    fresh = harness.client()
    new = fresh.server_pid
    assert new != old and pid_alive(new)
    assert json.loads((home / SERVER_FILE).read_text())["pid"] == new
    assert harness.server_processes() == [new]
