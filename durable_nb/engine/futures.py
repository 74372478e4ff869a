"""Steps started without waiting: ``train.submit(cfg)`` gives a ``StepFuture``;
``durable_nb.gather`` waits for several and gives their results in call order."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from typing import Any, Generic, TypeVar

R = TypeVar("R")


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
