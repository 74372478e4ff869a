"""Clients' SQL through a real journal server: one read-only query; nothing else runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from durable_nb.errors import QueryError, QueryRefused
from durable_nb.server.client import JournalClient

pytestmark = pytest.mark.timeout(90)


def make_run(client: JournalClient, harness, steps: int = 2) -> str:
    run_id = client.create_run({**harness.event(), "kind": "run_started", "run_id": "",
                                "name": "wf", "meta": json.dumps({"pid": os.getpid()})})
    client.append([{**harness.event(run_id), "kind": kind, "seq": seq, "attempt": 1,
                    "name": "act", "data_json": json.dumps(seq)}
                   for seq in range(steps) for kind in ("step_started", "step_completed")])
    return run_id


def journal_counts(client: JournalClient) -> dict[str, int]:
    return client.query(
        "SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM runs) AS runs, "
        "(SELECT count(*) FROM steps) AS steps").to_pylist()[0]


def hostile(target: Path) -> list[tuple[str, str]]:
    return [
        ("DELETE FROM events", "DELETE statements are refused"),
        ("DROP TABLE events", "DROP statements are refused"),
        ("SELECT 1; DROP VIEW runs", "2 statements (SELECT, DROP)"),
        ("SELECT * FROM runs; ", None),  # allowed: one statement and a trailing ';'
        ("WITH d AS (DELETE FROM events RETURNING id) SELECT count(*) FROM d",
         "queries that contain DELETE"),
        ("UPDATE events SET run_id = 'x'", "UPDATE statements are refused"),
        ("CREATE OR REPLACE VIEW runs AS SELECT 1 AS x", "CREATE statements are refused"),
        (f"COPY events TO '{target}'", "COPY statements are refused"),
        (f"WITH c AS (COPY events TO '{target}') SELECT 1", "queries that contain COPY"),
        (f"EXPORT DATABASE '{target}'", "EXPORT statements are refused"),
        (f"ATTACH '{target}' AS other", "ATTACH statements are refused"),
        ("SET enable_external_access = true", "SET statements are refused"),
        ("PRAGMA database_list", "PRAGMA statements are refused"),
        ("CALL pragma_version()", "CALL statements are refused"),
        ("INSTALL httpfs", "INSTALL statements are refused"),
        ("LOAD httpfs", "LOAD statements are refused"),
        ("EXPLAIN ANALYZE DELETE FROM events", "EXPLAIN of DELETE statements is refused"),
        ("SELECT * FROM read_text('/etc/hostname')", "no file or network access"),
        (f"SELECT * FROM read_csv('{target}')", "no file or network access"),
        ("SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
         "no file or network access"),
        ("SELECT * FROM glob('/etc/*')", "no file or network access"),
    ]


def test_hostile_statements_are_refused_and_the_journal_stays_intact(harness, client, tmp_path):
    make_run(client, harness)
    before = journal_counts(client)
    target = tmp_path / "stolen.csv"
    for sql, words in hostile(target):
        if words is None:
            client.query(sql)
            continue
        with pytest.raises(QueryRefused) as info:
            client.query(sql)
        assert words in str(info.value), sql
        assert "exactly one query: SELECT" in str(info.value), sql
    assert journal_counts(client) == before
    assert not target.exists()
    views = client.query("SELECT table_name, table_type FROM information_schema.tables "
                         "ORDER BY table_name").to_pylist()
    assert {(v["table_name"], v["table_type"]) for v in views} >= {
        ("events", "BASE TABLE"), ("runs", "VIEW"), ("steps", "VIEW")}
    settings = client.query("SELECT current_setting('enable_external_access') AS external, "
                            "current_setting('lock_configuration') AS locked").to_pylist()
    assert settings == [{"external": False, "locked": True}]


def test_queries_the_clients_send_still_work(harness, client):
    run_id = make_run(client, harness, steps=3)
    assert client.query("SELECT seq, result FROM steps WHERE run_id = ? ORDER BY seq",
                        [run_id]).to_pylist() == [{"seq": s, "result": str(s)} for s in range(3)]
    assert client.query("DESCRIBE runs").num_rows == 8
    assert client.query("SUMMARIZE steps").num_rows > 0
    assert client.query("EXPLAIN SELECT * FROM runs").num_rows > 0
    assert client.query("SELECT 'DROP TABLE events' AS text").to_pylist() == [
        {"text": "DROP TABLE events"}]
    assert client.events_since(0, run_id=run_id).num_rows == 1 + 6
    with pytest.raises(QueryError, match="syntax error"):
        client.query("SELEC 1")


def test_the_servers_own_writes_still_work_after_refusals(harness, client):
    """Appends, fork (which reads events) and delete (a DELETE of the server's own)."""
    run_id = make_run(client, harness, steps=2)
    with pytest.raises(QueryRefused):
        client.query("DELETE FROM events")
    fork = client.fork_run(run_id, 1)["run_id"]
    client.cancel_run(run_id)
    assert client.delete_run(run_id)["events_deleted"] == 1 + 4 + 1
    assert [r["run_id"] for r in client.query("SELECT run_id FROM runs").to_pylist()] == [fork]
