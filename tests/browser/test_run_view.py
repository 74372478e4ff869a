"""A run's output in JupyterLab, in Chromium: progress to completion (Cancel and kernel
deaths are in test_run_output.py), and the kernel's summary when the run is gone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.lab import (
    LabServer,
    cell_output,
    execute_command,
    open_notebook,
    run_cell,
    start_cell,
    wait_kernel_idle,
    write_notebook,
)
from tests.browser.sidebar import journal

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


def test_run_output_appears_and_its_progress_reaches_completion(
        lab_server: LabServer, page: Page, artifacts: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    open_with_workflow(lab_server, page, "sweep",
                       "%%workflow sweep\nresults = [train(i, 0.4) for i in range(8)]")
    # Lab prefers the run's own MIME type to the kernel's widget: the journal's state.
    state = cell_output(page, 2).locator(".dnb-run-output .dnb-run-state")
    expect(state).to_be_visible()
    expect(state).to_have_attribute("data-status", "running")
    expect(state.locator(".dnb-timeline rect").first).to_be_visible()
    expect(cell_output(page, 2).locator(".dnb-run-view")).to_have_count(0)
    page.screenshot(path=artifacts / "run-output-running.png")

    expect(state).to_have_attribute("data-status", "completed", timeout=120_000)
    expect(state.locator(".dnb-run-progress")).to_have_text("8 / 8 steps completed")
    expect(state.locator(".dnb-timeline rect")).to_have_count(8)
    expect(cell_output(page, 2)).to_contain_text("sweep-1 completed: 8 steps")
    wait_kernel_idle(page)
    page.screenshot(path=artifacts / "run-output-completed.png")
    assert journal_status(lab_server, "sweep-1", monkeypatch) == "completed"


def test_an_output_whose_run_is_gone_shows_the_kernels_summary_with_a_note(
        lab_server: LabServer, page: Page, artifacts: Path) -> None:
    write_notebook(lab_server.root_dir / "gone.ipynb",
                   [*SETUP, "%%workflow gone\nresults = [train(i, 0) for i in range(3)]"])
    open_notebook(page, lab_server, "gone.ipynb")
    for index in range(len(SETUP) + 1):
        assert run_cell(page, index)
    state = cell_output(page, 2).locator(".dnb-run-state")
    expect(state).to_have_attribute("data-status", "completed")
    execute_command(page, "docmanager:save")
    with journal(lab_server) as client:
        client.delete_run("gone-1")

    open_notebook(page, lab_server, "gone.ipynb")  # a reload: the output is read again
    fallback = cell_output(page, 2).locator(".dnb-run-output .dnb-run-fallback")
    expect(fallback.locator(".dnb-run-output-note")).to_contain_text(
        "The current state of this run is not available")
    expect(fallback.locator(".dnb-run-output-note")).to_contain_text(
        "the run is no longer in the journal")
    expect(fallback.locator(".dnb-run-output-note")).to_have_attribute(
        "title", re.compile("gone-1"))
    # The kernel's last word: its HTML summary of the completed run.
    expect(fallback.locator(".dnb-run .dnb-header")).to_contain_text("gone-1")
    expect(fallback.locator(".dnb-run .dnb-steps")).to_contain_text("train")
    assert "model not found" not in cell_output(page, 2).inner_text()
    page.screenshot(path=artifacts / "run-output-gone.png")
