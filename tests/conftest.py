"""Fixtures shared by every layer's tests: an isolated journal home with its own server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest


def stop_server(home: Path) -> None:
    """Stop the journal server of ``home`` if one runs (SIGTERM, then SIGKILL)."""
    from durable_nb.server.discovery import pid_alive, wait_until

    try:
        pid = int(json.loads((home / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), 10, interval=0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def journal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh DURABLE_NB_HOME for this test; its server is stopped afterwards."""
    from durable_nb.server.client import reset_default_client

    home = tmp_path / "home"
    monkeypatch.setenv("DURABLE_NB_HOME", str(home))
    reset_default_client()
    yield home
    reset_default_client()
    stop_server(home)
