"""Journal schema: one append-only ``events`` table, migrations, and the public views.

Everything is an event (run started / status changed, step started / completed / failed per
attempt, activity source recorded). The public views ``runs`` and ``steps`` are derived from
the events, so they never disagree with the record and need no updates in place.
``runs`` and ``steps`` are a public API: add columns, never rename or drop them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, TypedDict, get_args

import pyarrow as pa

SCHEMA_VERSION = 1

# Columns of an event, in table order. ``ts`` travels as epoch seconds (float) and
# ``data_pickle`` as base64 text; the store converts both on insert.
EVENT_COLUMNS: tuple[str, ...] = (
    "id", "eid", "ts", "run_id", "kind", "seq", "attempt", "name", "status", "args_hash",
    "code_hash", "data_json", "data_pickle", "preview", "error", "traceback", "meta",
)

ARROW_SCHEMA = pa.schema([
    ("id", pa.int64()), ("eid", pa.string()), ("ts", pa.float64()), ("run_id", pa.string()),
    ("kind", pa.string()), ("seq", pa.int32()), ("attempt", pa.int32()), ("name", pa.string()),
    ("status", pa.string()), ("args_hash", pa.string()), ("code_hash", pa.string()),
    ("data_json", pa.string()), ("data_pickle", pa.binary()), ("preview", pa.string()),
    ("error", pa.string()), ("traceback", pa.string()), ("meta", pa.string()),
])

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE events (
        id          BIGINT NOT NULL,
        eid         VARCHAR PRIMARY KEY,   -- client-made id: appends are idempotent
        ts          TIMESTAMPTZ NOT NULL,
        run_id      VARCHAR NOT NULL,
        kind        VARCHAR NOT NULL,      -- run_started, run_status, step_started,
                                           -- step_completed, step_failed, activity_code
        seq         INTEGER,
        attempt     INTEGER,
        name        VARCHAR,               -- workflow (run events) or activity (step events)
        status      VARCHAR,
        args_hash   VARCHAR,
        code_hash   VARCHAR,
        data_json   VARCHAR,               -- payload when JSON round-trips exactly
        data_pickle BLOB,                  -- else cloudpickle bytes; never read by the server
        preview     VARCHAR,
        error       VARCHAR,
        traceback   VARCHAR,
        meta        VARCHAR                -- JSON: notebook, source, pid, parent run, ...
    );
    """,
}

VIEWS = """
CREATE OR REPLACE VIEW runs AS
WITH started AS (
    SELECT run_id, name AS workflow, ts AS started_at, meta
    FROM events WHERE kind = 'run_started'
), last_status AS (
    SELECT run_id, arg_max(status, id) AS status, arg_max(ts, id) AS status_at,
           arg_max(error, id) AS error
    FROM events WHERE kind = 'run_status' GROUP BY run_id
), done AS (
    SELECT run_id, count(DISTINCT seq) AS steps_completed
    FROM events WHERE kind = 'step_completed' GROUP BY run_id
)
SELECT s.run_id,
       s.workflow,
       coalesce(l.status, 'running') AS status,
       s.started_at,
       CASE WHEN coalesce(l.status, 'running') <> 'running' THEN l.status_at END AS ended_at,
       json_extract_string(s.meta, '$.notebook') AS notebook,
       coalesce(d.steps_completed, 0)::BIGINT AS steps_completed,
       CASE WHEN l.status IN ('failed', 'interrupted', 'cancelled') THEN l.error END AS error
FROM started s LEFT JOIN last_status l USING (run_id) LEFT JOIN done d USING (run_id);

CREATE OR REPLACE VIEW steps AS
WITH agg AS (
    SELECT run_id, seq,
           arg_max(name, id) AS name,
           arg_max(kind, id) AS last_kind,
           arg_max(json_extract(meta, '$.final')::BOOLEAN, id) AS last_final,
           max(attempt) AS attempts,
           min(ts) FILTER (WHERE kind = 'step_started') AS first_start,
           arg_max(ts, id) AS last_at,
           arg_min(coalesce(data_json, to_json(preview)::VARCHAR), id)
               FILTER (WHERE kind = 'step_started') AS args,
           arg_max(coalesce(data_json, to_json(preview)::VARCHAR), id)
               FILTER (WHERE kind = 'step_completed') AS result,
           arg_max(error, id) FILTER (WHERE kind = 'step_failed') AS error
    FROM events
    WHERE kind IN ('step_started', 'step_completed', 'step_failed')
    GROUP BY run_id, seq
)
SELECT a.run_id,
       a.seq,
       a.name,
       CASE
           WHEN a.last_kind = 'step_completed' THEN 'completed'
           WHEN a.last_kind = 'step_failed' AND coalesce(a.last_final, true) THEN 'failed'
           WHEN a.last_kind = 'step_failed' THEN 'retrying'
           WHEN r.status = 'running' THEN 'running'
           ELSE 'abandoned'
       END AS status,
       a.attempts,
       coalesce(a.first_start, a.last_at) AS started_at,
       CASE WHEN a.last_kind <> 'step_started' THEN a.last_at END AS ended_at,
       CASE WHEN a.last_kind <> 'step_started'
            THEN epoch(a.last_at) - epoch(coalesce(a.first_start, a.last_at)) END AS duration_s,
       a.args::JSON AS args,
       a.result::JSON AS result,
       CASE WHEN a.last_kind = 'step_failed' THEN a.error END AS error
FROM agg a LEFT JOIN runs r USING (run_id);
"""

