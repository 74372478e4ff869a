"""The terminal's line for one ``%%workflow`` cell that ``durable-nb run`` executes: its
run's steps as the journal's ``runs`` and ``steps`` views show them, while the cell runs."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from durable_nb.journal.heartbeat import stored_heartbeat
from durable_nb.journal.text import shortened
from durable_nb.server.client import JournalClient

POLL_EVERY = 0.5  # seconds between looks at the journal
BAR_WIDTH = 10
HEARTBEAT_CHARS = 40


@dataclass
class RunLine:
    """A workflow run as its progress line shows it, read from the ``runs`` and ``steps``
    views. ``replayed`` counts steps completed before this execution of its cell began."""

    run_id: str
    status: str
    completed: int
    replayed: int
    recorded: int  # steps the journal holds a record of
    live: int  # steps running or waiting for a retry
    live_seq: int | None
    live_name: str | None
    live_attempt: int | None
    elapsed: float
    live_heartbeat: str | None = None  # the live step's latest heartbeat (``steps`` view)

    def render(self) -> str:
        """While it runs: ``sweep-1  8 steps completed (6 replayed)  step 8 train() running
        epoch 3/10  3.1 s`` (with what the step's latest heartbeat says); once it ended:
        ``sweep-1  ██████████ 12/12 steps (6 replayed)  completed in
        4.2 s``. Only then is the total known (a workflow is ordinary Python: the journal
        learns of its steps as it calls them), so only then is there a bar."""
        done = f"{self.completed} step{'s' if self.completed != 1 else ''}"
        if self.status == "running":
            parts = [f"{self.run_id}  {done} completed ({self.replayed} replayed)"]
            if self.live == 1:
                again = f" (attempt {self.live_attempt})" if (self.live_attempt or 1) > 1 else ""
                parts.append(f"step {self.live_seq} {self.live_name}() running{again}")
                if (beat := self._heartbeat()) is not None:
                    parts.append(beat)
            elif self.live:
                parts.append(f"{self.live} steps running")
            parts.append(f"{self.elapsed:.1f} s")
            return "  ".join(parts)
        total = max(self.recorded, 1)
        filled = round(BAR_WIDTH * self.completed / total)
        bar = "█" * filled + "░" * (BAR_WIDTH - filled)
        return (f"{self.run_id}  {bar} {self.completed}/{self.recorded} steps "
                f"({self.replayed} replayed)  {self.status} in {self.elapsed:.1f} s")

    def _heartbeat(self) -> str | None:
        """``epoch 3/10`` when the heartbeat states progress, else its details, cut short."""
        details, progress = stored_heartbeat(self.live_heartbeat)
        if progress is not None:
            return progress.text
        if details is None:
            return None
        return shortened(details, HEARTBEAT_CHARS)


class WorkflowProgress:
    """The progress line of one ``%%workflow`` cell while it runs, read from the journal on
    a thread of its own: redrawn in place on a terminal, plain lines otherwise (one when
    the cell's run appears, then as steps complete, at most one a second, and its final
    state when the cell ends)."""

    def __init__(self, client: JournalClient, workflow: str, run_id: str | None,
                 out: TextIO | None, tty: bool) -> None:
        self.client, self.workflow, self.run_id = client, workflow, run_id
        self.out, self.tty = out, tty
        self.since = time.time()
        self.last: RunLine | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="durable-nb-progress",
                                        daemon=True)
        self._printed: tuple[Any, ...] | None = None
        self._printed_at = 0.0

    def start(self) -> WorkflowProgress:
        self._thread.start()
        return self

    def stop(self) -> RunLine | None:
        """Stop watching; the final line of the run (its state after the cell)."""
        self._stop.set()
        self._thread.join()
        line = self._look(final=True)
        if line is not None and self.out is not None:
            self._write(line.render(), final=True)
        elif self.tty and self._printed is not None and self.out is not None:
            self.out.write("\n")
        return line

    def _loop(self) -> None:
        while not self._stop.wait(POLL_EVERY):
            line = self._look(final=False)
            if line is None or self.out is None or line.status != "running":
                continue  # the line of an ended run is written once, by ``stop``
            key = (line.run_id, line.status, line.completed, line.live_seq, line.live_attempt)
            changed = key != self._printed and (
                key[0] != (self._printed or (None,))[0]
                or time.monotonic() - self._printed_at >= 1.0)
            if self.tty or changed:
                self._write(line.render(), final=False)
                self._printed, self._printed_at = key, time.monotonic()

    def _write(self, text: str, final: bool) -> None:
        assert self.out is not None
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            self.out.write(f"\r{text[:width]}\x1b[K" + ("\n" if final else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def _look(self, final: bool) -> RunLine | None:
        """The run the cell executes: ``--id``'s, else the workflow's latest. While the cell
        runs, an older run that it has not touched (yet) is not shown."""
        try:
            if self.run_id is not None:
                rows = self.client.query(
                    "SELECT run_id, status, epoch(ended_at) AS ended FROM runs "
                    "WHERE run_id = ?", [self.run_id]).to_pylist()
            else:
                rows = self.client.query(
                    "SELECT run_id, status, epoch(ended_at) AS ended FROM runs "
                    "WHERE workflow = ? ORDER BY started_at DESC LIMIT 1",
                    [self.workflow]).to_pylist()
            if not rows:
                return None
            run = rows[0]
            if not final and run["status"] != "running" and (run["ended"] or 0) < self.since:
                return None
            steps = self.client.query(
                "SELECT count(*) FILTER (WHERE status = 'completed') AS completed, "
                "count(*) FILTER (WHERE status = 'completed' AND epoch(ended_at) < ?) "
                "AS replayed, count(*) AS recorded, "
                "count(*) FILTER (WHERE status IN ('running', 'retrying')) AS live, "
                "min(seq) FILTER (WHERE status IN ('running', 'retrying')) AS live_seq, "
                "arg_min(name, seq) FILTER (WHERE status IN ('running', 'retrying')) "
                "AS live_name, "
                "arg_min(attempts, seq) FILTER (WHERE status IN ('running', 'retrying')) "
                "AS live_attempt, "
                "arg_min(heartbeat, seq) FILTER (WHERE status = 'running') AS live_heartbeat "
                "FROM steps WHERE run_id = ?", [self.since, run["run_id"]]).to_pylist()[0]
        except Exception:  # the line is a courtesy: the notebook runs on without it
            return self.last
        self.last = RunLine(run_id=run["run_id"], status=run["status"],
                            elapsed=time.time() - self.since,
                            **{k: steps[k] for k in ("completed", "replayed", "recorded",
                                                     "live", "live_seq", "live_name",
                                                     "live_attempt", "live_heartbeat")})
        return self.last


def failed_step(client: JournalClient, run_id: str) -> dict[str, Any] | None:
    """The step that failed ``run_id`` (seq, name, attempts, error), if one did."""
    rows = client.query(
        "SELECT seq, name, attempts, error FROM steps WHERE run_id = ? AND status = 'failed' "
        "ORDER BY seq LIMIT 1", [run_id]).to_pylist()
    return rows[0] if rows else None
