"""One string cannot poison the journal: text the journal cannot store is escaped or refused
before it is acknowledged, and whatever still fails to load is quarantined, never blocking
the other events, the queries or the server's start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import durable_nb
from durable_nb.engine.identity import open_run
from durable_nb.errors import ActivityFailed, JournalUnavailable
from durable_nb.journal.home import DB_FILE
from durable_nb.journal.quarantine import QUARANTINE_DIR, read_quarantine
from durable_nb.journal.schema import EVENT_COLUMNS
from durable_nb.journal.segment import Segment
from durable_nb.server.client import JournalClient
from durable_nb.server.discovery import ERROR_FILE, LOG_FILE, pid_alive, read_server_info

pytestmark = pytest.mark.timeout(120)

CAFE = os.fsdecode(b"caf\xe9.csv")  # 'caf\udce9.csv': a file name that is not UTF-8


def rows(client: JournalClient, sql: str, params: list | None = None) -> list[dict]:
    return client.query(sql, params).to_pylist()


def run_sweep(client: JournalClient, workflow: str, n: int = 3) -> str:
    @durable_nb.activity
    def square(i: int) -> int:
        return i * i

    ctx = open_run(workflow, client=client)
    ctx.execute(lambda: [square(i) for i in range(n)])
    return ctx.run_id


def test_a_failure_naming_an_undecodable_file_is_stored_escaped_and_a_bad_signal_refused(
        harness, home: Path) -> None:
    client = harness.client()

    @durable_nb.activity
    def load(path: str) -> int:
        raise ValueError(path)

    ctx = open_run("files", client=client)
    with pytest.raises(ActivityFailed) as info:
        ctx.execute(lambda: load(CAFE))
    assert "ValueError: caf\\xe9.csv" in str(info.value)
    pid = client.server_pid

    # Acknowledged and loaded: the public views query, the text reads naturally.
    (step,) = rows(client, "SELECT status, error, args FROM steps WHERE run_id = ?",
                   [ctx.run_id])
    assert step["status"] == "failed" and step["error"] == "ValueError: caf\\xe9.csv"
    assert step["args"] == '"{\'path\': \'caf\\\\udce9.csv\'}"'  # the preview (JSON refuses it)
    (run,) = rows(client, "SELECT status, error FROM runs WHERE run_id = ?", [ctx.run_id])
    assert run["status"] == "failed" and "caf\\xe9.csv" in run["error"]
    (failed,) = rows(client, "SELECT traceback FROM events WHERE run_id = ? AND "
                             "kind = 'step_failed'", [ctx.run_id])
    assert "ValueError: caf\\xe9.csv" in failed["traceback"]

    # A signal whose name cannot be stored is refused before it is acknowledged.
    with pytest.raises(ValueError) as refused:
        client.signal(ctx.run_id, "\udce9", True)
    assert "the signal name '\\xe9' holds a lone surrogate U+DCE9" in str(refused.value)
    assert "valid Unicode" in str(refused.value)
    with pytest.raises(ValueError, match="signal value holds a lone surrogate"):
        client.signal(ctx.run_id, "file", CAFE)
    # So is a hand-made event that skipped the builder, naming the event and the column.
    bad = harness.event(ctx.run_id, "step_failed", seq=1, attempt=1, name="load",
                        error=f"ValueError: {CAFE}")
    with pytest.raises(ValueError) as refused:
        client.append([bad])
    assert f"event {bad['eid']} (step_failed): 'error' holds a lone surrogate" in str(
        refused.value)
    assert rows(client, "SELECT count(*) AS n FROM events WHERE kind = 'signal' OR eid = ?",
                [bad["eid"]]) == [{"n": 0}]

    # Other runs keep working, on the same server.
    other = run_sweep(client, "others")
    assert rows(client, "SELECT status, steps_completed FROM runs WHERE run_id = ?",
                [other]) == [{"status": "completed", "steps_completed": 3}]
    assert client.server_pid == pid

    # The server restarts cleanly and holds everything.
    client.shutdown()
    assert harness.wait_until(lambda: not pid_alive(pid), 20)
    again = harness.client()
    assert again.server_pid != pid
    assert [r["status"] for r in rows(again, "SELECT status FROM runs ORDER BY run_id")] == [
        "failed", "completed"]
    assert len(rows(again, "SELECT * FROM steps")) == 4
    assert not (home / QUARANTINE_DIR).exists()
    assert not (home / ERROR_FILE).exists()


def segment_event(i: int, **fields: object) -> dict:
    ev = dict.fromkeys(EVENT_COLUMNS)
    ev.update({"id": i, "eid": f"seg-{i}", "ts": 1_700_000_000.0 + i, "run_id": "old-1",
               "kind": "step_started", "seq": i, "attempt": 1, "name": "a", **fields})
    return ev


def test_a_leftover_segment_event_duckdb_cannot_load_is_quarantined_and_the_server_starts(
        harness, home: Path) -> None:
    """As an older server (or a bug) could leave it: acknowledged, never loaded."""
    home.mkdir(mode=0o700)
    path = harness.leftover_segment(home)
    seg = Segment(path)
    seg.append([[segment_event(1, kind="run_started", name="old", seq=None, attempt=None),
                 segment_event(2)]])
    bad = segment_event(3, kind="step_failed", error=f"ValueError: {CAFE}")
    seg.append([[bad, segment_event(4)]])
    seg.close()

    client = harness.client()
    assert [r["eid"] for r in rows(client, "SELECT eid FROM events ORDER BY id")] == [
        "seg-1", "seg-2", "seg-4"]
    assert rows(client, "SELECT run_id, status FROM runs") == [
        {"run_id": "old-1", "status": "running"}]
    assert [r["seq"] for r in rows(client, "SELECT seq FROM steps ORDER BY seq")] == [2, 4]

    (quarantined,) = (home / QUARANTINE_DIR).glob("*.jsonl")
    (record,) = read_quarantine(quarantined)
    assert record["event"] == bad  # exactly as acknowledged, lone surrogate and all
    assert record["eid"] == "seg-3" and "surrogates not allowed" in record["error"]
    log = (home / LOG_FILE).read_text()
    assert f"(seg-3) and quarantined them in {quarantined}" in log
    assert not path.exists()
    assert not (home / ERROR_FILE).exists()
    client.append([harness.event("old-1", seq=5, attempt=1, name="a")])
    assert len(rows(client, "SELECT * FROM steps")) == 3  # and it keeps serving


def test_a_start_up_failure_loading_a_segment_names_the_segment_and_the_way_out(
        harness, home: Path) -> None:
    home.mkdir(mode=0o700)
    path = harness.leftover_segment(home)
    seg = Segment(path)
    seg.append([[segment_event(1, error=f"ValueError: {CAFE}")]])
    seg.close()
    (home / QUARANTINE_DIR).write_text("a file where the quarantine folder goes")

    with pytest.raises(JournalUnavailable) as info:
        harness.client().query("SELECT 1")
    message = str(info.value)
    assert f"cannot load the write-ahead segment {path} into the journal {home / DB_FILE}" \
        in message
    assert f"mv {path} {path}.failed" in message and "acknowledged" in message
    assert path.exists(), "the segment's events stay on disk"


# A real server process in which check_event lets everything through, as a bug would.
UNCHECKED_SERVER = """
import sys
import durable_nb.server.app as app
app.check_event = lambda event: None
sys.exit(app.main(["--home", {home!r}]))
"""


def test_the_running_server_quarantines_an_event_it_cannot_load_and_keeps_serving(
        harness, home: Path) -> None:
    # The trailing arguments make its command line a journal server's, as clients check.
    proc = harness.python(UNCHECKED_SERVER.format(home=str(home)),
                          "-m", "durable_nb.server", "--home", str(home))
    assert harness.wait_until(
        lambda: (info := read_server_info(home)) is not None and info["pid"] == proc.pid, 30)
    client = harness.client()
    first, last = harness.event("r-1", seq=0, attempt=1, name="a"), harness.event(
        "r-1", seq=2, attempt=1, name="a")
    bad = harness.event("r-1", "step_failed", seq=1, attempt=1, name="a", error=CAFE)
    client.append([first, bad, last])  # acknowledged: the check was skipped

    eids = [r["eid"] for r in rows(client, "SELECT eid FROM events ORDER BY id")]
    assert eids == [first["eid"], last["eid"]]
    assert len(rows(client, "SELECT * FROM steps")) == 2
    (quarantined,) = (home / QUARANTINE_DIR).glob("*.jsonl")
    assert [r["event"]["eid"] for r in read_quarantine(quarantined)] == [bad["eid"]]
    later = harness.event("r-1", seq=3, attempt=1, name="a")
    client.append([later])
    assert rows(client, "SELECT count(*) AS n FROM events") == [{"n": 3}]
    assert client.server_pid == proc.pid

    client.shutdown()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"({bad['eid']}) and quarantined them in {quarantined}" in err
    assert "the other 2 event(s) of the batch are loaded" in err
