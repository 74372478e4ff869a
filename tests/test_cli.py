"""The durable-nb command, run as a real subprocess against a real journal server."""

from __future__ import annotations

import json
import os
import re
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



def test_show_prints_each_steps_latest_heartbeat_its_progress_and_age(journal_home: Path):
    @durable_nb.activity
    def fit(epochs: int) -> float:
        for epoch in range(1, epochs + 1):
            durable_nb.heartbeat({"epoch": epoch, "of": epochs})
        return 0.5

    @durable_nb.activity
    def crawl(pages: int) -> int:
        durable_nb.heartbeat(f"at page {pages}")
        return pages

    ctx = open_run("fitting")
    ctx.execute(lambda: [fit(2), crawl(7), fit(0)])
    out = cli(journal_home, "show", ctx.run_id)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[-3:]}
    assert re.search(r'epoch 2/2 \{"epoch":2,"of":2\} \d+ s ago \(2 beats\)$', lines["0"])
    assert re.search(r"at page 7 \d+ s ago \(1 beat\)$", lines["1"])
    assert " ago " not in lines["2"] and "beat" not in lines["2"]  # it sent none
    steps = json.loads(cli(journal_home, "show", ctx.run_id, "--json").stdout)["steps"]
    assert [(json.loads(s["heartbeat"]) if s["heartbeat"] else None, s["heartbeats"])
            for s in steps] == [({"epoch": 2, "of": 2}, 2), ("at page 7", 1), (None, 0)]
    assert steps[0]["heartbeat_at"] is not None and steps[2]["heartbeat_at"] is None

def test_show_says_what_the_last_resume_replayed_and_the_run_time_it_saved(
        journal_home: Path):
    import time

    from durable_nb.journal.savings import replay_savings
    from durable_nb.server.client import default_client

    @durable_nb.activity
    def slow(x: int) -> int:
        time.sleep(0.2)
        return x

    def body(fail_at: int | None) -> list[int]:
        out = []
        for i in range(4):
            if i == fail_at:
                raise RuntimeError("the kernel went away")
            out.append(slow(i))
        return out

    first = open_run("slowly")
    with pytest.raises(RuntimeError):
        first.execute(lambda: body(2))
    assert replay_savings(default_client(), first.run_id) == {"replayed_steps": 0,
                                                              "saved_s": 0.0}
    again = open_run("slowly")
    assert again.execute(lambda: body(None)) == [0, 1, 2, 3]
    assert "(2 replayed, 2 ran)" in again.summary()
    assert re.search(r"replay saved 0\.[4-9] s of recorded run time", again.summary())

    savings = replay_savings(default_client(), again.run_id)
    assert savings["replayed_steps"] == 2 and 0.4 <= savings["saved_s"] < 2.0
    out = cli(journal_home, "show", again.run_id)
    assert out.returncode == 0, out.stderr
    assert re.search(r"replayed: 2 steps on the last resume — saved 0\.\d s", out.stdout)
    data = json.loads(cli(journal_home, "show", again.run_id, "--json").stdout)
    assert data["run"]["replayed_steps"] == 2
    assert data["run"]["saved_s"] == pytest.approx(savings["saved_s"])
    once = open_run("once")
    once.execute(lambda: slow(0))
    assert "replayed:" not in cli(journal_home, "show", once.run_id).stdout


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


# -- argument validation -------------------------------------------------------------------
def test_runs_validates_limit_and_status_naming_what_is_allowed(journal_home: Path,
                                                                finished_run: str):
    for args, words in [(["--limit", "-1"], "--limit: must be a whole number >= 1, got -1"),
                        (["--limit", "many"], "--limit: must be a whole number >= 1"),
                        (["--status", "bogus"], "invalid choice: 'bogus'")]:
        out = cli(journal_home, "runs", *args)
        assert out.returncode == 2 and words in out.stderr, out.stderr
        assert "usage: durable-nb runs" in out.stderr
    out = cli(journal_home, "runs", "--status", "bogus")
    assert all(s in out.stderr for s in ("cancelled", "completed", "failed", "interrupted",
                                         "running"))
    out = cli(journal_home, "runs", "--status", "completed", "--limit", "1", "--json")
    assert [r["run_id"] for r in json.loads(out.stdout)] == [finished_run]


# -- acting on runs: the sidebar's verbs ---------------------------------------------------
@pytest.fixture
def live_run(journal_home: Path) -> str:
    """A run that this (live) test process executes: started, never finished."""
    return open_run("live", source="x = 1\n").run_id


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("durable-nb: "), out.stderr
    return lines[0]


def test_cancel_marks_the_run_cancelled(journal_home: Path, live_run: str):
    out = cli(journal_home, "cancel", live_run, "--reason", "wrong grid")
    assert out.returncode == 0, out.stderr
    assert f"cancelled run {live_run} (it was running)" in out.stdout
    assert durable_nb.runs().set_index("run_id").loc[live_run, "error"] == "wrong grid"
    again = one_error_line(cli(journal_home, "cancel", live_run))
    assert "already cancelled" in again
    missing = one_error_line(cli(journal_home, "cancel", "nope-1"))
    assert "no run 'nope-1'" in missing and "`durable-nb runs`" in missing


