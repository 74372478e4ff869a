"""The live view of a run under its cell: header, progress bar, timeline, step table, Cancel.

Engine events arrive on whatever thread runs the workflow; they are folded into a
``RunProgress`` at once, but the widgets are touched only on the kernel's own event loop, at
most ``Throttle.interval`` apart. The display bundle also carries the static HTML summary,
so a notebook saved and viewed without a kernel still shows how the run went, and
``RUN_MIME`` (the run id), which JupyterLab renders from the journal's current state.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from durable_nb.engine.progress import RunProgress
from durable_nb.engine.run import RunContext
from durable_nb.kernel import render

# The run's own MIME type: JupyterLab's extension renders it from the REST API (the run's
# current state, whatever became of this kernel) in preference to the widget and the HTML.
RUN_MIME = "application/vnd.durable-nb.run+json"

# Seconds between looks at the journal for heartbeats the engine's events do not carry
# (a Dask worker records its own), and between redraws of a heartbeat's age.
HEARTBEAT_POLL = 1.0


class Throttle:
    """Run ``fn`` on ``loop`` at most once per ``interval`` seconds, after any request.

    ``request`` may be called from any thread; the last request is never lost (a trailing
    call follows the burst).
    """

    def __init__(self, fn: Callable[[], None], loop: asyncio.AbstractEventLoop,
                 interval: float = 0.1) -> None:
        self.fn = fn
        self.loop = loop
        self.interval = interval
        self.calls = 0
        self._last = 0.0
        self._scheduled = False
        self._lock = threading.Lock()

    def request(self) -> None:
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        delay = max(0.0, self._last + self.interval - time.monotonic())
        self.loop.call_soon_threadsafe(self.loop.call_later, delay, self._fire)

    def _fire(self) -> None:
        with self._lock:
            self._scheduled = False
        self._last = time.monotonic()
        self.calls += 1
        self.fn()


class RunView:
    """Widgets showing one run; ``ctx`` is set when the run executes in this kernel."""

    def __init__(self, progress: RunProgress, ctx: RunContext | None = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 cancel: Callable[[], None] | None = None) -> None:
        self.progress = progress
        self.ctx = ctx
        self._cancel = cancel
        self.header = widgets.HTML()
        self.bar = widgets.IntProgress(min=0, max=1, value=0,
                                       layout=widgets.Layout(width="320px"))
        self.cancel_button = widgets.Button(description="Cancel", icon="stop",
                                            button_style="danger",
                                            tooltip="Mark the run cancelled: it stops at the "
                                                    "next step")
        self.cancel_button.on_click(lambda _: self.cancel())
        self.timeline = widgets.HTML()
        self.table = widgets.HTML()
        self.box = widgets.VBox(
            [widgets.HBox([self.header, self.cancel_button]), self.bar, self.timeline,
             self.table],
            layout=widgets.Layout(border="1px solid #ddd", padding="4px"),
        )
        self.box.add_class("dnb-run-view")
        self.throttle = Throttle(self.render, loop or asyncio.get_event_loop())
        self._heartbeats: threading.Thread | None = None
        self._heartbeats_lock = threading.Lock()
        if ctx is not None:
            ctx.listeners.append(self.on_event)
        self.render()

    def on_event(self, ctx: RunContext | None, ev: dict[str, Any]) -> None:
        """Engine listener: any thread. Folds now, renders later on the kernel's loop."""
        self.progress.apply(ev)
        self.throttle.request()
        # A view following the journal (``show``) redraws with each look already.
        if self.ctx is not None and self._heartbeats is None and (
                ev["kind"] == "step_heartbeat" or ev.get("beats_in_journal")):
            with self._heartbeats_lock:  # steps on several threads: one watcher
                if self._heartbeats is None:
                    self._heartbeats = threading.Thread(
                        target=self._watch_heartbeats, daemon=True,
                        name="durable-nb-heartbeats")
                    self._heartbeats.start()

    def _watch_heartbeats(self) -> None:
        """While the run runs: fold the heartbeats that reach only the journal, and redraw
        so a heartbeat's age stays true between events."""
        p, ctx = self.progress, self.ctx
        assert ctx is not None
        while p.status in ("running", "cancelling"):
            time.sleep(HEARTBEAT_POLL)
            # The view is a courtesy: the run goes on without it.
            with contextlib.suppress(Exception):
                p.follow_heartbeats(ctx.client)
            _, steps = p.snapshot()
            if any(s.status == "running" and s.heartbeat_at is not None for s in steps):
                self.throttle.request()

    def cancel(self) -> None:
        if self.ctx is not None:
            self.ctx.cancel()
        elif self._cancel is not None:
            self._cancel()
            self.progress.apply({"kind": "run_status", "status": "cancelling"})
        self.throttle.request()

    def render(self) -> None:
        p = self.progress
        now = time.time()
        _, steps = p.snapshot()
        self.header.value = render.header_html(p, now)
        done = sum(s.status == "completed" for s in steps)
        self.bar.max = max(p.total or len(steps), 1)
        self.bar.value = min(done, self.bar.max)
        self.bar.bar_style = {"completed": "success", "failed": "danger",
                              "interrupted": "warning", "cancelled": "warning"}.get(p.status, "")
        if p.status == "completed" and not p.total:
            self.bar.value = self.bar.max
        self.timeline.value = render.timeline_svg(steps, now)
        self.table.value = render.steps_table_html(steps, now=now)
        finished = p.status not in ("running", "cancelling")
        self.cancel_button.disabled = finished or p.status == "cancelling"
        self.cancel_button.layout.display = "none" if finished else None

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.box._repr_mimebundle_(**kwargs) or {})
        bundle.update(RunSummary(self.progress)._repr_mimebundle_())
        return bundle


