"""``map``: parallel activity calls whose step numbers do not depend on thread timing."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from durable_nb.engine.activity import Activity
from durable_nb.engine.executors import check_limit
from durable_nb.engine.futures import Outcomes, StepFuture, gather
from durable_nb.engine.run import RunContext, current_run


def map(activity: Activity[Any, Any], items: Iterable[Any], *,  # noqa: A001 - mirrors builtin
        max_workers: int | None = None) -> list[Any]:
    """Call ``activity(item)`` for every item, at most ``max_workers`` at once (default:
    up to 32); results in item order.

    Step numbers are taken for all items before any runs, so a resumed run numbers them
    the same way whatever order they finish in. Recorded items return at once. If some
    calls fail, the others still finish (and are recorded), then the first failure raises.
    Outside a workflow it is a plain parallel map.
    """
    __tracebackhide__ = True
    values = list(items)
    if not isinstance(activity, Activity):
        raise TypeError(f"durable_nb.map needs an activity, got {activity!r}; "
                        "decorate it with @durable_nb.activity or define it in %%activity")
    check_limit(max_workers)
    if not values:
        return []
    ctx = current_run()
    workers = max_workers or min(32, len(values))
    if ctx is None:
        with ThreadPoolExecutor(max_workers=workers,
                                thread_name_prefix="durable_nb.map") as pool:
            return gather([StepFuture(pool.submit(activity.fn, v), None, activity.name)
                           for v in values])
    first = ctx.reserve(len(values))
    outcomes = Outcomes(len(values))
    live = [step for i, v in enumerate(values)
            if (step := ctx.prepare(activity, (v,), {}, first + i, outcomes.at(i)))]
    _run_all(ctx, live, workers)
    return outcomes.results()


def _run_all(ctx: RunContext, steps: list[Callable[[], None]], workers: int) -> None:
    """Run ``steps`` on ``workers`` threads, each taking the next step as it is free.

    A thread does not wait for the journal to acknowledge a step before it takes the
    next (the step's place in the outcomes gets its value then), so short steps share
    requests and syncs. An interrupt here stops every thread at its next step boundary.
    """
    if not steps:
        return
    queue = iter(steps)  # next() on a list iterator is atomic: each step runs once

    def work() -> None:
        for step in queue:
            step()

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(work,),
                                name=f"durable_nb.map-{n}", daemon=True)
               for n in range(min(workers, len(steps)))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:
        ctx.request_interrupt()
        for thread in threads:
            thread.join()
        raise
