"""The DuckDB store: migrations, public views, idempotent inserts, clear corruption errors."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from durable_nb.errors import JournalCorrupted, JournalUnavailable
from durable_nb.journal.quarantine import QUARANTINE_DIR, read_quarantine
from durable_nb.journal.schema import SCHEMA_VERSION
from durable_nb.journal.store import JournalStore

pytestmark = pytest.mark.timeout(60)

RUNS_COLUMNS = ["run_id", "workflow", "status", "started_at", "ended_at", "notebook",
                "steps_completed", "error"]
STEPS_COLUMNS = ["run_id", "seq", "name", "status", "attempts", "started_at", "ended_at",
                 "duration_s", "args", "result", "error", "heartbeat", "heartbeat_at",
                 "heartbeats"]

BLOCK = 262_144  # DuckDB's default block size
FIRST_BLOCK = 12_288  # after the main header and the two database headers


class Events:
    """Builds events with increasing ids and timestamps, as the server would."""

    def __init__(self) -> None:
        self.next_id = 1
        self.t = 1_700_000_000.0

    def __call__(self, run_id: str, kind: str, **fields: Any) -> dict[str, Any]:
        meta = fields.pop("meta", None)
        event = {"id": self.next_id, "eid": uuid.uuid4().hex, "ts": self.t, "run_id": run_id,
                 "kind": kind, "meta": json.dumps(meta) if meta is not None else None, **fields}
        self.next_id += 1
        self.t += 1.0
        return event


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JournalStore]:
    s = JournalStore(tmp_path / "journal.duckdb")
    yield s
    s.close()


def rows(store: JournalStore, sql: str) -> list[dict[str, Any]]:
    return store.query(sql).to_pylist()


def test_fresh_journal_gets_schema_version_1(store: JournalStore) -> None:
    assert SCHEMA_VERSION == 1
    assert rows(store, "SELECT version FROM schema_version") == [{"version": 1}]
    assert rows(store, "SELECT count(*) AS n FROM events") == [{"n": 0}]


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path, events: Events) -> None:
    path = tmp_path / "journal.duckdb"
    s = JournalStore(path)
    s.insert([events("r-1", "run_started", name="wf")])
    s.close()
    s = JournalStore(path)
    try:
        assert rows(s, "SELECT version FROM schema_version") == [{"version": 1}]
        assert rows(s, "SELECT run_id, workflow FROM runs") == [{"run_id": "r-1",
                                                                 "workflow": "wf"}]
        assert s.max_id() == 1
    finally:
        s.close()


def test_runs_view_has_exactly_the_documented_columns_in_order(store: JournalStore) -> None:
    assert store.query("SELECT * FROM runs").column_names == RUNS_COLUMNS


def test_steps_view_has_exactly_the_documented_columns_in_order(store: JournalStore) -> None:
    assert store.query("SELECT * FROM steps").column_names == STEPS_COLUMNS



def test_a_step_carries_its_latest_heartbeat_its_time_and_how_many_came(
        store: JournalStore, events: Events) -> None:
    store.insert([
        events("wf-1", "run_started", name="wf", meta={"pid": 1}),
        events("wf-1", "step_started", seq=0, attempt=1, name="train", data_json="[1]"),
        events("wf-1", "step_heartbeat", seq=0, attempt=1, name="train",
               data_json='{"epoch": 1, "of": 10}'),
        events("wf-1", "step_failed", seq=0, attempt=1, name="train", error="boom",
               meta={"final": False}),
        events("wf-1", "step_started", seq=0, attempt=2, name="train", data_json="[1]"),
        events("wf-1", "step_heartbeat", seq=0, attempt=2, name="train",
               data_json='{"epoch": 2, "of": 10}'),
        # pickled details: the view holds their preview, as a JSON string
        events("wf-1", "step_heartbeat", seq=0, attempt=2, name="train",
               preview="<Checkpoint epoch=3>"),
        events("wf-1", "step_started", seq=1, attempt=1, name="train", data_json="[2]"),
    ])
    beat, quiet = rows(store, "SELECT *, epoch(heartbeat_at) AS at FROM steps ORDER BY seq")
    # Heartbeats leave the step's status, attempts and times as they were.
    assert (beat["status"], beat["attempts"], beat["ended_at"]) == ("running", 2, None)
    assert json.loads(beat["heartbeat"]) == "<Checkpoint epoch=3>"
    assert beat["heartbeats"] == 3
    assert beat["at"] == pytest.approx(1_700_000_006.0)  # the seventh event's
    assert (quiet["heartbeat"], quiet["heartbeat_at"], quiet["heartbeats"]) == (None, None, 0)


def test_a_heartbeats_details_are_queryable_json(store: JournalStore, events: Events) -> None:
    store.insert([
        events("wf-1", "run_started", name="wf", meta={"pid": 1}),
        events("wf-1", "step_started", seq=0, attempt=1, name="train", data_json="[1]"),
        events("wf-1", "step_heartbeat", seq=0, attempt=1, name="train",
               data_json='{"epoch": 4, "of": 10, "loss": 0.25}'),
        events("wf-1", "step_completed", seq=0, attempt=1, name="train", data_json="0.2"),
    ])
    assert rows(store, "SELECT status, (heartbeat->>'$.epoch')::INT AS epoch, "
                       "(heartbeat->>'$.loss')::DOUBLE AS loss, duration_s FROM steps") == [
        {"status": "completed", "epoch": 4, "loss": 0.25, "duration_s": 2.0}]

def test_inserting_the_same_events_twice_keeps_one_copy(store: JournalStore,
                                                         events: Events) -> None:
    batch = [events("r-1", "run_started", name="wf"),
             events("r-1", "step_started", seq=0, attempt=1, name="train")]
    store.insert(batch)
    store.insert(batch)
    resent = [{**e, "id": e["id"] + 100} for e in batch]  # a resend gets new server ids
    store.insert(resent)
    assert rows(store, "SELECT count(*) AS n FROM events") == [{"n": 2}]
    assert store.max_id() == 2


def test_duplicate_eids_within_one_insert_keep_one_copy(store: JournalStore,
                                                         events: Events) -> None:
    e = events("r-1", "step_started", seq=0, attempt=1, name="train")
    store.insert([e, {**e, "id": e["id"] + 1}])
    assert rows(store, "SELECT count(*) AS n FROM events") == [{"n": 1}]


def test_pickled_payload_bytes_are_stored_as_blob(store: JournalStore, events: Events) -> None:
    import base64

    raw = b"\x80\x05pickled\x00bytes"
    store.insert([events("r-1", "step_completed", seq=0, attempt=1, name="train",
                         data_pickle=base64.b64encode(raw).decode())])
    assert rows(store, "SELECT data_pickle FROM events") == [{"data_pickle": raw}]


def test_retried_step_is_completed_with_two_attempts(store: JournalStore,
                                                      events: Events) -> None:
    store.insert([
        events("wf-1", "run_started", name="wf", meta={"pid": 1}),
        events("wf-1", "step_started", seq=0, attempt=1, name="train", data_json='[1]'),
        events("wf-1", "step_failed", seq=0, attempt=1, name="train", error="boom",
               meta={"final": False}),
        events("wf-1", "step_started", seq=0, attempt=2, name="train", data_json='[1]'),
        events("wf-1", "step_completed", seq=0, attempt=2, name="train",
               data_json='{"loss": 0.5}'),
    ])
    (step,) = rows(store, "SELECT * FROM steps")
    assert step["status"] == "completed"
    assert step["attempts"] == 2
    assert step["error"] is None
    assert json.loads(step["result"]) == {"loss": 0.5}
    assert json.loads(step["args"]) == [1]
    assert step["duration_s"] == pytest.approx(3.0)
    (run,) = rows(store, "SELECT * FROM runs")
    assert run["steps_completed"] == 1


def test_step_failed_non_final_is_retrying_and_final_is_failed(store: JournalStore,
                                                                events: Events) -> None:
    store.insert([
        events("wf-1", "run_started", name="wf"),
        events("wf-1", "step_started", seq=0, attempt=1, name="a"),
        events("wf-1", "step_failed", seq=0, attempt=1, name="a", error="e0",
               meta={"final": False}),
        events("wf-1", "step_started", seq=1, attempt=1, name="b"),
        events("wf-1", "step_failed", seq=1, attempt=1, name="b", error="e1",
               meta={"final": True}),
    ])
    got = {r["seq"]: (r["status"], r["error"])
           for r in rows(store, "SELECT seq, status, error FROM steps")}
    assert got == {0: ("retrying", "e0"), 1: ("failed", "e1")}


def test_started_step_of_an_interrupted_run_is_abandoned(store: JournalStore,
                                                          events: Events) -> None:
    store.insert([
        events("wf-1", "run_started", name="wf"),
        events("wf-1", "step_started", seq=0, attempt=1, name="a"),
    ])
    assert rows(store, "SELECT status FROM steps") == [{"status": "running"}]
    store.insert([events("wf-1", "run_status", status="interrupted", error="pid 9 exited")])
    assert rows(store, "SELECT status FROM steps") == [{"status": "abandoned"}]
    (run,) = rows(store, "SELECT status, error, ended_at FROM runs")
    assert run["status"] == "interrupted" and run["error"] == "pid 9 exited"
    assert run["ended_at"] is not None


def assert_corruption_message(exc: BaseException, path: Path) -> None:
    message = str(exc)
    assert str(path) in message
    assert "mv " in message and ".corrupt" in message  # says how to recover


def test_garbage_file_raises_journal_corrupted_naming_file_and_recovery(tmp_path: Path) -> None:
    path = tmp_path / "journal.duckdb"
    path.write_bytes(os.urandom(64 * 1024))
    before = path.read_bytes()
    with pytest.raises(JournalCorrupted) as info:
        JournalStore(path)
    assert_corruption_message(info.value, path)
    assert path.read_bytes() == before, "the damaged file must be left for inspection"


def make_big_journal(path: Path, events: Events, n: int = 20_000) -> None:
    s = JournalStore(path)
    s.insert([events(f"wf-{i % 10}", "run_started" if i % 7 == 0 else "step_started",
                     seq=i, attempt=1, name="n" * 40, data_json=f'{{"i": {i}}}')
              for i in range(n)])
    s.checkpoint()
    s.close()
    assert path.stat().st_size > FIRST_BLOCK + 2 * BLOCK, "precondition: several blocks"


def flip(path: Path, offset: int, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_first_block_raises_journal_corrupted(tmp_path: Path, events: Events) -> None:
    path = tmp_path / "journal.duckdb"
    make_big_journal(path, events)
    flip(path, FIRST_BLOCK + 1000)
    with pytest.raises(JournalCorrupted) as info:
        JournalStore(path)
    assert_corruption_message(info.value, path)


def test_corrupted_database_header_raises_journal_corrupted(tmp_path: Path,
                                                            events: Events) -> None:
    path = tmp_path / "journal.duckdb"
    make_big_journal(path, events, n=100)
    flip(path, 4096, 200)
    flip(path, 8192, 200)
    with pytest.raises(JournalCorrupted) as info:
        JournalStore(path)
    assert_corruption_message(info.value, path)


def test_corrupted_data_block_raises_journal_corrupted_when_read(tmp_path: Path,
                                                                 events: Events) -> None:
    path = tmp_path / "journal.duckdb"
    make_big_journal(path, events)
    flip(path, FIRST_BLOCK + BLOCK + 5000)  # inside the second storage block (event data)
    with pytest.raises(JournalCorrupted) as info:
        s = JournalStore(path)
        try:
            s.query("SELECT * FROM events").to_pylist()
        finally:
            s.close()
    assert_corruption_message(info.value, path)


def test_journal_with_newer_schema_version_raises_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.duckdb"
    JournalStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(JournalUnavailable) as info:
        JournalStore(path)
    message = str(info.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert "newer" in message and "Upgrade durable_nb" in message
    assert not isinstance(info.value, JournalCorrupted)


def test_insert_of_many_events_keeps_every_event_and_its_id(store: JournalStore,
                                                            events: Events) -> None:
    batch = [events("wf-1", "step_started", seq=i, attempt=1, name="a") for i in range(5_000)]
    store.insert(batch)
    assert rows(store, "SELECT count(*) AS n, min(id) AS lo, max(id) AS hi FROM events") == [
        {"n": 5_000, "lo": 1, "hi": 5_000}]
    assert store.max_id() == 5_000


def test_events_duckdb_cannot_load_are_quarantined_and_the_others_loaded(
        store: JournalStore, events: Events, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """As an older server or a bug could have acknowledged them: bisection finds each one."""
    good = [events("wf-1", "run_started", name="wf")]
    good += [events("wf-1", "step_started", seq=i, attempt=1, name="a") for i in range(50)]
    bad = [
        events("wf-1", "step_failed", seq=3, attempt=1, name="a", error="caf\udce9.csv"),
        events("wf-1", "step_completed", seq=7, attempt=1, name="a",
               data_json=json.dumps("caf\udce9.csv")),  # loads as text, but not as JSON
        events("wf-1", "step_completed", seq=9, attempt=1, name="a", data_pickle="abc"),
        events("wf-1", "step_started", seq=11, attempt=1, name="a", ts=1e300),
    ]
    batch = good[:20] + bad[:2] + good[20:40] + bad[2:] + good[40:]
    with caplog.at_level("ERROR", logger="durable_nb.journal"):
        path = store.insert(batch)

    assert path is not None and path.parent == tmp_path / QUARANTINE_DIR
    assert path.name.endswith("-1.jsonl")
    records = read_quarantine(path)
    assert [r["event"] for r in records] == bad  # kept exactly as appended
    errors = [r["error"] for r in records]
    assert "surrogates not allowed" in errors[0]
    assert "data_json of event" in errors[1] and "not JSON DuckDB can read" in errors[1]
    assert errors[2].startswith("Error: ")  # binascii.Error: bad base64
    assert "out of range" in errors[3]
    assert rows(store, "SELECT count(*) AS n FROM events") == [{"n": len(good)}]
    assert len(rows(store, "SELECT * FROM steps")) == 50  # the views still query
    assert rows(store, "SELECT status FROM runs") == [{"status": "running"}]
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(path) in line and all(e["eid"] in line for e in bad)
    assert "the other 51 event(s) of the batch are loaded" in line


def test_a_clean_batch_writes_no_quarantine_file(store: JournalStore, events: Events,
                                                 tmp_path: Path) -> None:
    assert store.insert([events("wf-1", "run_started", name="wf")]) is None
    assert not (tmp_path / QUARANTINE_DIR).exists()


def test_unreadable_json_written_by_older_versions_is_re_encoded_on_open(tmp_path: Path):
    """A result string with a lone surrogate, stored as JSON text DuckDB refuses, used to
    break the steps view for every run; opening the journal now repairs the row."""
    from durable_nb.journal.codec import decode

    path = tmp_path / "journal.duckdb"
    JournalStore(path).close()
    raw = duckdb.connect(str(path))
    raw.execute("DROP TABLE repairs")  # as an older version's journal: never repaired
    raw.execute(
        "INSERT INTO events (id, eid, ts, run_id, kind, seq, attempt, name, data_json, "
        "preview, meta) VALUES (1, 'old-1', now(), 'r-1', 'step_completed', 0, 1, 'load', "
        "?, 'x', ?)", ['"caf\\udce9.csv"', '{"notebook": "caf\\udce9.ipynb"}'])
    raw.close()
    store = JournalStore(path)
    try:
        steps = store.query("SELECT result FROM steps").to_pylist()  # the view reads again
        row = store.query("SELECT data_json, data_pickle, meta FROM events").to_pylist()[0]
    finally:
        store.close()
    assert len(steps) == 1
    assert decode(row["data_json"], row["data_pickle"]) == "caf\udce9.csv"
    assert "caf" in row["meta"] and "\\udce9" not in row["meta"]
    store = JournalStore(path)  # repaired once: the next open does not scan again
    try:
        assert store.query("SELECT name FROM repairs").to_pylist() == [{"name": "unreadable-json"}]
    finally:
        store.close()
