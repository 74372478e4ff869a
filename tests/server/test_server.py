"""The journal server as a real process: discovery, permissions, runs, queries, bad homes."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path

import duckdb
import pytest

from durable_nb.errors import (
    DurableError,
    JournalCorrupted,
    JournalUnavailable,
    QueryError,
    RunBusy,
    RunNotFound,
)
from durable_nb.journal.home import DB_FILE, SERVER_FILE
from durable_nb.journal.schema import EVENT_COLUMNS, SCHEMA_VERSION
from durable_nb.journal.segment import Segment
from durable_nb.journal.store import JournalStore
from durable_nb.server.client import JournalClient
from durable_nb.server.discovery import ERROR_FILE, pid_alive

pytestmark = pytest.mark.timeout(90)

SLEEPER = "import time, sys; print('up', flush=True); time.sleep(120)"


def count(client: JournalClient, sql: str, params: list | None = None) -> int:
    return int(client.query(sql, params).column(0)[0].as_py())


def create_run(client: JournalClient, harness, workflow: str, pid: int, **meta) -> str:
    ev = harness.event("", "run_started", name=workflow, meta=json.dumps({"pid": pid, **meta}))
    return str(client.call("create_run", event=ev)["run_id"])


def run_status(client: JournalClient, run_id: str) -> dict:
    rows = client.query("SELECT status, error FROM runs WHERE run_id = ?", [run_id]).to_pylist()
    assert len(rows) == 1, rows
    return rows[0]


# -- discovery and start-up ---------------------------------------------------------------


def test_first_client_on_an_empty_home_starts_a_private_server(harness, home: Path) -> None:
    assert not home.exists()
    client = harness.client()
    pid = client.call("ping")["pid"]
    assert pid != os.getpid() and pid_alive(pid)
    assert harness.server_processes() == [pid]
    info = json.loads((home / SERVER_FILE).read_text())
    assert info["pid"] == pid and info["endpoint"].startswith("ipc://")
    assert stat.S_IMODE((home / SERVER_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / DB_FILE).stat().st_mode) & 0o077 == 0
    status = client.call("status")
    assert status["home"] == str(home) and os.getpid() in status["clients"]


def test_an_existing_world_readable_home_is_made_private(harness, home: Path) -> None:
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    harness.client().call("ping")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_a_second_client_reuses_the_running_server(harness) -> None:
    first = harness.client()
    second = harness.client()
    assert first.server_pid == second.server_pid
    assert harness.server_processes() == [first.server_pid]


def test_clients_racing_to_start_in_processes_end_with_one_server(harness, home: Path) -> None:
    code = ("from durable_nb.server.client import JournalClient; "
            f"print(JournalClient({str(home)!r}).server_pid)")
    procs = [harness.python(code) for _ in range(4)]
    pids = set()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        pids.add(int(out.strip()))
    assert len(pids) == 1
    (pid,) = pids
    assert harness.wait_until(lambda: harness.server_processes() == [pid], 10), \
        harness.server_processes()
    assert harness.server_pid() == pid


def test_clients_racing_to_start_in_threads_end_with_one_server(harness) -> None:
    clients = [harness.client() for _ in range(4)]
    pids: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(clients))

    def start(c: JournalClient) -> None:
        try:
            barrier.wait(timeout=10)
            pids.append(c.call("ping")["pid"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(pids) == 4 and len(set(pids)) == 1
    assert harness.wait_until(lambda: harness.server_processes() == pids[:1], 10)


# -- appends and queries ------------------------------------------------------------------


def test_appending_the_same_event_twice_keeps_one_row(harness, client: JournalClient) -> None:
    ev = harness.event(seq=0, attempt=1, name="train")
    client.append([dict(ev)])
    client.append([dict(ev)])  # both still pending: one bulk insert holds both
    assert count(client, "SELECT count(*) FROM events WHERE eid = ?", [ev["eid"]]) == 1
    client.append([dict(ev)])  # the first copy is already in DuckDB
    client.append([dict(ev), dict(ev)])  # twice in one batch
    assert count(client, "SELECT count(*) FROM events WHERE eid = ?", [ev["eid"]]) == 1
    assert count(client, "SELECT count(*) FROM events") == 1


def test_a_query_sees_every_write_sent_before_it(harness, client: JournalClient) -> None:
    eids = []
    for i in range(50):
        ev = harness.event(seq=i, attempt=1, name="a")
        eids.append(ev["eid"])
        client.append([ev], wait=False)  # not waited for: the query is behind them
    got = client.query("SELECT eid FROM events ORDER BY id").column("eid").to_pylist()
    assert got == eids


def test_bad_sql_raises_query_error_with_duckdbs_message(client: JournalClient) -> None:
    with pytest.raises(QueryError) as info:
        client.query("SELEC 1")
    assert "syntax error" in str(info.value).lower()
    assert "SELEC" in str(info.value)
    with pytest.raises(QueryError) as info:
        client.query("SELECT * FROM no_such_table")
    assert "no_such_table" in str(info.value)
    assert "does not exist" in str(info.value)
    assert client.query("SELECT 41 + 1 AS x").to_pylist() == [{"x": 42}]  # still usable


def test_unknown_operation_raises_an_error_naming_it(client: JournalClient) -> None:
    with pytest.raises(DurableError, match="unknown operation 'frobnicate'"):
        client.call("frobnicate")
    assert client.call("ping")["pid"] > 0


def test_events_since_returns_only_later_events(harness, client: JournalClient) -> None:
    first = client.call("append", events=[harness.event("a", seq=i, attempt=1, name="s")
                                          for i in range(3)])["ids"]
    second = client.call("append", events=[harness.event("b", seq=0, attempt=1, name="s"),
                                           harness.event("a", seq=3, attempt=1, name="s")])["ids"]
    assert first == sorted(first) and second[0] > first[-1]
    table = client.events_since(first[-1])
    assert table.column("id").to_pylist() == second
    assert "data_pickle" not in table.column_names
    assert client.events_since(first[0], run_id="a").column("id").to_pylist() == [
        first[1], first[2], second[1]]
    assert client.events_since(second[-1]).num_rows == 0
    assert client.events_since(0, limit=2).column("id").to_pylist() == first[:2]


# -- runs ---------------------------------------------------------------------------------


def test_create_run_allocates_distinct_ids_under_concurrency(harness, home: Path) -> None:
    harness.client().call("ping")  # the processes race on create_run, not on start-up
    code = f"""
