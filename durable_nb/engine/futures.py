"""Steps started without waiting: ``train.submit(cfg)`` gives a ``StepFuture``;
``durable_nb.gather`` waits for several and gives their results in call order."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from typing import Any, Generic, Protocol, TypeVar

R = TypeVar("R")


class Resolvable(Protocol):
    """Where a step's outcome goes: a ``Future``, or one place of ``Outcomes``."""

    def set_result(self, value: Any) -> None: ...

    def set_exception(self, exception: BaseException) -> None: ...


class StepFuture(Generic[R]):
    """A step in flight. Its number was taken when it was submitted, so a resumed run
    numbers it alike whatever order steps finish in."""

    __slots__ = ("_future", "seq", "activity")

    def __init__(self, future: Future[R], seq: int | None, activity: str) -> None:
        self._future = future
        self.seq = seq  # None outside a workflow: a plain call, not a step
        self.activity = activity

    def result(self, timeout: float | None = None) -> R:
        """The step's result (waiting for it); raises what the step raised."""
        __tracebackhide__ = True
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._future.exception(timeout)

    def done(self) -> bool:
        return self._future.done()

    def __repr__(self) -> str:
        where = f"step {self.seq}" if self.seq is not None else "plain call"
        if not self._future.done():
            state = "running"
        elif self._future.cancelled():
            state = "cancelled"
        else:
            state = "failed" if self._future.exception() is not None else "done"
        return f"<StepFuture {self.activity} {where} {state}>"


def gather(*futures: StepFuture[Any] | Iterable[StepFuture[Any]]) -> list[Any]:
    """The results of ``futures`` in the order given, once all have finished.

    ``gather(a, b)`` or ``gather([a, b])``. If some steps fail, the others still finish (and
    are recorded); then the first failure in call order raises.
    """
    __tracebackhide__ = True
    flat: list[StepFuture[Any]] = []
    for item in futures:
        if isinstance(item, StepFuture):
            flat.append(item)
        elif isinstance(item, Iterable) and not isinstance(item, (str, bytes)):
            flat.extend(_checked(f) for f in item)
        else:
            _checked(item)
    wait_all([f._future for f in flat])
    for f in flat:
        if f.exception() is not None:
            return [f.result()]  # raises it
    return [f.result() for f in flat]


def _checked(item: Any) -> StepFuture[Any]:
    if not isinstance(item, StepFuture):
        raise TypeError(f"durable_nb.gather takes the futures of activity.submit(...), got "
                        f"{item!r}; call `activity.submit(args)` to start a step without "
                        "waiting for it")
    return item


class Outcomes:
    """The outcomes of a fan-out's steps by position, filled in from any thread.

    Lighter than a ``Future`` per step (no lock and condition each), which counts when a
    ``map`` has tens of thousands of them.
    """

    def __init__(self, n: int) -> None:
        self.values: list[Any] = [None] * n
        self.errors: dict[int, BaseException] = {}
        self._left = n
        self._lock = threading.Lock()
        self._all = threading.Event()
        if n == 0:
            self._all.set()

    def at(self, index: int) -> _Place:
        return _Place(self, index)

    def _settle(self, index: int, value: Any, error: BaseException | None) -> None:
        if error is None:
            self.values[index] = value
        else:
            self.errors[index] = error
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self._all.set()

    def results(self) -> list[Any]:
        """Every value in order, once all are in; else the first failure in order."""
        __tracebackhide__ = True
        self._all.wait()
        if self.errors:
            raise self.errors[min(self.errors)]
        return self.values


class _Place:
    __slots__ = ("outcomes", "index")

    def __init__(self, outcomes: Outcomes, index: int) -> None:
        self.outcomes, self.index = outcomes, index

    def set_result(self, value: Any) -> None:
        self.outcomes._settle(self.index, value, None)

    def set_exception(self, exception: BaseException) -> None:
        self.outcomes._settle(self.index, None, exception)
