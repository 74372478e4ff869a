"""The dask executor against a real cluster: the journal home's own workers service (a
LocalCluster in a detached process, TLS on loopback) and a real journal server."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import durable_nb
from durable_nb import workers
from durable_nb.cli import main as cli
from durable_nb.engine.history import load_step_events
from durable_nb.engine.identity import open_run
from durable_nb.errors import ActivityFailed, ActivityTimeout
from durable_nb.server.client import reset_default_client
from durable_nb.server.discovery import pid_alive
from tests.conftest import stop_server

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One journal home whose Dask workers (2) serve every test of this module."""
    home = tmp_path_factory.mktemp("dask") / "home"
    home.mkdir(mode=0o700)
    workers.start(home, n_workers=2)
    yield home
    stop_server(home)


@pytest.fixture
def home(cluster_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DURABLE_NB_HOME", str(cluster_home))
    monkeypatch.delenv(workers.SCHEDULER_ENV, raising=False)
    reset_default_client()
    yield cluster_home
    reset_default_client()


def events(ctx: object, kind: str) -> list[dict[str, object]]:
    return [r for r in load_step_events(ctx.client, ctx.run_id)  # type: ignore[attr-defined]
            if r["kind"] == kind]


def test_a_dask_activity_runs_on_a_worker_that_journals_its_completion(home: Path):
    @durable_nb.activity(executor="dask")
    def where(x: int) -> tuple[int, int]:
        return x * 2, os.getpid()

    ctx = open_run("dask-where")
    results = ctx.execute(lambda: [where(i) for i in range(4)])
    assert [r[0] for r in results] == [0, 2, 4, 6]
    pids = {r[1] for r in results}
    assert os.getpid() not in pids  # the kernel's process ran none of them
    info = workers.read_info(home)
    assert info is not None and info["scheduler"].startswith("tls://127.0.0.1:")
    started = events(ctx, "step_started")
    assert [json.loads(str(s["meta"])) for s in started] == [
        {"executor": "dask", "task": f"durable_nb-{ctx.run_id}-{i}-1",
         "scheduler": info["scheduler"]} for i in range(4)]
    # One step_completed a step: the worker's, none added by the kernel.
    assert [c["seq"] for c in events(ctx, "step_completed")] == [0, 1, 2, 3]
    again = open_run("dask-where")
    assert again.execute(lambda: [where(i) for i in range(4)]) == results
    assert again.replayed == 4


def test_a_dask_failure_keeps_its_type_and_is_retried(home: Path, tmp_path: Path):
    tries = tmp_path / "tries"

    @durable_nb.activity(executor="dask", retries=1, backoff=0)
    def flaky() -> str:
        with tries.open("a") as f:
            f.write("x")
        if durable_nb.current_step().attempt == 1:
            raise ConnectionError("the database hung up")
        return "ok"

    ctx = open_run("dask-flaky")
    assert ctx.execute(flaky) == "ok"
    assert tries.read_text() == "xx"
    failed = events(ctx, "step_failed")
    assert failed[0]["error"] == "ConnectionError: the database hung up"


def test_a_worker_failure_shows_the_lines_of_the_code_that_raised(home: Path):
    import traceback

    @durable_nb.activity(executor="dask")
    def parse(row: str) -> int:
        return int(row)  # the line the traceback must show

    ctx = open_run("dask-traceback")
    with pytest.raises(ActivityFailed) as raised:
        ctx.execute(lambda: parse("x"))
    assert isinstance(raised.value.cause, ValueError)
    text = "".join(traceback.format_exception(raised.value.cause))
    assert f'File "{__file__}"' in text and "return int(row)  # the line" in text
    assert "<dynamic-code>" not in text


def test_a_dask_attempt_past_its_timeout_fails_on_the_worker(home: Path):
    @durable_nb.activity(executor="dask", timeout=0.5)
    def hangs() -> None:
        import time

        time.sleep(5)

    ctx = open_run("dask-hangs")
    with pytest.raises(ActivityFailed) as raised:
        ctx.execute(hangs)
    assert isinstance(raised.value.cause, ActivityTimeout)
    assert events(ctx, "step_completed") == []


def test_heartbeats_from_a_worker_reach_the_next_attempt(home: Path):
    @durable_nb.activity(executor="dask", retries=1, backoff=0)
    def train(epochs: int) -> list[int]:
        start = (durable_nb.current_step().heartbeat or {"epoch": -1})["epoch"] + 1
        done = []
        for epoch in range(start, epochs):
            if epoch == 2 and durable_nb.current_step().attempt == 1:
                raise ConnectionError("lost the worker's GPU")
            done.append(epoch)
            durable_nb.heartbeat({"epoch": epoch})
        return done

    ctx = open_run("dask-train")
    assert ctx.execute(lambda: train(4)) == [2, 3]  # the retry went on from epoch 2
    beats = events(ctx, "step_heartbeat")
    assert [(b["attempt"], b["preview"]) for b in beats] == [
        (1, '{"epoch":0}'), (1, '{"epoch":1}'), (2, '{"epoch":2}'), (2, '{"epoch":3}')]


def test_the_cluster_is_private_to_the_home(home: Path):
    from distributed import Client

    tls = home / workers.TLS_DIR
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    for path in [*tls.iterdir(), home / workers.WORKERS_FILE]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    info = workers.read_info(home)
    assert info is not None
    host_port = info["scheduler"].removeprefix("tls://")
    # Without the home's certificate: neither plain TCP nor TLS gets a client in.
    with pytest.raises((OSError, TimeoutError)):
        Client(f"tcp://{host_port}", timeout=3, set_as_default=False)
    from distributed.security import Security

    with pytest.raises((OSError, TimeoutError)):
        Client(info["scheduler"], security=Security.temporary(), timeout=3,
               set_as_default=False)


def test_a_named_scheduler_that_does_not_answer_is_a_clear_error(
        home: Path, monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv(workers.SCHEDULER_ENV, f"tcp://127.0.0.1:{port}")
    monkeypatch.setenv(workers.CONNECT_TIMEOUT_ENV, "2")
    workers.close_clients()

    @durable_nb.activity(executor="dask")
    def anything() -> int:
        return 1

    ctx = open_run("dask-nowhere")
    with pytest.raises(workers.WorkersUnavailable,
                       match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}.*"
                             "Check DURABLE_NB_DASK_SCHEDULER"):
        ctx.execute(anything)
    assert events(ctx, "step_started") == []  # not the activity's failure: nothing recorded
    workers.close_clients()


def test_workers_commands_start_report_and_stop(home: Path, capsys: pytest.CaptureFixture[str]):
    info = workers.read_info(home)
    assert info is not None
    assert cli(["workers", "status"]) == 0
    assert f"scheduler {info['scheduler']}, 2 workers (pid {info['pid']})" in (
        capsys.readouterr().out)
    assert cli(["workers", "start"]) == 0  # already running: the same service
    assert f"(pid {info['pid']})" in capsys.readouterr().out
    workers.close_clients()
    assert cli(["workers", "stop"]) == 0
    assert f"stopped the Dask workers (pid {info['pid']})" in capsys.readouterr().out
    assert not pid_alive(int(info["pid"])) and workers.read_info(home) is None
    assert cli(["workers", "status"]) == 0
    assert "no Dask workers running" in capsys.readouterr().out
    # The next dask step starts them again.
    @durable_nb.activity(executor="dask")
    def one() -> int:
        return 1

    assert open_run("dask-again").execute(one) == 1
    assert workers.read_info(home) is not None
