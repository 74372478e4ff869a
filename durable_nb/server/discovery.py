"""Finding the journal server of a home, and starting one when nobody answers.

``server.json`` in the journal home says where the server listens. A client that finds no
live server there (a pid whose command line is a journal server's) takes ``spawn.lock``,
looks again (another client may have just started one), and starts
``python -m durable_nb.server`` in its own session so it outlives the kernel. A wait longer
than a second says what it waits for.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import zmq

from durable_nb.errors import JournalCorrupted, JournalUnavailable
from durable_nb.journal.home import SERVER_FILE

T = TypeVar("T")

ERROR_FILE = "server.error"
LOG_FILE = "server.log"
NOTICE_AFTER = 1.0  # seconds a client waits silently before it says what it waits for

log = logging.getLogger("durable_nb.client")


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs; a zombie (killed, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def is_journal_server(pid: int) -> bool:
    """True when ``pid`` is a live journal server, not just any live process.

    After a reboot ``server.json`` may name a pid that now belongs to something else, and
    waiting for it to answer stalls every client; its command line tells (on Linux; without
    /proc a live pid is taken at its word). This only spares the wait: what keeps a process
    that poses as the server out is the home's keys (``auth.py``), not this.
    """
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")
    except OSError:  # another user's process: not our server
        return False
    return (b"-m", b"durable_nb.server") in itertools.pairwise(argv)


def read_server_info(home: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((home / SERVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "endpoint" in info and "pid" in info else None


def read_json_file(path: Path, unreadable: Callable[[Exception], Exception]) -> Any:
    """The JSON in ``path`` (None if there is no such file); ``unreadable(exc)`` is raised
    when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise unreadable(exc) from exc


def write_server_info(home: Path, info: dict[str, Any]) -> None:
    write_private_json(home / SERVER_FILE, info)


def write_private_json(path: Path, info: dict[str, Any]) -> None:
    write_private(path, json.dumps(info))


def write_private(path: Path, text: str) -> None:
    """Write ``path`` atomically, readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def spawn_server(home: Path) -> subprocess.Popen[bytes]:
    """Start a detached journal server for ``home`` (its own session, output to server.log)."""
    (home / ERROR_FILE).unlink(missing_ok=True)
    log = open(home / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "durable_nb.server", "--home", str(home)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, close_fds=True, cwd=str(home),
        )
    finally:
        log.close()


def startup_failure(home: Path, proc: subprocess.Popen[bytes]) -> JournalUnavailable:
    """The error a server that exited during start-up left behind, as an exception."""
    try:
        kind, _, message = (home / ERROR_FILE).read_text().partition("\n")
    except OSError:
        kind, message = "", ""
    if not message:
        tail = ""
        with suppress(OSError):
            tail = (home / LOG_FILE).read_text()[-2000:]
        message = (f"the journal server exited with code {proc.returncode} during start-up. "
                   f"Last lines of {home / LOG_FILE}:\n{tail}")
    cls = JournalCorrupted if kind == "JournalCorrupted" else JournalUnavailable
    return cls(message)


class WaitNotice:
    """Says once, ``after`` seconds into a wait, what it waits for: no stall is silent.

    Call it while waiting. The line goes to logging (stderr by default), never to stdout.
    """

    def __init__(self, waiting_for: str, timeout: float, after: float = NOTICE_AFTER) -> None:
        self.message = f"still waiting for {waiting_for}; giving up after {timeout:.0f} s"
        self.due = time.monotonic() + after
        self.said = False

    def __call__(self) -> None:
        if not self.said and time.monotonic() >= self.due:
            self.said = True
            log.warning("%s", self.message)


def poll_noting(sock: zmq.Socket[bytes], timeout: float, notice: WaitNotice) -> bool:
    """``sock.poll`` for up to ``timeout`` seconds that lets ``notice`` speak meanwhile."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(max(1, int(min(left, 0.25) * 1000))):
            return True
        notice()
    return False


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something true or ``timeout`` seconds pass.

    Returns its last value, so callers can both test and use it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
