"""The moment the product exists for, in a real JupyterLab: ``notebooks/sweep.ipynb`` as
shipped, its kernel SIGKILLed mid-sweep, the notebook reopened, the sidebar's Resume. The run
completes from the journal alone (the cells that define ``grid`` and ``step_seconds`` are not
re-run), completed steps are replayed, not re-run, and every run output in the notebook shows
the run's current state, before and after a page reload."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.lab import (
    CURRENT_PANEL,
    LabServer,
    cell,
    cell_output,
    execute_command,
    open_notebook,
    wait_kernel_idle,
)
from tests.browser.sidebar import (
    dismiss_dialog,
    journal,
    kill_run_process,
    open_sidebar,
    run_detail,
    run_row,
    steps_done,
    wait_steps_at_least,
)

pytestmark = pytest.mark.browser

SWEEP = Path(__file__).resolve().parents[2] / "notebooks" / "sweep.ipynb"
WORKFLOW_CELL = 7  # the %%workflow sweep cell of sweep.ipynb
STEPS = 12
BROKEN = ("model not found", "Error displaying widget")


def _assert_output_is_true(output: Locator) -> None:
    """A run output that tells the truth about a completed run."""
    expect(output).to_contain_text("completed", timeout=60_000)
    for text in BROKEN:
        expect(output).not_to_contain_text(text)
    expect(output.locator(".dnb-run-status, .dnb-badge").filter(has_text="running")
           ).to_have_count(0)
    cancel = output.get_by_role("button", name="Cancel")
    for i in range(cancel.count()):
        expect(cancel.nth(i)).to_be_disabled()


def test_sweep_killed_mid_run_is_resumed_from_the_sidebar_and_every_output_tells_the_truth(
        lab_server: LabServer, page: Page, artifacts: Path) -> None:
    shutil.copy(SWEEP, lab_server.root_dir / "sweep.ipynb")
    open_notebook(page, lab_server, "sweep.ipynb")
    open_sidebar(page)
    expect(cell(page, WORKFLOW_CELL)).to_contain_text("%%workflow sweep")

    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    row = run_row(page, "sweep-1")
    expect(row.locator(".dnb-run-status")).to_have_text("running", timeout=90_000)
    done_before = wait_steps_at_least(page, '.dnb-run-row[data-run-id="sweep-1"]', 3,
                                      timeout=120)
    page.screenshot(path=artifacts / "1-running.png")
    kill_run_process(lab_server, "sweep-1")
    expect(row.locator(".dnb-run-status")).to_have_text("interrupted", timeout=30_000)
    done_at_kill = steps_done(row)
    assert done_before <= done_at_kill < STEPS
    wait_kernel_idle(page)
    dismiss_dialog(page, "Kernel Restarting")
    execute_command(page, "docmanager:save")

    # Reopen the notebook (the page loads anew), then Resume from the sidebar.
    open_notebook(page, lab_server, "sweep.ipynb")
    open_sidebar(page)
    run_row(page, "sweep-1").click()
    detail = run_detail(page, "sweep-1")
    expect(detail.locator(".dnb-run-status")).to_have_text("interrupted")
    detail.get_by_role("button", name="Resume").click()
    expect(detail.locator(".dnb-run-status")).to_have_text("completed", timeout=180_000)
    resumed_cell = page.locator(CURRENT_PANEL).locator(".jp-Notebook-cell").last
    expect(resumed_cell).to_contain_text("%workflow resume sweep-1")
    expect(resumed_cell.locator(".jp-Cell-outputArea")).to_contain_text(
        "restored from the journal", timeout=60_000)
    page.screenshot(path=artifacts / "2-resumed.png")

    # Completed steps were replayed, not re-run: one attempt started for each of them.
    with journal(lab_server) as client:
        rows = client.query(
            "SELECT seq, count(*) FILTER (WHERE kind = 'step_started') AS starts, "
            "count(*) FILTER (WHERE kind = 'step_completed') AS completions "
            "FROM events WHERE run_id = 'sweep-1' AND seq IS NOT NULL GROUP BY seq "
            "ORDER BY seq").to_pylist()
    assert [r["seq"] for r in rows] == list(range(STEPS))
    assert all(r["completions"] == 1 for r in rows), rows
    assert all(r["starts"] == 1 for r in rows[:done_at_kill]), rows
    expect(resumed_cell.locator(".jp-Cell-outputArea")).to_contain_text(
        f"{done_at_kill} replayed")

    # The old cell's output, made by the dead kernel, shows the run as it is now.
    _assert_output_is_true(cell_output(page, WORKFLOW_CELL))
    _assert_output_is_true(resumed_cell.locator(".jp-Cell-outputArea"))
    cell(page, WORKFLOW_CELL).screenshot(path=artifacts / "3-old-cell-true.png")
    resumed_cell.screenshot(path=artifacts / "3-resume-cell.png")

    wait_kernel_idle(page)
    execute_command(page, "docmanager:save")
    open_notebook(page, lab_server, "sweep.ipynb")  # a page reload
    _assert_output_is_true(cell_output(page, WORKFLOW_CELL))
    _assert_output_is_true(page.locator(CURRENT_PANEL).locator(".jp-Notebook-cell").last
                           .locator(".jp-Cell-outputArea"))
    cell(page, WORKFLOW_CELL).screenshot(path=artifacts / "4-old-cell-after-reload.png")
