"""The journal server process: owns the DuckDB file, group-commits appends, answers queries.

Requests arrive over one ROUTER socket and are handled by one loop. Each pass drains every
message that has arrived, makes the batch of accepted events durable with one fdatasync
(``WriteAheadLog``), then acknowledges: that is the moment an event is durable. Appends
nobody waits for (``noreply``) ride along with the next sync, at most ``LINGER`` seconds
later. A write the disk cannot take is acknowledged to nobody: its writers get
``JournalUnavailable`` and the events stay staged, synced with the next write that works.
Queries run on reader threads once DuckDB holds every event acknowledged before them, so a
slow query never holds up an acknowledgement. The loop also notices runs whose process
died (marks them interrupted) and exits after an idle time with no clients and no live runs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import zmq

from durable_nb.errors import (
    ConfigurationError,
    DurableError,
    JournalUnavailable,
    RunBusy,
    RunFinished,
    RunNotFound,
)
from durable_nb.journal import blobs, crypto, schema
from durable_nb.journal.home import DB_FILE, SERVER_FILE, ipc_endpoint, journal_home
from durable_nb.journal.schema import Event, check_event, event
from durable_nb.journal.store import JournalStore
from durable_nb.server import auth, protocol, remote
from durable_nb.server.discovery import (
    ERROR_FILE,
    pid_alive,
    read_server_info,
    write_server_info,
)
from durable_nb.server.runstate import RunState, RunTable
from durable_nb.server.wal import WriteAheadLog

log = logging.getLogger("durable_nb.server")

LINGER = 0.005  # seconds a no-reply append may wait for a sync to share
SYNC_RETRY = 0.5  # seconds before staged events are synced again after the disk refused
HOUSEKEEPING_INTERVAL = 1.0
DEFAULT_IDLE_TIMEOUT = 900.0
READERS = 3  # queries answered at once
UPLOAD_IDLE = 600.0  # seconds a remote blob upload may stall before it is dropped
REPLIES_ENDPOINT = "inproc://durable_nb-replies"  # reader threads -> the loop

Reply = dict[str, Any]


class JournalServer:
    def __init__(self, home: Path, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self.home = home
        self.idle_timeout = idle_timeout
        self.store = JournalStore(home / DB_FILE)
        try:
            self.wal = WriteAheadLog(home, self.store)
            self.runs = RunTable.from_store(self.store)
        except BaseException:
            self.store.close()
            raise
        self.next_id = self.wal.appended_id + 1
        self.staged: list[list[Event]] = []  # accepted, not yet durable
        self.staged_since = 0.0
        self.replies: list[tuple[bytes, Reply]] = []  # held until what was staged is durable
        self.clients: dict[str, int] = {}  # connection token -> its process id
        self.last_message = time.monotonic()
        self.started_at = time.time()
        self.stopping = False
        self.requester = b""  # the client whose request is being handled
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.readers = ThreadPoolExecutor(READERS, thread_name_prefix="durable_nb-reader")
        self._reader_socks = threading.local()
        self.sock: zmq.Socket[bytes] | None = None
        self.endpoint: str | None = None  # the ipc endpoint, once bound
        self.remote_address: str | None = None  # what remote.json asks to listen on
        self.remote_endpoint: str | None = None  # the TCP endpoint bound for remote workers
        self.remote_error: str | None = None
        self.uploads: dict[str, blobs.Upload] = {}  # blobs arriving from remote processes

    def _stage(self, events: list[Event]) -> list[int]:
        ids = []
        for ev in events:  # (a column an event leaves out is null)
            ev["id"] = self.next_id
            ids.append(self.next_id)
            self.next_id += 1
            self.runs.apply(ev)
        if not self.staged:
            self.staged_since = time.monotonic()
        self.staged.append(events)
        return ids

    # -- operations ----------------------------------------------------------------------
    def op_ping(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "protocol": protocol.PROTOCOL_VERSION}

    def op_hello(self, msg: dict[str, Any]) -> dict[str, Any]:
        if not msg.get("remote"):  # a remote pid means nothing here (see _housekeeping)
            self.clients[str(msg.get("token") or msg["pid"])] = int(msg["pid"])
        return self.op_ping(msg)

    def op_listen(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Listen on the TCP address ``remote.json`` names now (or stop listening)."""
        self._listen(remote.listen_address(self.home))
        if self.remote_error:
            raise JournalUnavailable(self.remote_error)
        return {"endpoint": self.remote_endpoint}

    def op_encryption(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The home's encryption.json (a wrapped key, no secret) for a remote process."""
        return {"config": crypto.read_config(self.home)}

    def op_put_blob(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One chunk of a blob sent by a remote process (which has no blob directory)."""
        token, offset = str(msg["upload"]), int(msg["offset"])
        upload = self.uploads.get(token)
        if upload is None:
            if offset:
                return {"restart": True}  # begun with a server that is gone
            upload = blobs.Upload.begin(self.home, str(msg["digest"]), int(msg["size"]))
            if upload is None:
                return {"done": True}  # stored already
            self.uploads[token] = upload
        try:
            done = upload.write(offset, base64.b64decode(msg["data"], validate=True))
        except BaseException:
            self.uploads.pop(token, None)
            upload.discard()
            raise
        if done:
            del self.uploads[token]
        return {"done": done}

    def op_bye(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.clients.pop(str(msg.get("token") or msg["pid"]), None)
        return {}

    def op_append(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Stage ``events`` (all or none of them), or each list of ``groups`` on its own:
        a client's batch of appends from many threads, where one malformed group is
        refused alone (``refused`` lists its index and error) and the others are taken."""
        groups = msg["groups"] if "groups" in msg else [msg["events"]]
        if not isinstance(groups, list) or not groups:
            raise ValueError("'groups' must be a non-empty list of lists of events")
        ids: list[int] = []
        refused: list[dict[str, Any]] = []
        cancelled: set[str] = set()
        for index, events in enumerate(groups):
            try:
                if not isinstance(events, list):
                    raise ValueError("'events' must be a list of events")
                for ev in events:
                    check_event(ev)
            except ValueError as exc:
                if "groups" not in msg:
                    raise
                refused.append({"index": index, "type": type(exc).__name__, "error": str(exc)})
                continue
            ids += self._stage(events)
            cancelled.update(r for r in {e["run_id"] for e in events}
                             if (s := self.runs.get(r)) and s.status == "cancelled")
        return {"ids": ids, "cancelled": sorted(cancelled), "refused": refused}

    def op_create_run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Allocate ``<workflow>-<n>`` and record the run's start, atomically across clients."""
        started = msg["event"]
        check_event(started)
        if started["kind"] != "run_started":
            raise ValueError("create_run takes a run_started event")
        known = self.runs.run_started_by(started["eid"])
        if known is not None:  # a resend after a lost acknowledgement
            return {"run_id": known}
        run_id = self.runs.next_run_id(str(started["name"]), started.get("run_id") or None)
        started["run_id"] = run_id
        self._stage([started])
        return {"run_id": run_id}

    def _run(self, msg: dict[str, Any]) -> tuple[str, RunState]:
        """The run a request names, and its state; RunNotFound names the way on."""
        run_id = msg.get("run_id")
        state = self.runs.get(run_id)
        if state is None:
            raise RunNotFound.in_journal(run_id, self.home)
        return str(run_id), state

    def op_cancel_run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Mark a run cancelled. Its process stops it at the next step boundary (it learns
        of the cancel from its next acknowledgement); a run with no live process is over."""
        run_id, state = self._run(msg)
        previous = state.status
        if state.over:
            raise RunFinished(f"run {run_id} is already {previous}; there is nothing to cancel")
        self._stage([event(run_id, "run_status", status="cancelled", name=state.workflow,
                                 error=str(msg.get("reason") or "cancelled by the user"))])
        return {"run_id": run_id, "status": "cancelled", "previous_status": previous}

    def op_signal(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Record a signal (a name and a JSON value) for a run that is not over."""
        name = msg.get("name")
        run_id, state = self._run(msg)
        schema.check_signal_name(name)  # ValueError, before anything is acknowledged
        if state.over:
            raise RunFinished(f"run {run_id} is {state.status}; it takes no more signals")
        value = schema.signal_json(msg.get("value"))
        self._stage([event(run_id, "signal", name=name, data_json=value,
                                 preview=value[:200])])
        return {"run_id": run_id, "name": name}

    def op_fork_run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A new run holding the steps of ``run_id`` before ``at`` (and the activity sources
        and the workflow cell's inputs);
        whoever resumes it runs the rest with the current code."""
        at = msg.get("at")
        parent_id, parent = self._run(msg)
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise ValueError(f"'at' must be a step number >= 0, got {at!r}")
        self.wal.wait_loaded()
        rows = self.store.query(
            "SELECT * EXCLUDE (id, ts, data_pickle), to_base64(data_pickle) AS data_pickle, "
            "epoch(ts) AS ts FROM events WHERE run_id = ? AND (kind IN ('activity_code', "
            "'run_input') OR (kind LIKE 'step_%' AND seq < ?)) ORDER BY id",
            [parent_id, at]).to_pylist()
        notebook = self.store.query(
            "SELECT meta->>'notebook' AS notebook FROM events WHERE run_id = ? "
            "AND kind = 'run_started'", [parent_id]).to_pylist()
        meta = {"notebook": notebook[0]["notebook"] if notebook else None,
                **(msg.get("meta") or {}), "parent_run_id": parent_id, "fork_at": at}
        started = event("", "run_started", name=parent.workflow, meta=json.dumps(meta))
        started["eid"] = str(msg.get("eid") or started["eid"])
        known = self.runs.run_started_by(started["eid"]) is not None
        run_id = self.op_create_run({"event": started})["run_id"]
        if not meta.get("pid") and not known:
            # Nobody executes a fork made from the sidebar or the API until it is resumed:
            # it is unfinished, not running.
            self._stage([event(run_id, "run_status", status="interrupted",
                                     name=parent.workflow,
                                     error=f"forked from {parent_id} at step {at}; resume it "
                                           "to run the rest")])
        copies: list[Event] = []
        for row in rows:
            row["eid"] = f"{run_id}/{row['eid']}"  # a resent fork copies once
            row["run_id"] = run_id
            copies.append({k: v for k, v in row.items() if v is not None})  # type: ignore[arg-type]
        if copies:
            self._stage(copies)
        return {"run_id": run_id, "parent_run_id": parent_id, "at": at,
                "steps_copied": len({r["seq"] for r in rows if r.get("seq") is not None})}

    def op_delete_run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Remove a run and all its events, unless a live process is executing it."""
        run_id, state = self._run(msg)
        if state.owner_alive():
            raise RunBusy(f"run {run_id} is being executed by a live process (pid "
                          f"{state.owner_pid}); cancel it first")
        self.wal.wait_loaded()
        deleted = self.store.query("DELETE FROM events WHERE run_id = ? RETURNING id",
                                   [run_id]).num_rows
        self.runs.remove(run_id)
        return {"run_id": run_id, "events_deleted": deleted}

    def op_claim_run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Mark a run as executed by ``pid`` unless another live process executes it."""
        pid = int(msg["pid"])
        run_id, state = self._run(msg)
        owner = state.owner_pid
        if owner != pid and state.owner_alive() and not msg.get("force"):
            raise RunBusy(
                f"run {run_id} is being executed by another live process (pid {owner}). "
                f"Wait for it, cancel it (`durable-nb cancel {run_id}` or the sidebar), or "
                "start a new run with --new."
            )
        previous = state.status
        self._stage([event(run_id, "run_status", status="running", name=state.workflow,
                                 meta=json.dumps({**(msg.get("meta") or {}), "pid": pid}),
                                 eid=msg["eid"])])
        return {"previous_status": previous}

    def op_query(self, msg: dict[str, Any]) -> None:
        """Answered by a reader thread once DuckDB holds every event acknowledged so far."""
        self._read(msg.get("id"), self.requester, str(msg["sql"]), msg.get("params"))

    def op_events_since(self, msg: dict[str, Any]) -> None:
        sql = "SELECT * EXCLUDE (data_pickle) FROM events WHERE id > ?"
        params: list[Any] = [int(msg.get("since", 0))]
        if msg.get("run_id"):
            sql += " AND run_id = ?"
            params.append(msg["run_id"])
        sql += f" ORDER BY id LIMIT {int(msg.get('limit', 10_000))}"
        self._read(msg.get("id"), self.requester, sql, params)

    def op_status(self, msg: dict[str, Any]) -> dict[str, Any]:
        self._prune_clients()
        return {
            "pid": os.getpid(), "home": str(self.home), "db": str(self.store.path),
            "started_at": self.started_at, "clients": sorted(set(self.clients.values())),
            "active_runs": self.runs.active(),
            "runs": len(self.runs.runs), "next_event_id": self.next_id,
            "pending": self.wal.pending, "idle_timeout": self.idle_timeout,
        }

    def op_shutdown(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.stopping = True
        return {"pid": os.getpid()}

    # -- reads -----------------------------------------------------------------------------
    def _read(self, request_id: Any, ident: bytes, sql: str, params: Any) -> None:
        target = self.wal.appended_id  # everything acknowledged before this read
        self.readers.submit(self._answer_read, request_id, ident, sql, params, target)

    def _answer_read(self, request_id: Any, ident: bytes, sql: str, params: Any,
                     target: int) -> None:
        """On a reader thread: run the query, hand the reply to the loop to send."""
        try:
            self.wal.wait_loaded(target)
            table = self.store.read(sql, params)  # a client's SQL: one read-only query
            frames = [protocol.dumps({"id": request_id, "ok": True, "rows": table.num_rows}),
                      protocol.table_to_bytes(table)]
        except Exception as exc:
            frames = [protocol.dumps(_error_reply(request_id, exc))]
        sock = getattr(self._reader_socks, "sock", None)
        if sock is None:
            sock = self._reader_socks.sock = self.ctx.socket(zmq.PUSH)
            sock.connect(REPLIES_ENDPOINT)
        sock.send_multipart([ident, *frames])

    # -- durability ----------------------------------------------------------------------
    def _commit_staged(self, sock: zmq.Socket[bytes], force: bool = False) -> None:
        """Make staged events durable with one fdatasync, then send the held replies.

        Without ``force``, events nobody waits for may linger briefly so that the next
        awaited write (a step's completion) shares their sync. If the disk refuses the
        write, every held reply becomes that error and the events stay staged for the next
        sync: told nothing was durable, a writer may still find its event recorded later,
        exactly as after a crash between sync and acknowledgement.
        """
        if self.staged and (force or self.replies
                            or time.monotonic() - self.staged_since >= LINGER):
            try:
                self.wal.append(self.staged)
            except JournalUnavailable as exc:
                log.error("%s", exc)
                self.staged_since = time.monotonic() + SYNC_RETRY - LINGER
                failed = [(ident, reply if not reply.get("ok") else
                           _error_reply(reply.get("id"), exc)) for ident, reply in self.replies]
                self.replies = failed
            else:
                self.staged = []
        elif self.staged:
            return  # replies (only to reads) wait for nothing staged
        for ident, reply in self.replies:
            sock.send_multipart([ident, protocol.dumps(reply)])
        self.replies = []

    # -- housekeeping --------------------------------------------------------------------
    def _prune_clients(self) -> None:
        for token in [t for t, pid in self.clients.items() if not pid_alive(pid)]:
            del self.clients[token]

    def _housekeeping(self) -> None:
        self._prune_clients()
        for run_id, state in list(self.runs.orphaned()):
            self._stage([event(
                run_id, "run_status", status="interrupted", name=state.workflow,
                error=f"the process executing the run (pid {state.owner_pid}) exited",
            )])
        if self.wal.load_error is not None and "invalidated" in str(self.wal.load_error):
            # DuckDB gave up on its file after a failed write: a fresh process recovers it
            # from its WAL and the segments. The next client request starts one.
            log.error("the journal database needs a restart: exiting")
            self.stopping = True
        for token, upload in list(self.uploads.items()):
            if upload.idle() > UPLOAD_IDLE:  # its sender went away mid-upload
                upload.discard()
                del self.uploads[token]
        idle = time.monotonic() - self.last_message
        # A server that listens for remote workers is a service: a worker whose kernel
        # died must still find it to record its step, so it never leaves on its own.
        if not self.clients and not self.runs.active() and idle > self.idle_timeout \
                and not self.remote_endpoint:
            log.info("idle for %.0f s with no clients and no live runs: exiting", idle)
            self.stopping = True

    # -- loop ----------------------------------------------------------------------------
    def serve(self, endpoint: str) -> None:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 1000)
        auth.bind(sock, self.home, endpoint)
        self.sock, self.endpoint = sock, endpoint
        try:
            self._listen(remote.listen_address(self.home))
        except ConfigurationError as exc:
            self.remote_error = str(exc)
            log.error("%s", exc)
            self._write_info()
        replies = self.ctx.socket(zmq.PULL)
        replies.bind(REPLIES_ENDPOINT)
        log.info("serving %s on %s", self.home, endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(replies, zmq.POLLIN)
        next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL
        try:
            while not self.stopping:
                now = time.monotonic()
                wait = next_housekeeping - now
                if self.staged:
                    wait = min(wait, self.staged_since + LINGER - now)
                ready = dict(poller.poll(int(max(0.0, wait) * 1000)))
                if replies in ready:
                    _forward(replies, sock)
                if sock in ready:
                    self._drain(sock)
                else:
                    self._commit_staged(sock)
                now = time.monotonic()
                if now >= next_housekeeping:
                    self._housekeeping()
                    self._commit_staged(sock)
                    next_housekeeping = now + HOUSEKEEPING_INTERVAL
            self._commit_staged(sock, force=True)
            self.readers.shutdown(wait=True)
            _forward(replies, sock)
            self.wal.close()
            self.store.checkpoint()
        finally:
            self.readers.shutdown(wait=False, cancel_futures=True)
            sock.close()
            replies.close(linger=0)
            self.ctx.term()
            self.store.close()

    def _write_info(self) -> None:
        info: dict[str, Any] = {"pid": os.getpid(), "endpoint": self.endpoint,
                                "started_at": self.started_at,
                                "protocol": protocol.PROTOCOL_VERSION}
        if self.remote_endpoint or self.remote_error:
            info["remote_endpoint"] = self.remote_endpoint
            info["remote_error"] = self.remote_error
        write_server_info(self.home, info)

    def _listen(self, address: str | None) -> None:
        """Listen on ``address`` (a TCP address for remote workers) beside the ipc endpoint,
        in place of the one bound before, or on nothing more. A failure to bind (the port
        is taken) leaves the server serving its ipc clients; it is recorded in
        ``server.json`` for ``durable-nb remote status``."""
        assert self.sock is not None
        if self.remote_endpoint and address != self.remote_address:
            with contextlib.suppress(zmq.ZMQError):
                self.sock.unbind(self.remote_endpoint)
            self.remote_endpoint = None
        self.remote_address, self.remote_error = address, None
        if address and self.remote_endpoint is None:
            try:
                self.sock.bind(address)
                self.remote_endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
                log.info("listening for remote workers on %s", self.remote_endpoint)
            except zmq.ZMQError as exc:
                self.remote_error = (f"cannot listen on {address}: {exc}. Choose another "
                                     "address with `durable-nb remote listen tcp://HOST:PORT`.")
                log.error("%s", self.remote_error)
        self._write_info()

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
            self.requester = ident
            result = handler(msg)
        except Exception as exc:
            if not isinstance(exc, (DurableError, ValueError, KeyError)):
                log.exception("request failed")
            self.replies.append((ident, _error_reply(request_id, exc)))
            return
        if result is not None and not msg.get("noreply"):
            self.replies.append((ident, {"id": request_id, "ok": True, **result}))


def _error_reply(request_id: Any, exc: Exception) -> Reply:
    message = str(exc) if not isinstance(exc, KeyError) or isinstance(exc, DurableError) \
        else f"missing field {exc}"
    return {"id": request_id, "ok": False, "type": type(exc).__name__, "error": message}


def _forward(replies: zmq.Socket[bytes], sock: zmq.Socket[bytes]) -> None:
    """Send the replies reader threads finished to their clients."""
    while True:
        try:
            frames = replies.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        sock.send_multipart(frames)


class _NoPandas:
    """Refuses to import pandas in the server process. DuckDB's and pyarrow's bindings
    import it (44 MB resident) only to ask whether an object handed to them is a
    DataFrame; the server hands them Arrow tables alone, and says no pandas is here."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("the journal server does without pandas", name=name)


def main(argv: list[str] | None = None) -> int:
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())
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
        endpoint = ipc_endpoint(home)  # refuses a socket directory others control
        auth.HomeKeys.of(home)  # refuses a key file others could read
        server = JournalServer(home, idle_timeout=args.idle_timeout)
    except Exception as exc:  # whatever stops the start, the waiting client is told why
        kind = type(exc).__name__ if isinstance(exc, DurableError) else "JournalUnavailable"
        (home / ERROR_FILE).write_text(f"{kind}\n{exc}")
        log.exception("cannot start")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "stopping", True))
    try:
        server.serve(endpoint)
    finally:
        info = read_server_info(home)
        if info and info.get("pid") == os.getpid():
            (home / SERVER_FILE).unlink(missing_ok=True)
    log.info("stopped")
    return 0
