"""Helpers of the sidebar tests: the "Durable runs" panel, its rows, and the journal behind it.

The panel is ``.dnb-sidebar`` (widget id ``durable-nb-runs``, a tab of the left sidebar);
a run of the list is ``.dnb-run-row[data-run-id]`` with its status badge ``.dnb-run-status``
and its progress ``.dnb-run-progress``; the detail view is ``.dnb-run-detail[data-run-id]``
with one ``.dnb-step-row[data-seq]`` per step.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect

from durable_nb.server.client import JournalClient
from tests.browser.lab import LabServer, _alive, _cmdline
from tests.jupyter.journal_runs import make_run

PANEL_ID = "durable-nb-runs"


def assert_rest_api_served(server: LabServer) -> None:
    """Fail with a clear message when the lab server does not serve the sidebar's REST API."""
    try:
        answer = server.get("/durable-nb/api/runs?limit=1")
    except OSError as exc:
        raise AssertionError(
            "GET /durable-nb/api/runs failed: the durable_nb.jupyter server extension is not "
            f"enabled in this lab server ({exc}); `pip install -e .` installs its config "
            "file into <sys.prefix>/etc/jupyter/jupyter_server_config.d") from exc
    assert isinstance(answer, dict) and "runs" in answer, answer


def open_sidebar(page: Page) -> Locator:
    """Click the panel's tab in the left sidebar (unless it is open); the visible panel."""
    panel = page.locator(".dnb-sidebar")
    if not panel.is_visible():
        page.locator(f'.jp-SideBar .lm-TabBar-tab[data-id="{PANEL_ID}"]').click()
    expect(panel).to_be_visible()
    return panel


def run_row(page: Page, run_id: str) -> Locator:
    return page.locator(f'.dnb-sidebar .dnb-run-row[data-run-id="{run_id}"]')


def run_detail(page: Page, run_id: str) -> Locator:
    return page.locator(f'.dnb-sidebar .dnb-run-detail[data-run-id="{run_id}"]')


def steps_done(row_or_detail: Locator) -> int:
    """The number a ``.dnb-run-progress`` shows ("12 steps", "12 completed")."""
    text = row_or_detail.locator(".dnb-run-progress").first.inner_text()
    match = re.match(r"\s*(\d+)", text)
    assert match, f"no step count in {text!r}"
    return int(match.group(1))


def wait_steps_at_least(page: Page, scope: str, n: int, timeout: float = 60.0) -> int:
    """Wait until the ``.dnb-run-progress`` inside the CSS selector ``scope`` shows ``n`` or
    more steps; the number it shows then."""
    selector = f"{scope} .dnb-run-progress"
    page.wait_for_function(
        "([sel, n]) => { const el = document.querySelector(sel);"
        "  return !!el && parseInt(el.textContent, 10) >= n; }",
        arg=[selector, n], timeout=timeout * 1000)
    return steps_done(page.locator(scope))


def dismiss_dialog(page: Page, title: str, button: str = "Ok") -> bool:
    """Click ``button`` of a JupyterLab dialog titled ``title`` if one is open; True if so."""
    dialog = page.locator(".jp-Dialog").filter(has_text=title)
    if not dialog.count():
        return False
    dialog.get_by_role("button", name=button).click()
    expect(dialog).to_have_count(0)
    return True


@contextlib.contextmanager
def journal(server: LabServer) -> Iterator[JournalClient]:
    """A client of the lab server's journal (the server its kernels and extension use)."""
    client = JournalClient(server.journal_home)
    try:
        yield client
    finally:
        client.close()


def run_pid(server: LabServer, run_id: str) -> int:
    """The process executing ``run_id``, as the journal records it (the kernel's pid)."""
    with journal(server) as client:
        rows = client.query(
            "SELECT json_extract(meta, '$.pid')::BIGINT AS pid FROM events "
            "WHERE run_id = ? AND kind IN ('run_started', 'run_status') "
            "AND json_extract(meta, '$.pid') IS NOT NULL ORDER BY id DESC LIMIT 1",
            [run_id]).to_pylist()
    assert rows, f"the journal records no process for run {run_id}"
    return int(rows[0]["pid"])


def kill_run_process(server: LabServer, run_id: str) -> int:
    """SIGKILL the kernel executing ``run_id`` (checked to be a kernel); its pid."""
    pid = run_pid(server, run_id)
    assert _alive(pid) and "ipykernel" in _cmdline(pid), (
        f"pid {pid} of run {run_id} is not a live kernel: {_cmdline(pid)!r}")
    os.kill(pid, signal.SIGKILL)
    return pid


class _Batch:
    """Collects what ``make_run`` appends, so many runs go to the journal in one append."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def append(self, events: list[dict[str, Any]]) -> None:
        self.events.extend(events)


STATUS_CYCLE = ("completed", "completed", "failed", "completed", "cancelled", "interrupted")


def seed_runs(home: Path, n: int, *, batch: int = 1000, started: float = 1.7e9) -> None:
    """Write ``n`` finished runs ``sweep-1`` … ``sweep-N`` (one a minute, statuses cycling
    through STATUS_CYCLE, two steps each) into the journal of ``home``."""
    client = JournalClient(home)
    try:
        for first in range(0, n, batch):
            events = _Batch()
            for i in range(first, min(first + batch, n)):
                make_run(events, f"sweep-{i + 1}", status=STATUS_CYCLE[i % len(STATUS_CYCLE)],
                         started=started + 60 * i, pid=1, notebook="sweeps.ipynb",
                         fail_last=STATUS_CYCLE[i % len(STATUS_CYCLE)] == "failed")
            client.append(events.events)
    finally:
        client.close()
