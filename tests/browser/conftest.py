"""Fixtures of the browser tests: ``lab_server``, ``page``, ``artifacts`` (see __init__.py)."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.browser.lab import CHROMIUM, CHROMIUM_ARGS, LabServer, start_lab, stop_lab

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT_MS = 60_000

# expect(locator).to_... waits 5 s by default; a loaded 2-core machine needs more.
expect.set_options(timeout=DEFAULT_TIMEOUT_MS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives a real JupyterLab in Chromium (tests/browser)")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
               for when in ("setup", "call"))


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """``test-artifacts/<test name>/`` at the repo root, emptied for this test."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    path = REPO / "test-artifacts" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def lab_server(tmp_path: Path, request: pytest.FixtureRequest,
               artifacts: Path) -> Iterator[LabServer]:
    """A real ``jupyter lab`` of its own for this test, with its own journal home.

    Everything lives under ``tmp_path`` (root dir with the notebooks, journal home, private
    Jupyter dirs, ``lab.log``) and is left there after the test; on failure the server log
    is also copied into the artifacts directory.
    """
    server = start_lab(tmp_path / "lab", root_dir=tmp_path / "root",
                       journal_home=tmp_path / "home")
    try:
        yield server
    finally:
        stop_lab(server)
        if _failed(request):
            with contextlib.suppress(OSError):
                shutil.copy(server.log_path, artifacts / "lab.log")


@pytest.fixture
def page(request: pytest.FixtureRequest, artifacts: Path) -> Iterator[Page]:
    """A Chromium page (Playwright sync API), 1400x900, 60 s default timeout.

    On failure: ``failure.png`` and the browser console in ``console.log`` (artifacts).
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium) "
                    "or set DURABLE_NB_CHROMIUM to a Chromium binary", pytrace=False)
    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(DEFAULT_TIMEOUT_MS)
            pg = context.new_page()
            pg.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
            pg.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
            yield pg
            if _failed(request):
                with contextlib.suppress(Exception):
                    pg.screenshot(path=artifacts / "failure.png", timeout=15_000)
                (artifacts / "console.log").write_text("\n".join(console) + "\n")
        finally:
            browser.close()
