"""What the journal holds of a run, folded into one record per step, and how to write events."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from durable_nb.journal.blobs import BlobRef
from durable_nb.journal.codec import decode
from durable_nb.server.client import JournalClient


@dataclass
class StepRecord:
    """The journal's account of one step (all attempts).

    Payloads stored as blobs are held as references (``*_blob``) and read only when the
    value is asked for (``result()``, ``heartbeat()``): folding and listing steps never do.
    """

    seq: int
    name: str
    args_hash: str | None = None
    args_preview: str | None = None
    args_json: str | None = None  # the recorded arguments, when plain JSON
    result_preview: str | None = None
    started_ts: float | None = None  # first attempt's start
    ended_ts: float | None = None
    attempt_started_ts: float | None = None  # the latest attempt's start
    attempts: int = 0
    status: str = "started"  # started (abandoned if no one runs it) | completed | failed
    result_json: str | None = None
    result_pickle: bytes | None = None
    result_blob: BlobRef | None = None
    error: str | None = None
    traceback: str | None = None
    exception_pickle: bytes | None = None
    final: bool = True
    started_meta: dict[str, Any] | None = None  # the latest attempt's (executor, task)
    heartbeat_json: str | None = None  # the latest heartbeat's details
    heartbeat_pickle: bytes | None = None
    heartbeat_blob: BlobRef | None = None

    @property
    def executor(self) -> str:
        return str((self.started_meta or {}).get("executor") or "thread")

    def heartbeat(self, home: Path | None = None) -> Any:
        """The details of the step's latest recorded heartbeat (None if it sent none)."""
        return decode(self.heartbeat_json, self.heartbeat_pickle, self.heartbeat_blob,
                      home=home, what=f"the latest heartbeat of step {self.seq} ({self.name}())")

    @property
    def attempt_s(self) -> float | None:
        """How long the attempt that ended the step took (without a dead kernel's wait)."""
        if self.attempt_started_ts is None or self.ended_ts is None:
            return None
        return max(0.0, self.ended_ts - self.attempt_started_ts)

    def result(self, home: Path | None = None, *, what: str | None = None,
               remedy: str | None = None) -> Any:
        """The recorded result (a blob is read now, from ``home``'s blob store)."""
        return decode(self.result_json, self.result_pickle, self.result_blob, home=home,
                      what=what or f"the result of step {self.seq} ({self.name}())",
                      remedy=remedy)

    def recorded_exception(self) -> BaseException | None:
        if self.exception_pickle is None:
            return None
        try:
            exc = decode(None, self.exception_pickle)
        except Exception:
            return None
        return exc if isinstance(exc, BaseException) else None


STEP_EVENTS_SQL = """
    SELECT eid, seq, attempt, kind, name, args_hash, code_hash, data_json, data_pickle,
           preview, error, traceback, meta, epoch(ts) AS ts
    FROM events
    WHERE run_id = ? AND kind IN ('step_started', 'step_completed', 'step_failed',
                                  'activity_code', 'run_input', 'step_heartbeat'){}
    ORDER BY id
"""


def load_step_events(client: JournalClient, run_id: str,
                     seq: int | None = None) -> list[dict[str, Any]]:
    """The events the engine folds into step records: the run's, or one step's."""
    if seq is None:
        return client.query(STEP_EVENTS_SQL.format(""), [run_id]).to_pylist()
    return client.query(STEP_EVENTS_SQL.format(" AND seq = ?"), [run_id, seq]).to_pylist()


def recorded_step(client: JournalClient, run_id: str, seq: int) -> StepRecord | None:
    """Step ``seq`` of the run as the journal has it now (None: nothing recorded)."""
    return fold_steps(load_step_events(client, run_id, seq)).get(seq)


def fold_steps(rows: list[dict[str, Any]]) -> dict[int, StepRecord]:
    steps: dict[int, StepRecord] = {}
    for row in rows:
        if row["seq"] is None:
            continue
        rec = steps.get(row["seq"])
        if rec is None:
            rec = steps[row["seq"]] = StepRecord(seq=row["seq"], name=row["name"])
        rec.attempts = max(rec.attempts, row["attempt"] or 0)
        kind = row["kind"]
        if kind == "step_started":
            if rec.args_hash is None:
                rec.args_hash = row["args_hash"]
                rec.args_preview, rec.args_json = row["preview"], row["data_json"]
                rec.started_ts = row["ts"]
            if rec.status != "completed":
                rec.status = "started"
                rec.attempt_started_ts = row["ts"]
                rec.started_meta = json.loads(row["meta"]) if row["meta"] else None
        elif kind == "step_heartbeat":
            rec.heartbeat_json, rec.heartbeat_pickle = row["data_json"], row["data_pickle"]
            rec.heartbeat_blob = BlobRef.from_meta(row["meta"])
        elif kind == "step_completed":
            rec.status = "completed"
            rec.result_json, rec.result_pickle = row["data_json"], row["data_pickle"]
            rec.result_blob = BlobRef.from_meta(row["meta"])
            rec.result_preview, rec.ended_ts = row["preview"], row["ts"]
        elif kind == "step_failed" and rec.status != "completed":
            meta = json.loads(row["meta"]) if row["meta"] else {}
            rec.status = "failed"
            rec.final = bool(meta.get("final", True))
            rec.error, rec.traceback = row["error"], row["traceback"]
            rec.exception_pickle = row["data_pickle"]
            rec.ended_ts = row["ts"]
    return steps


def steps_before(seq: int) -> str:
    """"steps 0–11", "step 0" or "no steps": the prefix a fork at ``seq`` keeps."""
    return "no steps" if seq <= 0 else "step 0" if seq == 1 else f"steps 0–{seq - 1}"


def process_meta() -> dict[str, Any]:
    """Who executes a run: the server marks the run interrupted when this pid exits."""
    meta: dict[str, Any] = {"pid": os.getpid()}
    notebook = os.environ.get("JPY_SESSION_NAME")
    if notebook:
        meta["notebook"] = notebook
    return meta
