"""Journal schema: one append-only ``events`` table, migrations, and the public views.

Everything is an event (run started / status changed, step started / completed / failed per
attempt, activity source recorded). The public views ``runs`` and ``steps`` are derived from
the events, so they never disagree with the record and need no updates in place.
``runs`` and ``steps`` are a public API: add columns, never rename or drop them.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
import uuid
from typing import Any, Literal, TypedDict, get_args

import pyarrow as pa

from durable_nb.journal.text import (
    json_unstorable_part,
    storable_json,
    storable_text,
    unstorable_part,
)

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
                                           -- step_completed, step_failed, activity_code,
                                           -- signal, run_input, step_heartbeat
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
), beats AS (
    SELECT run_id, seq,
           arg_max(coalesce(data_json, to_json(preview)::VARCHAR), id) AS heartbeat,
           arg_max(ts, id) AS heartbeat_at,
           count(*) AS heartbeats
    FROM events WHERE kind = 'step_heartbeat'
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
       CASE WHEN a.last_kind = 'step_failed' THEN a.error END AS error,
       b.heartbeat::JSON AS heartbeat,
       b.heartbeat_at,
       coalesce(b.heartbeats, 0)::BIGINT AS heartbeats
FROM agg a LEFT JOIN runs r USING (run_id) LEFT JOIN beats b USING (run_id, seq);
"""

EventKind = Literal["run_started", "run_status", "step_started", "step_completed",
                    "step_failed", "activity_code", "signal", "run_input",
                    "step_heartbeat"]
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
    meta: str | None  # JSON text; a payload stored as a blob: its reference (journal/blobs.py)

# Range of each integer column (its DuckDB type), and of ``ts`` (``to_timestamp`` refuses
# epoch seconds past ~9e12; 1e11 is the year 5138).
_INT_COLUMNS = {"id": 2**63, "seq": 2**31, "attempt": 2**31}
_MAX_TS = 1e11
_TEXT_COLUMNS = ("run_id", "name", "status", "args_hash", "code_hash", "data_json",
                 "data_pickle", "preview", "error", "traceback", "meta")
# Text only shown to people, which the builder escapes; the other text columns are ids,
# hashes and payloads, which must arrive storable (the codec makes payloads so).
_SHOWN_COLUMNS = ("name", "preview", "error", "traceback")
_JSON_COLUMNS = ("data_json", "meta")
_ESCAPE_HINT = ("Build events with durable_nb.journal.schema.event(), which escapes such "
                "text, or escape it first: text.encode('utf-8', 'backslashreplace').decode().")


def check_event(event: object) -> None:
    """Refuse an event the journal could not load, before it is acknowledged.

    One malformed event accepted into a segment would fail the bulk load of every good
    event batched with it, so appends are checked up front and refused whole. Text must
    encode as UTF-8 (Arrow and DuckDB refuse a lone surrogate) and JSON columns must be
    JSON that DuckDB's JSON type reads (the ``steps`` view casts payloads to JSON).
    """
    if not isinstance(event, dict):
        raise ValueError(f"an event must be a JSON object, got {type(event).__name__}")
    if not _COLUMN_SET.issuperset(event):
        raise ValueError(f"unknown event fields {sorted(set(event) - _COLUMN_SET)}")
    eid = event.get("eid")
    if not isinstance(eid, str) or not eid:
        raise ValueError("an event needs a non-empty string 'eid' (its idempotency id)")
    if (where := unstorable_part(eid)) is not None:
        raise ValueError(f"event '{storable_text(eid)}': its 'eid' holds {where}, which the "
                         f"journal cannot store. Use an ASCII id (e.g. uuid4().hex).")
    ts = event.get("ts")
    if (isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts)
            or abs(ts) >= _MAX_TS):
        raise ValueError(f"event {eid}: 'ts' must be epoch seconds, got {ts!r}")
    if event.get("kind") not in EVENT_KINDS:
        raise ValueError(f"event {eid}: unknown kind {event.get('kind')!r}")
    if not isinstance(event.get("run_id"), str):
        raise ValueError(f"event {eid}: 'run_id' must be a string")
    for column, bound in _INT_COLUMNS.items():
        value = event.get(column)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not -bound <= value < bound):
            raise ValueError(f"event {eid}: {column!r} must be an integer of at most "
                             f"{bound.bit_length()} bits, got {value!r}")
    for column in _TEXT_COLUMNS:
        value = event.get(column)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"event {eid}: {column!r} must be a string, got {value!r}")
        if (where := unstorable_part(value)) is not None:
            raise ValueError(
                f"event {eid} ({event['kind']}): {column!r} holds {where} (e.g. a byte of a "
                f"file name that is not UTF-8, as os.fsdecode() gives it), which the journal "
                f"cannot store: '{storable_text(value)[:80]}'. {_ESCAPE_HINT}")
    if event["kind"] == "run_status" and event.get("status") not in RUN_STATUSES:
        raise ValueError(f"event {eid}: run status must be one of {sorted(RUN_STATUSES)}")
    for column in _JSON_COLUMNS:
        text = event.get(column)
        if text is None or text in _valid_json:
            continue
        try:
            json.loads(text)
        except ValueError:
            raise ValueError(f"event {eid}: {column!r} is not valid JSON") from None
        if (where := json_unstorable_part(text)) is not None:
            raise ValueError(
                f"event {eid} ({event['kind']}): {column!r} is JSON holding {where}, which "
                f"DuckDB's JSON type refuses. Encode payloads with "
                f"durable_nb.journal.codec.encode() (it pickles such strings); escape text "
                f"with durable_nb.journal.text.storable_value() before json.dumps().")
        if len(text) <= _KEPT_JSON_CHARS:
            if len(_valid_json) >= _KEPT_JSON:
                _valid_json.clear()
            _valid_json.add(text)


