"""A running step's heartbeats in JupyterLab, in Chromium: the sidebar's run detail and the
cell's run output show the latest details, a progress bar and its count, and follow each
new heartbeat until the step completes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.lab import (
    LabServer,
    cell_output,
    open_notebook,
    run_cell,
    start_cell,
    write_notebook,
)
from tests.browser.sidebar import assert_rest_api_served, open_sidebar, run_detail, run_row

pytestmark = pytest.mark.browser

EPOCHS = 3
LOSS_SHOWN = {1: '1', 2: '0.5', 3: '0.333'}  # round(1 / epoch, 3) as JSON.stringify writes it


def fit_notebook(gates: Path) -> list[str]:
    """An activity that heartbeats each epoch, then waits until the test opens the epoch's
    gate (a file): the test decides when the next heartbeat comes."""
    return [
        "%load_ext durable_nb",
        "%%activity\nimport pathlib, time\nimport durable_nb\n\n"
        "def fit(gates, epochs):\n"
        "    for epoch in range(1, epochs + 1):\n"
        "        loss = round(1 / epoch, 3)\n"
        "        durable_nb.heartbeat({'epoch': epoch, 'of': epochs, 'loss': loss})\n"
        "        gate, deadline = pathlib.Path(gates) / f'go-{epoch}', time.monotonic() + 300\n"
        "        while not gate.exists() and time.monotonic() < deadline:\n"
        "            time.sleep(0.05)\n"
        "    return {'loss': round(1 / epochs, 3)}",
        f"%%workflow fit\nresult = fit({str(gates)!r}, {EPOCHS})",
    ]


def test_a_running_steps_heartbeat_progress_is_shown_and_follows_new_heartbeats(
        lab_server: LabServer, page: Page, artifacts: Path) -> None:
    assert_rest_api_served(lab_server)
    gates = lab_server.root_dir / "gates"
    gates.mkdir()
    write_notebook(lab_server.root_dir / "fit.ipynb", fit_notebook(gates))
    open_notebook(page, lab_server, "fit.ipynb")
    for index in range(2):
        assert run_cell(page, index)
    start_cell(page, 2)
    open_sidebar(page)
    run_row(page, "fit-1").click()
    detail = run_detail(page, "fit-1")
    step = detail.locator('.dnb-step-row[data-seq="0"]')
    beat = step.locator(".dnb-heartbeat")
    output = cell_output(page, 2).locator('.dnb-run-heartbeat-step[data-seq="0"]')
    try:
        for epoch in range(1, EPOCHS + 1):
            progress = f"epoch {epoch}/{EPOCHS}"
            expect(beat.locator(".dnb-heartbeat-progress")).to_have_text(progress)
            bar = beat.get_by_role("progressbar")
            expect(bar).to_have_attribute("aria-valuenow", str(epoch))
            expect(bar).to_have_attribute("aria-valuemax", str(EPOCHS))
            fill = beat.locator(".dnb-heartbeat-fill")
            width = f"{100 * epoch / EPOCHS:.1f}".removesuffix(".0")  # as the browser has it
            expect(fill).to_have_attribute("style", f"width: {width}%;")
            expect(beat.locator(".dnb-heartbeat-details")).to_have_text(
                f'{{"epoch":{epoch},"of":{EPOCHS},"loss":{LOSS_SHOWN[epoch]}}}')
            expect(beat.locator(".dnb-heartbeat-age")).to_contain_text(" ago")
            expect(beat).to_have_attribute(
                "title", re.compile(rf"^latest of {epoch} heartbeats?, at \d\d:\d\d:\d\d: "))
            expect(step.locator(".dnb-step-status")).to_have_text("running")
            # The cell's output (the run as the journal has it) shows the same.
            expect(output).to_contain_text("#0 fit")
            expect(output.locator(".dnb-heartbeat-progress")).to_have_text(progress)
            page.screenshot(path=artifacts / f"epoch-{epoch}.png")
            (gates / f"go-{epoch}").touch()
    finally:
        for epoch in range(1, EPOCHS + 1):
            (gates / f"go-{epoch}").touch()

    expect(detail.locator(".dnb-run-status").first).to_have_text("completed")
    expect(step.locator(".dnb-step-status")).to_have_text("completed")
    expect(beat).to_have_count(0)  # a finished step shows its result instead
    expect(step.locator(".dnb-step-result")).to_have_text('{"loss":0.333}')
    expect(cell_output(page, 2).locator(".dnb-run-heartbeats")).to_have_count(0)
    page.screenshot(path=artifacts / "completed.png")
