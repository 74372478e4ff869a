"""Workflow cells that keep the kernel responsive: the body runs on a worker thread.

A cell magic cannot be async, and a running synchronous cell blocks the kernel's event loop,
so neither live widget updates nor a click on Cancel could reach the kernel until the cell
ended. An input transformer therefore turns a ``%%workflow`` cell into ``await`` of
``WorkflowCell.run``: IPython runs such a cell as an async cell, the workflow body runs on a
worker thread, and the kernel's loop stays free to apply widget updates and to dispatch
comm messages (ipykernel 7 handles comms while an async cell awaits). ``--background``
is the same without the await: the cell returns a handle at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import threading
from collections.abc import Callable, Iterator
from typing import Any

from durable_nb.engine.progress import RunProgress
from durable_nb.engine.run import RunContext
from durable_nb.kernel.view import LiveDisplay, RunView

_MAGICS = "get_ipython().magics_manager.registry['DurableMagics']"
_AWAITED = {  # how IPython spells the magic -> the coroutine the cell awaits instead
    "get_ipython().run_cell_magic('workflow', ": f"await {_MAGICS}.workflow_async(",
    "get_ipython().run_line_magic('workflow', ": f"await {_MAGICS}.workflow_line_async(",
}

# Background runs of this kernel, by run id (newest last), so their handles can be found.
background_runs: dict[str, RunHandle] = {}

# False while a magic transforms the body of its own cell (see ``cell_body``).
_awaiting: contextvars.ContextVar[bool] = contextvars.ContextVar("durable_nb_awaiting",
                                                                 default=True)


def await_workflow_cells(lines: list[str]) -> list[str]:
    """IPython post-input transformer: ``%%workflow`` cells and top-level ``%workflow``
    lines become awaited coroutines."""
    if not _awaiting.get():
        return lines
    out = []
    for line in lines:
        for call, awaited in _AWAITED.items():
            if line.startswith(call):
                line = awaited + line[len(call):]
                break
        out.append(line)
    return out


@contextlib.contextmanager
def cell_body() -> Iterator[None]:
    """Transform a magic's cell body as plain code: the magic runs it with ``exec``, where an
    ``await`` cannot stand, so a workflow magic in it stays the call IPython wrote (and the
    ``%%workflow`` magic refuses it as a nested workflow)."""
    token = _awaiting.set(False)
    try:
        yield
    finally:
        _awaiting.reset(token)


class RunHandle:
    """A workflow running on a worker thread of this kernel (``--background``)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.displays: list[LiveDisplay] = []  # finished on the kernel's loop at the end
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    @property
    def status(self) -> str:
        return self.ctx.status

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> Any:
        """The workflow's value; raises its exception. Blocks until the run ends."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"run {self.run_id} is still {self.status}")
        if self._error is not None:
            raise self._error
        return self._value

    def cancel(self) -> None:
        """Mark the run cancelled; it stops at its next step boundary."""
        self.ctx.cancel()

    def _finish(self, value: Any, error: BaseException | None) -> None:
        self._value, self._error = value, error
        self._done.set()

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id} {self.status}>"


def start_worker(ctx: RunContext, body: Callable[[], Any], on_done: Callable[
        [Any, BaseException | None], None]) -> threading.Thread:
    """Run ``ctx.execute(body)`` on a worker thread that carries this context (the cell's
    output routing included), then call ``on_done(value, error)`` on that thread."""

    def work() -> None:
        __tracebackhide__ = True
        try:
            value = ctx.execute(body)
        except BaseException as exc:  # handed to whoever waits for the run
            on_done(None, exc)
        else:
            on_done(value, None)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(work,),
                              name=f"durable_nb:{ctx.run_id}", daemon=True)
    thread.start()
    return thread


def interrupt_thread(thread: threading.Thread) -> None:
    """Raise KeyboardInterrupt in ``thread`` at its next Python instruction (what Ctrl-C
    does to the main thread); code blocked in C notices when it returns."""
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                   ctypes.py_object(KeyboardInterrupt))


async def run_on_worker(ctx: RunContext, body: Callable[[], Any], *, background: bool,
                        summary: Callable[[], None]) -> Any:
    """Execute the run on a worker thread while the kernel's loop stays free."""
    __tracebackhide__ = True
    loop = asyncio.get_running_loop()
    # Starts empty: recorded steps appear, marked replayed, as the body replays them.
    view = RunView(RunProgress(ctx.run_id, ctx.workflow), ctx=ctx, loop=loop)
    handle = RunHandle(ctx)
    handle.displays.append(LiveDisplay(view))
    finished = loop.create_future()

    def on_done(value: Any, error: BaseException | None) -> None:
        handle._finish(value, error)
        loop.call_soon_threadsafe(_settle, finished, value, error)
        if background:
            summary()
            for live in handle.displays:
                loop.call_soon_threadsafe(live.finish)

    thread = start_worker(ctx, body, on_done)
    if background:
        background_runs[ctx.run_id] = handle
        return handle
    try:
        try:
            return await _wait_awake(finished)
        except asyncio.CancelledError:  # Ctrl-C: ipykernel cancels the awaiting cell
            ctx.request_interrupt()
            if ctx.in_activity:
                interrupt_thread(thread)
            with contextlib.suppress(BaseException):  # the run's own end, or a 2nd Ctrl-C
                await _wait_awake(finished)
            raise KeyboardInterrupt from None
    finally:
        for live in handle.displays:
            live.finish()  # the saved notebook keeps the final summary
        summary()


async def _wait_awake(future: asyncio.Future[Any]) -> Any:
    """Await ``future``, waking the loop every 0.1 s meanwhile.

    ipykernel turns Ctrl-C into a callback it adds to the loop without waking it, so a loop
    asleep until the run's next event would notice the interrupt only after the step in
    flight finished.
    """
    __tracebackhide__ = True
    while not future.done():
        await asyncio.wait({future}, timeout=0.1)
    return future.result()


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
