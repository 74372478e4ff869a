"""The sidebar API is authenticated like every Jupyter endpoint, XSRF included."""

from __future__ import annotations

import json
from typing import Any

import pytest

from durable_nb.jupyter.handlers import handlers
from tests.jupyter.journal_runs import make_run

ENDPOINTS = [
    ("GET", "runs"),
    ("GET", "runs/sweep-1"),
    ("GET", "runs/sweep-1/events"),
    ("POST", "runs/sweep-1/cancel"),
    ("POST", "runs/sweep-1/signal"),
    ("POST", "runs/sweep-1/fork"),
    ("DELETE", "runs/sweep-1"),
]


def test_every_method_of_every_handler_is_authenticated(jp_serverapp):
    unauthenticated = [line for pattern, handler in handlers
                       for line in jp_serverapp.web_app._check_handler_auth(pattern, handler)]
    assert unauthenticated == []


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_a_request_without_token_or_cookie_is_403(raw_fetch, journal, method, path):
    make_run(journal, "sweep-1", status="completed")
    r = await raw_fetch(method, path, body='{"name": "go", "at": 0}' if method == "POST"
                        else None)
    assert r.code == 403
    assert "message" in json.loads(r.body)
    assert json.loads((await raw_fetch("GET", "runs/sweep-1", token=True)).body)["run"][
        "status"] == "completed"  # nothing happened


async def login_cookie(raw_fetch: Any) -> str:
    """The login cookie Jupyter sets on a token-authenticated request (what a browser has)."""
    r = await raw_fetch("GET", "runs", token=True)
    cookies = [c.split(";")[0] for c in r.headers.get_list("Set-Cookie")]
    login = [c for c in cookies if c.startswith("username-")]
    assert login, f"no login cookie in {cookies}"
    return login[0]


@pytest.mark.parametrize(("method", "path", "payload"), [
    ("POST", "runs/sweep-1/cancel", ""),
    ("POST", "runs/sweep-1/signal", '{"name": "go"}'),
    ("POST", "runs/sweep-1/fork", '{"at": 0}'),
    ("DELETE", "runs/sweep-1", None),
])
async def test_cookie_authenticated_writes_need_the_xsrf_header_and_cookie(
        raw_fetch, journal, method, path, payload):
    make_run(journal, "sweep-1", status="failed", pid=1)
    cookie = await login_cookie(raw_fetch)
    r = await raw_fetch("GET", "runs", headers={"Cookie": cookie})
    assert r.code == 200  # the cookie alone is enough to read

    r = await raw_fetch(method, path, headers={"Cookie": cookie}, body=payload)
    assert r.code == 403 and "_xsrf" in json.loads(r.body)["message"]
    r = await raw_fetch(method, path, body=payload,
                        headers={"Cookie": f"{cookie}; _xsrf=abc", "X-XSRFToken": "other"})
    assert r.code == 403 and "XSRF" in json.loads(r.body)["message"]
    assert len(json.loads((await raw_fetch("GET", "runs", token=True)).body)["runs"]) == 1

    r = await raw_fetch(method, path, body=payload,
                        headers={"Cookie": f"{cookie}; _xsrf=abc", "X-XSRFToken": "abc"})
    assert r.code in (200, 201, 204)
