"""Replay-safe sources of time, randomness and ids: recorded once, replayed after.

Workflow code must make the same calls given the same recorded results; these helpers
give it the values of the first execution on every replay.
"""

from __future__ import annotations

import datetime as _dt
import random as _random
import uuid as _uuid
from collections.abc import Callable
from typing import Any, TypeVar

from durable_nb.engine.activity import Activity
from durable_nb.engine.run import current_run

T = TypeVar("T")


def _record(name: str, fn: Callable[[], Any]) -> Any:
    ctx = current_run()
    if ctx is None:
        return fn()
    return ctx.call(Activity(fn, name=name, source=name), (), {})


def now() -> _dt.datetime:
    """The current UTC time, as first recorded by this run."""
    iso = _record("durable_nb.now", lambda: _dt.datetime.now(_dt.UTC).isoformat())
    return _dt.datetime.fromisoformat(iso)


def random() -> float:
    """A uniform float in [0, 1), as first recorded by this run."""
    return float(_record("durable_nb.random", _random.random))


def uuid4() -> _uuid.UUID:
    """A random UUID, as first recorded by this run."""
    return _uuid.UUID(_record("durable_nb.uuid4", lambda: str(_uuid.uuid4())))


def side_effect(fn: Callable[[], T]) -> T:
    """Run ``fn`` once and record its value; a replay returns the recorded value."""
    name = f"side_effect:{getattr(fn, '__qualname__', 'fn')}"
    return _record(name, fn)  # type: ignore[no-any-return]
