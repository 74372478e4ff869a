"""Where an attempt of an activity runs: one small interface, chosen per activity or per run.

The attempt loop (engine/attempts.py) hands each attempt to an executor and gets back the
value, or the exception the activity raised, or ``ActivityTimeout``:

- ``thread`` (default): in the kernel, sharing its memory. A timed-out attempt cannot be
  killed; it is abandoned and its result ignored.
- ``process``: a pool of worker processes of this kernel (the call travels by cloudpickle,
  so notebook-defined functions work). A timed-out attempt's worker is killed.
- ``dask``: Dask distributed workers that are not the kernel's children
  (engine/dask_executor.py); the task records its own completion, so it outlives the kernel.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from durable_nb.errors import ActivityTimeout

EXECUTORS = ("thread", "process", "dask")


class StepInfo(NamedTuple):
    """Which step an activity attempt is: ``key`` makes side effects idempotent.

    A step in flight when its kernel died runs again (at-least-once), with the same run
    id and sequence number; use ``key`` as an idempotency key for external writes, and
    ``heartbeat`` to continue from the progress an earlier attempt recorded.
    """

    run_id: str
    seq: int
    attempt: int
    activity: str
    # The details of the step's latest heartbeat recorded before this attempt began (by
    # an earlier attempt, or one a dead kernel or worker left), e.g. the last epoch done.
    heartbeat: Any = None

    @property
    def key(self) -> str:
        return f"{self.run_id}/{self.seq}"


# The attempt whose activity code runs in this context: ``current_step()`` and
# ``heartbeat()`` read it, and workflow code is not running here meanwhile.
running: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "durable_nb_attempt", default=None)


def heartbeat(details: Any = None) -> None:
    """Inside an activity: record its progress (e.g. ``{"epoch": 3, "checkpoint": path}``).

    The details are durable when this returns. The step's next attempt (after a retry, a
    kernel death or a worker death) reads the latest with ``current_step().heartbeat``, so
    it can go on from there; views show them as the step's progress. With a
    ``heartbeat_timeout``, an attempt that stops calling this fails (and is retried).
    Outside an activity of a run it does nothing.
    """
    attempt = running.get()
    if attempt is not None:
        attempt.beat(details)


@dataclass
class Attempt:
    """One attempt of one step, as an executor receives it."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    step: StepInfo
    timeout: float | None = None
    heartbeat_timeout: float | None = None
    # Records a heartbeat durably (the attempt loop's), and when the last one came.
    record_beat: Callable[[Any], None] = field(default=lambda details: None, repr=False)
    last_beat: float = field(default_factory=time.monotonic)
    # Set when the executor gave up on the attempt while its code still runs (a thread
    # cannot be killed): its next heartbeat raises this instead of recording anything.
    abandoned: BaseException | None = None
    home: Path | None = None  # the journal home of the run (where a worker records to)
    safe_result: bool = False  # an encrypted journal keeps the result in clear

    def beat(self, details: Any) -> None:
        if self.abandoned is not None:
            raise type(self.abandoned)(f"{self.abandoned}; this attempt was abandoned, so "
                                       "its heartbeats are no longer recorded")
        self.record_beat(details)
        self.last_beat = time.monotonic()

    def overdue(self, started: float) -> ActivityTimeout | None:
        """The timeout this attempt is past, if any (checked while it runs)."""
        now = time.monotonic()
        if self.timeout is not None and now - started > self.timeout:
            return ActivityTimeout(f"activity {self.step.activity} did not finish within "
                                   f"{self.timeout:g} s")
        if (self.heartbeat_timeout is not None
                and now - max(self.last_beat, started) > self.heartbeat_timeout):
            return ActivityTimeout(f"activity {self.step.activity} sent no heartbeat for "
                                   f"{self.heartbeat_timeout:g} s")
        return None

    @property
    def watched(self) -> bool:
        return self.timeout is not None or self.heartbeat_timeout is not None


@dataclass
class Outcome:
    """What an executor gives back. ``recorded`` is the result's preview when the worker
    already journaled the step's completion itself (a Dask task), else None."""

    value: Any
    recorded: str | None = None


class Executor(Protocol):
    name: str

    def run(self, attempt: Attempt) -> Outcome:
        """Run the attempt to its end: return its outcome, or raise what it raised
        (``ActivityTimeout`` when it ran past a timeout)."""
        ...


def in_attempt(attempt: Attempt, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` as ``attempt``: ``current_step()`` and ``heartbeat()`` work inside."""
    token = running.set(attempt)
    try:
        return fn()
    finally:
        running.reset(token)


class ThreadExecutor:
    """In the kernel. Without a timeout the attempt runs on the calling thread."""

    name = "thread"

    def run(self, attempt: Attempt) -> Outcome:
        __tracebackhide__ = True
        call = lambda: attempt.fn(*attempt.args, **attempt.kwargs)  # noqa: E731
        if not attempt.watched:
            return Outcome(in_attempt(attempt, call))
        outcome: list[tuple[bool, Any]] = []
        ctx = contextvars.copy_context()

        def target() -> None:
            try:
                outcome.append((True, ctx.run(in_attempt, attempt, call)))
            except BaseException as exc:
                outcome.append((False, exc))

        # Threads cannot be killed: a timed-out attempt keeps running in the background,
        # its result ignored and its next heartbeat raising (so code that heartbeats
        # stops there). The process executor kills it instead.
        worker = threading.Thread(target=target, name=f"durable_nb:{attempt.step.activity}",
                                  daemon=True)
        started = time.monotonic()
        worker.start()
        while not outcome:
            worker.join(0.05)
            if not outcome and (late := attempt.overdue(started)) is not None:
                attempt.abandoned = late
                raise late
        ok, value = outcome[0]
        if ok:
            return Outcome(value)
        raise value


_lock = threading.Lock()
_shared: dict[str, Executor] = {}


def executor(name: str | Executor) -> Executor:
    """The executor called ``name`` (one per kernel), or ``name`` itself if it is one."""
    if not isinstance(name, str):
        return name
    found = _shared.get(name)
    if found is not None:
        return found
    with _lock:
        found = _shared.get(name)
        if found is None:
            if name == "thread":
                found = ThreadExecutor()
            elif name == "process":
                from durable_nb.engine.process_pool import ProcessExecutor

                found = ProcessExecutor()
            elif name == "dask":
                from durable_nb.engine.dask_executor import DaskExecutor

                found = DaskExecutor()
            else:
                raise ValueError(f"unknown executor {name!r}")
            _shared[name] = found
        return found


def check_executor(name: str | Executor | None) -> str | Executor | None:
    """``name`` if it names an executor (or is one, or None); else a ValueError saying
    which names there are."""
    if name is None or (isinstance(name, str) and name in EXECUTORS):
        return name
    if not isinstance(name, str) and callable(getattr(name, "run", None)):
        return name
    raise ValueError(f"unknown executor {name!r}: use one of {', '.join(EXECUTORS)} "
                     "(for example `%%activity --executor process`)")


def check_limit(n: int | None) -> int | None:
    """``n`` if it is a valid concurrency limit (a whole number >= 1, or None for none)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"max_concurrency must be a whole number >= 1 (or None for no "
                         f"limit), got {n!r}")
    return n


def shutdown() -> None:
    """Stop the kernel's worker processes (at exit, or in tests)."""
    with _lock:
        found = list(_shared.values())
        _shared.clear()
    for ex in found:
        close = getattr(ex, "close", None)
        if close is not None:
            close()
