"""The journal reads behind the sidebar: SQL over the public views, rows made JSON-ready.

Every function here is blocking (it waits on the journal server); the handlers run them on
the extension's journal thread. Only JSON columns and text previews are read: pickled
payloads never leave the journal server.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from durable_nb.errors import RunNotFound
from durable_nb.journal.heartbeat import stored_heartbeat
from durable_nb.journal.savings import replay_savings
from durable_nb.server.client import JournalClient
from durable_nb.server.discovery import pid_alive

# Seconds a request may wait for the journal server before the answer is 503.
TIMEOUT = 60.0

# Seconds from start to end; null while the run is running (the sidebar ticks it live).
_RUN_COLUMNS = (
    "*, CASE WHEN ended_at IS NOT NULL THEN epoch(ended_at) - epoch(started_at) END "
    "AS duration_s"
)
EVENT_FIELDS = ("id", "kind", "seq", "attempt", "name", "status", "ts", "preview", "error")


@dataclass(frozen=True)
class RunFilter:
    """What ``GET runs`` asks for; the handler has validated every field."""

    statuses: tuple[str, ...] = ()
    workflow: str | None = None
    notebook: str | None = None
    text: str | None = None  # substring of the run id or the workflow, case-insensitive
    limit: int = 50
    offset: int = 0


def list_runs(client: JournalClient, where: RunFilter) -> dict[str, Any]:
    """One page of runs, newest first, and how many runs match in all."""
    clauses: list[str] = []
    params: list[Any] = []
    if where.statuses:
        clauses.append(f"status IN ({', '.join('?' * len(where.statuses))})")
        params.extend(where.statuses)
    if where.workflow:
        clauses.append("workflow = ?")
        params.append(where.workflow)
    if where.notebook:
        clauses.append("notebook = ?")
        params.append(where.notebook)
    if where.text:
        pattern = "%" + _escape_like(where.text) + "%"
        clauses.append("(run_id ILIKE ? ESCAPE '\\' OR workflow ILIKE ? ESCAPE '\\')")
        params.extend([pattern, pattern])
    condition = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    # The total rides along as a window count, so a page is one round trip; only a page
    # past the end (no rows to carry it) needs a second query.
    rows = client.query(
        f"SELECT {_RUN_COLUMNS}, count(*) OVER () AS total FROM runs {condition} "
        f"ORDER BY started_at DESC, run_id DESC LIMIT {int(where.limit)} "
        f"OFFSET {int(where.offset)}", params, timeout=TIMEOUT).to_pylist()
    if rows:
        total = int(rows[0]["total"])
    else:
        total = int(client.query(f"SELECT count(*) AS n FROM runs {condition}", params,
                                 timeout=TIMEOUT).to_pylist()[0]["n"])
    for row in rows:
        del row["total"]
    return {"runs": [json_row(r) for r in rows], "total": total}


def run_detail(client: JournalClient, run_id: str) -> dict[str, Any]:
    """The run and its steps; each step carries the traceback of its failure, if its last
    attempt failed (the same rule as the ``error`` column of ``steps``), ``attempt_s``,
    the duration of its last attempt (``duration_s`` counts from its first start, so it
    includes the time a dead kernel left it in flight), and ``heartbeat_progress``. The
    run carries ``executing`` (a live process executes it) and ``replayed_steps`` and
    ``saved_s`` (what its latest execution took from the journal: ``journal/savings.py``)."""
    run = client.query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", [run_id],
                       timeout=TIMEOUT).to_pylist()
    if not run:
        raise RunNotFound.in_journal(run_id, client.home)
    steps = client.query("""
        SELECT s.*, f.traceback,
               CASE WHEN a.last_kind <> 'step_started' THEN a.attempt_s END AS attempt_s
        FROM steps s LEFT JOIN (
            SELECT seq, arg_max(traceback, id) AS traceback
            FROM events
            WHERE run_id = ? AND kind IN ('step_started', 'step_completed', 'step_failed')
            GROUP BY seq
            HAVING arg_max(kind, id) = 'step_failed'
        ) f USING (seq) LEFT JOIN (
            SELECT seq, arg_max(kind, id) AS last_kind,
                   epoch(arg_max(ts, id)) - epoch(max(ts) FILTER (WHERE kind = 'step_started'))
                       AS attempt_s
            FROM events
            WHERE run_id = ? AND kind IN ('step_started', 'step_completed', 'step_failed')
            GROUP BY seq
        ) a USING (seq)
        WHERE s.run_id = ?
        ORDER BY s.seq
    """, [run_id, run_id, run_id], timeout=TIMEOUT).to_pylist()
    pid = client.query("""
        SELECT arg_max(json_extract(meta, '$.pid')::BIGINT, id) AS pid FROM events
        WHERE run_id = ? AND kind IN ('run_started', 'run_status')
          AND json_extract(meta, '$.pid') IS NOT NULL
    """, [run_id], timeout=TIMEOUT).to_pylist()[0]["pid"]
    row = {**json_row(run[0]), **replay_savings(client, run_id, TIMEOUT)}
    row["executing"] = row["status"] == "running" and bool(pid) and pid_alive(int(pid))
    return {"run": row, "steps": [_with_progress(json_row(s)) for s in steps]}


def _with_progress(step: dict[str, Any]) -> dict[str, Any]:
    """``heartbeat_progress``: what the latest heartbeat's details say of the step's
    progress (``{"done", "total", "unit"}``, ``journal/heartbeat.py``), else null."""
    progress = stored_heartbeat(step.get("heartbeat"))[1]
    step["heartbeat_progress"] = progress.as_json() if progress is not None else None
    return step


def run_events(client: JournalClient, run_id: str, since: int, limit: int) -> dict[str, Any]:
    """The run's events with id > ``since`` in id order, at most ``limit`` of them."""
    table = client.events_since(since, run_id=run_id, limit=limit)
    events = [json_row({k: row[k] for k in EVENT_FIELDS}) for row in table.to_pylist()]
    if not events and not client.query(
            "SELECT 1 FROM events WHERE run_id = ? AND kind = 'run_started' LIMIT 1",
            [run_id], timeout=TIMEOUT).num_rows:
        raise RunNotFound.in_journal(run_id, client.home)
    return {"events": events, "last_id": events[-1]["id"] if events else since}


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    """Timestamps as ISO 8601 strings in UTC, NaN and infinities as null."""
    return {key: _json_value(value) for key, value in row.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
