"""Finding the journal server of a home, and starting one when nobody answers.

``server.json`` in the journal home says where the server listens. A client that finds no
live server takes ``spawn.lock``, looks again (another client may have just started one),
and starts ``python -m durable_nb.server`` in its own session so it outlives the kernel.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from durable_nb.errors import JournalCorrupted, JournalUnavailable
from durable_nb.journal.home import SERVER_FILE

T = TypeVar("T")

ERROR_FILE = "server.error"
LOG_FILE = "server.log"


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


def read_server_info(home: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((home / SERVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "endpoint" in info and "pid" in info else None


def write_server_info(home: Path, info: dict[str, Any]) -> None:
    """Write ``server.json`` atomically, readable by its owner only."""
    tmp = home / f".{SERVER_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, home / SERVER_FILE)


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
