"""The attempt loop of a live step: record the attempt, hand it to an executor, record how
it ended, and retry by the activity's policy.

The durability rule holds here: the value reaches workflow code only once the journal has
acknowledged the step's ``step_completed`` (written here, or by the worker itself when the
executor says it journaled the completion).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from durable_nb.engine.executors import Attempt, Executor, Outcome, StepInfo, executor
from durable_nb.errors import ActivityFailed, PayloadError
from durable_nb.journal.codec import CallEncoding, Payload, encode, recorded_error, seal_payload
from durable_nb.journal.heartbeat import heartbeat_progress
from durable_nb.journal.schema import Event, event
from durable_nb.journal.text import storable_text

if TYPE_CHECKING:
    from durable_nb.engine.activity import Activity
    from durable_nb.engine.futures import Resolvable
    from durable_nb.engine.run import RunContext


def error_text(exc: BaseException) -> str:
    """How a step's failure reads in the journal: ``ValueError: bad item 3``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def encode_arguments(activity: Activity[Any, Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any], seq: int, home: Path | None = None) -> CallEncoding:
    """A call's arguments by parameter name, encoded once (see ``CallEncoding``)."""
    return CallEncoding(activity.bind(args, kwargs),
                        what=f"the arguments of {activity.name}() at step {seq}", home=home,
                        safe=activity.safe)


def stored_arguments(activity: Activity[Any, Any], call: CallEncoding, seq: int) -> Any:
    """``call.payload``; when it cannot be stored, the error names the argument."""
    try:
        return call.payload
    except PayloadError:
        for i, (param, arg) in enumerate(call.named.items()):
            encode(arg, what=f"argument {i + 1} ({param!r}) of {activity.name}() at step {seq}",
                   home=call.home)
        raise


def completed_event(step: StepInfo, value: Any, home: Path,
                    safe: bool = False) -> tuple[Event, str]:
    """The ``step_completed`` of ``step`` with result ``value``, and the result's preview
    (recorded by the kernel, or by a worker that ran the attempt). A large result is
    written to the blob store of ``home`` here, durably, before the event referencing it
    exists."""
    result = encode(value, what=f"the result of {step.activity}() at step {step.seq}",
                    home=home, safe=safe)
    return event(step.run_id, "step_completed", seq=step.seq, attempt=step.attempt,
                 name=step.activity, **result.columns()), result.preview


def heartbeat_event(step: StepInfo, details: Any, home: Path) -> tuple[Event, str]:
    """The ``step_heartbeat`` recording ``details`` for ``step``, and their preview."""
    payload = encode(details, what=f"the heartbeat details of {step.activity}() at step "
                                   f"{step.seq}", home=home)
    return event(step.run_id, "step_heartbeat", seq=step.seq, attempt=step.attempt,
                 name=step.activity, **payload.columns()), payload.preview


_NO_SLOTS = contextlib.nullcontext()  # (reusable: it holds nothing)
LATER = object()  # returned instead of a value that goes to the step's future once durable


@dataclass(frozen=True, slots=True)
class _Plan:
    """What every attempt of one activity in a run shares, found at its first step."""

    runner: Executor
    records_itself: bool  # its worker journals the completion (and heartbeats) itself
    describe: Callable[[Attempt], dict[str, Any]] | None  # more for the start's meta
    limits: tuple[contextlib.AbstractContextManager[Any], ...]  # its slots, in order
    meta: str  # the start's meta when there is nothing more to describe
    safe_result: bool  # an encrypted journal keeps the result in clear


