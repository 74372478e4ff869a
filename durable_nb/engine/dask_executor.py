"""The ``dask`` executor: attempts run as tasks on a Dask distributed cluster.

The work must outlive the kernel, so the task journals the step itself: it opens its own
connection to the journal server of the run's home, records heartbeats as they come and,
when the activity returns, the step's ``step_completed`` (the same event the kernel would
write), and only then hands the value back. It is submitted with ``fire_and_forget``, so a
kernel that dies meanwhile takes nothing with it: the task runs on and records its result.

On resume the engine meets such a step as started on ``dask`` (``attach``): when its
completion is in the journal it is replayed; while the scheduler still has the task it
waits for it rather than running it twice; a task the cluster no longer has (it failed,
or its cluster was stopped) runs again as the step's next attempt.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from durable_nb.engine.executors import Attempt, Outcome, StepInfo, ThreadExecutor

if TYPE_CHECKING:
    from durable_nb.engine.history import StepRecord
    from durable_nb.engine.run import RunContext
    from durable_nb.server.client import JournalClient

# Scheduler task states in which the task will still run (or is running).
LIVE_STATES = frozenset({"released", "waiting", "queued", "no-worker", "processing"})
ATTACH_POLL = 0.25  # seconds between looks at an attached task


def task_key(step: StepInfo) -> str:
    """The Dask key of one attempt: the same attempt is never submitted twice."""
    return f"durable_nb-{step.run_id}-{step.seq}-{step.attempt}"


class DaskExecutor:
    """Sends each attempt to the home's Dask cluster (see ``durable_nb.workers``)."""

    name = "dask"
    records_itself = True  # the task journals the step's completion

    def describe(self, attempt: Attempt) -> dict[str, Any]:
        """Connects first: a cluster out of reach is an error of its own, raised before
        the step is recorded as started (it is not the activity's failure)."""
        from durable_nb.workers import dask_client

        client = dask_client(self._home(attempt))
        return {"task": task_key(attempt.step), "scheduler": client.scheduler.address}

    def run(self, attempt: Attempt) -> Outcome:
        __tracebackhide__ = True
        from distributed import fire_and_forget

        from durable_nb.engine.process_pool import dumps_call
        from durable_nb.workers import dask_client

        home = self._home(attempt)
        client = dask_client(home)
        # Pickled as for a process worker: notebook code keeps its cell's file name, so the
        # traceback of a failure shows the cell's lines, not <dynamic-code> (code objects
        # go as marshal data: workers run the kernel's Python version, as cloudpickle's
        # code by value needs anyway).
        call, _ = dumps_call((attempt.fn, attempt.args, attempt.kwargs))
        future = client.submit(_run_task, str(home), call,
                               attempt.step, attempt.timeout, attempt.heartbeat_timeout,
                               attempt.safe_result, key=task_key(attempt.step), pure=False)
        fire_and_forget(future)  # runs to its end even if this kernel dies
        value, preview = future.result()
        return Outcome(value, recorded=preview)

    @staticmethod
    def _home(attempt: Attempt) -> Path:
        from durable_nb.journal.home import journal_home

        return attempt.home or journal_home()


# -- in the worker ---------------------------------------------------------------------------
_journals: dict[str, JournalClient] = {}
_journals_lock = threading.Lock()


def _journal(home: str) -> JournalClient:
    """The worker process's connection to the journal of ``home`` (one, shared by tasks)."""
    from durable_nb.server.client import JournalClient

    with _journals_lock:
        client = _journals.get(home)
        if client is None or client.closed:
            client = _journals[home] = JournalClient(home)
        return client


def _run_task(home: str, call: bytes, step: StepInfo, timeout: float | None,
              heartbeat_timeout: float | None, safe_result: bool = False) -> tuple[Any, str]:
    """One attempt, on a Dask worker: run it, journal its completion, return its value."""
    import cloudpickle

    from durable_nb.engine.attempts import completed_event, heartbeat_event

    fn, args, kwargs = cloudpickle.loads(call)
    journal, root = _journal(home), Path(home)

    def record(details: Any) -> None:
        journal.append([heartbeat_event(step, details, root)[0]], wait=True)

    attempt = Attempt(fn, args, kwargs, step, timeout=timeout,
                      heartbeat_timeout=heartbeat_timeout, record_beat=record, home=root)
    outcome = ThreadExecutor().run(attempt)  # enforces the timeouts here, on the worker
    done, preview = completed_event(step, outcome.value, root, safe=safe_result)
    journal.append([done], wait=True)
    return outcome.value, preview


# -- on resume -------------------------------------------------------------------------------
def attach(ctx: RunContext, rec: StepRecord) -> StepRecord:
    """A step a dead kernel left running on Dask: its record once the task is over.

    Completed (now, or while we wait): the completed record, to replay. Otherwise the
    record as it stands, and the step runs again.
    """
    key = (rec.started_meta or {}).get("task")
    if not key:
        return rec
    told = False
    while True:
        fresh = _reread(ctx, rec)
        if fresh.status == "completed":
            return fresh
        state = task_state(ctx.client.home, str(key))
        if state not in LIVE_STATES:
            return _reread(ctx, rec)  # it may have recorded its completion just now
        if not told:
            ctx.notice(f"step {rec.seq} ({rec.name}) is still running on the Dask cluster "
                       f"(task {key}): waiting for it instead of running it again")
            told = True
        ctx.check_stop()
        ctx._wake.wait(ATTACH_POLL)


def task_state(home: Path, key: str) -> str | None:
    """The scheduler's state of task ``key`` (None: it has no such task, or no scheduler
    of the home answers)."""
    from durable_nb.workers import WorkersUnavailable, dask_client, read_info, scheduler_env

    if read_info(home) is None and not scheduler_env():
        return None  # the home's cluster is gone, and its tasks with it
    try:
        client = dask_client(home)
        return client.run_on_scheduler(_state_on_scheduler, key=key)  # type: ignore[no-any-return]
    except (WorkersUnavailable, OSError):
        return None


def _state_on_scheduler(key: str, dask_scheduler: Any = None) -> str | None:
    task = dask_scheduler.tasks.get(key) if dask_scheduler is not None else None
    return None if task is None else str(task.state)


def _reread(ctx: RunContext, rec: StepRecord) -> StepRecord:
    from durable_nb.engine.history import recorded_step

    fresh = recorded_step(ctx.client, ctx.run_id, rec.seq) or rec
    with ctx._lock:
        ctx.steps[rec.seq] = fresh
    return fresh
