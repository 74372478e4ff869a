"""REST handlers of the sidebar API (docs/rest-api.md), each a thin client of the journal.

Authentication and XSRF are Jupyter's: every method is ``@tornado.web.authenticated`` and
POST/DELETE pass through ``APIHandler``'s XSRF check. Journal calls block, so they run on
the extension's journal thread, never on the server's event loop.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from http.client import responses
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from durable_nb import errors
from durable_nb.journal.schema import RUN_STATUSES, check_signal_name
from durable_nb.jupyter import queries
from durable_nb.server.client import JournalClient

if TYPE_CHECKING:
    from durable_nb.jupyter.app import DurableNbApp

T = TypeVar("T")

MAX_PAGE = 500
MAX_INT = 2**63 - 1  # the journal's integers (ids, offsets) are 64-bit
RUN_ID = r"(?P<run_id>[^/]+)"

# durable_nb errors -> HTTP status; the first matching type wins.
ERROR_STATUS: tuple[tuple[type[errors.DurableError], int], ...] = (
    (errors.RunNotFound, 404),
    (errors.RunBusy, 409),
    (errors.RunFinished, 409),
    (errors.QueryError, 400),  # also what the server answers to a malformed request
    (errors.JournalUnavailable, 503),
)


class JournalHandler(APIHandler):
    """Base of the sidebar handlers: journal calls off the loop, errors as ``{"message"}``."""

    @property
    def extension(self) -> DurableNbApp:
        app: DurableNbApp = self.settings["durable_nb"]
        return app

    async def journal(self, fn: Callable[[JournalClient], T]) -> T:
        """Run ``fn(client)`` on the journal thread; durable_nb errors become HTTP errors."""
        try:
            return await self.extension.run_blocking(fn)
        except errors.DurableError as exc:
            status = next((code for kind, code in ERROR_STATUS if isinstance(exc, kind)), 500)
            raise web.HTTPError(status, "%s", exc) from exc

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(payload, allow_nan=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error is ``{"message": ...}``, including Jupyter's own 403s."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif isinstance(exc, web.HTTPError) or exc is None:
            message = responses.get(status_code, "Unknown HTTP error")
        else:
            message = f"internal error in durable_nb: {type(exc).__name__}: {exc}"
        self.finish(json.dumps({"message": message}))

    # -- input ---------------------------------------------------------------------------
    def int_argument(self, name: str, default: int, minimum: int,
                     maximum: int = MAX_INT) -> int:
        """A query argument as an integer in ``[minimum, maximum]``, else a 400 naming it."""
        raw = self.get_query_argument(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _bad_request(f"'{name}' must be an integer, got {_shown(raw)!r}") from None
        if not minimum <= value <= maximum:
            bounds = (f">= {minimum}" if maximum == MAX_INT and value < minimum
                      else f"between {minimum} and {maximum}")
            raise _bad_request(f"'{name}' must be {bounds}, got {_shown(str(value))}")
        return value

    def json_body(self, required: bool = True) -> dict[str, Any]:
        """The request body as a JSON object; an empty body is ``{}`` unless required."""
        raw = self.request.body
        if not raw.strip():
            if required:
                raise _bad_request("the request body must be a JSON object")
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _bad_request(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _bad_request(
                f"the request body must be a JSON object, got {type(body).__name__}")
        return body


class RunsHandler(JournalHandler):
    @web.authenticated
    async def get(self) -> None:
        statuses = tuple(s.strip() for s in self.get_query_argument("status", "").split(",")
                         if s.strip())
        unknown = sorted(set(statuses) - RUN_STATUSES)
        if unknown:
            raise _bad_request(f"'status' must be among {', '.join(sorted(RUN_STATUSES))}; "
                               f"got {', '.join(unknown)}")
        where = queries.RunFilter(
            statuses=statuses,
            workflow=self.get_query_argument("workflow", "") or None,
            notebook=self.get_query_argument("notebook", "") or None,
            text=self.get_query_argument("q", "").strip() or None,
            limit=self.int_argument("limit", 50, 1, MAX_PAGE),
            offset=self.int_argument("offset", 0, 0),
        )
        self.write_json(await self.journal(lambda c: queries.list_runs(c, where)))


class RunHandler(JournalHandler):
    @web.authenticated
    async def get(self, run_id: str) -> None:
        self.write_json(await self.journal(lambda c: queries.run_detail(c, run_id)))

    @web.authenticated
    async def delete(self, run_id: str) -> None:
        await self.journal(lambda c: c.delete_run(run_id, timeout=queries.TIMEOUT))
        self.set_status(204)
        self.finish()


class RunEventsHandler(JournalHandler):
    @web.authenticated
    async def get(self, run_id: str) -> None:
        since = self.int_argument("since", 0, 0)
        limit = self.int_argument("limit", MAX_PAGE, 1, MAX_PAGE)
        self.write_json(await self.journal(lambda c: queries.run_events(c, run_id, since,
                                                                         limit)))


class CancelRunHandler(JournalHandler):
    @web.authenticated
    async def post(self, run_id: str) -> None:
        reason = self.json_body(required=False).get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _bad_request(f"'reason' must be a string, got {_json_type(reason)}")
        self.write_json(await self.journal(lambda c: _answer(c.cancel_run(
            run_id, reason, timeout=queries.TIMEOUT),
            "run_id", "status", "previous_status")))


class SignalRunHandler(JournalHandler):
    @web.authenticated
    async def post(self, run_id: str) -> None:
        body = self.json_body()
        try:
            name = check_signal_name(body.get("name"))
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        value = body.get("value")
        self.write_json(await self.journal(lambda c: _answer(c.signal(
            run_id, name, value, timeout=queries.TIMEOUT),
            "run_id", "name")))


class ForkRunHandler(JournalHandler):
    @web.authenticated
    async def post(self, run_id: str) -> None:
        at = self.json_body().get("at")
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise _bad_request(f"'at' must be a step number (an integer >= 0), got "
                               f"{json.dumps(at)}")
        # A fresh eid per request: the server makes a resent request one fork.
        eid = uuid.uuid4().hex
        reply = await self.journal(lambda c: _answer(c.fork_run(
            run_id, at, eid, timeout=queries.TIMEOUT),
            "run_id", "parent_run_id", "at", "steps_copied"))
        self.set_header("Location", url_path_join(
            self.base_url, "durable-nb/api/runs", quote(reply["run_id"], safe="")))
        self.write_json(reply, status=201)


def _answer(reply: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {field: reply[field] for field in fields}


def _bad_request(message: str) -> web.HTTPError:
    return web.HTTPError(400, "%s", message)


def _shown(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."


def _json_type(value: Any) -> str:
    return "nothing" if value is None else json.dumps(value)[:100]


handlers: list[tuple[str, type[JournalHandler]]] = [
    (r"durable-nb/api/runs", RunsHandler),
    (rf"durable-nb/api/runs/{RUN_ID}", RunHandler),
    (rf"durable-nb/api/runs/{RUN_ID}/events", RunEventsHandler),
    (rf"durable-nb/api/runs/{RUN_ID}/cancel", CancelRunHandler),
    (rf"durable-nb/api/runs/{RUN_ID}/signal", SignalRunHandler),
    (rf"durable-nb/api/runs/{RUN_ID}/fork", ForkRunHandler),
]
