"""What a live view shows of a run: its status and one row per step, folded from events.

Fed either by the engine's events while the run executes in this process, or by the
journal's events for any run (``from_journal``), so a view after a kernel restart starts
from the same state. Pure data: the kernel layer renders it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from durable_nb.journal.heartbeat import HeartbeatProgress, heartbeat_progress, stored_heartbeat
from durable_nb.server.client import JournalClient

# Badges a run can show; "retrying" and "waiting" are derived from its steps.
RUN_STATUSES = ("running", "retrying", "waiting", "completed", "failed", "interrupted",
                "cancelled", "cancelling")


@dataclass
class StepView:
    seq: int
    name: str
    status: str = "running"  # running | retrying | completed | failed | abandoned
    attempts: int = 1
    args: str | None = None
    result: str | None = None
    error: str | None = None
    traceback: str | None = None
    started: float | None = None  # epoch seconds, of the first attempt
    ended: float | None = None
    replayed: bool = False
    attempt_started: float | None = None  # of the latest attempt
    heartbeat: str | None = None  # preview of the latest heartbeat's details
    heartbeat_at: float | None = None
    heartbeats: int = 0
    progress: HeartbeatProgress | None = None  # what the latest heartbeat says of it
    # Its attempt's heartbeats reach only the journal (a Dask worker records them): a view
    # of it reads them there (``follow_heartbeats``).
    beats_in_journal: bool = False

    @property
    def duration(self) -> float | None:
        """From the first attempt's start to the end (with any dead kernel's wait)."""
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)

    @property
    def attempt_duration(self) -> float | None:
        """The latest attempt alone: the run time the step cost."""
        start = self.attempt_started if self.attempt_started is not None else self.started
        if start is None or self.ended is None:
            return None
        return max(0.0, self.ended - start)


@dataclass
class RunProgress:
    """A run as a view shows it. ``version`` grows with every change (for throttling)."""

    run_id: str
    workflow: str
    status: str = "running"
    started: float = field(default_factory=time.time)
    ended: float | None = None
    error: str | None = None
    total: int | None = None
    forked_from: str | None = None
    steps: dict[int, StepView] = field(default_factory=dict)
    version: int = 0
    last_event_id: int = 0  # of the journal events folded in (see ``follow``)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def saved(self) -> float:
        """Recorded run time of the replayed steps: what durability saved this execution."""
        with self._lock:
            return sum(s.attempt_duration or 0.0 for s in self.steps.values() if s.replayed)

    # -- folding events ----------------------------------------------------------------------
    def apply(self, ev: dict[str, Any]) -> None:
        """Fold one engine event (or a journal event turned into one) into the state."""
        with self._lock:
            self._apply(ev)
            self.version += 1

    def _apply(self, ev: dict[str, Any]) -> None:
        kind = ev["kind"]
        if kind == "run_status":
            self.status = ev["status"]
            if ev.get("error"):
                self.error = ev["error"]
            if self.status not in ("running", "cancelling"):
                self.ended = ev.get("ts") or time.time()
                for step in self.steps.values():
                    if step.status == "running":
                        step.status = "abandoned"
            return
        if kind == "total":
            self.total = ev["total"]
            return
        if kind == "run_forked":
            self.forked_from, self.run_id = ev["from"], ev["run_id"]
            return
        seq = ev["seq"]
        if seq not in self.steps:
            self.steps[seq] = StepView(seq=seq, name=ev["name"])
        step = self.steps[seq]
        step.attempts = max(step.attempts, ev.get("attempt") or 1)
        ts = ev.get("ts")
        if kind == "step_started":
            step.status = "running"
            step.args = ev.get("args") if step.args is None else step.args
            step.started = step.started if step.started is not None else ts
            step.attempt_started, step.ended = ts, None
            step.beats_in_journal = bool(ev.get("beats_in_journal"))
        elif kind == "step_heartbeat":
            step.heartbeat, step.progress = ev.get("details"), ev.get("progress")
            step.heartbeat_at = ts
            step.heartbeats = ev["count"] if "count" in ev else step.heartbeats + 1
        elif kind == "step_completed":
            step.status, step.result, step.ended = "completed", ev.get("result"), ts
        elif kind == "step_failed":
            final = ev.get("final", True)
            step.status = "failed" if final else "retrying"
            step.error, step.traceback = ev.get("error"), ev.get("traceback")
            step.ended = ts if final else None
        elif kind == "step_replayed":
            step.status, step.replayed = "completed", True
            step.args, step.result = ev.get("args"), ev.get("result")
            step.started, step.ended = ev.get("started"), ev.get("ended")
            step.attempt_started = ev.get("attempt_started")

    # -- reading -----------------------------------------------------------------------------
    @property
    def badge(self) -> str:
        """The status to show: a running run whose step waits for a retry is "retrying"."""
        if self.status == "running" and any(s.status == "retrying" for s in self.steps.values()):
            return "retrying"
        return self.status

    def counts(self) -> dict[str, int]:
        out = {"completed": 0, "failed": 0, "running": 0, "replayed": 0, "retrying": 0,
               "abandoned": 0}
        for step in self.steps.values():
            out[step.status] = out.get(step.status, 0) + 1
            out["replayed"] += step.replayed
        return out

    def elapsed(self, now: float | None = None) -> float:
        return max(0.0, (self.ended or now or time.time()) - self.started)

    def snapshot(self) -> tuple[int, list[StepView]]:
        """A consistent copy of the steps, in step order, with the version it belongs to."""
        with self._lock:
            return self.version, sorted((StepView(**vars(s)) for s in self.steps.values()),
                                        key=lambda s: s.seq)

    # -- building from the journal -----------------------------------------------------------
    @classmethod
    def from_journal(cls, client: JournalClient, run_id: str) -> RunProgress:
        """The state of any run in the journal, as a view of it would have folded it."""
        from durable_nb.engine.identity import find_run

        run = find_run(client, run_id, "workflow, status, epoch(started_at) AS started, "
                                       "epoch(ended_at) AS ended, error")
        progress = cls(run_id=run_id, workflow=run["workflow"], started=run["started"])
        rows = client.query(
            "SELECT id, kind, seq, attempt, name, status, preview, error, traceback, meta, "
            "data_json, epoch(ts) AS ts FROM events WHERE run_id = ? AND kind LIKE 'step_%' "
            "ORDER BY id",
            [run_id]).to_pylist()
        for row in rows:
            progress.apply(journal_event(row))
        progress.apply({"kind": "run_status", "status": run["status"], "error": run["error"],
                        "ts": run["ended"]})
        if run["status"] == "running":
            progress.ended = None
        progress.last_event_id = max((r["id"] for r in rows), default=0)
        return progress

    def follow(self, client: JournalClient) -> bool:
        """Fold what the journal recorded since the last look; False once the run ended."""
        rows = client.events_since(self.last_event_id, run_id=self.run_id).to_pylist()
        for row in rows:
            self.last_event_id = max(self.last_event_id, row["id"])
            if row["kind"] in ("run_status",) or row["kind"].startswith("step_"):
                row["ts"] = row["ts"].timestamp() if hasattr(row["ts"], "timestamp") else row["ts"]
                self.apply(journal_event(row))
        return self.status in ("running", "cancelling")

    def follow_heartbeats(self, client: JournalClient) -> bool:
        """Fold the latest heartbeat of each running step whose heartbeats reach only the
        journal (the ``steps`` view's); True when one changed. The engine's events carry
        every other heartbeat."""
        with self._lock:
            seqs = [s.seq for s in self.steps.values()
                    if s.status == "running" and s.beats_in_journal]
        if not seqs:
            return False
        rows = client.query(
            "SELECT seq, heartbeat, epoch(heartbeat_at) AS at, heartbeats FROM steps "
            "WHERE run_id = ? AND heartbeats > 0 AND list_contains(?::INTEGER[], seq)",
            [self.run_id, seqs]).to_pylist()
        changed = False
        for row in rows:
            with self._lock:
                step = self.steps.get(row["seq"])
                if step is None or (step.heartbeat_at, step.heartbeats) == (row["at"],
                                                                             row["heartbeats"]):
                    continue
                details, progress = stored_heartbeat(row["heartbeat"])
                self._apply({"kind": "step_heartbeat", "seq": step.seq, "name": step.name,
                             "details": details, "progress": progress, "ts": row["at"],
                             "count": row["heartbeats"]})
                self.version += 1
            changed = True
        return changed


def journal_event(row: dict[str, Any]) -> dict[str, Any]:
    """A journal ``events`` row as the engine event it recorded."""
    import json

    ev: dict[str, Any] = {"kind": row["kind"], "seq": row.get("seq"), "name": row["name"],
                          "attempt": row.get("attempt"), "ts": row["ts"]}
    if row["kind"] == "run_status":
        ev.update(status=row["status"], error=row.get("error"))
    elif row["kind"] == "step_started":
        ev["args"] = row["preview"]
    elif row["kind"] == "step_completed":
        ev["result"] = row["preview"]
    elif row["kind"] == "step_failed":
        meta = json.loads(row["meta"]) if row["meta"] else {}
        ev.update(error=row["error"], traceback=row["traceback"],
                  final=bool(meta.get("final", True)))
    elif row["kind"] == "step_heartbeat":
        data = row.get("data_json")
        ev.update(details=row["preview"],
                  progress=heartbeat_progress(json.loads(data)) if data else None)
    return ev


def assign_lanes(steps: list[StepView], now: float) -> list[int]:
    """One timeline row per concurrent lane: each step, in order of its start, takes the
    first lane that is free by then. Returns the lane of each step, in the given order."""
    def span(step: StepView) -> tuple[float, float]:
        start = step.started if step.started is not None else now
        return start, step.ended if step.ended is not None else max(start, now)

    lane_ends: list[float] = []
    lanes = [0] * len(steps)
    for i in sorted(range(len(steps)), key=lambda i: span(steps[i])[0]):
        start, end = span(steps[i])
        for lane, free_at in enumerate(lane_ends):
            if free_at <= start:
                lane_ends[lane], lanes[i] = end, lane
                break
        else:
            lane_ends.append(end)
            lanes[i] = len(lane_ends) - 1
    return lanes
