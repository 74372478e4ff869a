"""Activities: functions whose calls inside a workflow are journaled steps."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from durable_nb.engine.executors import Executor, check_executor, check_limit
from durable_nb.engine.retry import RetryPolicy
from durable_nb.journal.codec import code_hash
from durable_nb.journal.text import storable_text

if TYPE_CHECKING:
    from durable_nb.engine.futures import StepFuture

P = ParamSpec("P")
R = TypeVar("R")


class Activity(Generic[P, R]):
    """A function whose calls inside a workflow are recorded; outside one it is a plain call."""

    fn: Callable[P, R]

    def __init__(self, fn: Callable[P, R], policy: RetryPolicy | None = None,
                 name: str | None = None, source: str | None = None, *,
                 executor: str | Executor | None = None,
                 max_concurrency: int | None = None, safe: Iterable[str] = ()) -> None:
        if isinstance(fn, Activity):  # re-decorating keeps one layer
            fn = fn.fn
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"activity {fn.__name__} is a coroutine function; activities are plain "
                "functions (call asyncio.run(...) inside one if it needs async I/O)"
            )
        self.fn = fn
        self.policy = policy or RetryPolicy()
        # Where its attempts run (None: the run's executor, "thread" unless told) and how
        # many may run at once in this kernel (None: no limit of its own).
        self.executor = check_executor(executor)
        self.max_concurrency = check_limit(max_concurrency)
        self.limit = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        # In an encrypted journal: the parameters (and "return": the result) kept in clear.
        self.safe = check_safe(safe)
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
        self._by_position = _by_position(self._signature)
        functools.update_wrapper(self, fn)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name (``*args`` as a list), for the journal.

        Only ``*args`` becomes a list: a tuple passed as an argument stays a tuple, so it
        is recorded (and compared on replay) as the tuple it is.
        """
        if not kwargs and self._by_position is not None:  # the common call: f(a, b)
            names, required = self._by_position
            if required <= len(args) <= len(names):
                return dict(zip(names, args, strict=False))
        if self._signature is not None:
            try:
                bound = self._signature.bind(*args, **kwargs).arguments
            except TypeError:
                pass  # the call itself will raise the TypeError with Python's message
            else:
                params = self._signature.parameters
                return {k: list(v) if params[k].kind is inspect.Parameter.VAR_POSITIONAL
                        else v for k, v in bound.items()}
        return {"args": list(args), "kwargs": kwargs}

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True
        from durable_nb.engine.run import call_activity

        return call_activity(self, args, kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> StepFuture[R]:
        """Start this call as a step without waiting for it (its step number is taken
        now); ``durable_nb.gather(*futures)`` waits for several. Outside a workflow it is
        a plain call on a background thread."""
        from durable_nb.engine.futures import StepFuture
        from durable_nb.engine.run import current_run

        ctx = current_run()
        if ctx is None:
            return StepFuture(_plain_pool().submit(self.fn, *args, **kwargs), None, self.name)
        return ctx.submit(self, args, kwargs)

    def __repr__(self) -> str:
        on = f" executor={self.executor}" if self.executor else ""
        return f"<activity {self.name} retries={self.policy.retries}{on}>"


def _by_position(signature: inspect.Signature | None) -> tuple[tuple[str, ...], int] | None:
    """The names of the parameters a positional call binds, and how many it must pass;
    None when such a call may need more than that (a required keyword-only parameter)."""
    if signature is None:
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty for p in params):
        return None
    names = tuple(p.name for p in params if p.kind in positional)
    required = sum(1 for p in params if p.kind in positional and p.default is p.empty)
    return names, required


_plain: ThreadPoolExecutor | None = None
_plain_lock = threading.Lock()


def _plain_pool() -> ThreadPoolExecutor:
    """Where ``submit`` runs plain calls made outside a workflow."""
    global _plain
    with _plain_lock:
        if _plain is None:
            _plain = ThreadPoolExecutor(thread_name_prefix="durable_nb.submit")
        return _plain


def check_safe(names: Iterable[str]) -> frozenset[str]:
    """The names marked safe (``--safe lr,epochs,return``), checked."""
    if isinstance(names, str):
        names = names.split(",")
    out = frozenset(n.strip() for n in names if n.strip())
    bad = sorted(n for n in out if not n.isidentifier())
    if bad:
        raise ValueError(f"safe names must be parameter names or 'return', not {bad}")
    return out


@overload
def activity(fn: Callable[P, R], /) -> Activity[P, R]: ...
@overload
def activity(*, retries: int = 0, timeout: float | None = None, backoff: float = 1.0,
             non_retryable: tuple[type[BaseException], ...] = (),
             retry_programming_errors: bool = False, name: str | None = None,
             executor: str | Executor | None = None, max_concurrency: int | None = None,
             heartbeat_timeout: float | None = None, safe: Iterable[str] = (),
             ) -> Callable[[Callable[P, R]], Activity[P, R]]: ...


def activity(fn: Callable[..., Any] | None = None, /, *, retries: int = 0,
             timeout: float | None = None, backoff: float = 1.0,
             non_retryable: tuple[type[BaseException], ...] = (),
             retry_programming_errors: bool = False, name: str | None = None,
             executor: str | Executor | None = None, max_concurrency: int | None = None,
             heartbeat_timeout: float | None = None, safe: Iterable[str] = ()) -> Any:
    """Mark a function as an activity: ``@activity`` or ``@activity(retries=3, timeout=600)``.

    ``retries`` counts retries after the first attempt. Programming errors (TypeError,
    NameError, AttributeError, SyntaxError, ImportError) are not retried unless
    ``retry_programming_errors=True``; ``non_retryable`` adds more types.
    ``executor`` is where attempts run: "thread" (in the kernel), "process" (a worker
    process, killed on timeout) or "dask" (Dask workers; the work outlives the kernel).
    ``max_concurrency`` caps how many of its attempts run at once; ``heartbeat_timeout``
    fails an attempt that has not called ``durable_nb.heartbeat()`` for that long.
    ``safe`` names the parameters (and ``"return"``, the result) whose values an encrypted
    journal keeps in clear, for previews and SQL (e.g. ``safe=("lr", "return")``).
    """
    policy = RetryPolicy(retries=retries, timeout=timeout, backoff=backoff,
                         heartbeat_timeout=heartbeat_timeout,
                         non_retryable=tuple(non_retryable),
                         retry_programming_errors=retry_programming_errors)

    def make(f: Callable[..., Any]) -> Activity[Any, Any]:
        return Activity(f, policy, name=name, executor=executor,
                        max_concurrency=max_concurrency, safe=safe)

    return make(fn) if fn is not None else make