EventKind = Literal["run_started", "run_status", "step_started", "step_completed",
                    "step_failed", "activity_code", "signal"]
RunStatus = Literal["running", "completed", "failed", "interrupted", "cancelled"]
EVENT_KINDS: frozenset[str] = frozenset(get_args(EventKind))
RUN_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))


class Event(TypedDict, total=False):
    """One journal event as it crosses the wire (columns of ``events``; all optional but
    ``eid``, ``ts``, ``run_id`` and ``kind``, which ``check_event`` insists on)."""

    id: int
    eid: str
    ts: float
    run_id: str
    kind: EventKind
    seq: int | None
    attempt: int | None
    name: str | None
    status: RunStatus | None
    args_hash: str | None
    code_hash: str | None
    data_json: str | None
    data_pickle: str | None  # base64 on the wire; bytes in DuckDB
    preview: str | None
    error: str | None
    traceback: str | None
    meta: str | None  # JSON text
_INT_COLUMNS = ("id", "seq", "attempt")
_TEXT_COLUMNS = ("run_id", "name", "status", "args_hash", "code_hash", "data_json",
                 "data_pickle", "preview", "error", "traceback", "meta")


def check_event(event: object) -> None:
    """Refuse an event the journal could not load, before it is acknowledged.

    One malformed event accepted into a segment would fail the bulk load of every good
    event batched with it, so appends are checked up front and refused whole.
    """
    import json
    import math

    if not isinstance(event, dict):
        raise ValueError(f"an event must be a JSON object, got {type(event).__name__}")
    unknown = set(event) - set(EVENT_COLUMNS)
    if unknown:
        raise ValueError(f"unknown event fields {sorted(unknown)}")
    eid = event.get("eid")
    if not isinstance(eid, str) or not eid:
        raise ValueError("an event needs a non-empty string 'eid' (its idempotency id)")
    ts = event.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise ValueError(f"event {eid}: 'ts' must be epoch seconds, got {ts!r}")
    if event.get("kind") not in EVENT_KINDS:
        raise ValueError(f"event {eid}: unknown kind {event.get('kind')!r}")
    if not isinstance(event.get("run_id"), str):
        raise ValueError(f"event {eid}: 'run_id' must be a string")
    for column in _INT_COLUMNS:
        value = event.get(column)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"event {eid}: {column!r} must be an integer, got {value!r}")
    for column in _TEXT_COLUMNS:
        value = event.get(column)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"event {eid}: {column!r} must be a string, got {value!r}")
    if event["kind"] == "run_status" and event.get("status") not in RUN_STATUSES:
        raise ValueError(f"event {eid}: run status must be one of {sorted(RUN_STATUSES)}")
    if event.get("meta") is not None:
        try:
            json.loads(event["meta"])
        except ValueError:
            raise ValueError(f"event {eid}: 'meta' is not valid JSON") from None


def event(run_id: str, kind: EventKind, **fields: Any) -> Event:
    """A new journal event with a fresh idempotency id; ``meta`` may be given as a dict."""
    meta = fields.pop("meta", None)
    ev: dict[str, Any] = {"eid": uuid.uuid4().hex, "ts": time.time(), "run_id": run_id,
                          "kind": kind,
                          "meta": json.dumps(meta) if isinstance(meta, dict) else meta,
                          **fields}
    return ev  # type: ignore[return-value]
