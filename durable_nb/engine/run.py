"""A run in progress: numbers steps at call time, replays recorded ones, executes the rest.

The durability rule lives here and in engine/attempts.py (the attempt loop of live steps):
a step's result reaches workflow code only after the journal server acknowledged its
``step_completed`` event as durable. So a step whose result the workflow saw never runs
again; only steps in flight at a crash do.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from durable_nb.engine.attempts import LATER, AttemptRunner, encode_arguments
from durable_nb.engine.executors import (  # StepInfo: durable_nb.StepInfo, defined there
    Executor,
    StepInfo,
    check_executor,
    check_limit,
    running,
)
from durable_nb.engine.futures import Resolvable, StepFuture
from durable_nb.engine.history import StepRecord, steps_before
from durable_nb.engine.inputs import Input, recorded_inputs
from durable_nb.errors import NondeterminismError, RunCancelled, RunFinished
from durable_nb.journal import settings
from durable_nb.journal.codec import CallEncoding, preview, recorded_error
from durable_nb.journal.schema import event
from durable_nb.server.client import JournalClient

if TYPE_CHECKING:
    from durable_nb.engine.activity import Activity

_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "durable_nb_run", default=None)
_run_threads: dict[int, RunContext] = {}  # thread ident -> the run whose body it executes
SUBMIT_THREADS = 64  # threads of a run's pool for submitted steps, without a run limit


def current_step() -> StepInfo | None:
    """Inside an activity called by a workflow: which run, step and attempt this is."""
    attempt = running.get()
    return attempt.step if attempt is not None else None


def current_run() -> RunContext | None:
    """The run whose workflow code is executing in this context, if any."""
    return None if running.get() is not None else _current.get()


def call_activity(activity: Activity[Any, Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    """Entry point of every activity call: a journaled step inside a run, else a plain call."""
    __tracebackhide__ = True
    ctx = current_run()
    if ctx is None:
        if (_run_threads and running.get() is None
                and threading.current_thread() is not threading.main_thread()
                and threading.get_ident() not in _run_threads):
            raise RuntimeError(
                f"activity {activity.name}() was called from a thread the workflow started "
                "itself, so it cannot be numbered deterministically. Fan out with "
                "durable_nb.map(activity, items) instead of your own threads."
            )
        return activity.fn(*args, **kwargs)
    return ctx.call(activity, args, kwargs)


class RunContext:
    """One execution of a run's workflow code in this process."""

    def __init__(self, client: JournalClient, run_id: str, workflow: str, mode: str,
                 steps: dict[int, StepRecord], rows: list[dict[str, Any]], *,
                 source: str | None = None, key: str | None = None) -> None:
        if mode not in ("resume", "replay"):
            raise ValueError(mode)
        self.client = client
        self.run_id = run_id
        self.workflow = workflow
        # resume: unfinished (or new) run, steps without a completed record run live.
        # replay: a completed run; the first call that differs forks a new run.
        self.mode = mode
        self.steps = steps
        self.source = source
        self.key = key
        self.status = "running"
        self.replayed = 0
        self.saved_s = 0.0  # recorded run time of the replayed steps
        self.executed = 0
        self.forked_from: str | None = None
        self.resumed_from_status: str | None = None
        self.notices: list[str] = []
        self.notify: Callable[[str], None] = print
        self.listeners: list[Callable[[RunContext, dict[str, Any]], None]] = []
        self.started = time.monotonic()
        self.started_at = time.time()
        self.ended: float | None = None
        self.total: int | None = None  # steps expected, when known (map over a list)
        self.thread: threading.Thread | None = None
        self._interrupt_requested = False
        self.in_activity = False  # the run's own thread is inside an activity call
        self._wake = threading.Event()  # ends a retry's backoff early on cancel or interrupt
        self._next_seq = 0
        self._lock = threading.RLock()
        self._code_recorded = {r["code_hash"] for r in rows if r["kind"] == "activity_code"}
        # The workflow cell's inputs as recorded (see engine/inputs.py); a replay whose
        # inputs changed forks (for ``fork_reason``) and records ``pending_inputs``.
        self.inputs: dict[str, Input] = recorded_inputs(rows)
        self.fork_reason: str | None = None
        self.pending_inputs: list[Input] = []
        # Where live attempts run (an activity's own executor wins) and how many at once.
        self.executor: str | Executor = "thread"
        self.max_concurrency: int | None = None
        self.limit: threading.BoundedSemaphore | None = None
        self.attempts = AttemptRunner(self)
        self._submitted: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Future[Any], Future[Any]]] = []  # (pool task, step)

    def configure(self, *, executor: str | Executor | None = None,
                  max_concurrency: int | None = None) -> RunContext:
        """Set the run's executor (for activities without their own) and its limit of
        attempts at once."""
        if executor is not None:
            self.executor = check_executor(executor) or "thread"
        if max_concurrency is not None:
            self.max_concurrency = check_limit(max_concurrency)
            self.limit = threading.BoundedSemaphore(max_concurrency)
        return self

    # -- numbering and replay ----------------------------------------------------------------
    def reserve(self, n: int = 1) -> int:
        """Take the next ``n`` sequence numbers (at call time, so replay numbers alike)."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += n
            if n > 1:
                self.total = max(self.total or 0, self._next_seq)
                self._emit({"kind": "total", "total": self.total})
            return seq

    def call(self, activity: Activity[Any, Any], args: tuple[Any, ...],
             kwargs: dict[str, Any], seq: int | None = None,
             into: Resolvable | None = None) -> Any:
        """The step's value (replayed, or run live and durable); with ``into``, a live
        step may instead return ``LATER`` and hand its value to ``into`` once durable."""
        __tracebackhide__ = True
        if seq is None:
            seq = self.reserve()
        self.check_stop()
        call = encode_arguments(activity, args, kwargs, seq, self.client.home)
        if self.mode == "resume" and seq not in self.steps:
            rec = None  # a new step (a run in resume mode stays so: no lock needed)
        else:
            with self._lock:
                rec = self.steps.get(seq)
                same = rec is not None and rec.name == activity.name and call.matches(
                    rec.args_hash, rec.args_json, args, kwargs)
                if self.mode == "replay" and (
                        rec is None or rec.status not in ("completed", "failed") or not same):
                    self._fork(seq)
                    rec = None
        if rec is not None:
            if not same:
                raise NondeterminismError(self._divergence(seq, rec, activity, call))
            if rec.status == "started" and rec.executor == "dask":
                from durable_nb.engine.dask_executor import attach

                rec = attach(self, rec)  # still running on a worker: wait for its record
            if rec.status == "completed":
                self.replayed += 1
                self.saved_s += rec.attempt_s or 0.0
                value = rec.result(self.client.home, what=(
                    f"the result of step {seq} ({rec.name}()) of run {self.run_id}"), remedy=(
                    f"To compute it again, keep {steps_before(seq)} and run the rest with the "
                    f"current code: `%%workflow {self.workflow} --fork-at {seq}` (or "
                    f"`durable-nb fork {self.run_id} --at {seq}`, then resume the fork)."))
                self._emit({"kind": "step_replayed", "seq": seq, "name": rec.name,
                            "attempt": rec.attempts, "args": rec.args_preview,
                            "result": rec.result_preview, "started": rec.started_ts,
                            "attempt_started": rec.attempt_started_ts,
                            "ended": rec.ended_ts})
                return value
            if rec.status == "failed" and self.mode == "replay":
                # The completed run went past this failure (the workflow caught it).
                self.replayed += 1
                raise self.attempts.failure(seq, activity.name, rec.attempts, rec.error or "",
                                            rec.recorded_exception())
        return self.attempts.run(seq, activity, args, kwargs, call,
                                 first_attempt=rec.attempts + 1 if rec else 1,
                                 heartbeat=rec.heartbeat(self.client.home) if rec else None,
                                 into=into)

    def submit(self, activity: Activity[Any, Any], args: tuple[Any, ...],
               kwargs: dict[str, Any], seq: int | None = None) -> StepFuture[Any]:
        """Start a step without waiting for it: its number is taken now, in call order.

        A recorded step resolves at once, on this thread; a live one runs on the run's
        pool, within the activity's and the run's concurrency limits.
        """
        if seq is None:
            seq = self.reserve()
        future: Future[Any] = Future()
        live = self.prepare(activity, args, kwargs, seq, future)
        if live is not None:
            task = self._pool().submit(contextvars.copy_context().run, live)
            with self._lock:
                self._pending.append((task, future))
        return StepFuture(future, seq, activity.name)

    def prepare(self, activity: Activity[Any, Any], args: tuple[Any, ...],
                kwargs: dict[str, Any], seq: int, into: Resolvable) -> Callable[[], None] | None:
        """What runs step ``seq`` live, or None when it is recorded (``into`` has its
        value, or the divergence it raises, already).

        Run on some thread, a live step's outcome goes to ``into``: its value once the
        journal holds it, which may be after the step's thread went on to another step.
        """
        rec = self.steps.get(seq)
        if rec is None or rec.status != "completed":
            return functools.partial(self._step_into, into, activity, args, kwargs, seq)
        try:
            into.set_result(self.call(activity, args, kwargs, seq))
        except BaseException as exc:  # a divergence: raised where the result is read
            into.set_exception(exc)
        return None

    def _step_into(self, into: Resolvable, activity: Activity[Any, Any],
                   args: tuple[Any, ...], kwargs: dict[str, Any], seq: int) -> None:
        try:
            value = self.call(activity, args, kwargs, seq, into=into)
        except BaseException as exc:
            into.set_exception(exc)
        else:
            if value is not LATER:
                into.set_result(value)

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._submitted is None:
                self._submitted = ThreadPoolExecutor(
                    max_workers=self.max_concurrency or SUBMIT_THREADS,
                    thread_name_prefix=f"durable_nb.{self.workflow}")
            return self._submitted

    def _drain(self, cancel: bool = False) -> None:
        """Wait for the steps the workflow submitted and did not wait for; with
        ``cancel`` (the workflow failed), those that have not started are dropped."""
        with self._lock:
            pending, self._pending = self._pending, []
            pool, self._submitted = self._submitted, None
        for task, future in pending:
            if cancel and task.cancel():
                future.cancel()
        for _, future in pending:
            with contextlib.suppress(BaseException):
                future.result()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _divergence(self, seq: int, rec: StepRecord, activity: Activity[Any, Any],
                    call: CallEncoding) -> str:
        try:
            now = call.payload.preview
        except Exception:
            now = preview(call.named)
        return (
            f"step {seq} of run {self.run_id} does not match the journal: it recorded "
            f"{rec.name}({rec.args_preview}) but the workflow now calls "
            f"{activity.name}({now}). The workflow code or its inputs changed while the run "
            f"is unfinished. Either start over with `%%workflow {self.workflow} --new`, or "
            f"keep {steps_before(seq)} and run the rest with the current code: "
            f"`%%workflow {self.workflow} --fork-at {seq}`."
        )

    def _fork(self, seq: int) -> None:
        """Replaying a completed run, step ``seq`` differs: continue live in a new run."""
        from durable_nb.engine.identity import fork_run

        parent = self.run_id
        run_id = fork_run(self.client, parent, seq, self.source, self.key)
        # The journal server copied the steps before ``seq`` (and the activity sources).
        self.run_id, self.mode = run_id, "resume"
        self.steps = {n: rec for n, rec in self.steps.items() if n < seq}
        self.forked_from = parent
        why = self.fork_reason if self.fork_reason else f"step {seq} differs"
        self.notice(f"{why} from run {parent}: continuing as {run_id}, "
                    f"{steps_before(seq)} reused")
        if self.pending_inputs:
            self.record_inputs(self.pending_inputs)
            self.pending_inputs = []
        self._emit({"kind": "run_forked", "from": parent, "seq": seq, "run_id": run_id})

    def record_code(self, activity: Activity[Any, Any]) -> None:
        """Record an activity's source (once per run and code): what a resume defines
        again from the journal."""
        if activity.code_hash in self._code_recorded:
            return
        self._code_recorded.add(activity.code_hash)
        self.client.append([event(self.run_id, "activity_code", name=activity.name,
                                  code_hash=activity.code_hash,
                                  meta={"source": activity.source,
                                        "cell": activity.defined_by})], wait=False)

    def record_inputs(self, inputs: list[Input]) -> None:
        """Journal the workflow cell's inputs (before its first step, on the same ordered
        connection: a step that is durable implies the inputs are)."""
        self.client.append([i.as_event(self.run_id) for i in inputs], wait=False)
        self.inputs.update((i.name, i) for i in inputs)

    # -- run lifecycle ---------------------------------------------------------------------
    def check_stop(self) -> None:
        """At a step boundary: stop if the run was cancelled or the user interrupted it.

        An interrupt stays requested for the rest of this execution: in a fan-out every
        branch stops at its next boundary, not only the first one to get there.
        """
        if self.run_id in self.client.cancelled:
            raise RunCancelled(f"run {self.run_id} was cancelled")
        if self._interrupt_requested:
            raise KeyboardInterrupt

    def cancel(self) -> None:
        """Mark the run cancelled in the journal; it stops at its next step boundary.

        A step already running finishes (and is recorded) or is abandoned with its kernel.
        """
        if self.status != "running":
            return
        with contextlib.suppress(RunFinished):  # it ended meanwhile: nothing to cancel
            self.client.cancel_run(self.run_id)
        self.client.cancelled.add(self.run_id)
        self._wake.set()
        self._emit({"kind": "run_status", "status": "cancelling", "ts": time.time()})

    def request_interrupt(self) -> None:
        """Ctrl-C for a run whose body runs on another thread: stop at the next boundary
        (each of its threads, at its own)."""
        self._interrupt_requested = True
        self._wake.set()

    def execute(self, body: Callable[[], Any]) -> Any:
        """Run the workflow body as this run, recording how it ends."""
        __tracebackhide__ = True
        token = _current.set(self)
        self.thread = threading.current_thread()
        _run_threads[threading.get_ident()] = self
        try:
            try:
                with settings.per_run():  # the key and the blob threshold, read once
                    value = body()
            except BaseException:
                self._drain(cancel=True)
                raise
            self._drain()
            with self._lock:
                recorded = max(self.steps, default=-1) + 1
                if self.mode == "replay" and (self._next_seq < recorded or self.fork_reason):
                    # The workflow now makes fewer calls, or its inputs changed.
                    self._fork(self._next_seq)
            if self.mode == "resume":
                self._finish("completed")
            else:
                self._emit({"kind": "run_status", "status": "completed", "ts": time.time()})
            self.status = "completed"
            return value
        except RunCancelled:
            self.status = "cancelled"
            self._emit({"kind": "run_status", "status": "cancelled", "ts": time.time()})
            raise
        except KeyboardInterrupt:
            self._finish("interrupted", "interrupted by the user (kernel interrupt)")
            self.notice(f"run {self.run_id} interrupted: re-run the cell to resume it")
            raise
        except BaseException as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            error = f"{type(exc).__name__}: {first_line}"
            if self.mode == "resume":
                self._finish("failed", error, "".join(traceback.format_exception(exc)))
            else:
                self._emit({"kind": "run_status", "status": "failed", "error": error,
                            "ts": time.time()})
            self.status = "failed"
            raise
        finally:
            self.ended = time.monotonic()
            _current.reset(token)
            _run_threads.pop(threading.get_ident(), None)

    def _finish(self, status: str, error: str | None = None, tb: str | None = None) -> None:
        self.status = status
        if self.run_id in self.client.cancelled:
            self.status = "cancelled"
            return
        recorded, recorded_tb, sealed = recorded_error(error, tb, self.client.home) \
            if status == "failed" else (error, tb, {})
        self.client.append([event(self.run_id, "run_status", status=status, name=self.workflow,
                                  error=recorded, traceback=recorded_tb,
                                  meta=sealed or None)], wait=True)
        self._emit({"kind": "run_status", "status": status, "error": error, "ts": time.time()})

    def notice(self, text: str) -> None:
        self.notices.append(text)
        self.notify(text)

    def _emit(self, ev: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(self, ev)

    # -- reporting -------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def summary(self) -> str:
        steps = self.replayed + self.executed
        parts = [f"{self.run_id} {self.status}: {steps} step{'s' if steps != 1 else ''} "
                 f"({self.replayed} replayed, {self.executed} ran) in {self.elapsed:.2f} s"]
        if self.replayed:
            parts.append(f"replay saved {self.saved_s:.1f} s of recorded run time")
        if self.resumed_from_status:
            parts.append(f"resumed (was {self.resumed_from_status})")
        if self.forked_from:
            parts.append(f"forked from {self.forked_from}")
        return "; ".join(parts)

