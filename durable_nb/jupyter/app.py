"""The ``durable_nb`` Jupyter server extension: one journal client behind the sidebar API.

On start the extension connects to the journal server of its home (starting it if needed);
the connection registers the Jupyter server's pid, which keeps the journal server alive while
Lab runs. A heartbeat reconnects (and so re-registers) if the journal server was restarted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import PeriodicCallback
from traitlets import Float, Unicode, default

from durable_nb.errors import DurableError
from durable_nb.journal.home import journal_home
from durable_nb.jupyter.handlers import handlers as api_handlers
from durable_nb.server.client import JournalClient

T = TypeVar("T")


class DurableNbApp(ExtensionApp):
    """Serves ``/durable-nb/api/`` (docs/rest-api.md) as a client of the journal server."""

    name = "durable_nb"
    handlers = api_handlers

    journal_home = Unicode(
        config=True,
        help="The journal home the sidebar reads (default: DURABLE_NB_HOME, else "
             "<jupyter data dir>/durable_nb, as for kernels).",
    )

    heartbeat_interval = Float(
        30.0, config=True,
        help="Seconds between pings of the journal server; a ping restarts a journal "
             "server that died and registers this Jupyter server with it again. 0 disables.",
    )

    @default("journal_home")
    def _journal_home_default(self) -> str:
        return str(journal_home(create=False))

    def initialize_settings(self) -> None:
        # The client blocks on zmq. It is thread-safe, but every call goes through this one
        # thread anyway: a slow journal then queues here instead of occupying the event
        # loop's default executor, which Jupyter's own services use.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="durable_nb")
        self._client: JournalClient | None = None
        self._heartbeat: PeriodicCallback | None = None
        self._journal_ok: bool | None = None
        self.log.info("durable_nb | sidebar API on journal home %s", self.journal_home)

    def run_blocking(self, fn: Callable[[JournalClient], T]) -> asyncio.Future[T]:
        """Run ``fn(client)`` on the journal thread; await the result on the loop."""
        return asyncio.get_running_loop().run_in_executor(self._executor, self._with_client, fn)

    def _with_client(self, fn: Callable[[JournalClient], T]) -> T:
        # Made on first use, so a home that cannot be created answers 503 with the reason
        # (and works once fixed) instead of failing the whole extension at load.
        if self._client is None or self._client.closed:
            self._client = JournalClient(self.journal_home)
        return fn(self._client)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        await self.ping_journal()
        if self.heartbeat_interval > 0:
            self._heartbeat = PeriodicCallback(self.ping_journal,
                                               self.heartbeat_interval * 1000)
            self._heartbeat.start()

    async def ping_journal(self) -> None:
        """Connect to (or restart) the journal server; log only when reachability changes."""
        try:
            pid = await self.run_blocking(lambda c: c.ping()["pid"])
        except DurableError as exc:
            if self._journal_ok is not False:
                self.log.warning("durable_nb | journal server unavailable: %s", exc)
            self._journal_ok = False
            return
        if not self._journal_ok:
            self.log.info("durable_nb | journal server pid %s serves %s", pid,
                          self.journal_home)
        self._journal_ok = True

    async def stop_extension(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        client, self._client = self._client, None
        if client is not None:
            try:  # after any call in flight; a hung journal must not hold up shutdown
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
                    self._executor, client.close), timeout=5.0)
            except TimeoutError:
                self.log.warning("durable_nb | the journal client did not close within 5 s")
        self._executor.shutdown(wait=False)
