"""Smoke tests of the browser harness: Lab renders, kernels run, ipywidgets and durable_nb work."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.lab import (
    LabServer,
    cell,
    cell_output,
    open_notebook,
    restart_kernel,
    run_all,
    run_cell,
    write_notebook,
)

pytestmark = pytest.mark.browser


def test_lab_runs_cells_and_renders_widgets(lab_server: LabServer, page: Page,
                                            artifacts: Path) -> None:
    write_notebook(lab_server.root_dir / "smoke.ipynb", [
        "print(40 + 2)",
        "import ipywidgets\nipywidgets.IntSlider(value=7)",
    ])
    open_notebook(page, lab_server, "smoke.ipynb")
    assert run_all(page), "a cell failed"
    expect(cell_output(page, 0)).to_contain_text("42")
    # ipywidgets renders through jupyterlab_widgets, found in the venv's labextensions.
    slider = cell_output(page, 1).locator(".jupyter-widgets.widget-slider")
    expect(slider).to_be_visible()
    expect(slider.locator(".widget-readout")).to_contain_text("7")
    expect(cell(page, 1).locator(".jp-InputPrompt")).to_have_text("[2]:")
    page.screenshot(path=artifacts / "smoke.png")


def test_workflow_cell_runs_in_lab(lab_server: LabServer, page: Page, artifacts: Path) -> None:
    write_notebook(lab_server.root_dir / "workflow.ipynb", [
        "%load_ext durable_nb",
        "%%activity\ndef double(x):\n    return 2 * x",
        "%%workflow demo\nresults = [double(i) for i in range(3)]",
        "print(results)",
    ])
    open_notebook(page, lab_server, "workflow.ipynb")
    assert run_all(page), "a cell failed"
    # If the workflow cell's output format evolves, keep the assertion on "demo-1 completed".
    expect(cell_output(page, 2)).to_contain_text("demo-1 completed: 3 steps")
    expect(cell_output(page, 3)).to_contain_text("[0, 2, 4]")
    page.screenshot(path=artifacts / "workflow.png")
    # The kernel wrote to this test's journal home, through its own journal server.
    assert (lab_server.journal_home / "server.json").exists()

    # After a restart (execution counts start again at 1) the finished run is replayed.
    restart_kernel(page)
    for index in range(3):
        assert run_cell(page, index), f"cell {index} failed"
    expect(cell(page, 2).locator(".jp-InputPrompt")).to_have_text("[3]:")
    expect(cell_output(page, 2)).to_contain_text("demo-1 completed")
    page.screenshot(path=artifacts / "workflow-after-restart.png")
