"""Fixtures for tests that run the real journal server process.

``harness`` hands out journal homes under ``tmp_path`` and clients of them, and in teardown
(even when the test failed) closes the clients and stops every server process it can find
for those homes: the server named in ``server.json`` is asked to ``shutdown`` over the wire
(with the home's keys, like any client), then any ``python -m durable_nb.server --home H``
process left (found by its exact command line, so only this test's servers) gets SIGTERM,
then SIGKILL if it lingers.
Servers also get a short idle timeout so that nothing outlives a crashed test run for long.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from durable_nb.journal.home import SEGMENT_FILE, temp_socket_dir
from durable_nb.server import auth, protocol
from durable_nb.server.client import JournalClient
from durable_nb.server.discovery import pid_alive, read_server_info, wait_until

IDLE_SECONDS = "20"  # servers of a crashed test run exit on their own


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def server_processes(home: Path) -> list[int]:
    """Live journal server processes serving ``home`` (matched by exact argv)."""
    tail = ["-m", "durable_nb.server", "--home", str(home)]
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if [a.decode(errors="replace") for a in argv[1:]] == tail and pid_alive(int(entry)):
            pids.append(int(entry))
    return pids


def sigkill(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL ``pid`` and wait (bounded) until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(pid), timeout), f"pid {pid} survived SIGKILL"
    _reap(pid)


def _ask_to_shut_down(home: Path, endpoint: str) -> None:
    """Send ``shutdown`` over the wire: the server stops at once (SIGTERM waits for a poll)."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if auth.connect(sock, home, endpoint, timeout=2.0):
            sock.send(protocol.dumps({"id": 1, "op": "shutdown"}))
            sock.poll(2000)
            sock.close()
    finally:
        ctx.term()


def stop_servers(home: Path) -> None:
    """Stop every server of ``home``: ask politely, then SIGTERM, then SIGKILL."""
    info = read_server_info(home) if home.is_dir() else None
    if info and int(info["pid"]) in server_processes(home):
        with contextlib.suppress(Exception):
            _ask_to_shut_down(home, str(info["endpoint"]))
        wait_until(lambda: not pid_alive(int(info["pid"])), 10.0)
    pids = server_processes(home)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        if not wait_until(lambda p=pid: not pid_alive(p), 10.0):
            sigkill(pid)
    if info:
        _reap(int(info["pid"]))
    for pid in pids:
        _reap(pid)
    shutil.rmtree(temp_socket_dir(home), ignore_errors=True)  # the short-path fallback


class Harness:
    """Journal homes, clients and helper processes of one test, all cleaned up after it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.homes: list[Path] = []
        self.clients: list[JournalClient] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.default_home = self.home("home")

    def home(self, name: str) -> Path:
        """A journal home path (not created) whose servers are stopped at teardown."""
        path = self.tmp_path / name
        self.homes.append(path)
        return path

    def client(self, home: Path | None = None) -> JournalClient:
        c = JournalClient(home or self.default_home)
        self.clients.append(c)
        return c

    def server_pid(self, home: Path | None = None) -> int:
        info = read_server_info(home or self.default_home)
        assert info is not None, "no server.json"
        return int(info["pid"])

    @staticmethod
    def leftover_segment(home: Path, number: int = 1) -> Path:
        """Where a dead server's write-ahead segment number ``number`` lies in ``home``."""
        return home / f"{SEGMENT_FILE}.{number:08d}"

    def python(self, code: str, *args: str, **env: str) -> subprocess.Popen[str]:
        """Start ``python -c code args...`` (stdout piped); killed at teardown if still alive."""
        proc = subprocess.Popen([sys.executable, "-c", code, *args], env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    # helpers, reachable from tests through the fixture (conftest modules are not importable)
    wait_until = staticmethod(wait_until)
    sigkill = staticmethod(sigkill)

    def server_processes(self, home: Path | None = None) -> list[int]:
        return server_processes(home or self.default_home)

    @staticmethod
    def event(run_id: str = "r-1", kind: str = "step_started", **fields: Any) -> dict[str, Any]:
        """An event as the engine writes it (client-made eid, epoch-seconds ts)."""
        return {"eid": uuid.uuid4().hex, "ts": time.time(), "run_id": run_id, "kind": kind,
                **fields}

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(Exception):
                proc.communicate(timeout=10)
        for c in self.clients:
            with contextlib.suppress(Exception):
                c.close()
        for home in self.homes:
            stop_servers(home)


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("DURABLE_NB_SERVER_IDLE", IDLE_SECONDS)
    monkeypatch.delenv("DURABLE_NB_HOME", raising=False)
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.cleanup()


@pytest.fixture
def home(harness: Harness) -> Path:
    return harness.default_home


@pytest.fixture
def client(harness: Harness) -> JournalClient:
    return harness.client()
