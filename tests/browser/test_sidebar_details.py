"""Details of the "Durable runs" sidebar, in Chromium, over runs written into the journal:
an ended run's timeline stays put, cut-off text has its full version in a title, actions
that cannot apply are disabled with the reason, a step's two durations are labelled, and
every badge is readable (contrast >= 4.5:1) in the light and the dark theme."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Page, expect

from durable_nb.server.client import JournalClient
from tests.browser.lab import LabServer, execute_command, open_notebook, write_notebook
from tests.browser.sidebar import (
    assert_rest_api_served,
    journal,
    open_sidebar,
    run_detail,
    run_row,
)
from tests.jupyter.journal_runs import event, make_run

pytestmark = pytest.mark.browser

RUN_MIME = "application/vnd.durable-nb.run+json"
DEAD_PID = 2**22 + 4321  # above Linux's default pid_max: no process has it
LONG_ID = "hyperparameter-sweep-over-learning-rates-and-batch-sizes-for-the-big-model-1"
LONG_ARGS = [{"learning_rate": 0.001 * i, "batch_size": 2**i, "note": "x" * 40} for i in range(4)]


def seed_interrupted_with_an_abandoned_step(client: JournalClient, run_id: str,
                                            t0: float) -> None:
    """Ran 11.5 s (step 0 done, step 1 in flight) until its kernel died, long ago."""
    client.append([
        event(run_id, "run_started", name="axis", ts=t0,
              meta=json.dumps({"pid": DEAD_PID, "notebook": "axis.ipynb"})),
        event(run_id, "step_started", seq=0, attempt=1, name="train", ts=t0 + 0.1,
              data_json="[0]"),
        event(run_id, "step_completed", seq=0, attempt=1, name="train", ts=t0 + 5,
              data_json="0"),
        event(run_id, "step_started", seq=1, attempt=1, name="train", ts=t0 + 5.1,
              data_json="[1]"),
        event(run_id, "run_status", name="axis", status="interrupted", ts=t0 + 11.5,
              error="the process executing the run exited"),
    ])


def seed_resumed(client: JournalClient, run_id: str, t0: float) -> None:
    """Step 1 was in flight when the kernel died; resumed 2 minutes later, its second
    attempt took 2 s. Step 0 came from the journal on resume (replayed)."""
    client.append([
        event(run_id, "run_started", name="resumed", ts=t0,
              meta=json.dumps({"pid": DEAD_PID, "notebook": "r.ipynb"})),
        event(run_id, "step_started", seq=0, attempt=1, name="train", ts=t0 + 0.5,
              data_json="[0]"),
        event(run_id, "step_completed", seq=0, attempt=1, name="train", ts=t0 + 1,
              data_json="0"),
        event(run_id, "step_started", seq=1, attempt=1, name="train", ts=t0 + 1,
              data_json="[1]"),
        event(run_id, "run_status", name="resumed", status="interrupted", ts=t0 + 30,
              error="the process executing the run exited"),
        event(run_id, "run_status", name="resumed", status="running", ts=t0 + 125,
              meta=json.dumps({"pid": DEAD_PID})),
        event(run_id, "step_started", seq=1, attempt=2, name="train", ts=t0 + 125,
              data_json="[1]"),
        event(run_id, "step_completed", seq=1, attempt=2, name="train", ts=t0 + 127,
              data_json="1"),
        event(run_id, "run_status", name="resumed", status="completed", ts=t0 + 127.5),
    ])


def count_requests(page: Page, part: str) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if part in r.url else None)
    return seen


def test_an_ended_runs_axis_stays_put_titles_hold_full_text_and_step_times_are_labelled(
        lab_server: LabServer, page: Page, artifacts: Path) -> None:
    now = time.time()
    with journal(lab_server) as client:
        seed_interrupted_with_an_abandoned_step(client, "axis-1", now - 114)
        seed_resumed(client, "resumed-1", now - 300)
        client.append([
            event(LONG_ID, "run_started", name="hyperparameter-sweep", ts=now - 50,
                  meta=json.dumps({"pid": DEAD_PID, "notebook": "long.ipynb"})),
            event(LONG_ID, "step_started", seq=0, attempt=1, name="train", ts=now - 49,
                  data_json=json.dumps(LONG_ARGS)),
            event(LONG_ID, "step_completed", seq=0, attempt=1, name="train", ts=now - 48,
                  data_json=json.dumps({"loss": 0.25, "history": list(range(40))})),
            event(LONG_ID, "run_status", name="hyperparameter-sweep", status="completed",
                  ts=now - 47),
        ])
    assert_rest_api_served(lab_server)
    write_notebook(lab_server.root_dir / "empty.ipynb", ["1"])
    open_notebook(page, lab_server, "empty.ipynb")
    open_sidebar(page)

    # The axis of a run that ended 11.5 s after its start, long ago, is 11.5 s, and stays.
    run_row(page, "axis-1").click()
    detail = run_detail(page, "axis-1")
    end = detail.locator(".dnb-timeline-end")
    expect(end).to_have_text("11.5 s")
    polls = count_requests(page, "/durable-nb/api/runs/axis-1/events")
    deadline = time.monotonic() + 30
    while len(polls) < 3:  # three more reads of the run (one a second), each re-rendering
        assert time.monotonic() < deadline, "the panel stopped reading the open run"
        page.wait_for_timeout(200)
    expect(end).to_have_text("11.5 s")
    expect(detail.locator('.dnb-step-row[data-seq="1"]')).to_contain_text("abandoned")
    page.screenshot(path=artifacts / "1-axis-of-an-ended-run.png")

    # A step's last attempt and its time since first start, both labelled.
    detail.get_by_role("button", name="‹ Runs").click()
    run_row(page, "resumed-1").click()
    step = run_detail(page, "resumed-1").locator('.dnb-step-row[data-seq="1"]')
    expect(step.locator(".dnb-step-attempt")).to_have_text("2.00 s (last attempt)")
    expect(step.locator(".dnb-step-since-first")).to_have_text("2m 06s since first start")
    expect(run_detail(page, "resumed-1").locator('.dnb-step-row[data-seq="0"] .dnb-step-time')
           ).to_have_text("0.50 s")
    page.screenshot(path=artifacts / "2-step-times.png")

    # Cut-off run ids, workflows, args and results have their full text in a title.
    run_detail(page, "resumed-1").get_by_role("button", name="‹ Runs").click()
    row = run_row(page, LONG_ID)
    expect(row.locator(".dnb-run-id")).to_have_attribute("title", LONG_ID)
    assert row.locator(".dnb-run-id").evaluate("e => e.scrollWidth > e.clientWidth"), \
        "the run id should be cut off at the default width (else this checks nothing)"
    expect(row.locator(".dnb-run-workflow")).to_have_attribute("title", "hyperparameter-sweep")
    row.click()
    detail = run_detail(page, LONG_ID)
    expect(detail.locator(".dnb-detail-title")).to_have_attribute("title", LONG_ID)
    expect(detail.locator(".dnb-detail-run-id")).to_have_attribute("title", LONG_ID)
    args = detail.locator(".dnb-step-args").first
    assert args.inner_text().endswith("…")  # the preview is cut
    assert json.loads(args.get_attribute("title") or "") == LONG_ARGS
    result = detail.locator(".dnb-step-result").first
    assert json.loads(result.get_attribute("title") or "")["history"] == list(range(40))
    io_title = detail.locator(".dnb-step-io").first.get_attribute("title") or ""
    assert "learning_rate" in io_title and "history" in io_title
    page.screenshot(path=artifacts / "3-long-ids-and-args.png")


def action(page: Page, run_id: str, name: str) -> Any:
    return run_detail(page, run_id).get_by_role("button", name=name)


def test_resume_and_cancel_are_disabled_with_the_reason_when_they_cannot_apply(
        lab_server: LabServer, page: Page, artifacts: Path) -> None:
    with journal(lab_server) as client:
        for status in ("completed", "cancelled", "failed", "interrupted"):
            make_run(client, f"{status}-1", workflow=status, steps=2, status=status,
                     pid=DEAD_PID, fail_last=status == "failed")
        make_run(client, "live-1", workflow="live", steps=1)  # executed by this process
    assert_rest_api_served(lab_server)
    write_notebook(lab_server.root_dir / "empty.ipynb", ["1"])
    open_notebook(page, lab_server, "empty.ipynb")
    open_sidebar(page)
    expected = {  # run -> (Resume enabled, Cancel enabled, words of the disabled titles)
        "completed-1": (False, False, "completed"),
        "cancelled-1": (False, False, "cancelled"),
        "failed-1": (True, True, ""),
        "interrupted-1": (True, True, ""),
        "live-1": (False, True, "live process"),
    }
    for run_id, (resume_on, cancel_on, why) in expected.items():
        run_row(page, run_id).click()
        detail = run_detail(page, run_id)
        expect(detail.locator(".dnb-actions")).to_be_visible()
        for name, enabled in (("Resume", resume_on), ("Cancel", cancel_on)):
            button = action(page, run_id, name)
            if enabled:
                expect(button).to_be_enabled()
            else:
                expect(button).to_be_disabled()
                title = button.get_attribute("title") or ""
                assert why in title, f"{run_id} {name}: title {title!r} should say {why!r}"
        page.screenshot(path=artifacts / f"actions-{run_id}.png")
        detail.get_by_role("button", name="‹ Runs").click()
    assert os.getpid()  # live-1 is "executed" by this test process, alive throughout


# JavaScript: every visible .dnb-badge with its text colour, background and contrast ratio.
_BADGE_CONTRASTS = """
() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  return [...document.querySelectorAll('.dnb-badge')]
    .filter(e => e.offsetParent !== null)
    .map(e => {
      const s = getComputedStyle(e);
      const fg = rgb(s.color), bg = rgb(s.backgroundColor);
      const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
      return {text: e.textContent, cls: e.className, color: s.color,
              background: s.backgroundColor, alpha: bg.length > 3 ? bg[3] : 1,
              ratio: (hi + 0.05) / (lo + 0.05)};
    });
}
"""


def assert_badges_readable(page: Page, theme: str, wanted: set[str]) -> None:
    badges = page.evaluate(_BADGE_CONTRASTS)
    shown = {b["text"].split()[-1] for b in badges}
    assert wanted <= shown, f"{theme}: badges shown {sorted(shown)}, wanted {sorted(wanted)}"
    for b in badges:
        assert b["alpha"] == 1, f"{theme}: badge {b['text']!r} has a see-through background"
        assert b["ratio"] >= 4.5, (
            f"{theme}: badge {b['text']!r} ({b['cls']}) is {b['color']} on {b['background']}: "
            f"contrast {b['ratio']:.2f} < 4.5")


def test_every_badge_has_a_contrast_of_at_least_4_5_in_light_and_dark_themes(
        lab_server: LabServer, page: Page, artifacts: Path) -> None:
    now = time.time()
    with journal(lab_server) as client:
        for status in ("completed", "cancelled", "failed", "interrupted"):
            make_run(client, f"{status}-1", workflow=status, steps=2, status=status,
                     pid=DEAD_PID, fail_last=status == "failed", started=now - 100)
        make_run(client, "live-1", workflow="live", steps=1, started=now - 50)
        client.append([  # live-1: step 1 failed once and waits to retry; step 2 runs
            event("live-1", "step_started", seq=1, attempt=1, name="flaky"),
            event("live-1", "step_failed", seq=1, attempt=1, name="flaky",
                  error="ConnectionError", meta=json.dumps({"final": False})),
            event("live-1", "step_started", seq=2, attempt=1, name="train"),
        ])
        seed_interrupted_with_an_abandoned_step(client, "axis-1", now - 20)
        seed_resumed(client, "resumed-1", now - 300)
    # Two saved outputs: one of a resumed run (drawn from the journal, with its replayed
    # badge) and one of a run the journal does not have (the kernel's HTML, whose badges
    # carry inline white-on-light-green colours).
    kernel_html = ('<div class="dnb-run"><span class="dnb-badge dnb-completed" style="background:'
                   '#2ca02c;color:white">completed</span> <span class="dnb-badge dnb-replayed" '
                   'style="background:#98df8a;color:white">replayed</span></div>')
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%%workflow resumed", outputs=[
        nbformat.v4.new_output("display_data", data={
            RUN_MIME: {"run_id": "resumed-1", "workflow": "resumed", "status": "running"},
            "text/html": kernel_html, "text/plain": "resumed-1 running"})]),
        nbformat.v4.new_code_cell("%%workflow gone", outputs=[
            nbformat.v4.new_output("display_data", data={
                RUN_MIME: {"run_id": "gone-1", "workflow": "gone", "status": "completed"},
                "text/html": kernel_html, "text/plain": "gone-1 completed"})])]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, lab_server.root_dir / "outputs.ipynb")
    assert_rest_api_served(lab_server)
    open_notebook(page, lab_server, "outputs.ipynb")
    panel = open_sidebar(page)
    expect(panel.locator(".dnb-run-row")).to_have_count(7)
    output = page.locator(".dnb-run-output .dnb-run-state[data-run-id='resumed-1']")
    # Step 0 (0.5 s, from t0 + 0.5 to t0 + 1) came from the journal on resume.
    expect(output.locator(".dnb-run-replayed")).to_have_text("1 replayed — saved 0.50 s")
    expect(page.locator(".dnb-run-fallback .dnb-badge.dnb-replayed")).to_be_visible()

    run_statuses = {"completed", "cancelled", "failed", "interrupted", "running", "replayed"}
    for theme in ("JupyterLab Light", "JupyterLab Dark"):
        execute_command(page, "apputils:change-theme", {"theme": theme})
        background = "rgb(255, 255, 255)" if theme.endswith("Light") else "rgb(33, 33, 33)"
        page.wait_for_function(  # the theme's stylesheet applies after its name is set
            "([t, bg]) => document.body.dataset.jpThemeName === t && getComputedStyle("
            "document.querySelector('.dnb-sidebar')).backgroundColor === bg",
            arg=[theme, background])
        assert_badges_readable(page, f"{theme}, list", run_statuses)
        run_row(page, "live-1").click()
        expect(run_detail(page, "live-1").locator(".dnb-step-row")).to_have_count(3)
        assert_badges_readable(page, f"{theme}, live-1", {"retrying", "running", "completed"})
        run_detail(page, "live-1").get_by_role("button", name="‹ Runs").click()
        run_row(page, "axis-1").click()
        expect(run_detail(page, "axis-1").locator(".dnb-step-row")).to_have_count(2)
        assert_badges_readable(page, f"{theme}, axis-1", {"abandoned", "interrupted"})
        page.screenshot(path=artifacts / f"badges-{theme.split()[-1].lower()}.png")
        run_detail(page, "axis-1").get_by_role("button", name="‹ Runs").click()