# Short JSON texts found valid and storable, most of them metas every step repeats
# ('{"executor": "thread"}'): checked once, not at every event.
_valid_json: set[str] = set()
_KEPT_JSON, _KEPT_JSON_CHARS = 4096, 256
_COLUMN_SET = frozenset(EVENT_COLUMNS)


MAX_SIGNAL_NAME = 200


def check_signal_name(name: object) -> str:
    """A signal's name, or ValueError saying what a name must be (server and REST API)."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_SIGNAL_NAME:
        shown = "nothing" if name is None else json.dumps(name)[:100]
        raise ValueError(f"'name' must be a non-empty string of at most {MAX_SIGNAL_NAME} "
                         f"characters, got {shown}")
    if (where := unstorable_part(name)) is not None:
        raise ValueError(
            f"the signal name '{storable_text(name)}' holds {where} (e.g. a byte that is not "
            "UTF-8, as os.fsdecode() gives it), which the journal cannot store. Send the name "
            "as valid Unicode text (decode its bytes with their real encoding).")
    return name


def signal_json(value: Any) -> str:
    """A signal's value as the JSON text of its event, or ValueError if unstorable."""
    text = json.dumps(value)
    if (where := json_unstorable_part(text)) is not None:
        raise ValueError(f"the signal value holds {where}, which the journal cannot "
                         "store. Send text as valid Unicode.")
    return text


class _EventIds:
    """Idempotency ids: a random prefix per process and a counter, unique without asking
    the system for randomness per event (which, in a fan-out, hands the GIL over)."""

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.prefix = uuid.uuid4().hex[:20]
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_ids = _EventIds()
os.register_at_fork(after_in_child=_ids.renew)


def event(run_id: str, kind: EventKind, **fields: Any) -> Event:
    """A new journal event with a fresh idempotency id; ``meta`` may be given as a dict.

    Text that is only shown (name, preview, error, traceback, meta) is made storable here,
    so an error about an undecodable file name is recorded as ``caf\\xe9.csv`` instead of
    poisoning the journal. Ids, hashes and payloads are left exact (``check_event``).
    """
    meta = fields.pop("meta", None)
    if isinstance(meta, dict):
        meta = json.dumps(meta)
    if isinstance(meta, str):
        meta = storable_json(meta)
    for column in _SHOWN_COLUMNS:
        shown = fields.get(column)
        if isinstance(shown, str) and not shown.isascii():
            fields[column] = storable_text(shown)
    ev: dict[str, Any] = {"eid": _ids.next(), "ts": time.time(), "run_id": run_id,
                          "kind": kind, "meta": meta, **fields}
    return ev  # type: ignore[return-value]
