"""A real Jupyter server (pytest-jupyter) with the durable_nb extension, on a fresh journal home.

pytest-jupyter's fixtures and its async-test hooks are imported here rather than declared in
the root conftest, so they (and the event loop they install) apply to this directory only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.utils import url_path_join
from pytest_jupyter.jupyter_server import *  # noqa: F403  (fixtures and hooks)
from traitlets.config import Config

from durable_nb.server.client import JournalClient

API = "durable-nb/api"


@pytest.fixture
def jp_home_dir(tmp_path: Path) -> Path:
    """HOME of the server, apart from the journal home (both would be ``tmp_path/home``)."""
    path = tmp_path / "user-home"
    path.mkdir()
    return path


@pytest.fixture
def jp_server_config(journal_home: Path) -> Config:
    """The extension on, unauthenticated access off; DURABLE_NB_HOME is set by now
    (``journal_home`` monkeypatches it and stops the home's journal server afterwards)."""
    return Config({
        "ServerApp": {
            # terminals off: pytest-jupyter adds them, and their websocket warns on auth
            "jpserver_extensions": {"durable_nb.jupyter": True,
                                    "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "DurableNbApp": {"heartbeat_interval": 0},
    })


@pytest.fixture
def journal(journal_home: Path) -> Iterator[JournalClient]:
    """A client of the test's journal, to write runs as a kernel would."""
    client = JournalClient(journal_home)
    yield client
    client.close()


@pytest.fixture
def api(jp_fetch: Any) -> Any:
    """``await api("GET", "runs", params=...)``: the response, whatever its status."""

    async def fetch(method: str, *path: str, body: Any = None, raw: str | None = None,
                    **kwargs: Any) -> Any:
        if body is not None:
            raw = json.dumps(body)
        if raw is None and method == "POST":
            raw = ""
        return await jp_fetch(API, *path, method=method, body=raw, raise_error=False,
                              allow_nonstandard_methods=True, **kwargs)

    return fetch


@pytest.fixture
def raw_fetch(http_server_client: Any, jp_base_url: str, jp_auth_header: dict[str, str]) -> Any:
    """``await raw_fetch("POST", "runs/x/cancel", headers=...)``: a request built by hand
    (path not re-escaped, no token unless ``token=True``), whatever its status."""

    async def fetch(method: str, path: str, *, token: bool = False,
                    headers: dict[str, str] | None = None, body: str | None = None) -> Any:
        headers = {**(jp_auth_header if token else {}), **(headers or {})}
        if body is None and method == "POST":
            body = ""
        return await http_server_client.fetch(
            url_path_join(jp_base_url, API, path), method=method, headers=headers, body=body,
            raise_error=False, follow_redirects=False, allow_nonstandard_methods=True)

    return fetch
