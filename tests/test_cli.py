"""The durable-nb command, run as a real subprocess against a real journal server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import durable_nb
from durable_nb.engine.identity import open_run
from durable_nb.server.discovery import pid_alive, read_server_info


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "durable_nb.cli", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DURABLE_NB_HOME": str(home)})


@pytest.fixture
def finished_run(journal_home: Path) -> str:
    @durable_nb.activity
    def score(x: int) -> dict:
        return {"x": x, "score": x / 10}

    ctx = open_run("scoring")
    ctx.execute(lambda: [score(i) for i in range(3)])
    return ctx.run_id


def test_runs_lists_runs_as_a_table_and_as_json(journal_home: Path, finished_run: str):
    table = cli(journal_home, "runs")
    assert table.returncode == 0, table.stderr
    assert finished_run in table.stdout and "completed" in table.stdout
    rows = json.loads(cli(journal_home, "runs", "--json").stdout)
    assert [(r["run_id"], r["status"], r["steps_completed"]) for r in rows] == [
        (finished_run, "completed", 3)]


def test_show_prints_the_run_and_its_steps(journal_home: Path, finished_run: str):
    out = cli(journal_home, "show", finished_run)
    assert out.returncode == 0, out.stderr
    assert "workflow: scoring" in out.stdout
    assert '{"x":2,"score":0.2}' in out.stdout
    data = json.loads(cli(journal_home, "show", finished_run, "--json").stdout)
    assert data["run"]["status"] == "completed"
    assert [s["seq"] for s in data["steps"]] == [0, 1, 2]


def test_sql_runs_a_query_over_the_views(journal_home: Path, finished_run: str):
    out = cli(journal_home, "sql",
              "select sum((result->>'score')::double) as total from steps", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"total": pytest.approx(0.3)}]


def test_unknown_run_and_bad_sql_exit_1_with_a_message(journal_home: Path, finished_run: str):
    missing = cli(journal_home, "show", "nope-1")
    assert missing.returncode == 1
    assert "no run 'nope-1'" in missing.stderr and "durable-nb runs" in missing.stderr
    bad = cli(journal_home, "sql", "select * from no_such_table")
    assert bad.returncode == 1 and "no_such_table" in bad.stderr


def test_server_status_and_stop(journal_home: Path, finished_run: str):
    status = cli(journal_home, "server", "status")
    assert status.returncode == 0
    pid = read_server_info(journal_home)["pid"]
    assert f"pid: {pid}" in status.stdout and str(journal_home) in status.stdout
    stopped = cli(journal_home, "server", "stop")
    assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout
    assert not pid_alive(pid)
    assert "no journal server running" in cli(journal_home, "server", "stop").stdout
    # The journal is intact and the next client starts a new server.
    assert "completed" in cli(journal_home, "runs").stdout


# -- read-only SQL -------------------------------------------------------------------------
def journal_counts(home: Path) -> dict[str, int]:
    out = cli(home, "sql", "SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) "
                           "FROM runs) AS runs, (SELECT count(*) FROM steps) AS steps", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def test_sql_refuses_anything_but_one_read_only_query(journal_home: Path, finished_run: str,
                                                      tmp_path: Path):
    before = journal_counts(journal_home)
    target = tmp_path / "stolen.csv"
    for sql, words in [
        ("DELETE FROM events", "DELETE statements are refused"),
        ("DROP TABLE events", "DROP statements are refused"),
        ("SELECT 1; DROP VIEW runs", "2 statements (SELECT, DROP)"),
        ("WITH d AS (DELETE FROM events RETURNING id) SELECT * FROM d", "contain DELETE"),
        (f"COPY events TO '{target}'", "COPY statements are refused"),
        (f"ATTACH '{target}' AS other", "ATTACH statements are refused"),
        ("SET enable_external_access = true", "SET statements are refused"),
        ("SELECT * FROM read_text('/etc/hostname')", "no file or network access"),
    ]:
        out = cli(journal_home, "sql", sql)
        assert out.returncode == 1, (sql, out.stdout)
        assert out.stderr.startswith("durable-nb: ") and words in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        assert "exactly one query: SELECT" in out.stderr
    assert "`durable-nb delete RUN_ID`" in cli(journal_home, "sql", "DELETE FROM events").stderr
    assert journal_counts(journal_home) == before
    assert not target.exists()
    assert finished_run in cli(journal_home, "runs").stdout
