"""The live run view without a browser: state folding, throttling, rendering, cancel."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import pytest

import durable_nb
from durable_nb.engine.identity import open_run
from durable_nb.engine.progress import RunProgress, StepView, assign_lanes
from durable_nb.kernel import render
from durable_nb.kernel.view import RUN_MIME, RunSummary, RunView, Throttle
from tests.kernel.conftest import view_shows


def started(seq: int, ts: float = 0.0, **kw) -> dict:
    return {"kind": "step_started", "seq": seq, "name": "train", "attempt": 1,
            "args": f'{{"i":{seq}}}', "ts": ts, **kw}


def completed(seq: int, ts: float = 1.0) -> dict:
    return {"kind": "step_completed", "seq": seq, "name": "train", "attempt": 1,
            "result": str(seq * 10), "ts": ts}


def test_state_follows_a_step_through_retry_failure_and_completion():
    p = RunProgress("sweep-1", "sweep", started=0.0)
    p.apply(started(0))
    assert (p.steps[0].status, p.badge) == ("running", "running")
    p.apply({"kind": "step_failed", "seq": 0, "name": "train", "attempt": 1, "final": False,
             "error": "ConnectionError: flaky", "traceback": "tb", "ts": 0.5})
    assert (p.steps[0].status, p.badge) == ("retrying", "retrying")
    p.apply(started(0, ts=0.6, attempt=2))
    p.apply(completed(0, ts=2.0))
    step = p.steps[0]
    assert (step.status, step.attempts, step.result, step.duration) == ("completed", 2, "0", 2.0)
    p.apply(started(1, ts=2.0))
    p.apply({"kind": "run_status", "status": "interrupted", "ts": 3.0})
    assert p.steps[1].status == "abandoned" and p.badge == "interrupted" and p.ended == 3.0


def test_counts_and_progress_text_with_a_known_total_and_replayed_steps():
    p = RunProgress("sweep-2", "sweep")
    p.apply({"kind": "total", "total": 5})
    p.apply({"kind": "step_replayed", "seq": 0, "name": "train", "attempt": 1, "args": "{}",
             "result": "1", "started": 0.0, "ended": 1.0})
    p.apply(started(1))
    p.apply(completed(1))
    p.apply(started(2))
    assert p.counts()["completed"] == 2 and p.counts()["replayed"] == 1
    assert render.progress_text(p) == "2 / 5 steps (1 replayed, 1 running) — saved 1.0 s"


def test_failed_step_renders_its_error_an_expandable_traceback_and_the_fix_hint():
    p = RunProgress("docs-1", "docs")
    p.apply(started(0))
    p.apply({"kind": "step_failed", "seq": 0, "name": "train", "attempt": 1, "final": True,
             "error": "ValueError: bad <doc>", "traceback": "Traceback ...\nValueError",
             "ts": 1.0})
    html = render.steps_table_html(p.snapshot()[1])
    assert "ValueError: bad &lt;doc&gt;" in html  # escaped
    assert "<details><summary>traceback</summary><pre>Traceback ...\nValueError" in html
    assert render.FIX_HINT in html


def test_step_table_shows_the_most_recent_steps_first_and_counts_the_hidden():
    steps = [StepView(seq=i, name="train", status="completed") for i in range(60)]
    html = re.sub(r' style="[^"]*"', "", render.steps_table_html(steps, limit=50))
    assert html.index("<td>59</td>") < html.index("<td>10</td>")
    assert "<td>9</td>" not in html and "10 earlier steps not shown" in html


def test_concurrent_steps_get_their_own_timeline_lanes():
    steps = [StepView(0, "a", started=0, ended=4), StepView(1, "a", started=1, ended=2),
             StepView(2, "a", started=2.5, ended=3), StepView(3, "a", started=5, ended=6)]
    assert assign_lanes(steps, now=10) == [0, 1, 1, 0]
    svg = render.timeline_svg(steps, now=10)
    assert svg.count("<rect") == 4 and 'height="24"' in svg  # two lanes of 10 + 2 px


def test_a_thousand_events_in_a_second_make_at_most_fifteen_widget_updates():
    renders: list[int] = []
    p = RunProgress("fast-1", "fast")

    async def main() -> Throttle:
        loop = asyncio.get_running_loop()
        throttle = Throttle(lambda: renders.append(len(p.steps)), loop)

        def engine() -> None:  # the workflow's worker thread
            for i in range(1000):
                p.apply(started(i))
                throttle.request()
                time.sleep(0.001)

        worker = threading.Thread(target=engine)
        worker.start()
        while worker.is_alive():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.25)  # the trailing update
        return throttle

    throttle = asyncio.run(main())
    assert 3 <= throttle.calls <= 15, throttle.calls
    assert renders[-1] == 1000  # the last state is never lost


def test_widget_renders_on_the_loop_and_the_bundle_carries_the_html_summary():
    async def main() -> RunView:
        p = RunProgress("wf-1", "wf")
        view = RunView(p, loop=asyncio.get_running_loop())
        view.on_event(None, started(0, ts=time.time()))
        view.on_event(None, completed(0, ts=time.time()))
        view.on_event(None, {"kind": "run_status", "status": "completed", "ts": time.time()})
        await asyncio.sleep(0.3)
        return view

    view = asyncio.run(main())
    assert "completed" in view.header.value and view.bar.value == view.bar.max == 1
    assert view.cancel_button.layout.display == "none"
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert 'class="dnb-steps"' in bundle["text/html"] and "wf-1" in bundle["text/html"]
    assert bundle[RUN_MIME] == {"run_id": "wf-1", "workflow": "wf", "status": "completed"}
    summary = RunSummary(view.progress)._repr_mimebundle_()  # what replaces the widget
    assert summary[RUN_MIME] == bundle[RUN_MIME] and "text/plain" in summary


def test_cancel_from_the_view_stops_the_run_at_its_next_step(journal_home: Path):
    ctx = open_run("cancellable")
    views: list[RunView] = []
    ran: list[int] = []

    @durable_nb.activity
    def step(i: int) -> int:
        ran.append(i)
        if i == 1:
            views[0].cancel()  # the button's handler
        return i

    async def main() -> None:
        views.append(RunView(RunProgress(ctx.run_id, ctx.workflow), ctx=ctx,
                             loop=asyncio.get_running_loop()))
        with pytest.raises(durable_nb.RunCancelled):
            ctx.execute(lambda: [step(i) for i in range(5)])
        await asyncio.sleep(0.3)

    asyncio.run(main())
    assert ran == [0, 1]
    assert views[0].progress.status == "cancelled"
    assert durable_nb.runs(workflow="cancellable").iloc[0].status == "cancelled"


def test_view_from_the_journal_matches_the_live_fold(journal_home: Path):
    @durable_nb.activity(retries=1, backoff=0)
    def flaky(i: int) -> int:
        if i == 1 and not flaky.__dict__.setdefault("failed", False):
            flaky.__dict__["failed"] = True
            raise ConnectionError("once")
        return i

    ctx = open_run("folded")
    live = RunProgress(ctx.run_id, ctx.workflow)
    ctx.listeners.append(lambda _, ev: live.apply(ev))
    ctx.execute(lambda: [flaky(i) for i in range(3)])
    from durable_nb.server.client import default_client

    stored = RunProgress.from_journal(default_client(), ctx.run_id)
    assert stored.status == live.status == "completed"
    as_rows = lambda p: [(s.seq, s.status, s.attempts, s.args, s.result)  # noqa: E731
                         for s in p.snapshot()[1]]
    assert as_rows(stored) == as_rows(live)
    assert stored.steps[1].attempts == 2


def test_a_view_of_a_run_going_on_elsewhere_follows_the_journal(journal_home: Path):
    from durable_nb.server.client import default_client

    gate = threading.Event()

    @durable_nb.activity
    def step(i: int) -> int:
        if i == 1:
            gate.wait(30)
        return i

    ctx = open_run("elsewhere")
    worker = threading.Thread(target=ctx.execute, args=(lambda: [step(i) for i in range(3)],))
    worker.start()
    client = default_client()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not durable_nb.sql(
                "SELECT 1 FROM steps WHERE run_id = ? AND seq = 1", [ctx.run_id]).shape[0]:
            time.sleep(0.05)
        seen = RunProgress.from_journal(client, ctx.run_id)
        assert seen.status == "running" and seen.steps[1].status == "running"
        assert seen.follow(client) is True  # still going
    finally:
        gate.set()
        worker.join(30)
    assert seen.follow(client) is False  # it ended
    assert seen.status == "completed"
    assert [s.status for s in seen.snapshot()[1]] == ["completed"] * 3


def beat(seq: int, details: str, ts: float, progress: object = None) -> dict:
    return {"kind": "step_heartbeat", "seq": seq, "name": "train", "attempt": 1,
            "details": details, "progress": progress, "ts": ts}


def test_a_running_step_shows_its_latest_heartbeat_progress_and_age():
    from durable_nb.journal.heartbeat import heartbeat_progress

    p = RunProgress("fit-1", "fit", started=100.0)
    p.apply(started(0, ts=100.0))
    p.apply(beat(0, '{"epoch":1,"of":4}', 101.0, heartbeat_progress({"epoch": 1, "of": 4})))
    p.apply(beat(0, '{"epoch":3,"of":4,"loss":0.25}', 103.0,
                 heartbeat_progress({"epoch": 3, "of": 4, "loss": 0.25})))
    p.apply(started(1, ts=103.5))
    p.apply(beat(1, "<Cursor at page 7>", 104.0))  # no count and total: text only
    step, other = p.snapshot()[1]
    assert step.progress is not None
    assert (step.heartbeats, step.heartbeat_at, step.progress.text) == (2, 103.0, "epoch 3/4")
    html = render.steps_table_html([step, other], now=110.0)
    assert "epoch 3/4" in html and "width:75.0%" in html
    assert "{&quot;epoch&quot;:3,&quot;of&quot;:4,&quot;loss&quot;:0.25}" in html
    assert "7 s ago" in html and "latest of 2 heartbeats" in html
    assert "&lt;Cursor at page 7&gt;" in html and "6 s ago" in html
    assert html.count('class="dnb-heartbeat-bar"') == 1
    assert "epoch 3/4" in render.timeline_svg([step, other], now=110.0)

    p.apply({**completed(0, ts=105.0), "result": "0.25"})
    done = p.snapshot()[1][0]
    assert done.heartbeats == 2  # kept, but a finished step shows its result instead
    assert "epoch 3/4" not in render.steps_table_html([done], now=110.0)


def test_a_view_of_a_live_run_shows_the_heartbeats_of_its_running_step(journal_home: Path):
    beat_seen, go = threading.Event(), threading.Event()

    @durable_nb.activity
    def fit(epochs: int) -> str:
        for epoch in range(1, epochs + 1):
            durable_nb.heartbeat({"epoch": epoch, "of": epochs})
            beat_seen.set()
            assert go.wait(30)
            go.clear()
        return "fitted"

    ctx = open_run("beating")


    async def main() -> RunView:
        view = RunView(RunProgress(ctx.run_id, ctx.workflow), ctx=ctx,
                       loop=asyncio.get_running_loop())
        worker = threading.Thread(target=ctx.execute, args=(lambda: fit(3),), daemon=True)
        worker.start()
        try:
            for epoch in (1, 2, 3):
                await asyncio.to_thread(beat_seen.wait, 30)
                beat_seen.clear()
                await view_shows(view, f"epoch {epoch}/3")
                go.set()
        finally:
            go.set()
            await asyncio.to_thread(worker.join, 30)
        await asyncio.sleep(0.3)
        return view

    view = asyncio.run(main())
    assert view.progress.status == "completed"
    assert "fitted" in view.table.value and "epoch 3/3" not in view.table.value
    from durable_nb.server.client import default_client

    # The journal's account folds the same heartbeats.
    stored = RunProgress.from_journal(default_client(), ctx.run_id)
    as_rows = lambda p: [(s.seq, s.heartbeat, s.heartbeats, s.progress)  # noqa: E731
                         for s in p.snapshot()[1]]
    assert as_rows(stored) == as_rows(view.progress) == [
        (0, '{"epoch":3,"of":3}', 3, (3, 3, "epoch"))]


def test_in_an_encrypted_journal_a_heartbeat_is_shown_sealed_and_states_no_progress(
        journal_home: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("cryptography")
    import json

    from durable_nb.journal import crypto
    from durable_nb.server.client import default_client

    monkeypatch.setenv(crypto.KEY_ENV, crypto.new_key())
    monkeypatch.delenv(crypto.KEY_FILE_ENV, raising=False)
    crypto.reset()
    try:
        @durable_nb.activity
        def fit(epochs: int) -> int:
            durable_nb.heartbeat({"epoch": 1, "of": epochs})
            return epochs

        ctx = open_run("sealed")
        live = RunProgress(ctx.run_id, ctx.workflow)
        ctx.listeners.append(lambda _, ev: live.apply(ev))
        ctx.execute(lambda: fit(2))
        stored = RunProgress.from_journal(default_client(), ctx.run_id)
        # Every view shows what the journal holds in clear: no more than the others.
        for p in (live, stored):
            step = p.snapshot()[1][0]
            assert (step.heartbeat, step.heartbeats, step.progress) == (crypto.REDACTED, 1,
                                                                        None)
        (row,) = durable_nb.sql("SELECT heartbeat FROM steps WHERE run_id = ?",
                                [ctx.run_id]).to_dict("records")
        assert json.loads(row["heartbeat"]) == crypto.REDACTED
    finally:
        crypto.reset()
