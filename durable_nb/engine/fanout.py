"""``map``: parallel activity calls whose step numbers do not depend on thread timing."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from durable_nb.engine.activity import Activity
from durable_nb.engine.executors import check_limit
from durable_nb.engine.futures import StepFuture, gather
from durable_nb.engine.run import current_run


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
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="durable_nb.map") as pool:
        if ctx is None:
            futures = [StepFuture(pool.submit(activity.fn, v), None, activity.name)
                       for v in values]
        else:
            first = ctx.reserve(len(values))
            futures = [ctx.submit(activity, (v,), {}, first + i, pool=pool)
                       for i, v in enumerate(values)]
        return gather(futures)