def test_cancel_as_json(journal_home: Path, live_run: str):
    out = cli(journal_home, "cancel", live_run, "--json")
    assert json.loads(out.stdout) == {"run_id": live_run, "status": "cancelled",
                                      "previous_status": "running"}


def test_signal_records_a_json_value(journal_home: Path, live_run: str):
    out = cli(journal_home, "signal", live_run, "approve", '{"by": "ana"}', "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"run_id": live_run, "name": "approve",
                                      "value": {"by": "ana"}}
    assert "sent signal 'go' = null" in cli(journal_home, "signal", live_run, "go").stdout
    rows = durable_nb.sql("SELECT name, data_json FROM events WHERE kind = 'signal' "
                          "ORDER BY id")
    assert list(rows.name) == ["approve", "go"]
    assert json.loads(rows.data_json[0]) == {"by": "ana"}
    bad = cli(journal_home, "signal", live_run, "approve", "{not json")
    assert bad.returncode == 2 and "argument value: must be JSON" in bad.stderr
    assert "no run 'nope-1'" in one_error_line(cli(journal_home, "signal", "nope-1", "go"))


def test_signal_to_a_finished_run_is_refused(journal_home: Path, finished_run: str):
    line = one_error_line(cli(journal_home, "signal", finished_run, "go", "1"))
    assert f"run {finished_run} is completed; it takes no more signals" in line


def test_fork_copies_the_steps_before_n_and_says_how_to_resume(journal_home: Path,
                                                               finished_run: str):
    out = cli(journal_home, "fork", finished_run, "--at", "2")
    assert out.returncode == 0, out.stderr
    runs = durable_nb.runs()
    fork = next(r for r in runs.run_id if r != finished_run)
    assert f"forked run {finished_run} at step 2 as {fork} (2 steps copied)" in out.stdout
    assert f"%workflow resume {fork}" in out.stdout
    assert list(durable_nb.steps(fork).seq) == [0, 1]
    reply = json.loads(cli(journal_home, "fork", finished_run, "--at", "1", "--json").stdout)
    assert reply["parent_run_id"] == finished_run and reply["steps_copied"] == 1
    bad = cli(journal_home, "fork", finished_run, "--at", "-1")
    assert bad.returncode == 2 and "--at: must be a step number" in bad.stderr
    assert cli(journal_home, "fork", finished_run).returncode == 2  # --at is required
    assert "no run 'nope-1'" in one_error_line(cli(journal_home, "fork", "nope-1", "--at", "0"))


def test_delete_refuses_a_live_run_until_it_is_cancelled(journal_home: Path, live_run: str,
                                                         finished_run: str):
    busy = one_error_line(cli(journal_home, "delete", live_run))
    assert "being executed by a live process" in busy
    assert f"`durable-nb cancel {live_run}`" in busy
    assert cli(journal_home, "cancel", live_run).returncode == 0
    out = cli(journal_home, "delete", live_run)
    assert out.returncode == 0 and f"deleted run {live_run}" in out.stdout
    reply = json.loads(cli(journal_home, "delete", finished_run, "--json").stdout)
    assert reply["run_id"] == finished_run and reply["events_deleted"] > 0
    assert durable_nb.runs().empty
    assert "no run 'nope-1'" in one_error_line(cli(journal_home, "delete", "nope-1"))


def test_resume_prints_the_magic_and_the_notebook(journal_home: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "work/sweep.ipynb")
    run_id = open_run("sweep", source="x = 1\n").run_id
    out = cli(journal_home, "resume", run_id)
    assert out.returncode == 0, out.stderr
    assert f"%workflow resume {run_id}" in out.stdout
    assert "work/sweep.ipynb" in out.stdout
    data = json.loads(cli(journal_home, "resume", run_id, "--json").stdout)
    assert data == {"run_id": run_id, "workflow": "sweep", "status": "running",
                    "notebook": "work/sweep.ipynb", "magic": f"%workflow resume {run_id}"}
    # A fork made outside the notebook resumes with the cell of the run it came from.
    fork = json.loads(cli(journal_home, "fork", run_id, "--at", "0", "--json").stdout)["run_id"]
    assert f"%workflow resume {fork}" in cli(journal_home, "resume", fork).stdout
    assert cli(journal_home, "cancel", run_id).returncode == 0
    cancelled = one_error_line(cli(journal_home, "resume", run_id))
    assert "was cancelled and cannot be resumed" in cancelled
    assert f"durable-nb fork {run_id} --at N" in cancelled
    assert "no run 'nope-1'" in one_error_line(cli(journal_home, "resume", "nope-1"))


def test_resume_of_a_decorated_workflow_says_to_call_it_again(journal_home: Path):
    @durable_nb.activity
    def double(x: int) -> int:
        return 2 * x

    @durable_nb.workflow
    def doubling(n: int) -> list[int]:
        return [double(i) for i in range(n)]

    doubling(2)
    line = one_error_line(cli(journal_home, "resume", doubling.last_run.run_id))
    assert "call its @durable_nb.workflow function (doubling) again" in line
