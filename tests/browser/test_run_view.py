"""The live run view in JupyterLab, in Chromium: progress to completion, and Cancel."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.lab import (
    LabServer,
    cell_output,
    open_notebook,
    run_cell,
    start_cell,
    wait_kernel_idle,
    write_notebook,
)

pytestmark = pytest.mark.browser

SETUP = [
    "%load_ext durable_nb\nimport durable_nb",
    "%%activity\nimport time\ndef train(i, pause):\n    time.sleep(pause)\n"
    "    return {'i': i, 'loss': (i - 4) ** 2}",
]


def open_with_workflow(server: LabServer, page: Page, name: str, workflow_cell: str) -> None:
    """A notebook of SETUP plus ``workflow_cell``: open it, run the setup, start the workflow."""
    write_notebook(server.root_dir / f"{name}.ipynb", [*SETUP, workflow_cell])
    open_notebook(page, server, f"{name}.ipynb")
    for index in range(len(SETUP)):
        assert run_cell(page, index)
    start_cell(page, len(SETUP))


def journal_status(server: LabServer, run_id: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import durable_nb
    from durable_nb.server.client import reset_default_client

    monkeypatch.setenv("DURABLE_NB_HOME", str(server.journal_home))
    reset_default_client()
    return str(durable_nb.runs().set_index("run_id").loc[run_id, "status"])


def test_run_view_appears_and_its_progress_reaches_completion(
        lab_server: LabServer, page: Page, artifacts: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    open_with_workflow(lab_server, page, "sweep",
                       "%%workflow sweep\nresults = [train(i, 0.4) for i in range(8)]")
    view = cell_output(page, 2).locator(".dnb-run-view")
    expect(view).to_be_visible()
    expect(view.locator(".widget-hprogress")).to_be_visible()
    expect(view).to_contain_text("running")
    expect(view.locator(".dnb-steps")).to_contain_text("train")
    page.screenshot(path=artifacts / "run-view-running.png")

    summary = cell_output(page, 2).locator(".dnb-run")
    expect(summary.locator(".dnb-header .dnb-completed")).to_be_visible(timeout=120_000)
    expect(summary).to_contain_text("8 steps done")
    expect(summary.locator(".dnb-timeline rect")).to_have_count(8)
    expect(cell_output(page, 2)).to_contain_text("sweep-1 completed: 8 steps")
    wait_kernel_idle(page)
    page.screenshot(path=artifacts / "run-view-completed.png")
    assert journal_status(lab_server, "sweep-1", monkeypatch) == "completed"


def test_cancel_button_stops_a_long_foreground_run(
        lab_server: LabServer, page: Page, artifacts: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    open_with_workflow(lab_server, page, "long",
                       "%%workflow long\nresults = [train(i, 0.3) for i in range(200)]")
    view = cell_output(page, 2).locator(".dnb-run-view")
    expect(view.locator(".dnb-steps")).to_contain_text("completed")  # some steps are done
    page.screenshot(path=artifacts / "cancel-before.png")
    view.get_by_role("button", name="Cancel").click()

    output = cell_output(page, 2)
    expect(output.locator(".dnb-header .dnb-cancelled")).to_be_visible(timeout=60_000)
    expect(output).to_contain_text("RunCancelled")
    expect(output).to_contain_text("long-1 cancelled")
    wait_kernel_idle(page)
    page.screenshot(path=artifacts / "cancel-after.png")
    assert journal_status(lab_server, "long-1", monkeypatch) == "cancelled"
