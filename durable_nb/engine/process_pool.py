"""The ``process`` executor: attempts run in worker processes of this kernel.

Each worker is ``python -m durable_nb.engine.process_pool`` talking over a socket pair: the
call goes in by cloudpickle (so functions defined in the notebook work), the result or the
exception comes back the same way. While it runs, the worker forwards what the activity
prints and its heartbeats (each acknowledged once the journal holds it). A worker is reused
for the next attempt; one past its timeout is killed with SIGKILL and replaced, so a hung
attempt never keeps running in the background. Nor does one whose kernel died: a worker
exits as soon as its kernel is gone (the resumed run runs the step again, and two attempts
of one step must not run at once).
"""

from __future__ import annotations

import contextlib
import io
import linecache
import marshal
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import types
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from durable_nb.engine.executors import Attempt, Outcome, in_attempt
from durable_nb.errors import PayloadError


class WorkerDied(RuntimeError):
    """The worker process running an attempt exited before answering (retryable)."""


class RemoteError(Exception):
    """An exception raised in a worker that could not travel back as itself."""


def child_python(module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a Python child that imports what this process does:
    its import path in its order (the notebook's cwd, a test's folder), so a module name
    resolves to the same file in both. ``-P``: no cwd put before it, which would shadow
    this process's modules (a kernel keeps its cwd behind the standard library)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    return [sys.executable, "-P", "-m", module, *args], env


class _Worker:
    def __init__(self) -> None:
        parent, child = socket.socketpair()
        command, env = child_python("durable_nb.engine.process_pool", str(child.fileno()),
                                    str(os.getpid()))
        self.proc = subprocess.Popen(
            command, pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL,
            start_new_session=False)
        child.close()
        self.conn = Connection(parent.detach())
        self.ready = False  # the worker says so once it has imported what it needs

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.conn.close()

    def run(self, attempt: Attempt) -> Outcome:
        __tracebackhide__ = True
        try:
            call, sources = dumps_call((attempt.fn, attempt.args, attempt.kwargs,
                                         attempt.step))
        except Exception as exc:
            raise PayloadError(
                f"cannot send the call of {attempt.step.activity}() at step "
                f"{attempt.step.seq} to a worker process: {exc}. Pass arguments that pickle "
                "(e.g. a path or a config dict), or run it with --executor thread."
            ) from exc
        try:
            if not self.ready:  # a new worker's start-up does not count against a timeout
                self.conn.recv_bytes()
                self.ready = True
            started = time.monotonic()
            self.conn.send_bytes(cloudpickle.dumps(sources))
            self.conn.send_bytes(call)
            answer = self._wait(attempt, started)
        except (EOFError, OSError) as exc:  # the pipe broke: the worker is gone
            code = self.proc.wait()
            raise WorkerDied(
                f"the worker process {self.pid} running {attempt.step.activity}() at step "
                f"{attempt.step.seq} exited with code {code} before it answered"
            ) from exc
        except KeyboardInterrupt:
            self.kill()  # the step is abandoned: do not leave it running
            raise
        # Raised here, outside the try: an ActivityTimeout or an activity's ConnectionError
        # is an OSError too, and must not pass for a broken pipe.
        kind, body = answer
        if kind == "late":
            pid = self.pid
            self.kill()
            raise type(body)(f"{body} (its worker process {pid} was killed)")
        if kind == "ok":
            return Outcome(body)
        raised, remote_tb = body
        step = attempt.step
        raised.add_note(f"(raised in worker process {self.pid}, running {step.activity}() at "
                        f"step {step.seq} of run {step.run_id})\n{remote_tb}")
        raise raised

    def _wait(self, attempt: Attempt, started: float) -> tuple[str, Any]:
        """Serve the worker's prints and heartbeats until it answers or runs out of time."""
        while True:
            if not self.conn.poll(0.05):
                late = attempt.overdue(started)
                if late is not None:
                    return "late", late
                continue
            kind, body = cloudpickle.loads(self.conn.recv_bytes())
            if kind == "beat":
                try:
                    attempt.beat(body)
                except BaseException as exc:
                    self.conn.send_bytes(cloudpickle.dumps(("fail", _portable(exc))))
                else:
                    self.conn.send_bytes(cloudpickle.dumps(("ack", None)))
            elif kind == "out":
                stream, text = body
                print(text, end="", file=sys.stderr if stream == "stderr" else sys.stdout)
            else:
                return kind, body


class ProcessExecutor:
    """A pool of up to ``max_workers`` worker processes (default: the machine's cores).

    The attempt loop holds one of ``slots`` from before it records an attempt's start to
    after it records its end, so a step waiting for a worker is not journaled as started.
    """

    name = "process"

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or os.cpu_count() or 1
        self._idle: list[_Worker] = []
        self.slots = threading.BoundedSemaphore(self.max_workers)
        self._lock = threading.Lock()

    def run(self, attempt: Attempt) -> Outcome:
        """Run ``attempt`` on an idle worker (or a new one): the caller holds a slot."""
        __tracebackhide__ = True
        worker = self._take()
        try:
            return worker.run(attempt)
        finally:
            if worker.alive():
                with self._lock:
                    self._idle.append(worker)

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
        return _Worker()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


class _CallPickler(cloudpickle.Pickler):
    """cloudpickle, except that code keeps the name of its file (cloudpickle calls all
    code ``<dynamic-code>``), so the worker's tracebacks say where each frame is."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self.files: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.CodeType):
            self.files.update(_code_files(obj))
            return marshal.loads, (marshal.dumps(obj),)  # same interpreter on both ends
        return super().reducer_override(obj)


def _code_files(code: types.CodeType) -> set[str]:
    files = {code.co_filename}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            files |= _code_files(const)
    return files


def dumps_call(call: tuple[Any, ...]) -> tuple[bytes, dict[str, Any]]:
    """The pickled call, and the source lines of its code that exists only in this
    process's memory (notebook cells: no file a worker could read)."""
    buffer = io.BytesIO()
    pickler = _CallPickler(buffer)
    pickler.dump(call)
    sources = {}
    for name in pickler.files:
        entry = linecache.cache.get(name)
        if entry is not None and len(entry) == 4 and entry[1] is None:
            sources[name] = entry
    return buffer.getvalue(), sources


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it pickles, else a RemoteError carrying its text and traceback."""
    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        text = "".join(traceback.format_exception(exc))
        return RemoteError(f"{type(exc).__name__}: {exc}\n(in the worker process)\n{text}")


class _Forward(io.TextIOBase):
    """The worker's stdout/stderr: what the activity prints shows in the notebook."""

    def __init__(self, conn: Connection, stream: str, lock: threading.Lock) -> None:
        self.conn, self.stream, self.lock = conn, stream, lock

    def write(self, text: str) -> int:
        if text:
            with self.lock:
                self.conn.send_bytes(cloudpickle.dumps(("out", (self.stream, text))))
        return len(text)


PARENT_POLL = 0.05  # seconds between a worker's looks at whether its kernel still runs


def _exit_with(parent: int) -> None:
    """End this worker when process ``parent`` (its kernel) is gone.

    A SIGKILLed kernel cannot stop its workers, and an attempt would otherwise run on
    until it next prints, heartbeats or returns, beside the attempt the resumed run starts
    (both writing the same checkpoint). Polled, not ``PR_SET_PDEATHSIG``: that fires when
    the kernel *thread* that started the worker ends, and pool threads come and go.
    """
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(1)


def _serve(fd: int, parent: int) -> None:
    conn = Connection(fd)
    threading.Thread(target=_exit_with, args=(parent,), name="durable_nb:parent",
                     daemon=True).start()
    # EOF or a broken pipe: the kernel's end is closed, it is gone and so is our caller.
    with contextlib.suppress(EOFError, OSError):
        _serve_calls(conn)
    # Not a normal exit: flushing the forwarded stdout/stderr would write to that pipe.
    os._exit(0)


def _serve_calls(conn: Connection) -> None:
    from durable_nb.engine.executors import StepInfo

    lock = threading.Lock()
    sys.stdout = _Forward(conn, "stdout", lock)
    sys.stderr = _Forward(conn, "stderr", lock)

    def send(kind: str, body: Any) -> None:
        with lock:
            conn.send_bytes(cloudpickle.dumps((kind, body)))

    send("ready", None)
    while True:
        # The cells its code comes from, for tracebacks (checkcache keeps such entries).
        linecache.cache.update(cloudpickle.loads(conn.recv_bytes()))
        fn, args, kwargs, step = cloudpickle.loads(conn.recv_bytes())
        assert isinstance(step, StepInfo)

        def beat(details: Any) -> None:
            send("beat", details)
            kind, body = cloudpickle.loads(conn.recv_bytes())
            if kind == "fail":
                raise body

        attempt = Attempt(fn, args, kwargs, step, record_beat=beat)
        try:
            value = in_attempt(attempt, lambda: fn(*args, **kwargs))  # noqa: B023
        except BaseException as exc:  # SystemExit too: it ends the attempt, not the worker
            send("err", (_portable(exc), "".join(traceback.format_exception(exc))))
            continue
        try:
            send("ok", value)
        except Exception as exc:
            send("err", (PayloadError(
                f"the result of {step.activity}() at step {step.seq} cannot travel back "
                f"from the worker process: {exc}. Return something that pickles, or run "
                "it with --executor thread."), ""))


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