class RunSummary:
    """The static face of a run: what a finished run's output becomes and what is saved.

    A live widget is only useful while the run is; once it ended, its output is replaced by
    this HTML, which every viewer renders (nbconvert prefers a widget view when there is one,
    so a finished run must not leave one behind).
    """

    def __init__(self, progress: RunProgress) -> None:
        self.progress = progress

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        p = self.progress
        return {RUN_MIME: {"run_id": p.run_id, "workflow": p.workflow, "status": p.status},
                "text/html": render.summary_html(p),
                "text/plain": f"{p.run_id} {p.status}: {render.progress_text(p)}"}


class LiveDisplay:
    """A run's output: the live widget while it runs, its summary once it ended."""

    def __init__(self, view: RunView) -> None:
        from IPython.display import display

        self.view = view
        self.handle = display(view, display_id=True)

    def finish(self) -> None:
        self.view.render()
        if self.handle is not None:
            self.handle.update(RunSummary(self.view.progress))


def show(run_id: str) -> RunView:
    """Display the view of any run in the journal; a run still going is followed live."""
    from IPython.display import display

    from durable_nb.kernel.cells import background_runs
    from durable_nb.server.client import default_client

    client = default_client()
    progress = RunProgress.from_journal(client, run_id)
    loop = asyncio.get_event_loop()
    handle = background_runs.get(run_id)
    if handle is not None and not handle.done():  # running in this kernel: its own events
        view = RunView(progress, ctx=handle.ctx, loop=loop)
    else:
        def cancel() -> None:
            client.cancel_run(run_id)

        view = RunView(progress, loop=loop, cancel=cancel)
        if progress.status in ("running", "cancelling"):
            live = LiveDisplay(view)

            def poll() -> None:
                if progress.follow(client):
                    loop.call_later(0.5, poll)
                    view.throttle.request()
                else:
                    live.finish()

            loop.call_later(0.5, poll)
            return view
    if handle is not None and not handle.done():
        handle.displays.append(LiveDisplay(view))
    else:
        display(RunSummary(progress))
    return view
