"""The "Durable runs" sidebar in JupyterLab, in Chromium: a run followed live, through a
kernel kill, to a Resume that completes it; and a big journal paged, filtered and searched."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, Request, expect

from tests.browser.lab import (
    CURRENT_PANEL,
    LabServer,
    cell,
    cell_output,
    open_notebook,
    run_cell,
    start_cell,
    wait_kernel_idle,
    write_notebook,
)
from tests.browser.sidebar import (
    assert_rest_api_served,
    dismiss_dialog,
    journal,
    kill_run_process,
    open_sidebar,
    run_detail,
    run_row,
    seed_runs,
    steps_done,
    wait_steps_at_least,
)
from tests.jupyter.journal_runs import make_run

pytestmark = pytest.mark.browser

STEPS = 40
SWEEP = [
    "%load_ext durable_nb",
    "%%activity\nimport time\ndef train(i, pause):\n    time.sleep(pause)\n"
    "    return {'i': i, 'loss': (i - 4) ** 2}",
    f"%%workflow sweep\nresults = [train(i, 0.3) for i in range({STEPS})]",
]


def test_a_run_is_followed_live_survives_a_kernel_kill_and_resume_completes_it(
        lab_server: LabServer, page: Page, artifacts: Path) -> None:
    assert_rest_api_served(lab_server)
    write_notebook(lab_server.root_dir / "sweep.ipynb", SWEEP)
    open_notebook(page, lab_server, "sweep.ipynb")
    panel = open_sidebar(page)
    expect(panel).to_contain_text("No runs yet")

    for index in range(2):
        assert run_cell(page, index)
    start_cell(page, 2)
    row = run_row(page, "sweep-1")
    expect(row.locator(".dnb-run-status")).to_have_text("running")
    expect(row).to_contain_text("sweep.ipynb")
    row_css = '.dnb-run-row[data-run-id="sweep-1"]'
    first = wait_steps_at_least(page, row_css, 2)
    later = wait_steps_at_least(page, row_css, first + 3)  # the list follows the progress
    assert first < later < STEPS
    page.screenshot(path=artifacts / "sidebar-list-running.png")

    row.click()
    detail = run_detail(page, "sweep-1")
    expect(detail.locator(".dnb-run-status")).to_have_text("running")
    expect(detail.locator(".dnb-detail-notebook")).to_contain_text("sweep.ipynb")
    expect(detail.locator(".dnb-step-row").first).to_contain_text("train")
    expect(detail.locator(".dnb-step-row").first).to_contain_text("completed")
    expect(detail.locator(".dnb-timeline rect").first).to_be_visible()
    detail_css = '.dnb-run-detail[data-run-id="sweep-1"]'
    wait_steps_at_least(page, detail_css, later + 2)
    page.screenshot(path=artifacts / "sidebar-detail-running.png")

    kill_run_process(lab_server, "sweep-1")
    expect(detail.locator(".dnb-run-status")).to_have_text("interrupted", timeout=30_000)
    expect(detail.locator(".dnb-run-error")).to_contain_text("exited")
    done_at_kill = steps_done(detail)
    assert done_at_kill < STEPS
    # The server restarts the dead kernel and the notebook says so in a dialog.
    wait_kernel_idle(page)
    dismiss_dialog(page, "Kernel Restarting")
    page.screenshot(path=artifacts / "sidebar-detail-interrupted.png")

    resume = detail.get_by_role("button", name="Resume")
    expect(resume).to_be_enabled()
    resume.click()
    resumed = cell(page, 3)  # a new last cell, run in the notebook's (restarted) kernel
    expect(resumed).to_contain_text("%workflow resume sweep-1")
    expect(detail.locator(".dnb-run-status")).to_have_text("running", timeout=60_000)
    expect(detail.locator(".dnb-run-status")).to_have_text("completed", timeout=120_000)
    expect(detail.locator(".dnb-run-progress")).to_have_text(f"{STEPS} completed")
    expect(detail.locator(".dnb-step-row")).to_have_count(STEPS)
    expect(cell_output(page, 3)).to_contain_text("sweep-1 completed")
    page.screenshot(path=artifacts / "sidebar-detail-completed.png")

    detail.get_by_role("button", name="‹ Runs").click()
    expect(row.locator(".dnb-run-status")).to_have_text("completed")
    expect(row.locator(".dnb-run-progress")).to_have_text(f"{STEPS} steps")
    expect(page.locator(".dnb-sidebar .dnb-run-row")).to_have_count(1)  # resumed, not new
    page.screenshot(path=artifacts / "sidebar-list-completed.png")
    wait_kernel_idle(page)
    assert page.locator(CURRENT_PANEL).locator(".jp-Notebook-cell").count() == 4


def test_ten_thousand_runs_are_paged_filtered_and_searched_on_the_server(
        lab_server: LabServer, page: Page, artifacts: Path) -> None:
    total = 10_000
    t0 = time.monotonic()
    seed_runs(lab_server.journal_home, total)
    seeded_s = time.monotonic() - t0
    assert_rest_api_served(lab_server)
    write_notebook(lab_server.root_dir / "empty.ipynb", ["1"])
    requests: list[str] = []

    def record(request: Request) -> None:
        if "/durable-nb/api/" in request.url:
            requests.append(request.url)

    page.on("request", record)
    open_notebook(page, lab_server, "empty.ipynb")
    t1 = time.monotonic()
    panel = open_sidebar(page)
    rows = panel.locator(".dnb-run-row")
    expect(panel.locator(".dnb-page-range")).to_have_text("1–50 of 10,000")
    first_page_s = time.monotonic() - t1
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-run-id", f"sweep-{total}")  # newest first
    page.screenshot(path=artifacts / "sidebar-10000-runs.png")

    panel.get_by_role("button", name="Older ›").click()
    expect(panel.locator(".dnb-page-range")).to_have_text("51–100 of 10,000")
    expect(rows.first).to_have_attribute("data-run-id", f"sweep-{total - 50}")

    panel.get_by_label("Status filter").select_option("failed")
    failed = sum(1 for i in range(total) if i % 6 == 2)
    expect(panel.locator(".dnb-page-range")).to_have_text(f"1–50 of {failed:,}")
    expect(rows.locator(".dnb-run-status").first).to_have_text("failed")
    statuses = set(rows.locator(".dnb-run-status").all_inner_texts())
    assert statuses == {"failed"}, statuses

    panel.get_by_label("Status filter").select_option("")
    panel.get_by_label("Search runs").fill("sweep-9999")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run-id", "sweep-9999")
    rows.first.click()
    detail = run_detail(page, "sweep-9999")
    expect(detail.locator(".dnb-step-row")).to_have_count(2)
    page.screenshot(path=artifacts / "sidebar-search-detail.png")

    lists = [u for u in requests if re.search(r"/durable-nb/api/runs(\?|$)", u)]
    assert lists and all("limit=50" in u for u in lists), lists  # never the whole journal
    print(f"seeded {total} runs in {seeded_s:.1f} s; first page shown {first_page_s:.2f} s "
          f"after opening the panel; {len(lists)} list requests")


def test_signal_fork_delete_and_cancel_act_on_the_journal_and_errors_show_in_the_panel(
        lab_server: LabServer, page: Page, artifacts: Path) -> None:
    with journal(lab_server) as client:
        make_run(client, "train-1", workflow="train", steps=3, status="interrupted",
                 pid=1, notebook="gone.ipynb")
        # Executed by a live process (this one): the journal refuses to delete it.
        make_run(client, "train-2", workflow="train", steps=1, notebook="gone.ipynb")
    assert_rest_api_served(lab_server)
    write_notebook(lab_server.root_dir / "empty.ipynb", ["1"])
    open_notebook(page, lab_server, "empty.ipynb")
    panel = open_sidebar(page)
    dialog = page.locator(".jp-Dialog")

    run_row(page, "train-1").click()
    detail = run_detail(page, "train-1")
    expect(detail.locator(".dnb-step-row")).to_have_count(3)
    detail.get_by_role("button", name="Signal").click()
    dialog.get_by_label("Signal name").fill("approve")
    dialog.get_by_label("Signal value (JSON)").fill('{"ok": true, "by": "me"}')
    page.screenshot(path=artifacts / "signal-dialog.png")
    dialog.get_by_role("button", name="Send").click()
    expect(panel.locator(".dnb-message")).to_contain_text("signal approve sent to train-1")
    with journal(lab_server) as client:
        signals = client.query("SELECT name, data_json FROM events WHERE run_id = ? AND "
                               "kind = 'signal'", ["train-1"]).to_pylist()
    assert [(s["name"], json.loads(s["data_json"])) for s in signals] == [
        ("approve", {"ok": True, "by": "me"})]

    detail.get_by_role("button", name="Signal").click()
    dialog.get_by_label("Signal name").fill("approve")
    dialog.get_by_label("Signal value (JSON)").fill("{not json")
    dialog.get_by_role("button", name="Send").click()
    expect(panel.locator(".dnb-error")).to_contain_text("the value is not JSON")

    detail.get_by_role("button", name="Fork").click()
    dialog.locator("input").fill("2")
    dialog.locator(".jp-mod-accept").click()
    notice = panel.locator(".dnb-message")
    expect(notice).to_contain_text("forked train-1 at step 2 as ")
    fork_id = re.search(r" as (\S+) ", notice.inner_text()).group(1)
    fork = run_detail(page, fork_id)
    expect(fork.locator(".dnb-step-row")).to_have_count(2)
    page.screenshot(path=artifacts / "forked.png")

    fork.get_by_role("button", name="Delete").click()
    expect(dialog).to_contain_text(f"Delete run {fork_id}")
    dialog.get_by_role("button", name="Delete").click()
    expect(panel.locator(".dnb-message")).to_contain_text(f"{fork_id} deleted")
    expect(run_row(page, fork_id)).to_have_count(0)
    expect(run_row(page, "train-1")).to_be_visible()

    run_row(page, "train-2").click()
    busy = run_detail(page, "train-2")
    busy.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Delete").click()
    error = panel.locator(".dnb-error")
    expect(error).to_contain_text("Delete train-2: run train-2 is being executed by a live "
                                  f"process (pid {os.getpid()}); cancel it first")
    page.screenshot(path=artifacts / "delete-refused.png")
    error.get_by_role("button", name="Dismiss").click()
    expect(error).to_have_count(0)

    busy.get_by_role("button", name="‹ Runs").click()
    run_row(page, "train-1").click()
    detail.get_by_role("button", name="Resume").click()
    expect(panel.locator(".dnb-error")).to_contain_text(
        "the notebook of run train-1 (gone.ipynb) is not there any more")

    detail.get_by_role("button", name="Cancel").click()
    expect(detail.locator(".dnb-run-status")).to_have_text("cancelled")
    expect(panel.locator(".dnb-message")).to_contain_text("train-1 cancelled (it was interrupted)")
    for name in ("Resume", "Cancel", "Signal"):
        expect(detail.get_by_role("button", name=name)).to_be_disabled()
    page.screenshot(path=artifacts / "cancelled.png")
