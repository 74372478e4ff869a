"""Settings a run reads once, when it first needs them, instead of at every step.

The encryption key (and so the sealer of the journal) and the blob threshold come from the
environment and the journal home. Looking them up costs a few microseconds, several times
per step; within ``per_run()`` (a run's execution, and the threads it fans out to) the
first lookup is kept for the rest of the run. Outside a run every lookup reads afresh.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
A = TypeVar("A")

_run: contextvars.ContextVar[dict[Hashable, Any] | None] = contextvars.ContextVar(
    "durable_nb_run_settings", default=None)


@contextlib.contextmanager
def per_run() -> Iterator[None]:
    """Within: each setting is read once (shared by threads started with a copy of this
    context)."""
    token = _run.set({})
    try:
        yield
    finally:
        _run.reset(token)


def once(read: Callable[[A], T], arg: A) -> T:
    """``read(arg)``, or within ``per_run`` what it gave the first time (an error is not
    kept: the next lookup reads again)."""
    cache = _run.get()
    if cache is None:
        return read(arg)
    key = (read, arg)
    try:
        return cache[key]  # type: ignore[no-any-return]
    except KeyError:
        value = cache[key] = read(arg)
        return value
