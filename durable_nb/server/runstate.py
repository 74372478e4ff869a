"""What the journal server knows of every run, folded from the events it accepts.

The server decides some requests from run state alone: which ``<workflow>-<n>`` a new run
gets, whether a resent ``create_run`` was already recorded, who executes a run, whether a
run is over. ``RunTable`` keeps that state and is folded from the events in the order the
server accepts them, starting from what DuckDB holds. It knows nothing of sockets or files,
so the rules can be tested without a server process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from durable_nb.journal.schema import Event
from durable_nb.journal.store import JournalStore
from durable_nb.server.discovery import pid_alive

# Each run's workflow, latest status, the pid that last claimed it and its start event id.
_RUNS_SQL = """
    SELECT r.run_id, r.workflow, r.status, o.pid, s.eid
    FROM runs r
    LEFT JOIN (SELECT run_id, arg_max(json_extract(meta, '$.pid')::BIGINT, id) AS pid
               FROM events WHERE kind IN ('run_started', 'run_status')
                 AND json_extract(meta, '$.pid') IS NOT NULL GROUP BY run_id) o
      USING (run_id)
    JOIN events s ON s.run_id = r.run_id AND s.kind = 'run_started'
"""


@dataclass
class RunState:
    workflow: str
    status: str
    owner_pid: int | None

    @property
    def over(self) -> bool:
        """Completed or cancelled: it takes no more work, cancels or signals."""
        return self.status in ("completed", "cancelled")

    def owner_alive(self) -> bool:
        """A live process is executing the run."""
        return self.status == "running" and bool(self.owner_pid) and pid_alive(
            int(self.owner_pid or 0))


class RunTable:
    """Every run of the journal: its state, the ids of start events, the id counters."""

    def __init__(self) -> None:
        self.runs: dict[str, RunState] = {}
        self._counters: dict[str, int] = {}
        self._started_eids: dict[str, str] = {}  # eid of a run_started event -> run id

    @classmethod
    def from_store(cls, store: JournalStore) -> RunTable:
        table = cls()
        for row in store.query(_RUNS_SQL).to_pylist():
            table._start(row["run_id"], row["workflow"], row["eid"])
            table.runs[row["run_id"]] = RunState(row["workflow"], row["status"], row["pid"])
        return table

    def get(self, run_id: object) -> RunState | None:
        return self.runs.get(run_id) if isinstance(run_id, str) else None

    def run_started_by(self, eid: str) -> str | None:
        """The run a ``run_started`` event of this id created (a resent request)."""
        return self._started_eids.get(eid)

    def next_run_id(self, workflow: str, wanted: str | None = None) -> str:
        """``wanted`` when free, else the next free ``<workflow>-<n>``."""
        if wanted and wanted not in self.runs:
            return wanted
        n = self._counters.get(workflow, 0) + 1
        while f"{workflow}-{n}" in self.runs:
            n += 1
        return f"{workflow}-{n}"

    def apply(self, ev: Event) -> None:
        """Fold one accepted event into the state."""
        kind, run_id = ev["kind"], ev["run_id"]
        if kind == "run_started":
            self._start(run_id, str(ev.get("name")), ev["eid"])
            self.runs[run_id] = RunState(str(ev.get("name")), "running", _pid(ev))
        elif kind == "run_status" and run_id in self.runs:
            state = self.runs[run_id]
            state.status = str(ev.get("status"))
            if state.status == "running":
                state.owner_pid = _pid(ev)

    def remove(self, run_id: str) -> None:
        del self.runs[run_id]
        self._started_eids = {e: r for e, r in self._started_eids.items() if r != run_id}

    def orphaned(self) -> Iterator[tuple[str, RunState]]:
        """Runs marked running whose executing process has exited."""
        for run_id, state in self.runs.items():
            if state.status == "running" and state.owner_pid and not pid_alive(state.owner_pid):
                yield run_id, state

    def active(self) -> list[str]:
        return sorted(r for r, s in self.runs.items() if s.status == "running")

    def _start(self, run_id: str, workflow: str, eid: str) -> None:
        self._started_eids[eid] = run_id
        m = re.fullmatch(re.escape(workflow) + r"-(\d+)", run_id)
        if m:
            self._counters[workflow] = max(self._counters.get(workflow, 0), int(m[1]))


def _pid(ev: Event) -> int | None:
    """The process an event's meta names as executing its run."""
    meta = json.loads(ev.get("meta") or "{}")
    pid = meta.get("pid") if isinstance(meta, dict) else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None
