"""The journal server process: owns the DuckDB file, group-commits appends, answers queries.

Writes arrive over one ROUTER socket. Each pass of the loop drains every message that has
arrived, appends the batch to the write-ahead segment with a single fdatasync, then
acknowledges: that is the moment an event is durable. Appends nobody waits for (``noreply``)
ride along with the next sync, at most ``LINGER`` seconds later. Full segments are loaded into
DuckDB in bulk by a background thread every ``FLUSH_INTERVAL`` seconds, and before any read,
so queries see every acknowledged event while the loop keeps acknowledging. The server also
notices runs whose process died (marks them interrupted) and exits after an idle time with
no clients and no live runs.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from durable_nb.errors import DurableError, RunBusy, RunFinished, RunNotFound
from durable_nb.journal import schema
from durable_nb.journal.home import (
    DB_FILE,
    SEGMENT_FILE,
    SERVER_FILE,
    ipc_endpoint,
    journal_home,
)
from durable_nb.journal.schema import EVENT_COLUMNS, check_event, event
from durable_nb.journal.segment import Segment
from durable_nb.journal.store import JournalStore
from durable_nb.server import protocol
from durable_nb.server.discovery import (
    ERROR_FILE,
    pid_alive,
    read_server_info,
    write_server_info,
)

log = logging.getLogger("durable_nb.server")

FLUSH_INTERVAL = 0.05  # seconds an acknowledged event may wait before it is in DuckDB
LINGER = 0.005  # seconds a no-reply append may wait for a sync to share
FLUSH_MAX_EVENTS = 20_000
HOUSEKEEPING_INTERVAL = 1.0
DEFAULT_IDLE_TIMEOUT = 900.0


@dataclass
class RunState:
    workflow: str
    status: str
    owner_pid: int | None


class JournalServer:
    def __init__(self, home: Path, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self.home = home
        self.idle_timeout = idle_timeout
        self.store = JournalStore(home / DB_FILE)
        leftovers = sorted((p for p in home.glob(f"{SEGMENT_FILE}*")
                            if _segment_number(p) is not None), key=_segment_number)
        for path in leftovers:  # events acknowledged before a crash or a stop
            self.store.load_segment(path)
        self.store.checkpoint()
        for path in leftovers:
            path.unlink()
        self.segment_number = (_segment_number(leftovers[-1]) or 0) + 1 if leftovers else 1
        self.segment = Segment(self._segment_path())
        self.next_id = self.store.max_id() + 1
        self.pending: list[dict[str, Any]] = []  # durable in the segment, not yet in DuckDB
        self.pending_since = 0.0
        self.staged: list[list[dict[str, Any]]] = []  # accepted, not yet synced
        self.staged_since = 0.0
        self.replies: list[tuple[bytes, dict[str, Any]]] = []
        self.loader: threading.Thread | None = None
        self.loader_error: BaseException | None = None
        self.runs: dict[str, RunState] = {}
        self.run_counters: dict[str, int] = {}
        self.started_eids: dict[str, str] = {}
        self.clients: dict[str, int] = {}  # connection token -> its process id
        self.last_message = time.monotonic()
        self.started_at = time.time()
        self.stopping = False
        self._load_state()

    # -- state ---------------------------------------------------------------------------
    def _load_state(self) -> None:
        rows = self.store.query("""
            SELECT r.run_id, r.workflow, r.status, o.pid, s.eid
            FROM runs r
            LEFT JOIN (SELECT run_id, arg_max(json_extract(meta, '$.pid')::BIGINT, id) AS pid
                       FROM events WHERE kind IN ('run_started', 'run_status')
                         AND json_extract(meta, '$.pid') IS NOT NULL GROUP BY run_id) o
              USING (run_id)
            JOIN events s ON s.run_id = r.run_id AND s.kind = 'run_started'
        """).to_pylist()
        for row in rows:
            self.runs[row["run_id"]] = RunState(row["workflow"], row["status"], row["pid"])
            self.started_eids[row["eid"]] = row["run_id"]
            self._count_run_id(row["workflow"], row["run_id"])

    def _count_run_id(self, workflow: str, run_id: str) -> None:
        m = re.fullmatch(re.escape(workflow) + r"-(\d+)", run_id)
        if m:
            self.run_counters[workflow] = max(self.run_counters.get(workflow, 0), int(m[1]))

    def _apply(self, ev: dict[str, Any]) -> None:
        kind, run_id = ev["kind"], ev["run_id"]
        meta = json.loads(ev["meta"]) if ev.get("meta") else {}
        if kind == "run_started":
            self.runs[run_id] = RunState(ev["name"], "running", meta.get("pid"))
            self.started_eids[ev["eid"]] = run_id
            self._count_run_id(ev["name"], run_id)
        elif kind == "run_status" and run_id in self.runs:
            state = self.runs[run_id]
            state.status = ev["status"]
            if ev["status"] == "running":
                state.owner_pid = meta.get("pid")

    def _stage(self, events: list[dict[str, Any]]) -> list[int]:
        ids = []
        for ev in events:
            for column in EVENT_COLUMNS:
                ev.setdefault(column, None)
            ev["id"] = self.next_id
            ids.append(self.next_id)
            self.next_id += 1
            self._apply(ev)
        if not self.staged:
            self.staged_since = time.monotonic()
        self.staged.append(events)
        return ids

    # -- operations ----------------------------------------------------------------------
    def op_ping(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "protocol": protocol.PROTOCOL_VERSION}

    def op_hello(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.clients[str(msg.get("token") or msg["pid"])] = int(msg["pid"])
        return self.op_ping(msg)

    def op_bye(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.clients.pop(str(msg.get("token") or msg["pid"]), None)
        return {}

    def op_append(self, msg: dict[str, Any]) -> dict[str, Any]:
        events = msg["events"]
        if not isinstance(events, list):
            raise ValueError("'events' must be a list of events")
        for ev in events:
            check_event(ev)
        ids = self._stage(events)
        cancelled = sorted({e["run_id"] for e in events
                            if (s := self.runs.get(e["run_id"])) and s.status == "cancelled"})
        return {"ids": ids, "cancelled": cancelled}

    def op_create_run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Allocate ``<workflow>-<n>`` and record the run's start, atomically across clients."""
        started = msg["event"]
        check_event(started)
        if started["kind"] != "run_started":
            raise ValueError("create_run takes a run_started event")
        if started["eid"] in self.started_eids:  # a resend after a lost acknowledgement
            return {"run_id": self.started_eids[started["eid"]]}
        workflow = started["name"]
        run_id = started.get("run_id")
        if not run_id or run_id in self.runs:
            n = self.run_counters.get(workflow, 0) + 1
            while f"{workflow}-{n}" in self.runs:
                n += 1
            run_id = f"{workflow}-{n}"
        started["run_id"] = run_id
        self._stage([started])
        return {"run_id": run_id}

    def _run(self, run_id: Any) -> RunState:
        state = self.runs.get(run_id) if isinstance(run_id, str) else None
        if state is None:
            raise RunNotFound.in_journal(run_id, self.home)
        return state

    def _owner_alive(self, state: RunState) -> bool:
        return state.status == "running" and bool(state.owner_pid) and pid_alive(
            int(state.owner_pid or 0))

    def op_cancel_run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Mark a run cancelled. Its process stops it at the next step boundary (it learns
        of the cancel from its next acknowledgement); a run with no live process is over."""
        run_id = msg.get("run_id")
        state = self._run(run_id)
        previous = state.status
        if previous in ("completed", "cancelled"):
            raise RunFinished(f"run {run_id} is already {previous}; there is nothing to cancel")
        self._stage([event(run_id, "run_status", status="cancelled", name=state.workflow,
                                 error=str(msg.get("reason") or "cancelled by the user"))])
        return {"run_id": run_id, "status": "cancelled", "previous_status": previous}

    def op_signal(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Record a signal (a name and a JSON value) for a run that is not over."""
        run_id, name = msg.get("run_id"), msg.get("name")
        state = self._run(run_id)
        schema.check_signal_name(name)  # ValueError, before anything is acknowledged
        if state.status in ("completed", "cancelled"):
            raise RunFinished(f"run {run_id} is {state.status}; it takes no more signals")
        value = schema.signal_json(msg.get("value"))
        self._stage([event(run_id, "signal", name=name, data_json=value,
                                 preview=value[:200])])
        return {"run_id": run_id, "name": name}

    def op_fork_run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A new run holding the steps of ``run_id`` before ``at`` (and the activity sources);
        whoever resumes it runs the rest with the current code."""
        parent_id, at = msg.get("run_id"), msg.get("at")
        parent = self._run(parent_id)
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise ValueError(f"'at' must be a step number >= 0, got {at!r}")
        self._flush(wait=True)
        rows = self.store.query(
            "SELECT * EXCLUDE (id, ts, data_pickle), to_base64(data_pickle) AS data_pickle, "
            "epoch(ts) AS ts FROM events WHERE run_id = ? AND (kind = 'activity_code' OR "
            "(kind LIKE 'step_%' AND seq < ?)) ORDER BY id", [parent_id, at]).to_pylist()
        notebook = self.store.query(
            "SELECT meta->>'notebook' AS notebook FROM events WHERE run_id = ? "
            "AND kind = 'run_started'", [parent_id]).to_pylist()
        meta = {"notebook": notebook[0]["notebook"] if notebook else None,
                **(msg.get("meta") or {}), "parent_run_id": parent_id, "fork_at": at}
        started = event("", "run_started", name=parent.workflow, meta=json.dumps(meta))
        started["eid"] = str(msg.get("eid") or started["eid"])
        known = started["eid"] in self.started_eids
        run_id = self.op_create_run({"event": started})["run_id"]
        if not meta.get("pid") and not known:
            # Nobody executes a fork made from the sidebar or the API until it is resumed:
            # it is unfinished, not running.
            self._stage([event(run_id, "run_status", status="interrupted",
                                     name=parent.workflow,
                                     error=f"forked from {parent_id} at step {at}; resume it "
                                           "to run the rest")])
        copies = []
        for row in rows:
            row["eid"] = f"{run_id}/{row['eid']}"  # a resent fork copies once
            row["run_id"] = run_id
            copies.append({k: v for k, v in row.items() if v is not None})
        if copies:
            self._stage(copies)
        return {"run_id": run_id, "parent_run_id": parent_id, "at": at,
                "steps_copied": len({r["seq"] for r in rows if r.get("seq") is not None})}

    def op_delete_run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Remove a run and all its events, unless a live process is executing it."""
        run_id = msg.get("run_id")
        state = self._run(run_id)
        if self._owner_alive(state):
            raise RunBusy(f"run {run_id} is being executed by a live process (pid "
                          f"{state.owner_pid}); cancel it first")
        self._flush(wait=True)
        deleted = self.store.query("DELETE FROM events WHERE run_id = ? RETURNING id",
                                   [run_id]).num_rows
        del self.runs[run_id]
        self.started_eids = {e: r for e, r in self.started_eids.items() if r != run_id}
        return {"run_id": run_id, "events_deleted": deleted}

    def op_claim_run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Mark a run as executed by ``pid`` unless another live process executes it."""
        run_id, pid = msg["run_id"], int(msg["pid"])
        state = self._run(run_id)
        owner = state.owner_pid
        if owner != pid and self._owner_alive(state) and not msg.get("force"):
            raise RunBusy(
                f"run {run_id} is being executed by another live process (pid {owner}). "
                "Wait for it, cancel it (`durable-nb cancel` or the sidebar), or start a new "
                "run with --new."
            )
        previous = state.status
        self._stage([event(run_id, "run_status", status="running", name=state.workflow,
                                 meta=json.dumps({**(msg.get("meta") or {}), "pid": pid}),
                                 eid=msg["eid"])])
        return {"previous_status": previous}

    def op_query(self, msg: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        self._flush(wait=True)
        table = self.store.query(msg["sql"], msg.get("params"))
        return {"rows": table.num_rows}, protocol.table_to_bytes(table)

    def op_events_since(self, msg: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        sql = "SELECT * EXCLUDE (data_pickle) FROM events WHERE id > ?"
        params: list[Any] = [int(msg.get("since", 0))]
        if msg.get("run_id"):
            sql += " AND run_id = ?"
            params.append(msg["run_id"])
        sql += f" ORDER BY id LIMIT {int(msg.get('limit', 10_000))}"
        return self.op_query({"sql": sql, "params": params})

    def op_status(self, msg: dict[str, Any]) -> dict[str, Any]:
        self._prune_clients()
        return {
            "pid": os.getpid(), "home": str(self.home), "db": str(self.store.path),
            "started_at": self.started_at, "clients": sorted(set(self.clients.values())),
            "active_runs": sorted(r for r, s in self.runs.items() if s.status == "running"),
            "runs": len(self.runs), "next_event_id": self.next_id,
            "pending": len(self.pending), "idle_timeout": self.idle_timeout,
        }

    def op_shutdown(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.stopping = True
        return {"pid": os.getpid()}

    # -- durability ----------------------------------------------------------------------
    def _commit_staged(self, sock: zmq.Socket[bytes], force: bool = False) -> None:
        """Make staged events durable with one fdatasync, then send the held replies.

        Without ``force``, events nobody waits for may linger briefly so that the next
        awaited write (a step's completion) shares their sync.
        """
        if self.staged and (force or self.replies
                            or time.monotonic() - self.staged_since >= LINGER):
            self.segment.append(self.staged)
            if not self.pending:
                self.pending_since = time.monotonic()
            for batch in self.staged:
                self.pending.extend(batch)
            self.staged = []
        if self.staged:
            return  # replies (only to reads) wait for nothing staged
        for ident, reply in self.replies:
            sock.send_multipart([ident, protocol.dumps(reply)])
        self.replies = []
        if len(self.pending) >= FLUSH_MAX_EVENTS:
            self._flush()

    def _segment_path(self) -> Path:
        return self.home / f"{SEGMENT_FILE}.{self.segment_number:08d}"

    def _flush(self, wait: bool = False) -> None:
        """Hand acknowledged events to the loader thread, on a fresh segment.

        The old segment is deleted only once DuckDB committed its events; a crash before
        that leaves it for the next start to load again (inserts skip known event ids).
        """
        if self.loader is not None and (wait or not self.loader.is_alive()):
            self.loader.join()
            self.loader = None
            if self.loader_error is not None:
                raise self.loader_error
        if self.pending and self.loader is None:
            batch, done = self.pending, self.segment
            self.pending = []
            self.segment_number += 1
            self.segment = Segment(self._segment_path())
            self.loader = threading.Thread(target=self._load, args=(batch, done),
                                           name="durable_nb-loader", daemon=True)
            self.loader.start()
            if wait:
                self._flush(wait=True)

    def _load(self, batch: list[dict[str, Any]], done: Segment) -> None:
        try:
            self.store.insert(batch)
            done.close()
            done.path.unlink()
        except BaseException as exc:  # surfaced by the loop, which stops; data stays on disk
            log.exception("loading events into DuckDB failed")
            self.loader_error = exc

    # -- housekeeping --------------------------------------------------------------------
    def _prune_clients(self) -> None:
        for token in [t for t, pid in self.clients.items() if not pid_alive(pid)]:
            del self.clients[token]

    def _housekeeping(self) -> None:
        self._prune_clients()
        for run_id, state in self.runs.items():
            if state.status == "running" and state.owner_pid and not pid_alive(state.owner_pid):
                self._stage([event(
                    run_id, "run_status", status="interrupted", name=state.workflow,
                    error=f"the process executing the run (pid {state.owner_pid}) exited",
                )])
        idle = time.monotonic() - self.last_message
        live_runs = any(s.status == "running" for s in self.runs.values())
        if not self.clients and not live_runs and idle > self.idle_timeout:
            log.info("idle for %.0f s with no clients and no live runs: exiting", idle)
            self.stopping = True

    # -- loop ----------------------------------------------------------------------------
    def serve(self, endpoint: str) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.bind(endpoint)
        write_server_info(self.home, {"pid": os.getpid(), "endpoint": endpoint,
                                      "started_at": self.started_at,
                                      "protocol": protocol.PROTOCOL_VERSION})
        log.info("serving %s on %s", self.home, endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL
        try:
            while not self.stopping:
                now = time.monotonic()
                wait = next_housekeeping - now
                if self.pending:
                    wait = min(wait, self.pending_since + FLUSH_INTERVAL - now)
                if self.staged:
                    wait = min(wait, self.staged_since + LINGER - now)
                if poller.poll(max(0.0, wait) * 1000):
                    self._drain(sock)
                else:
                    self._commit_staged(sock)
                now = time.monotonic()
                if self.pending and now - self.pending_since >= FLUSH_INTERVAL:
                    self._flush()
                if now >= next_housekeeping:
                    self._housekeeping()
                    self._commit_staged(sock)
                    next_housekeeping = now + HOUSEKEEPING_INTERVAL
            self._commit_staged(sock, force=True)
            self._flush(wait=True)
            self.store.checkpoint()
        finally:
            sock.close()
            ctx.term()
            self.store.close()
            self.segment.close()

    def _drain(self, sock: zmq.Socket[bytes]) -> None:
        self.last_message = time.monotonic()
        while True:
            try:
                ident, frame = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except ValueError:  # not [ident, frame]: ignore a malformed sender
                continue
            self._handle(sock, ident, frame)
        self._commit_staged(sock)

    def _handle(self, sock: zmq.Socket[bytes], ident: bytes, frame: bytes) -> None:
        request_id = None
        try:
            msg = protocol.loads(frame)
            request_id = msg.get("id")
            op = msg.get("op")
            handler = getattr(self, f"op_{op}", None)
            if handler is None:
                raise ValueError(f"unknown operation {op!r}")
            if op not in protocol.WRITE_OPS or op in protocol.READING_WRITE_OPS:
                self._commit_staged(sock, force=True)  # reads see every earlier write
            result = handler(msg)
        except Exception as exc:
            if not isinstance(exc, (DurableError, ValueError, KeyError)):
                log.exception("request failed")
            reply = {"id": request_id, "ok": False, "type": type(exc).__name__,
                     "error": str(exc) if not isinstance(exc, KeyError) or isinstance(
                         exc, DurableError) else f"missing field {exc}"}
            self.replies.append((ident, reply))
            return
        if isinstance(result, tuple):
            body, extra = result
            sock.send_multipart([ident, protocol.dumps({"id": request_id, "ok": True, **body}),
                                 extra])
        elif not msg.get("noreply"):
            self.replies.append((ident, {"id": request_id, "ok": True, **result}))


def _segment_number(path: Path) -> int | None:
    """``journal.segment.00000012`` is 12; the bare name (older servers) is 0; a file moved
    aside by hand (``journal.segment.damaged``) is no segment."""
    suffix = path.name[len(SEGMENT_FILE):]
    if not suffix:
        return 0
    return int(suffix[1:]) if suffix[:1] == "." and suffix[1:].isdigit() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_nb.server",
                                     description="Run the durable_nb journal server.")
    parser.add_argument("--home", help="journal home (default: DURABLE_NB_HOME or Jupyter's)")
    parser.add_argument("--idle-timeout", type=float,
                        default=float(os.environ.get("DURABLE_NB_SERVER_IDLE",
                                                     DEFAULT_IDLE_TIMEOUT)))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(levelname)s %(message)s")
    os.umask(0o077)  # the journal holds every argument and result: owner only
    home = journal_home(args.home)
    lock_fd = os.open(home / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another journal server holds %s; exiting", home)
        return 0
    try:
        server = JournalServer(home, idle_timeout=args.idle_timeout)
    except Exception as exc:  # whatever stops the start, the waiting client is told why
        kind = type(exc).__name__ if isinstance(exc, DurableError) else "JournalUnavailable"
        (home / ERROR_FILE).write_text(f"{kind}\n{exc}")
        log.exception("cannot start")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "stopping", True))
    try:
        server.serve(ipc_endpoint(home))
    finally:
        info = read_server_info(home)
        if info and info.get("pid") == os.getpid():
            (home / SERVER_FILE).unlink(missing_ok=True)
    log.info("stopped")
    return 0