import json, os, time, uuid
from durable_nb.server.client import JournalClient
c = JournalClient({str(home)!r})
ids = []
for _ in range(20):
    ev = {{"eid": uuid.uuid4().hex, "ts": time.time(), "run_id": "", "kind": "run_started",
           "name": "sweep", "meta": json.dumps({{"pid": os.getpid()}})}}
    ids.append(c.call("create_run", event=ev)["run_id"])
print(json.dumps(ids))
"""
    procs = [harness.python(code) for _ in range(2)]
    ids: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        ids += json.loads(out)
    assert len(ids) == 40
    assert set(ids) == {f"sweep-{n}" for n in range(1, 41)}
    client = harness.client()
    assert count(client, "SELECT count(DISTINCT run_id) FROM runs WHERE workflow = 'sweep'") == 40


def test_create_run_resent_with_the_same_eid_returns_the_same_run(harness,
                                                                  client: JournalClient) -> None:
    ev = harness.event("", "run_started", name="wf", meta=json.dumps({"pid": os.getpid()}))
    first = client.call("create_run", event=dict(ev))["run_id"]
    again = client.call("create_run", event=dict(ev))["run_id"]
    assert first == again == "wf-1"
    assert count(client, "SELECT count(*) FROM runs") == 1


def test_create_run_keeps_a_requested_free_id_and_renumbers_a_taken_one(
        harness, client: JournalClient) -> None:
    def make(run_id: str) -> str:
        ev = harness.event(run_id, "run_started", name="wf",
                           meta=json.dumps({"pid": os.getpid()}))
        return str(client.call("create_run", event=ev)["run_id"])

    assert make("wf-7") == "wf-7"
    assert make("wf-7") == "wf-8"
    assert make("") == "wf-9"


def test_claim_run_owned_by_another_live_process_raises_run_busy(harness,
                                                                 client: JournalClient) -> None:
    owner = harness.python(SLEEPER)
    assert owner.stdout is not None and owner.stdout.readline() == "up\n"
    run_id = create_run(client, harness, "wf", owner.pid)
    with pytest.raises(RunBusy) as info:
        client.call("claim_run", run_id=run_id, pid=os.getpid(), eid=harness.event()["eid"])
    assert run_id in str(info.value) and str(owner.pid) in str(info.value)
    # the owner itself may claim it again, and a forced claim takes it over
    assert client.call("claim_run", run_id=run_id, pid=owner.pid,
                       eid=harness.event()["eid"])["previous_status"] == "running"
    client.call("claim_run", run_id=run_id, pid=os.getpid(), eid=harness.event()["eid"],
                force=True)
    with pytest.raises(RunBusy):
        client.call("claim_run", run_id=run_id, pid=owner.pid, eid=harness.event()["eid"])


def test_claim_run_of_an_unknown_run_raises_run_not_found(harness, home: Path,
                                                          client: JournalClient) -> None:
    with pytest.raises(RunNotFound) as info:
        client.call("claim_run", run_id="nope-1", pid=os.getpid(), eid=harness.event()["eid"])
    assert "nope-1" in str(info.value) and str(home) in str(info.value)


def test_run_is_marked_interrupted_when_its_owner_process_dies(harness,
                                                               client: JournalClient) -> None:
    owner = harness.python(SLEEPER)
    assert owner.stdout is not None and owner.stdout.readline() == "up\n"
    run_id = create_run(client, harness, "wf", owner.pid)
    client.append([harness.event(run_id, "step_started", seq=0, attempt=1, name="a")])
    assert run_status(client, run_id)["status"] == "running"
    owner.kill()
    owner.wait(timeout=10)
    assert harness.wait_until(lambda: run_status(client, run_id)["status"] == "interrupted",
                              10, interval=0.2)
    assert str(owner.pid) in run_status(client, run_id)["error"]
    step = client.query("SELECT status FROM steps WHERE run_id = ?", [run_id]).to_pylist()
    assert step == [{"status": "abandoned"}]
    assert run_id not in client.call("status")["active_runs"]
    # the dead owner no longer holds the run: another process may claim it
    client.call("claim_run", run_id=run_id, pid=os.getpid(), eid=harness.event()["eid"])
    assert run_status(client, run_id)["status"] == "running"


def test_claim_run_reports_the_status_the_run_had_before(harness,
                                                         client: JournalClient) -> None:
    run_id = create_run(client, harness, "wf", os.getpid())
    client.append([harness.event(run_id, "run_status", status="failed", name="wf",
                                 error="boom")])
    assert run_status(client, run_id)["status"] == "failed"
    reply = client.call("claim_run", run_id=run_id, pid=os.getpid(),
                        eid=harness.event()["eid"])
    assert reply["previous_status"] == "failed"
    assert run_status(client, run_id)["status"] == "running"


# -- lifetime -----------------------------------------------------------------------------


def test_idle_server_with_no_clients_exits_and_removes_server_json(
        harness, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_NB_SERVER_IDLE", "1")
    client = harness.client()
    client.append([harness.event()])
    pid = client.server_pid
    assert (home / SERVER_FILE).exists()
    client.close()
    assert harness.wait_until(lambda: not pid_alive(pid), 20, interval=0.1), \
        "server did not exit when idle"
    assert not (home / SERVER_FILE).exists()
    # what it held is in the journal for the next server
    assert count(harness.client(), "SELECT count(*) FROM events") == 1


def test_closing_one_client_keeps_the_server_for_another_client_of_the_same_process(
        harness, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_NB_SERVER_IDLE", "1")
    first, second = harness.client(), harness.client()
    first.append([harness.event()])
    second.append([harness.event()])
    pid = first.server_pid
    first.close()
    assert not harness.wait_until(lambda: not pid_alive(pid), 2.5), \
        "server exited although a client was still connected"
    assert os.getpid() in second.call("status")["clients"]
    second.close()
    assert harness.wait_until(lambda: not pid_alive(pid), 20, interval=0.1)


def test_idle_server_stays_while_a_run_is_live(harness, home: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLE_NB_SERVER_IDLE", "1")
    owner = harness.python(SLEEPER)
    assert owner.stdout is not None and owner.stdout.readline() == "up\n"
    client = harness.client()
    create_run(client, harness, "wf", owner.pid)
    pid = client.server_pid
    client.close()
    assert not harness.wait_until(lambda: not pid_alive(pid), 2.5), \
        "server exited while a run it knows is live"
    owner.kill()
    owner.wait(timeout=10)
    assert harness.wait_until(lambda: not pid_alive(pid), 20, interval=0.1)
    assert not (home / SERVER_FILE).exists()


# -- bad homes and damaged files ----------------------------------------------------------


def test_home_under_a_regular_file_raises_journal_unavailable(harness, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    bad = harness.home("file/home")
    with pytest.raises(JournalUnavailable) as info:
        JournalClient(bad)
    assert str(bad) in str(info.value)
    assert "DURABLE_NB_HOME" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits, so a 0500 "
                    "directory is writable; the regular-file variant above covers root")
def test_home_in_a_read_only_directory_raises_journal_unavailable(harness,
                                                                  tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        bad = harness.home("locked/home")
        with pytest.raises(JournalUnavailable) as info:
            JournalClient(bad)
        assert str(bad) in str(info.value) and "DURABLE_NB_HOME" in str(info.value)
        locked.chmod(0o700)
        existing = locked / "ro-home"
        existing.mkdir(mode=0o500)
        existing.chmod(0o500)
        with pytest.raises(JournalUnavailable) as info:
            JournalClient(existing)
        assert str(existing) in str(info.value) and "DURABLE_NB_HOME" in str(info.value)
    finally:
        locked.chmod(0o700)


def segment_events(n: int, run_id: str = "seg") -> list[dict]:
    """Events as the server writes them to the segment (every column, server ids)."""
    events = []
    for i in range(n):
        ev = dict.fromkeys(EVENT_COLUMNS)
        ev.update(id=i + 1, eid=f"seg-{i}", ts=1_700_000_000.0 + i, run_id=run_id,
                  kind="step_started", seq=i, attempt=1, name="a")
        events.append(ev)
    return events


def test_corrupted_journal_raises_journal_corrupted_and_moving_it_aside_recovers(
        harness, home: Path) -> None:
    home.mkdir(mode=0o700)
    db = home / DB_FILE
    garbage = os.urandom(256 * 1024)
    db.write_bytes(garbage)
    seg = Segment(harness.leftover_segment(home))
    seg.append([segment_events(3)])  # acknowledged before the damage, never loaded
    seg.close()
    (home / "blobs").mkdir()
    (home / "blobs" / "keep.bin").write_bytes(b"precious")

    with pytest.raises(JournalCorrupted) as info:
        harness.client().query("SELECT 1")
    message = str(info.value)
    assert str(db) in message and "mv " in message
    assert (home / ERROR_FILE).exists()
    assert harness.wait_until(lambda: harness.server_processes() == [], 10)
    assert db.read_bytes() == garbage, "the damaged file must be left for inspection"

    db.rename(home / "journal.duckdb.corrupt")
    client = harness.client()
    eids = client.query("SELECT eid FROM events ORDER BY id").column("eid").to_pylist()
    assert eids == ["seg-0", "seg-1", "seg-2"]  # the segment's events were not lost
    assert (home / "journal.duckdb.corrupt").read_bytes() == garbage
    assert (home / "blobs" / "keep.bin").read_bytes() == b"precious"
    assert not (home / ERROR_FILE).exists()


def test_journal_with_a_corrupted_data_block_raises_journal_corrupted(harness,
                                                                      home: Path) -> None:
    home.mkdir(mode=0o700)
    db = home / DB_FILE
    store = JournalStore(db)
    store.insert([{**ev, "id": i + 1, "eid": f"e{i}", "seq": i, "name": "n" * 40,
                   "kind": "run_started" if i % 7 == 0 else "step_started",
                   "run_id": f"wf-{i % 10}"}
                  for i, ev in enumerate(segment_events(1) * 20_000)])
    store.checkpoint()
    store.close()
    data = bytearray(db.read_bytes())
    offset = 12_288 + 262_144 + 5_000  # inside the second storage block (event data)
    for i in range(offset, offset + 64):
        data[i] ^= 0xFF
    db.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupted) as info:
        harness.client().query("SELECT count(*) FROM events")
    assert str(db) in str(info.value) and "mv " in str(info.value)


def test_damaged_segment_raises_journal_corrupted_naming_it(harness, home: Path) -> None:
    home.mkdir(mode=0o700)
    path = harness.leftover_segment(home)
    seg = Segment(path)
    seg.append([segment_events(2)])
    seg.append([segment_events(2, run_id="later")])
    seg.close()
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # in the first record's body, with a whole record after it
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupted) as info:
        harness.client().query("SELECT 1")
    assert str(path) in str(info.value) and "mv " in str(info.value)
    assert path.read_bytes() == bytes(data), "the damaged segment must be left as it was"


def test_journal_with_a_newer_schema_raises_journal_unavailable(harness, home: Path) -> None:
    home.mkdir(mode=0o700)
    JournalStore(home / DB_FILE).close()
    con = duckdb.connect(str(home / DB_FILE))
    con.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(JournalUnavailable) as info:
        harness.client().query("SELECT 1")
    assert not isinstance(info.value, JournalCorrupted)
    assert "newer" in str(info.value) and "Upgrade durable_nb" in str(info.value)
    assert str(home / DB_FILE) in str(info.value)


@pytest.mark.parametrize("bad", [{"ts": "yesterday"}, {"eid": None}],
                         ids=["ts-not-a-number", "eid-missing"])
def test_a_malformed_event_is_refused_and_does_not_poison_the_journal(
        harness, client: JournalClient, bad: dict) -> None:
    good = harness.event("r", seq=0, attempt=1, name="a")
    client.append([good])
    malformed = {**harness.event("r", seq=1, attempt=1, name="a"), **bad}
    if malformed["eid"] is None:
        del malformed["eid"]
    with pytest.raises((DurableError, ValueError)):
        client.call("append", events=[malformed])
    later = harness.event("r", seq=2, attempt=1, name="a")
    client.append([later])
    eids = client.query("SELECT eid FROM events ORDER BY id").column("eid").to_pylist()
    assert eids == [good["eid"], later["eid"]]


def test_server_json_names_a_live_server_with_the_documented_fields(harness,
                                                                    home: Path) -> None:
    client = harness.client()
    pid = client.server_pid
    info = json.loads((home / SERVER_FILE).read_text())
    assert set(info) >= {"pid", "endpoint", "started_at", "protocol"}
    assert info["pid"] == pid
    assert re.fullmatch(r"ipc://.+", info["endpoint"])


def test_a_refused_append_nobody_waits_for_is_logged_and_not_kept(harness, caplog) -> None:
    client = harness.client()
    bad = harness.event("r-1", seq=0, attempt=1, name="s", ts="yesterday")
    client.append([bad], wait=False)
    with caplog.at_level("WARNING", logger="durable_nb.client"):
        client.call("ping")  # the refusal arrives before this answer
    assert any("'ts' must be epoch seconds" in r.getMessage() for r in caplog.records)
    assert client._answers == {} and client._noreply == set()


def test_the_server_never_loads_pandas(journal_home: Path):
    """DuckDB's and pyarrow's bindings would import pandas (tens of MB) to check what they
    are handed; the server refuses the import, and still inserts and answers queries."""
    import durable_nb
    from durable_nb.engine.identity import open_run
    from durable_nb.server.client import default_client

    @durable_nb.activity
    def square(i: int) -> int:
        return i * i

    assert open_run("no-pandas").execute(lambda: [square(i) for i in range(20)])[-1] == 361
    client = default_client()
    assert client.query("SELECT count(*) AS n FROM steps").column("n")[0].as_py() == 20
    pid = client.server_pid
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "duckdb" in maps  # the check would see a loaded library
    assert "/pandas/" not in maps
