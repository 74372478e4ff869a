"""``@workflow``: a function whose activity calls are journaled as one run per arguments."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from durable_nb.engine.executors import Executor, check_executor, check_limit
from durable_nb.engine.identity import open_run
from durable_nb.engine.run import RunContext, current_run
from durable_nb.journal.codec import call_hash

P = ParamSpec("P")
R = TypeVar("R")


class Workflow:
    """A decorated workflow. Calling it runs (or resumes, or replays) the run for its arguments.

    The run is keyed by the workflow's name and a hash of its arguments, so calling it
    again with the same arguments after a kernel restart continues the same run.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None, *,
                 executor: str | Executor | None = None,
                 max_concurrency: int | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.executor = check_executor(executor)
        self.max_concurrency = check_limit(max_concurrency)
        try:
            self.source: str | None = inspect.getsource(fn)
        except (OSError, TypeError):
            self.source = None
        self.last_run: RunContext | None = None
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(args, kwargs)

    def run(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, *,
            new: bool = False, run_id: str | None = None, fork_at: int | None = None) -> Any:
        """Call with options: ``wf.run((x,), new=True)``, ``run_id=``, ``fork_at=``."""
        __tracebackhide__ = True
        kwargs = kwargs or {}
        if current_run() is not None:
            raise RuntimeError(
                f"workflow {self.name} was called inside another workflow; call its "
                "activities directly, or run it on its own"
            )
        ctx = open_run(self.name, source=self.source, new=new, run_id=run_id, fork_at=fork_at,
                       key=call_hash(args, kwargs))
        ctx.configure(executor=self.executor, max_concurrency=self.max_concurrency)
        self.last_run = ctx
        return ctx.execute(lambda: self.fn(*args, **kwargs))

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


@overload
def workflow(fn: Callable[P, R], /) -> Workflow: ...
@overload
def workflow(*, name: str | None = None, executor: str | Executor | None = None,
             max_concurrency: int | None = None) -> Callable[[Callable[P, R]], Workflow]: ...


def workflow(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
             executor: str | Executor | None = None,
             max_concurrency: int | None = None) -> Any:
    """Mark a function as a workflow: ``@workflow`` or ``@workflow(name="sweep")``.

    ``executor`` is where its activities run unless they name their own; at most
    ``max_concurrency`` of their attempts run at once.
    """
    def make(f: Callable[..., Any]) -> Workflow:
        return Workflow(f, name, executor=executor, max_concurrency=max_concurrency)

    return make(fn) if fn is not None else make
