"""Journal schema: one append-only ``events`` table, migrations, and the public views.

Everything is an event (run started / status changed, step started / completed / failed per
attempt, activity source recorded). The public views ``runs`` and ``steps`` are derived from
the events, so they never disagree with the record and need no updates in place.
``runs`` and ``steps`` are a public API: add columns, never rename or drop them.
"""

from __future__ import annotations

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
