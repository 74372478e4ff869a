"""A workflow cell's output in JupyterLab shows the run's current state from the journal:
true after its kernel died, after the run was resumed elsewhere and after a reload; live
while the run runs, with a Cancel that cancels it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from durable_nb.testing.kernel import KernelSession
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
from tests.browser.sidebar import assert_rest_api_served, dismiss_dialog, journal, kill_run_process

pytestmark = pytest.mark.browser

STEPS = 8
LOAD = "%load_ext durable_nb"
ACTIVITY = ("%%activity\nimport time\ndef train(i, pause):\n    time.sleep(pause)\n"
            "    return {'i': i, 'loss': (i - 4) ** 2}")
BROKEN_WIDGET = ("model not found", "Error displaying widget", "Failed to load model")


def run_output(page: Page, index: int) -> Locator:
    """The run state our renderer draws in cell ``index``'s output."""
    return cell_output(page, index).locator(".dnb-run-output .dnb-run-state")


def steps_shown(state: Locator) -> int:
    """The completed steps a run output shows ("3 / 4 steps completed")."""
    return int(state.locator(".dnb-run-progress").inner_text().split()[0])


def wait_progress_at_least(page: Page, index: int, n: int, timeout: float = 60.0) -> int:
    """Wait until the run output of cell ``index`` shows ``n`` or more completed steps."""
    state = run_output(page, index)
    expect(state.locator(".dnb-run-progress")).to_be_visible()
    deadline = time.monotonic() + timeout
    while (shown := steps_shown(state)) < n:
        assert time.monotonic() < deadline, f"the output still shows {shown} steps, not {n}"
        page.wait_for_timeout(100)  # polls the condition; the output re-reads every second
    return shown


def assert_no_broken_widget(output: Locator) -> None:
    text = output.inner_text()
    for words in BROKEN_WIDGET:
        assert words not in text, f"{words!r} in the output: {text!r}"
    assert output.locator(".jupyter-widgets-error-widget").count() == 0


def journal_status(server: LabServer, run_id: str) -> str:
    with journal(server) as client:
        rows = client.query("SELECT status FROM runs WHERE run_id = ?", [run_id]).to_pylist()
    return str(rows[0]["status"])


def test_an_output_shows_the_current_state_after_a_kernel_kill_a_resume_elsewhere_and_a_reload(
        lab_server: LabServer, page: Page, artifacts: Path) -> None:
    assert_rest_api_served(lab_server)
    workflow = f"%%workflow slow\nresults = [train(i, 1.0) for i in range({STEPS})]"
    write_notebook(lab_server.root_dir / "slow.ipynb", [LOAD, ACTIVITY, workflow])
    open_notebook(page, lab_server, "slow.ipynb")
    for index in range(2):
        assert run_cell(page, index)
    start_cell(page, 2)
    state = run_output(page, 2)
    expect(state).to_have_attribute("data-status", "running")
    expect(state.get_by_role("button", name="Cancel")).to_be_enabled()
    done = wait_progress_at_least(page, 2, 2)
    page.screenshot(path=artifacts / "1-running.png")

    kill_run_process(lab_server, "slow-1")
    expect(state).to_have_attribute("data-status", "interrupted", timeout=30_000)
    expect(state.get_by_role("button", name="Cancel")).to_have_count(0)
    assert journal_status(lab_server, "slow-1") == "interrupted"
    wait_kernel_idle(page)  # the server restarted the dead kernel
    dismiss_dialog(page, "Kernel Restarting")
    assert_no_broken_widget(cell_output(page, 2))
    page.screenshot(path=artifacts / "2-interrupted.png")

    # Elsewhere: a kernel of its own (not Lab's), on the same journal, resumes the run.
    env = {"DURABLE_NB_HOME": str(lab_server.journal_home),
           "IPYTHONDIR": str(lab_server.base_dir / "ipython")}
    with KernelSession(env=env, cwd=lab_server.root_dir).start() as kernel:
        kernel.run(LOAD).raise_for_error()
        kernel.run(ACTIVITY).raise_for_error()
        resumed = kernel.run("%workflow resume slow-1", timeout=120).raise_for_error()
    assert "slow-1 completed" in resumed.text, resumed.text

    expect(state).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(state.locator(".dnb-run-progress")).to_have_text(f"{STEPS} / {STEPS} steps completed")
    # The resumed execution took the steps done before the kill from the journal.
    expect(state.locator(".dnb-run-replayed")).to_have_text(
        re.compile(r"^\d+ replayed — saved \d"))
    assert int(state.locator(".dnb-run-replayed").inner_text().split()[0]) >= done
    expect(state.locator(".dnb-timeline rect")).to_have_count(STEPS)
    expect(state.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(state.locator(".dnb-run-status")).to_have_text("completed")
    assert "running" not in state.inner_text()
    assert_no_broken_widget(cell_output(page, 2))
    page.screenshot(path=artifacts / "3-completed-elsewhere.png")

    # Saved and reopened: the saved output is the kernel's last bundle (a widget of a dead
    # kernel, "running"), yet what shows is the run as the journal has it now.
    execute_command(page, "docmanager:save")
    open_notebook(page, lab_server, "slow.ipynb")
    state = run_output(page, 2)
    expect(state).to_have_attribute("data-status", "completed")
    expect(state.locator(".dnb-run-progress")).to_have_text(f"{STEPS} / {STEPS} steps completed")
    expect(state.get_by_role("button", name="Cancel")).to_have_count(0)
    assert_no_broken_widget(cell_output(page, 2))
    page.screenshot(path=artifacts / "4-after-reload.png")


def test_a_running_output_updates_live_and_its_cancel_cancels_the_run(
        lab_server: LabServer, page: Page, artifacts: Path) -> None:
    workflow = "%%workflow long\nresults = [train(i, 0.3) for i in range(200)]"
    write_notebook(lab_server.root_dir / "long.ipynb", [LOAD, ACTIVITY, workflow])
    open_notebook(page, lab_server, "long.ipynb")
    for index in range(2):
        assert run_cell(page, index)
    start_cell(page, 2)
    state = run_output(page, 2)
    expect(state).to_have_attribute("data-status", "running")
    first = wait_progress_at_least(page, 2, 1)
    later = wait_progress_at_least(page, 2, first + 3)  # it follows the run, no reload
    assert first < later < 200
    expect(state.locator(".dnb-run-duration")).not_to_have_text("")
    page.screenshot(path=artifacts / "1-running.png")

    state.get_by_role("button", name="Cancel").click()
    expect(state).to_have_attribute("data-status", "cancelled", timeout=30_000)
    expect(state.get_by_role("button", name="Cancel")).to_have_count(0)
    output = cell_output(page, 2)
    expect(output).to_contain_text("RunCancelled")  # the kernel stopped at its next step
    expect(output).to_contain_text("long-1 cancelled")
    wait_kernel_idle(page)
    assert journal_status(lab_server, "long-1") == "cancelled"
    assert steps_shown(state) < 200
    page.screenshot(path=artifacts / "2-cancelled.png")
