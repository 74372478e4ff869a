"""``map``: parallel activity calls whose step numbers do not depend on thread timing."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from durable_nb.engine.activity import Activity
from durable_nb.engine.run import current_run


def map(activity: Activity[Any, Any], items: Iterable[Any], *,  # noqa: A001 - mirrors builtin
        max_workers: int | None = None) -> list[Any]:
    """Call ``activity(item)`` for every item in parallel threads; results in item order.

    Step numbers are taken for all items before any runs, so a resumed run numbers them
    the same way whatever order threads finish in. Recorded items return at once. If some
    calls fail, the others still finish (and are recorded), then the first failure raises.
    Outside a workflow it is a plain parallel map.
    """
    __tracebackhide__ = True
    values = list(items)
    if not isinstance(activity, Activity):
        raise TypeError(f"durable_nb.map needs an activity, got {activity!r}; "
                        "decorate it with @durable_nb.activity or define it in %%activity")
    ctx = current_run()
    if not values:
        return []
    first = ctx.reserve(len(values)) if ctx is not None else 0
    workers = max_workers or min(32, len(values))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="durable_nb.map") as pool:
        futures: list[Future[Any]] = []
        for i, value in enumerate(values):
            context = contextvars.copy_context()
            if ctx is None:
                futures.append(pool.submit(context.run, activity.fn, value))
            else:
                futures.append(pool.submit(context.run, ctx.call, activity, (value,), {},
                                           first + i))
        errors = [f.exception() for f in futures]
    for err in errors:
        if err is not None:
            raise err
    return [f.result() for f in futures]
