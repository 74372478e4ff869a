"""A run in progress: numbers steps at call time, replays recorded ones, executes the rest.

The durability rule lives here: a step's result reaches workflow code only after the
journal server acknowledged its ``step_completed`` event as durable. So a step whose
result the workflow saw never runs again; only steps in flight at a crash do.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle

from durable_nb.engine.history import StepRecord, steps_before
from durable_nb.engine.inputs import Input, recorded_inputs
from durable_nb.errors import (
    ActivityFailed,
    NondeterminismError,
    PayloadError,
    RunCancelled,
    RunFinished,
)
from durable_nb.journal.codec import call_hash, encode
from durable_nb.journal.schema import event
from durable_nb.journal.text import storable_text
from durable_nb.server.client import JournalClient

if TYPE_CHECKING:
    from durable_nb.engine.activity import Activity

_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "durable_nb_run", default=None)
_in_activity: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "durable_nb_in_activity", default=False)
_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "durable_nb_step", default=None)
_run_threads: dict[int, RunContext] = {}  # thread ident -> the run whose body it executes


@dataclass(frozen=True)
class StepInfo:
    """Which step an activity attempt is: ``key`` makes side effects idempotent.

    A step in flight when its kernel died runs again (at-least-once), with the same run
    id and sequence number; use ``key`` as an idempotency key for external writes.
    """

    run_id: str
    seq: int
    attempt: int
    activity: str

    @property
    def key(self) -> str:
        return f"{self.run_id}/{self.seq}"


def current_step() -> StepInfo | None:
    """Inside an activity called by a workflow: which run, step and attempt this is."""
    return _step.get()


def current_run() -> RunContext | None:
    """The run whose workflow code is executing in this context, if any."""
    return None if _in_activity.get() else _current.get()


def call_activity(activity: Activity[Any, Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    """Entry point of every activity call: a journaled step inside a run, else a plain call."""
    __tracebackhide__ = True
    ctx = current_run()
    if ctx is None:
        if (_run_threads and not _in_activity.get()
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
             kwargs: dict[str, Any], seq: int | None = None) -> Any:
        __tracebackhide__ = True
        if seq is None:
            seq = self.reserve()
        self.check_stop()
        digest = call_hash(args, kwargs)
        with self._lock:
            rec = self.steps.get(seq)
            if self.mode == "replay" and (
                rec is None or rec.status not in ("completed", "failed")
                or rec.name != activity.name or rec.args_hash != digest
            ):
                self._fork(seq)
                rec = None
        if rec is not None:
            if rec.name != activity.name or rec.args_hash != digest:
                raise NondeterminismError(self._divergence(seq, rec, activity, args, kwargs))
            if rec.status == "completed":
                self.replayed += 1
                self.saved_s += rec.attempt_s or 0.0
                value = rec.result()
                self._emit({"kind": "step_replayed", "seq": seq, "name": rec.name,
                            "attempt": rec.attempts, "args": rec.args_preview,
                            "result": rec.result_preview, "started": rec.started_ts,
                            "attempt_started": rec.attempt_started_ts,
                            "ended": rec.ended_ts})
                return value
            if rec.status == "failed" and self.mode == "replay":
                # The completed run went past this failure (the workflow caught it).
                self.replayed += 1
                raise self._failure(seq, activity.name, rec.attempts, rec.error or "",
                                    rec.recorded_exception())
        return self._execute(seq, activity, args, kwargs, digest,
                             first_attempt=rec.attempts + 1 if rec else 1)

    def _divergence(self, seq: int, rec: StepRecord, activity: Activity[Any, Any],
                    args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        now = encode_arguments(activity, args, kwargs, seq).preview
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

    # -- live execution --------------------------------------------------------------------
    def _execute(self, seq: int, activity: Activity[Any, Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], digest: str, first_attempt: int) -> Any:
        __tracebackhide__ = True
        name, policy = activity.name, activity.policy
        payload = encode_arguments(activity, args, kwargs, seq)
        self.record_code(activity)
        attempt, retries_left = first_attempt, policy.retries
        while True:
            self.check_stop()
            self.client.append([event(
                self.run_id, "step_started", seq=seq, attempt=attempt, name=name,
                args_hash=digest, code_hash=activity.code_hash, data_json=payload.json,
                data_pickle=payload.pickle_b64, preview=payload.preview,
            )], wait=False)
            self._emit({"kind": "step_started", "seq": seq, "name": name, "attempt": attempt,
                        "args": payload.preview, "ts": time.time()})
            token = _in_activity.set(True)
            step_token = _step.set(StepInfo(self.run_id, seq, attempt, name))
            on_run_thread = threading.current_thread() is self.thread
            self.in_activity = self.in_activity or on_run_thread
            try:
                value = activity.invoke(args, kwargs)
            except (Exception, SystemExit) as exc:
                # sys.exit() in an activity ends that step, not the kernel: a failure of the
                # step, never retried. KeyboardInterrupt passes: the step is abandoned.
                if isinstance(exc, SystemExit):
                    why = " (not retried: the activity called sys.exit())"
                elif not policy.is_retryable(exc):
                    why = " (not retried: a programming error)"
                else:
                    why = ""
                retry = retries_left > 0 and not why
                self._record_failure(seq, attempt, name, exc, final=not retry)
                if not retry:
                    raise self._failure(seq, name, attempt, error_text(exc), exc,
                                        why=why) from exc
                retries_left -= 1
                self._wake.wait(policy.delay(policy.retries - retries_left))
                attempt += 1
                continue
            finally:
                if on_run_thread:
                    self.in_activity = False
                _step.reset(step_token)
                _in_activity.reset(token)
            try:
                result = encode(value, what=f"the result of {name}() at step {seq}")
            except PayloadError as exc:
                self._record_failure(seq, attempt, name, exc, final=True)
                raise
            self.client.append([event(
                self.run_id, "step_completed", seq=seq, attempt=attempt, name=name,
                data_json=result.json, data_pickle=result.pickle_b64, preview=result.preview,
            )], wait=True)  # the durability rule: durable before the workflow sees it
            self.executed += 1
            self._emit({"kind": "step_completed", "seq": seq, "name": name,
                        "attempt": attempt, "result": result.preview, "ts": time.time()})
            return value

    def _record_failure(self, seq: int, attempt: int, name: str, exc: BaseException,
                        final: bool) -> None:
        try:
            pickled: str | None = base64.b64encode(cloudpickle.dumps(exc)).decode("ascii")
        except Exception:
            pickled = None
        failed = event(self.run_id, "step_failed", seq=seq, attempt=attempt, name=name,
                       error=error_text(exc), data_pickle=pickled,
                       traceback="".join(traceback.format_exception(exc)),
                       meta={"final": final})
        self.client.append([failed], wait=final)
        # The recorded (storable) text: the live view shows what the journal holds.
        self._emit({"kind": "step_failed", "seq": seq, "name": name, "attempt": attempt,
                    "final": final, "error": failed["error"],
                    "traceback": failed["traceback"], "ts": time.time()})

    def _failure(self, seq: int, name: str, attempts: int, error: str,
                 cause: BaseException | None, why: str = "") -> ActivityFailed:
        exc = ActivityFailed(
            f"activity {name}() failed at step {seq} of run {self.run_id} after {attempts} "
            f"attempt{'s' if attempts != 1 else ''}{why}: {storable_text(error)}\n"
            f"Fix the activity (re-run its cell) and re-run the workflow cell: steps before "
            f"{seq} are replayed from the journal and step {seq} runs again with the new code.",
            run_id=self.run_id, seq=seq, activity=name, attempts=attempts, cause=cause,
        )
        if cause is not None and exc.__cause__ is None:
            exc.__cause__ = cause
        return exc

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
        """At a step boundary: stop if the run was cancelled or the user interrupted it."""
        if self.run_id in self.client.cancelled:
            raise RunCancelled(f"run {self.run_id} was cancelled")
        if self._interrupt_requested:
            self._interrupt_requested = False
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
        """Ctrl-C for a run whose body runs on another thread: stop at the next boundary."""
        self._interrupt_requested = True
        self._wake.set()

    def execute(self, body: Callable[[], Any]) -> Any:
        """Run the workflow body as this run, recording how it ends."""
        __tracebackhide__ = True
        token = _current.set(self)
        self.thread = threading.current_thread()
        _run_threads[threading.get_ident()] = self
        try:
            value = body()
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
        self.client.append([event(self.run_id, "run_status", status=status, name=self.workflow,
                                  error=error, traceback=tb)], wait=True)
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


def error_text(exc: BaseException) -> str:
    """How a step's failure reads in the journal: ``ValueError: bad item 3``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def encode_arguments(activity: Activity[Any, Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any], seq: int) -> Any:
    """Encode a call's arguments by parameter name, naming the one that cannot be stored."""
    named = activity.bind(args, kwargs)
    try:
        return encode(named, what=f"the arguments of {activity.name}() at step {seq}")
    except PayloadError:
        for i, (param, arg) in enumerate(named.items()):
            encode(arg, what=f"argument {i + 1} ({param!r}) of {activity.name}() at step {seq}")
        raise