class AttemptRunner:
    """Runs the live attempts of ``ctx``'s steps."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._plans: dict[Activity[Any, Any], _Plan] = {}

    def _plan(self, activity: Activity[Any, Any]) -> _Plan:
        plan = self._plans.get(activity)
        if plan is None:
            runner = executor(activity.executor or self.ctx.executor)
            limits = (activity.limit, self.ctx.limit, getattr(runner, "slots", None))
            plan = self._plans[activity] = _Plan(
                runner, bool(getattr(runner, "records_itself", False)),
                getattr(runner, "describe", None),
                tuple(limit for limit in limits if limit is not None),
                json.dumps({"executor": runner.name}), "return" in activity.safe)
        return plan

    def run(self, seq: int, activity: Activity[Any, Any], args: tuple[Any, ...],
            kwargs: dict[str, Any], call: CallEncoding, first_attempt: int,
            heartbeat: Any = None, into: Resolvable | None = None) -> Any:
        """Run the step's attempts; its value once durable. With ``into`` (a submitted
        step) the journal's acknowledgement is not waited for: this returns ``LATER``
        and the value goes to ``into`` when the completion is durable, so the thread
        takes the next step meanwhile and the completions of many steps share one
        request and one sync."""
        __tracebackhide__ = True
        ctx = self.ctx
        name, policy = activity.name, activity.policy
        payload = stored_arguments(activity, call, seq)
        plan = self._plan(activity)
        runner, records_itself = plan.runner, plan.records_itself
        ctx.record_code(activity)
        number, retries_left = first_attempt, policy.retries
        beats = [heartbeat]  # the latest recorded details, handed to the next attempt
        while True:
            ctx.check_stop()
            step = StepInfo(ctx.run_id, seq, number, name, heartbeat=beats[0])
            attempt = Attempt(activity.fn, args, kwargs, step, timeout=policy.timeout,
                              heartbeat_timeout=policy.heartbeat_timeout,
                              record_beat=self._recorder(step, beats), home=ctx.client.home,
                              safe_result=plan.safe_result)
            failed: BaseException | None = None
            why = ""
            # The attempt holds its slots from its start record to its end record, so the
            # journal never shows a step waiting for a slot as started (nor a kill counts
            # an attempt for it), and shows no more running at once than the limits allow.
            with self._slots(plan):
                meta: str | dict[str, Any] = plan.meta
                if plan.describe is not None or payload.blob is not None:
                    meta = {"executor": runner.name,
                            **(plan.describe(attempt) if plan.describe else {})}
                started = event(ctx.run_id, "step_started", seq=seq, attempt=number,
                                name=name, args_hash=call.digest,
                                code_hash=activity.code_hash, **payload.columns(meta))
                if into is not None and not records_itself:
                    ctx.client.commit([started])  # with the batch its completion joins
                else:  # such a worker needs the start durable first (it writes through
                    # another connection)
                    ctx.client.append([started], wait=records_itself)
                if ctx.listeners:
                    ctx._emit({"kind": "step_started", "seq": seq, "name": name,
                               "attempt": number, "args": payload.preview, "ts": time.time(),
                               "beats_in_journal": records_itself})
                on_run_thread = threading.current_thread() is ctx.thread
                ctx.in_activity = ctx.in_activity or on_run_thread
                try:
                    outcome = runner.run(attempt)
                except (Exception, SystemExit) as exc:
                    # sys.exit() in an activity ends that step, not the kernel: a failure of
                    # the step, never retried. KeyboardInterrupt passes: the step is
                    # abandoned.
                    failed = exc
                    if isinstance(exc, SystemExit):
                        why = " (not retried: the activity called sys.exit())"
                    elif not policy.is_retryable(exc):
                        why = " (not retried: a programming error)"
                    self.record_failure(seq, number, name, exc,
                                        final=retries_left == 0 or bool(why))
                finally:
                    if on_run_thread:
                        ctx.in_activity = False
                if failed is None:
                    return self._complete(attempt, outcome, into)
            # A failed attempt: retry (after its backoff, without holding a slot) or fail.
            if retries_left == 0 or why:
                raise self.failure(seq, name, number, error_text(failed), failed,
                                   why=why) from failed
            retries_left -= 1
            if records_itself:  # the next attempt reads the heartbeats it journaled
                from durable_nb.engine.history import recorded_step

                rec = recorded_step(ctx.client, ctx.run_id, seq)
                beats[0] = rec.heartbeat() if rec is not None else beats[0]
            ctx._wake.wait(policy.delay(policy.retries - retries_left))
            number += 1

    def _complete(self, attempt: Attempt, outcome: Outcome, into: Resolvable | None) -> Any:
        ctx, step = self.ctx, attempt.step
        shown = outcome.recorded
        if shown is None:
            try:
                done, shown = completed_event(step, outcome.value, ctx.client.home,
                                              safe=attempt.safe_result)
            except PayloadError as exc:
                self.record_failure(step.seq, step.attempt, step.activity, exc, final=True)
                raise
            # The durability rule: durable before the workflow sees it.
            if into is not None:
                preview = shown

                def durable(error: BaseException | None) -> None:
                    if error is not None:
                        into.set_exception(error)
                    else:
                        self._completed(step, preview)
                        into.set_result(outcome.value)

                ctx.client.commit([done], durable)
                return LATER
            ctx.client.append([done], wait=True)
        self._completed(step, shown)
        return outcome.value

    def _completed(self, step: StepInfo, shown: str) -> None:
        self.ctx.executed += 1
        if self.ctx.listeners:
            self.ctx._emit({"kind": "step_completed", "seq": step.seq, "name": step.activity,
                            "attempt": step.attempt, "result": shown, "ts": time.time()})

    def _slots(self, plan: _Plan) -> contextlib.AbstractContextManager[Any]:
        """Hold the activity's and the run's concurrency slots for one attempt, and the
        executor's (a worker process of the pool) when it has them."""
        if not plan.limits:
            return _NO_SLOTS
        stack = contextlib.ExitStack()
        for limit in plan.limits:
            stack.enter_context(limit)
        return stack

    def _recorder(self, step: Any, beats: list[Any]) -> Any:
        ctx = self.ctx

        def record(details: Any) -> None:
            beat, shown = heartbeat_event(step, details, ctx.client.home)
            ctx.client.append([beat], wait=True)
            beats[0] = details
            # What the journal holds in clear, as every other view reads it (an encrypted
            # journal keeps the details sealed: no progress to show).
            progress = heartbeat_progress(details) if beat.get("data_json") else None
            ctx._emit({"kind": "step_heartbeat", "seq": step.seq, "name": step.activity,
                       "attempt": step.attempt, "details": shown, "progress": progress,
                       "ts": time.time()})

        return record

    def record_failure(self, seq: int, attempt: int, name: str, exc: BaseException,
                       final: bool) -> None:
        ctx = self.ctx
        home = ctx.client.home
        try:
            pickled: str | None = seal_payload(Payload(
                None, base64.b64encode(cloudpickle.dumps(exc)).decode("ascii"), ""),
                home).pickle_b64
        except Exception:
            pickled = None
        text = storable_text(error_text(exc))
        tb = storable_text("".join(traceback.format_exception(exc)))
        error, shown_tb, sealed = recorded_error(text, tb, home)
        failed = event(ctx.run_id, "step_failed", seq=seq, attempt=attempt, name=name,
                       error=error, data_pickle=pickled, traceback=shown_tb,
                       meta={"final": final, **sealed})
        ctx.client.append([failed], wait=final)
        # The storable text, in clear: the live view is this kernel's, not the journal.
        ctx._emit({"kind": "step_failed", "seq": seq, "name": name, "attempt": attempt,
                   "final": final, "error": text, "traceback": tb, "ts": time.time()})

    def failure(self, seq: int, name: str, attempts: int, error: str,
                cause: BaseException | None, why: str = "") -> ActivityFailed:
        run_id = self.ctx.run_id
        exc = ActivityFailed(
            f"activity {name}() failed at step {seq} of run {run_id} after {attempts} "
            f"attempt{'s' if attempts != 1 else ''}{why}: {storable_text(error)}\n"
            f"Fix the activity (re-run its cell) and re-run the workflow cell: steps before "
            f"{seq} are replayed from the journal and step {seq} runs again with the new code.",
            run_id=run_id, seq=seq, activity=name, attempts=attempts, cause=cause,
        )
        if cause is not None and exc.__cause__ is None:
            exc.__cause__ = cause
        return exc
