"""Client of the journal server: ordered appends, queries, and recovery from a server crash.

One DEALER socket carries every write of this process in order, and the server syncs in
arrival order, so when it answers request N everything sent before N is durable too. That
lets appends nobody waits for go without a reply (``noreply``): the next answer covers them.
Requests stay in ``_unacked`` until covered; if the server dies, the client starts a new one
and resends them (appends carry ids, so a write that did reach the segment is not doubled).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import logging
import os
import select
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import zmq

from durable_nb import errors
from durable_nb.journal.home import journal_home
from durable_nb.journal.schema import Event
from durable_nb.server import auth, protocol, remote
from durable_nb.server.discovery import (
    LOG_FILE,
    WaitNotice,
    file_lock,
    is_journal_server,
    pid_alive,
    poll_noting,
    read_server_info,
    spawn_server,
    startup_failure,
)

log = logging.getLogger("durable_nb.client")

START_TIMEOUT = float(os.environ.get("DURABLE_NB_SERVER_START_TIMEOUT", "30"))
PING_TIMEOUT = 5.0
START_NOTICE = 5.0  # seconds of a server start before the client says it still waits
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # plain ints: enum arithmetic is slow
POLL_MS = 200
REMOTE_HEARTBEAT_MS = 2000  # a remote server silent for 3 of these counts as gone
COMMITTER_IDLE = 5.0  # seconds the committer thread stays with nothing in flight
BLOB_CHUNK = 4 << 20  # bytes of a blob per put_blob request (what the server holds at once)


class JournalClient:
    """A connection from this process to the journal server of one journal home."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        # A process with DURABLE_NB_JOURNAL reaches the server of another machine over
        # TCP (remote.py): it neither starts a server nor keeps a journal home of its own.
        path = remote.credentials_path()
        self.remote = remote.read_credentials(path) if path else None
        self.home: Path = journal_home(home, create=self.remote is None)
        self._lock = threading.Lock()  # guards the socket and the request state below
        self._replied = threading.Condition(self._lock)  # a reply was filed in _answers
        self._receiving = False  # a waiting thread is reading the socket
        self._alive_checked = 0.0  # when the receiver last made sure the server lives
        self._answers: dict[int, tuple[dict[str, Any], list[bytes]]] = {}
        self._wake_r, self._wake_w = _wake_pipe()
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None  # a remote connection's drops
        self._server_pid: int | None = None
        self._owner_pid = os.getpid()
        self._next_id = 0
        self._unacked: dict[int, bytes] = {}  # in send order
        self._noreply: set[int] = set()
        self.cancelled: set[str] = set()
        # Group commit of appends nobody blocks on (``commit``): they wait in ``_outbox``
        # while one batch of them is in flight, then go as the next batch, one request.
        self._outbox: list[tuple[bytes, Committed | None]] = []  # (packed events, then)
        self._outbox_lock = threading.Lock()
        self._sending = False  # a batch is in flight: its answer sends the outbox
        self._batches: dict[int, list[Committed | None]] = {}  # in flight, by request id
        self._finished: list[tuple[list[Committed | None], dict[str, Any]]] = []
        self._committer: threading.Thread | None = None  # runs what _finished holds
        self.closed = False
        self._token = uuid.uuid4().hex  # this connection, among others of the same process

    # -- connection ------------------------------------------------------------------------
    def _ensure_connected(self) -> zmq.Socket[bytes]:
        if self._owner_pid != os.getpid():  # forked: the parent's socket is not ours
            self._sock = self._ctx = None
            self._unacked.clear()
            self._noreply.clear()
            self._answers.clear()
            self._outbox, self._batches, self._finished = [], {}, []
            self._outbox_lock, self._sending = threading.Lock(), False
            self._committer = None
            self._wake_r, self._wake_w = _wake_pipe()  # the parent's wakes the parent
            self._owner_pid = os.getpid()
        if self._sock is None:
            self._connect()
        assert self._sock is not None
        return self._sock

    def _connect(self) -> None:
        if self.remote is not None:
            self._connect_remote(self.remote)
            return
        if self._try_connect(read_server_info(self.home)):
            return
        with file_lock(self.home / "spawn.lock"):
            if self._try_connect(read_server_info(self.home)):
                return
            deadline = time.monotonic() + START_TIMEOUT
            proc = spawn_server(self.home)
            # A cold start (imports, opening DuckDB) takes about a second on a busy laptop:
            # speak only when it is clearly slower than that.
            notice = WaitNotice(f"the journal server of {self.home} to start (its log: "
                                f"{self.home / LOG_FILE})", START_TIMEOUT, after=START_NOTICE)
            while True:
                info = read_server_info(self.home)
                if proc.poll() is not None:
                    if proc.returncode == 0 and self._try_connect(info):
                        return  # another server won the race and serves this home
                    if proc.returncode < 0 and time.monotonic() < deadline:
                        # Killed by a signal while starting (not a start-up error, which
                        # exits with a code and leaves server.error): start another.
                        log.warning("journal server (pid %s) was killed while starting; "
                                    "starting another", proc.pid)
                        proc = spawn_server(self.home)
                        continue
                    raise startup_failure(self.home, proc)
                if info and info["pid"] == proc.pid and self._try_connect(info):
                    return
                if time.monotonic() > deadline:
                    raise errors.JournalUnavailable(
                        f"the journal server for {self.home} did not answer within "
                        f"{START_TIMEOUT:.0f} s. See {self.home / LOG_FILE}; raise "
                        "DURABLE_NB_SERVER_START_TIMEOUT on a slow machine."
                    )
                notice()
                time.sleep(0.02)

    def _connect_remote(self, creds: remote.Credentials) -> None:
        """Connect to the server the credentials name, waiting up to START_TIMEOUT for it
        (it may be restarting); nothing is started from here."""
        deadline = time.monotonic() + START_TIMEOUT
        notice = WaitNotice(f"the journal server at {creds.endpoint} (from {creds.path})",
                            START_TIMEOUT, after=START_NOTICE)
        while not self._try_connect({"pid": None, "endpoint": creds.endpoint}):
            if time.monotonic() > deadline:
                raise errors.JournalUnavailable(
                    f"the journal server at {creds.endpoint} (from {creds.path}, named by "
                    f"{remote.JOURNAL_ENV}) did not answer within {START_TIMEOUT:.0f} s. On the "
                    "journal's machine, `durable-nb remote status` tells where its server "
                    "listens; check that this machine can reach that address and port.")
            notice()
            time.sleep(0.5)

    def _try_connect(self, info: dict[str, Any] | None) -> bool:
        if not info or (info["pid"] is not None and not is_journal_server(int(info["pid"]))):
            return False
        if self._ctx is None:
            self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.remote is not None:  # no pid to watch: libzmq tells a dead peer by heartbeats
            sock.setsockopt(zmq.HEARTBEAT_IVL, REMOTE_HEARTBEAT_MS)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * REMOTE_HEARTBEAT_MS)
        if not auth.connect(sock, self.home, info["endpoint"], PING_TIMEOUT, keys=self.remote):
            return False
        hello = protocol.dumps({"id": -1, "op": "hello", "pid": os.getpid(),
                                "token": self._token, "remote": self.remote is not None})
        sock.send(hello)
        if not poll_noting(sock, PING_TIMEOUT, WaitNotice(
                f"the journal server at {info['endpoint']} to answer", PING_TIMEOUT)):
            sock.close()
            return False
        try:
            answer = protocol.loads(sock.recv_multipart()[0])
        except ValueError:
            answer = {}
        if not answer.get("ok"):  # a server of another version answers, but not in kind
            sock.close()
            raise errors.JournalUnavailable(
                f"the journal server at {info['endpoint']} (pid {info['pid']}) does not "
                f"understand this client ({answer.get('error') or 'an unreadable answer'}): "
                "it is probably from another version of durable_nb. Stop it with "
                "`durable-nb server stop` and run again (recorded steps stay).")
        self._drop_socket()
        self._sock, self._server_pid = sock, int(answer.get("pid") or 0) or None
        if self.remote is not None:
            self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        for frame in self._unacked.values():  # resend what the old server never acknowledged
            sock.send(frame)
        return True

    def _drop_socket(self) -> None:
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    # -- requests --------------------------------------------------------------------------
    # Any number of threads share the one socket. A ZeroMQ socket must not be used by two
    # threads at once, so every socket operation happens under ``_lock``; a thread never
    # blocks on the socket while holding it. One waiting thread at a time is the receiver:
    # it sleeps in select() on the socket's notification fd (and a wake-up pipe) with the
    # lock released, then reads what arrived and files each reply under its request id in
    # ``_answers``, where its own waiter finds it. A sender reads what is readable before
    # letting go while a receiver sleeps: ZeroMQ's fd is edge-triggered, so a reply noticed
    # by the send would otherwise wait unseen until the receiver's next timeout. (With no
    # receiver there is nothing to miss: a receiver reads what is ready before it sleeps.)

    def send(self, op: str, noreply: bool = False, **fields: Any) -> int:
        """Send a request without waiting; its reply is consumed by a later ``wait``.

        With ``noreply`` the server answers nothing; a later answer covers the request.
        """
        with self._lock:
            if self.closed:  # reconnecting would start a server nobody stops
                raise self._closed_error()
            sock = self._ensure_connected()
            self._send_outbox(sock)  # what was committed before goes first: writes stay in order
            rid = self._send_locked(sock, op, noreply, fields)
            if self._receiving:  # the send may have taken the fd's edge the receiver waits on
                self._read_ready(sock)
            return rid

    def _closed_error(self) -> errors.JournalUnavailable:
        return errors.JournalUnavailable(
            f"this connection to the journal of {self.home} was closed; "
            "use durable_nb's default client (or a new JournalClient)")

    def _send_locked(self, sock: zmq.Socket[bytes], op: str, noreply: bool,
                     fields: dict[str, Any]) -> int:
        self._next_id += 1
        rid = self._next_id
        message = {"id": rid, "op": op, **fields}
        if noreply:
            message["noreply"] = True
            self._noreply.add(rid)
        self._send_frame(sock, rid, protocol.dumps(message))
        return rid

    def _send_frame(self, sock: zmq.Socket[bytes], rid: int, frame: bytes) -> None:
        self._unacked[rid] = frame
        sock.send(frame)

    def commit(self, events: list[Event], then: Committed | None = None) -> None:
        """Append ``events`` without waiting: ``then(None)`` runs once they are durable,
        or ``then(error)`` if they were refused or no server could be reached (on the
        client's committer thread, or on this one). It raises only for a closed client,
        and then ``then`` is not called.

        Commits from many threads are sent together, one request per batch, while the
        batch before is in flight: the group commit that lets a fan-out of short steps
        share requests and syncs. They stay in order with every other write of this
        client (a request sent later goes after them).
        """
        if self.closed:
            raise self._closed_error()
        body = protocol.pack(events)  # outside any lock: many threads commit at once
        with self._outbox_lock:  # (never held across a call that lets the GIL go)
            self._outbox.append((body, then))
            if self._sending:
                return  # the answer to the batch in flight sends this one
            self._sending = True  # this thread sends it
        try:
            with self._lock:
                sock = self._ensure_connected()
                self._send_outbox(sock)
                if self._receiving:
                    self._read_ready(sock)
                if self._committer is None:
                    self._committer = threading.Thread(
                        target=self._run_committer, name="durable_nb-committer",
                        daemon=True)
                    self._committer.start()
                self._replied.notify_all()  # the committer, idle, reads the answer
        except Exception as exc:  # no server to be had: each commit is told, none stays
            _run_thens(self._take_outbox(), self._unreachable(exc))

    def _send_outbox(self, sock: zmq.Socket[bytes]) -> None:
        """Send what waits in the outbox as one batch (socket lock held)."""
        with self._outbox_lock:
            waiting, self._outbox = self._outbox, []
        if not waiting:
            return
        self._next_id += 1
        rid = self._next_id
        self._send_frame(sock, rid, protocol.append_batch(rid, [b for b, _ in waiting]))
        self._batches[rid] = [then for _, then in waiting]

    def _take_outbox(self) -> list[Committed | None]:
        """Empty the outbox (its commits will not be sent); their ``then``."""
        with self._outbox_lock:
            waiting, self._outbox = self._outbox, []
            self._sending = False
        return [then for _, then in waiting]

    def _unreachable(self, exc: Exception) -> dict[str, Any]:
        """The reply that tells commits why no server took them."""
        return _error_reply(exc if isinstance(exc, errors.DurableError) else
                            errors.JournalUnavailable(
                                f"cannot reach the journal server of {self.home}: {exc}"))

    def _batch_answered(self) -> None:
        """A batch was answered (socket lock held): send the next, gathered meanwhile, or
        let the next commit send its own."""
        with self._outbox_lock:
            if not self._outbox:
                self._sending = bool(self._batches)
                return
        if self._sock is not None:
            self._send_outbox(self._sock)

    def _run_committer(self) -> None:
        """While commits are in flight: read the socket when no waiter does, and run the
        ``then`` of each batch answered (outside the lock)."""
        idle_since = time.monotonic()
        with self._lock:
            while not self.closed and self._committer is threading.current_thread():
                if self._batches or self._outbox or self._finished:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > COMMITTER_IDLE:
                    self._committer = None  # the next commit starts another
                    return
                if self._finished:
                    done, self._finished = self._finished, []
                    self._lock.release()
                    try:
                        for thens, reply in done:
                            _run_thens(thens, reply)
                    finally:
                        self._lock.acquire()
                elif not self._batches or self._receiving:
                    self._replied.wait(POLL_MS / 1000)
                else:
                    self._receiving = True
                    try:
                        self._receive_once()
                    except Exception as exc:  # no server to be had: say so to all
                        reply = self._unreachable(exc)
                        for rid, thens in self._batches.items():
                            self._unacked.pop(rid, None)
                            self._finished.append((thens, reply))
                        self._batches.clear()
                        self._finished.append((self._take_outbox(), reply))
                    finally:
                        self._receiving = False
                        self._replied.notify_all()

    def wait(self, rid: int, timeout: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
        """Wait for the reply to request ``rid``; restarts a dead server and resends."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                answer = self._answers.pop(rid, None)
                if answer is not None:
                    reply, extra = answer
                    if not reply.get("ok"):
                        raise _error_from(reply)
                    return reply, extra
                if rid not in self._unacked or rid in self._noreply:
                    raise errors.DurableError(
                        f"request {rid} has no reply to wait for (never sent, sent without "
                        "reply, or already taken by another wait)")
                if deadline is not None and time.monotonic() > deadline:
                    raise errors.JournalUnavailable(
                        f"the journal server (pid {self._server_pid}) did not answer within "
                        f"{timeout:.0f} s. See {self.home / LOG_FILE}."
                    )
                if self._receiving:  # another thread reads the socket; it files our reply
                    self._replied.wait(POLL_MS / 1000)
                    continue
                self._receiving = True
                try:
                    self._receive_once()
                finally:
                    self._receiving = False
                    self._replied.notify_all()  # a waiter takes over as the receiver

    def _receive_once(self) -> None:
        """As the receiver (lock held on entry and exit): read what arrives within one poll
        period, waiting with the lock released; notice a dead server and reconnect."""
        sock = self._ensure_connected()
        if self._read_ready(sock):
            return
        fd = int(sock.getsockopt(zmq.FD))
        self._lock.release()
        try:
            ready, _, _ = select.select([fd, self._wake_r], [], [], POLL_MS / 1000)
        finally:
            self._lock.acquire()
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        if self._sock is not sock:  # reconnected by a sender meanwhile: resent already
            return
        if self._read_ready(sock):
            return
        now = time.monotonic()
        if ready and now - self._alive_checked < POLL_MS / 1000:
            return  # the fd also wakes for ZeroMQ's own traffic: look at /proc seldom
        self._alive_checked = now
        if self._monitor is not None:
            if self._monitor.poll(0):  # the connection dropped: requests in it may be lost
                log.warning("lost the connection to the journal server at %s; reconnecting",
                            self.remote.endpoint if self.remote else "?")
                self._drop_socket()
        elif self._server_pid is not None and not pid_alive(self._server_pid):
            log.warning("journal server (pid %s) died; restarting it", self._server_pid)
            self._drop_socket()

    def _read_ready(self, sock: zmq.Socket[bytes]) -> bool:
        """File every reply already readable (lock held); True if any arrived."""
        got = False
        while int(sock.getsockopt(_EVENTS)) & _POLLIN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            got = self._file_reply(frames) or got
        if got:
            self._replied.notify_all()
            if self._receiving:  # the receiver sleeps in select(): it has work now
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_w, b"x")
        return got

    def _file_reply(self, frames: list[bytes]) -> bool:
        reply = protocol.loads(frames[0])
        got = reply.get("id")
        if not isinstance(got, int) or got not in self._unacked:
            return False  # a duplicate answer to a resent request
        del self._unacked[got]
        if reply.get("ok") or reply.get("type") != "JournalUnavailable":
            # Not a failed sync: the server made every earlier request durable first.
            self._retire_noreply_before(got)
        self.cancelled.update(reply.get("cancelled", ()))
        thens = self._batches.pop(got, None)
        if thens is not None:  # a batch of commits: the committer runs their ``then``
            self._finished.append((thens, reply))
            self._batch_answered()
            return True
        if got in self._noreply:  # only a refusal answers these, and nobody waits for it
            self._noreply.discard(got)
            log.warning("journal request %s failed: %s", got, reply.get("error"))
            return False
        self._answers[got] = (reply, frames[1:])
        return True

    def _retire_noreply_before(self, rid: int) -> None:
        """An answer to ``rid`` means every earlier request is durable on the server."""
        for earlier in [i for i in self._noreply if i < rid]:
            self._noreply.discard(earlier)
            self._unacked.pop(earlier, None)

    def call(self, op: str, timeout: float | None = 120.0, **fields: Any) -> dict[str, Any]:
        reply, _ = self.wait(self.send(op, **fields), timeout)
        return reply

    # -- typed operations (the server's op_* of the same name) ------------------------------
    def ping(self, timeout: float | None = 30.0) -> dict[str, Any]:
        return self.call("ping", timeout=timeout)

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def shutdown(self) -> dict[str, Any]:
        return self.call("shutdown")

    def create_run(self, started: Event) -> str:
        """Record a ``run_started`` event; the server allocates ``<workflow>-<n>``."""
        return str(self.call("create_run", event=started)["run_id"])

    def claim_run(self, run_id: str, pid: int, eid: str,
                  meta: dict[str, Any] | None = None, force: bool = False) -> dict[str, Any]:
        """Mark ``run_id`` as executed by ``pid`` (RunBusy if another live process does)."""
        return self.call("claim_run", run_id=run_id, pid=pid, eid=eid, meta=meta, force=force)

    def cancel_run(self, run_id: str, reason: str | None = None,
                   timeout: float | None = 120.0) -> dict[str, Any]:
        """Mark a run cancelled; returns ``run_id``, ``status`` and ``previous_status``."""
        return self.call("cancel_run", timeout, run_id=run_id, reason=reason)

    def signal(self, run_id: str, name: str, value: Any = None,
               timeout: float | None = 120.0) -> dict[str, Any]:
        """Record a signal (a name and a JSON value) for a run that is not over."""
        return self.call("signal", timeout, run_id=run_id, name=name, value=value)

    def fork_run(self, run_id: str, at: int, eid: str | None = None,
                 meta: dict[str, Any] | None = None,
                 timeout: float | None = 120.0) -> dict[str, Any]:
        """A new run holding the steps of ``run_id`` before ``at``; returns its ``run_id``,
        ``parent_run_id``, ``at`` and ``steps_copied``. The same ``eid`` forks once."""
        return self.call("fork_run", timeout, run_id=run_id, at=at, eid=eid, meta=meta)

    def delete_run(self, run_id: str, timeout: float | None = 120.0) -> dict[str, Any]:
        """Remove a run and its events (RunBusy while a live process executes it)."""
        return self.call("delete_run", timeout, run_id=run_id)

    def append(self, events: list[Event], *, wait: bool = True) -> int:
        """Append events; with ``wait`` return only once they are durable."""
        rid = self.send("append", noreply=not wait, events=events)
        if wait:
            self.wait(rid)
        return rid

    def query(self, sql: str, params: list[Any] | None = None,
              timeout: float | None = 300.0) -> pa.Table:
        reply, frames = self.wait(self.send("query", sql=sql, params=params), timeout)
        return protocol.table_from_bytes(frames[0])

    def events_since(self, since: int, run_id: str | None = None,
                     limit: int = 10_000) -> pa.Table:
        reply, frames = self.wait(
            self.send("events_since", since=since, run_id=run_id, limit=limit), 60.0)
        return protocol.table_from_bytes(frames[0])

    def put_blob(self, data: bytes | memoryview) -> str:
        """Store ``data`` as a blob through the server (from a process without the home's
        blob directory); returns its digest once the blob is durable."""
        digest = hashlib.sha256(data).hexdigest()
        view, size = memoryview(data).cast("B"), len(data)
        for _ in range(3):  # a server restarted mid-upload forgets it: send it again
            token, offset = uuid.uuid4().hex, 0
            while True:
                chunk = view[offset:offset + BLOB_CHUNK]
                reply = self.call("put_blob", upload=token, digest=digest, size=size,
                                  offset=offset, data=base64.b64encode(chunk).decode())
                if reply.get("done") or reply.get("restart"):
                    break
                offset += len(chunk)
            if reply.get("done"):
                return digest
        raise errors.JournalUnavailable(
            f"the journal server at {self.remote.endpoint if self.remote else self.home} "
            f"kept restarting while a blob of {size} bytes was sent to it; nothing was "
            "recorded of the value")

    @property
    def server_pid(self) -> int | None:
        with self._lock:
            self._ensure_connected()
            return self._server_pid

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            gone = _error_reply(errors.JournalUnavailable(
                f"the connection to the journal of {self.home} was closed before these "
                "events were acknowledged; nothing of them may be durable"))
            left = [*self._finished, *[(t, gone) for t in self._batches.values()],
                    (self._take_outbox(), gone)]
            self._batches, self._finished = {}, []
            if self._sock is not None and self._owner_pid == os.getpid():
                with contextlib.suppress(zmq.ZMQError):
                    self._sock.send(protocol.dumps({"id": 0, "op": "bye", "pid": os.getpid(),
                                                    "token": self._token}), zmq.NOBLOCK)
            self._drop_socket()
            if self._ctx is not None:
                self._ctx.term()
                self._ctx = None
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._replied.notify_all()  # the committer leaves
        for thens, reply in left:
            _run_thens(thens, reply)


def _wake_pipe() -> tuple[int, int]:
    """A non-blocking pipe whose write end wakes the receiver out of select()."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


Committed = Callable[[BaseException | None], None]  # told how a commit ended


def _run_thens(thens: list[Committed | None], reply: dict[str, Any]) -> None:
    """Tell each commit of a batch how it ended: durable, or refused and why."""
    error = None if reply.get("ok") else _error_from(reply)
    refused = {int(r["index"]): r for r in reply.get("refused") or ()}
    for index, then in enumerate(thens):
        if then is None:
            continue
        own = _error_from(refused[index]) if index in refused else error
        try:
            then(own)
        except Exception:  # one broken callback must not keep the others untold
            log.exception("a journal commit callback failed")


def _error_reply(exc: errors.DurableError) -> dict[str, Any]:
    return {"ok": False, "type": type(exc).__name__, "error": str(exc)}


def _error_from(reply: dict[str, Any]) -> errors.DurableError:
    cls = getattr(errors, str(reply.get("type")), None)
    message = str(reply.get("error"))
    if isinstance(cls, type) and issubclass(cls, errors.DurableError):
        return cls(message)
    return errors.QueryError(f"{reply.get('type')}: {message}")


_default: JournalClient | None = None
_default_lock = threading.Lock()


def default_client() -> JournalClient:
    """The process-wide client of the current journal home (follows DURABLE_NB_HOME)."""
    global _default
    with _default_lock:
        home = journal_home(create=not remote.configured())
        if _default is None or _default.closed or _default.home != home:
            if _default is not None:
                _default.close()
            _default = JournalClient(home)
        return _default


def reset_default_client() -> None:
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = None


atexit.register(reset_default_client)
