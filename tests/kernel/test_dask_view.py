"""The live run view of a step on Dask: its worker records the heartbeats straight into the
journal, so the kernel's own events never carry them and the view reads them there (a real
LocalCluster of the home's workers service, a real journal server)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durable_nb
from durable_nb import workers
from durable_nb.engine.identity import open_run
from durable_nb.engine.progress import RunProgress
from durable_nb.kernel.view import RunView
from durable_nb.server.client import reset_default_client
from tests.conftest import stop_server
from tests.kernel.conftest import view_shows

pytest.importorskip("distributed")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("DURABLE_NB_HOME", str(home))
    monkeypatch.delenv(workers.SCHEDULER_ENV, raising=False)
    reset_default_client()
    workers.start(home, n_workers=1)
    yield home
    reset_default_client()
    stop_server(home)


def test_the_view_shows_heartbeats_a_dask_worker_records_in_the_journal(home: Path,
                                                                         tmp_path: Path):
    gates = tmp_path / "gates"
    gates.mkdir()

    @durable_nb.activity(executor="dask")
    def fit(gates: str, epochs: int) -> str:
        import pathlib

        for epoch in range(1, epochs + 1):
            durable_nb.heartbeat({"epoch": epoch, "of": epochs})
            gate = pathlib.Path(gates) / f"go-{epoch}"
            deadline = time.monotonic() + 120
            while not gate.exists():  # the test opens each gate once the view showed it
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {gate}")
                time.sleep(0.05)
        return "fitted"

    ctx = open_run("dask-beats")
    kinds: list[str] = []
    ctx.listeners.append(lambda _, ev: kinds.append(ev["kind"]))


    async def main() -> RunView:
        view = RunView(RunProgress(ctx.run_id, ctx.workflow), ctx=ctx,
                       loop=asyncio.get_running_loop())
        outcome: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: outcome.update(value=ctx.execute(lambda: fit(str(gates), 3))),
            daemon=True)
        worker.start()
        try:
            for epoch in (1, 2, 3):
                await view_shows(view, f"epoch {epoch}/3", timeout=120)
                (gates / f"go-{epoch}").touch()
        finally:
            for epoch in (1, 2, 3):
                (gates / f"go-{epoch}").touch()
            await asyncio.to_thread(worker.join, 120)
        assert outcome["value"] == "fitted"
        await asyncio.sleep(0.3)
        return view

    view = asyncio.run(main())
    assert "step_heartbeat" not in kinds  # the kernel's events never saw one
    (step,) = view.progress.snapshot()[1]
    assert (step.status, step.heartbeats, step.heartbeat) == ("completed", 3,
                                                             '{"epoch":3,"of":3}')
    assert "fitted" in view.table.value
