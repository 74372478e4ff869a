"""User SQL is read-only: one query checked by DuckDB's parser, no file or network access."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durable_nb.errors import QueryError, QueryRefused
from durable_nb.journal import readonly
from durable_nb.journal.readonly import check_read_only
from durable_nb.journal.store import JournalStore

pytestmark = pytest.mark.timeout(60)

ALLOWED = [
    "SELECT * FROM runs",
    "select run_id, status from runs where status = ? order by started_at desc limit 5",
    "WITH last AS (SELECT max(seq) AS n FROM steps) SELECT * FROM steps, last WHERE seq = n",
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t",
    "FROM runs",
    "VALUES (1), (2)",
    "(SELECT run_id FROM runs) UNION (SELECT run_id FROM steps)",
    "SELECT sum((result->>'score')::double) AS total FROM steps",
    "SELECT count(*) OVER () AS total FROM runs",
    "DESCRIBE runs",
    "DESCRIBE SELECT * FROM steps",
    "SUMMARIZE steps",
    "SHOW TABLES",
    "EXPLAIN SELECT * FROM runs",
    "EXPLAIN ANALYZE SELECT * FROM runs",
    "EXPLAIN (FORMAT json) SELECT 1",
    "PIVOT runs ON status IN ('completed', 'failed') USING count(*) GROUP BY workflow",
    "SELECT 1;",
    "SELECT 1; ",
    "-- the latest run\nSELECT * FROM runs /* ; DROP TABLE events */",
    "SELECT 'DROP TABLE events; DELETE FROM events' AS text",
    "SELECT 1 AS delete, 2 AS update",
]

# (statement, words the refusal must contain)
REFUSED = [
    ("DELETE FROM events", "DELETE statements are refused"),
    ("delete from events where run_id = 'x'", "DELETE statements are refused"),
    ("DROP TABLE events", "DROP statements are refused"),
    ("DROP VIEW runs", "DROP statements are refused"),
    ("TRUNCATE events", "TRUNCATE statements are refused"),
    ("UPDATE events SET kind = 'x'", "UPDATE statements are refused"),
    ("INSERT INTO events SELECT * FROM events", "INSERT statements are refused"),
    ("WITH e AS (SELECT 1) INSERT INTO events SELECT * FROM e", "INSERT statements"),
    ("MERGE INTO events USING events e ON false WHEN NOT MATCHED THEN DO NOTHING",
     "MERGE statements"),
    ("CREATE TABLE stolen AS SELECT * FROM events", "CREATE statements are refused"),
    ("CREATE OR REPLACE VIEW runs AS SELECT 1", "CREATE statements are refused"),
    ("CREATE MACRO m() AS 1", "CREATE statements"),
    ("ALTER TABLE events ADD COLUMN x INT", "ALTER statements"),
    ("COPY events TO '/tmp/durable_nb_stolen.csv'", "COPY statements are refused"),
    ("COPY events FROM '/tmp/x.csv'", "COPY statements"),
    ("EXPORT DATABASE '/tmp/durable_nb_export'", "EXPORT statements"),
    ("ATTACH '/tmp/other.duckdb' AS other", "ATTACH statements are refused"),
    ("DETACH other", "DETACH statements"),
    ("USE memory", "USE statements"),
    ("PRAGMA version", "PRAGMA statements are refused"),
    ("SET enable_external_access = true", "SET statements are refused"),
    ("RESET lock_configuration", "RESET statements"),
    ("SET VARIABLE x = 1", "SET statements"),
    ("CALL pragma_version()", "CALL statements are refused"),
    ("CHECKPOINT", "CHECKPOINT statements"),
    ("FORCE CHECKPOINT", "FORCE CHECKPOINT statements"),
    ("VACUUM", "VACUUM statements"),
    ("INSTALL httpfs", "INSTALL statements are refused"),
    ("LOAD httpfs", "LOAD statements are refused"),
    ("BEGIN TRANSACTION", "BEGIN statements"),
    ("PREPARE p AS SELECT 1", "PREPARE statements"),
    ("SELECT 1; DROP VIEW runs", "2 statements (SELECT, DROP)"),
    ("SELECT 1; SELECT 2", "2 statements"),
    ("SELECT * FROM runs;\nDELETE FROM events;", "2 statements (SELECT, DELETE)"),
    ("WITH gone AS (DELETE FROM events RETURNING id) SELECT count(*) FROM gone",
     "queries that contain DELETE (in a WITH clause or a subquery) are refused"),
    ("SELECT * FROM (WITH d AS (UPDATE events SET kind = 'x' RETURNING *) SELECT * FROM d)",
     "queries that contain UPDATE"),
    ("WITH c AS (COPY events TO '/tmp/durable_nb_stolen.csv') SELECT 1",
     "queries that contain COPY"),
    ("EXPLAIN ANALYZE DELETE FROM events", "EXPLAIN of DELETE statements is refused"),
    ("EXPLAIN (ANALYZE) DELETE FROM events", "EXPLAIN of DELETE statements"),
    ("EXPLAIN ANALYZE WITH d AS (DELETE FROM events RETURNING id) SELECT * FROM d",
     "EXPLAIN of queries that contain DELETE"),
    ("PIVOT runs ON status", "PIVOT statements that run as several statements are refused"),
    ("", "the query is empty"),
    (" ; ", "the query is empty"),
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_a_single_query_is_allowed(sql: str) -> None:
    check_read_only(sql)


@pytest.mark.parametrize(("sql", "words"), REFUSED)
def test_anything_but_one_query_is_refused_naming_it_and_what_is_allowed(
        sql: str, words: str) -> None:
    with pytest.raises(QueryRefused) as info:
        check_read_only(sql)
    message = str(info.value)
    assert words in message
    if sql.strip(" ;"):
        assert "exactly one query: SELECT" in message and "EXPLAIN of a SELECT" in message


def test_deleting_is_refused_with_the_way_to_delete_a_run() -> None:
    with pytest.raises(QueryRefused, match=r"`durable-nb delete RUN_ID` or the sidebar"):
        check_read_only("DELETE FROM events WHERE run_id = 'sweep-1'")


def test_a_syntax_error_is_a_query_error_with_duckdbs_message() -> None:
    with pytest.raises(QueryError) as info:
        check_read_only("SELEC 1")
    assert not isinstance(info.value, QueryRefused)
    assert "syntax error" in str(info.value) and "SELEC" in str(info.value)


def test_sql_must_be_text() -> None:
    with pytest.raises(QueryRefused, match="SQL text, got list"):
        check_read_only(["SELECT 1"])


# -- the store runs clients' SQL read-only, without file or network access ------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[JournalStore]:
    s = JournalStore(tmp_path / "journal.duckdb")
    s.insert([{"id": i, "eid": uuid.uuid4().hex, "ts": 1_700_000_000.0 + i, "run_id": "wf-1",
               "kind": kind, "name": "wf", "meta": json.dumps({"pid": 1})}
              for i, kind in enumerate(["run_started", "run_status"], 1)])
    yield s
    s.close()


def counts(store: JournalStore) -> tuple[int, int, int]:
    row = store.query("SELECT (SELECT count(*) FROM events) AS e, (SELECT count(*) FROM runs) "
                      "AS r, (SELECT count(*) FROM steps) AS s").to_pylist()[0]
    return row["e"], row["r"], row["s"]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
    "SELECT * FROM read_json('https://example.com/x.json')",
    "SELECT * FROM glob('/etc/*')",
])
def test_table_functions_that_reach_files_or_the_network_are_refused(
        store: JournalStore, sql: str) -> None:
    with pytest.raises(QueryRefused) as info:
        store.read(sql)
    assert "file system operations are disabled" in str(info.value)
    assert "no file or network access" in str(info.value)
    assert store.read("SELECT 42 AS x").to_pylist() == [{"x": 42}]  # still usable


def test_configuration_is_locked_and_file_access_is_off(store: JournalStore) -> None:
    """On every thread's cursor: the server reads on threads of its own."""
    on_thread: list[Any] = []
    worker = threading.Thread(target=lambda: on_thread.append(store.read(
        "SELECT current_setting('lock_configuration') AS locked, "
        "current_setting('enable_progress_bar') AS progress_bar").to_pylist()))
    worker.start()
    worker.join()
    assert on_thread == [[{"locked": True, "progress_bar": False}]]
    settings = store.read(
        "SELECT current_setting('enable_external_access') AS external, "
        "current_setting('lock_configuration') AS locked, "
        "current_setting('autoload_known_extensions') AS autoload, "
        "current_setting('enable_progress_bar') AS progress_bar").to_pylist()
    assert settings == [{"external": False, "locked": True, "autoload": False,
                         "progress_bar": False}]
    with pytest.raises(Exception, match="configuration has been locked"):
        store.query("SET enable_external_access = true")  # not even the server's own SQL


