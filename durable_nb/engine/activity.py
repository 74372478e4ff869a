"""Activities: functions whose calls inside a workflow are journaled steps."""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from durable_nb.engine.retry import RetryPolicy
from durable_nb.errors import ActivityTimeout
from durable_nb.journal.codec import code_hash
from durable_nb.journal.text import storable_text

P = ParamSpec("P")
R = TypeVar("R")


class Activity(Generic[P, R]):
    """A function whose calls inside a workflow are recorded; outside one it is a plain call."""

    fn: Callable[P, R]

    def __init__(self, fn: Callable[P, R], policy: RetryPolicy | None = None,
                 name: str | None = None, source: str | None = None) -> None:
        if isinstance(fn, Activity):  # re-decorating keeps one layer
            fn = fn.fn
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"activity {fn.__name__} is a coroutine function; activities are plain "
                "functions (call asyncio.run(...) inside one if it needs async I/O)"
            )
        self.fn = fn
        self.policy = policy or RetryPolicy()
        # As the journal records it (schema.event escapes names), so replay matches it.
        self.name = storable_text(name or fn.__name__)
        if source is None:
            try:
                source = inspect.getsource(fn)
            except (OSError, TypeError):
                source = getattr(fn, "__qualname__", self.name)
        self.source = source
        self.defined_by: str | None = None  # the %%activity cell that made it, if any
        self.code_hash = code_hash(source)
        try:
            self._signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            self._signature = None
        functools.update_wrapper(self, fn)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name (``*args`` as a list), for the journal."""
        if self._signature is not None:
            try:
                bound = self._signature.bind(*args, **kwargs).arguments
            except TypeError:
                pass  # the call itself will raise the TypeError with Python's message
            else:
                return {k: list(v) if type(v) is tuple else v for k, v in bound.items()}
        return {"args": list(args), "kwargs": kwargs}

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True
        from durable_nb.engine.run import call_activity

        return call_activity(self, args, kwargs)

    def invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """Run one attempt of the function itself, under the policy's timeout if any."""
        __tracebackhide__ = True
        if self.policy.timeout is None:
            return self.fn(*args, **kwargs)
        outcome: list[Any] = []
        ctx = contextvars.copy_context()

        def attempt() -> None:
            try:
                outcome.append((True, ctx.run(self.fn, *args, **kwargs)))
            except BaseException as exc:
                outcome.append((False, exc))

        # Threads cannot be killed: a timed-out attempt keeps running in the background
        # and its result is ignored. Process executors can kill it; the docs say so.
        worker = threading.Thread(target=attempt, name=f"durable_nb:{self.name}", daemon=True)
        worker.start()
        worker.join(self.policy.timeout)
        if not outcome:
            raise ActivityTimeout(
                f"activity {self.name} did not finish within {self.policy.timeout:g} s"
            )
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def __repr__(self) -> str:
        return f"<activity {self.name} retries={self.policy.retries}>"


@overload
def activity(fn: Callable[P, R], /) -> Activity[P, R]: ...
@overload
def activity(*, retries: int = 0, timeout: float | None = None, backoff: float = 1.0,
             non_retryable: tuple[type[BaseException], ...] = (),
             retry_programming_errors: bool = False,
             name: str | None = None) -> Callable[[Callable[P, R]], Activity[P, R]]: ...


def activity(fn: Callable[..., Any] | None = None, /, *, retries: int = 0,
             timeout: float | None = None, backoff: float = 1.0,
             non_retryable: tuple[type[BaseException], ...] = (),
             retry_programming_errors: bool = False, name: str | None = None) -> Any:
    """Mark a function as an activity: ``@activity`` or ``@activity(retries=3, timeout=600)``.

    ``retries`` counts retries after the first attempt. Programming errors (TypeError,
    NameError, AttributeError, SyntaxError, ImportError) are not retried unless
    ``retry_programming_errors=True``; ``non_retryable`` adds more types.
    """
    policy = RetryPolicy(retries=retries, timeout=timeout, backoff=backoff,
                         non_retryable=tuple(non_retryable),
                         retry_programming_errors=retry_programming_errors)
    if fn is not None:
        return Activity(fn, policy, name=name)
    return lambda f: Activity(f, policy, name=name)