def test_a_write_that_passed_the_check_is_stopped_by_the_read_only_transaction(
        store: JournalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    before = counts(store)
    monkeypatch.setattr(readonly, "check_read_only", lambda sql: None)
    for sql in ["DELETE FROM events", "WITH d AS (DELETE FROM events RETURNING id) SELECT * "
                                      "FROM d", "UPDATE events SET kind = 'x'"]:
        with pytest.raises(QueryRefused, match="read-only"):
            store.read(sql)
    assert counts(store) == before


def test_the_servers_own_work_still_runs(store: JournalStore) -> None:
    """Inserts from Arrow, the views' JSON functions, CHECKPOINT and delete_run's DELETE."""
    store.insert([{"id": 3, "eid": "e3", "ts": 1_700_000_010.0, "run_id": "wf-2",
                   "kind": "run_started", "name": "wf", "meta": json.dumps({"notebook": "a"})}])
    assert store.read("SELECT run_id, notebook FROM runs ORDER BY run_id").to_pylist() == [
        {"run_id": "wf-1", "notebook": None}, {"run_id": "wf-2", "notebook": "a"}]
    store.checkpoint()
    deleted = store.query("DELETE FROM events WHERE run_id = ? RETURNING id", ["wf-2"])
    assert deleted.num_rows == 1
    assert counts(store) == (2, 1, 0)
