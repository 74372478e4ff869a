"""Only this OS user reaches the journal server: its socket directory is checked, not trusted.

The socket lives in a directory this user owns with mode 0700 (checked, never assumed), so
another local user cannot put a socket of their own where clients look for the server. Real
processes throughout; the other user is a real OS account when the tests run as root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from durable_nb.errors import JournalUnavailable
from durable_nb.journal.home import ipc_endpoint, temp_socket_dir
from durable_nb.server.client import PING_TIMEOUT
from durable_nb.server.discovery import (
    is_journal_server,
    pid_alive,
    read_server_info,
    write_server_info,
)

pytestmark = pytest.mark.timeout(120)

OTHER_USER = "dnb_intruder"
SLEEPER = "import time; print('up', flush=True); time.sleep(120)"
# Another user's listener in the socket directory they made first (stdlib only: it runs
# on the system Python, the project's venv may not be readable by that user).
SQUATTER = """
import os, socket, sys
d = sys.argv[1]
os.mkdir(d, 0o777)
os.chmod(d, 0o777)
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(d, "s"))
os.chmod(os.path.join(d, "s"), 0o777)
s.listen()
print("up", flush=True)
while True:
    s.accept()
    print("connection", flush=True)
"""

def deep_home(harness) -> Path:
    """A home too deep for a unix socket path: its socket falls back to the temp dir."""
    return harness.home("deep-" + "d" * 100)


def started(harness, argv: list[str], **kwargs) -> subprocess.Popen[str]:
    """Start ``argv`` (killed at teardown) and wait for it to print ``up``."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)
    harness.procs.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "up\n", (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def heard(proc: subprocess.Popen[str]) -> str:
    """Everything ``proc`` printed after ``up`` (it is killed first)."""
    proc.kill()
    out, _ = proc.communicate(timeout=10)
    return out


def stop_server(client) -> None:
    pid = client.server_pid
    client.shutdown()
    client.close()
    assert wait_until_gone(pid)


def wait_until_gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not pid_alive(pid)


@pytest.fixture(scope="module")
def other_user() -> Iterator[tuple[int, int, str]]:
    """A second real OS user (uid, gid, a Python it can run), made for these tests."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as a second OS user")
    made = False
    try:
        pwd.getpwnam(OTHER_USER)
    except KeyError:
        if shutil.which("useradd") is None:
            pytest.skip("useradd is not available to make a second OS user")
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", OTHER_USER], check=True, capture_output=True)
        made = True
    user = pwd.getpwnam(OTHER_USER)
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")
                   if subprocess.run([p, "-c", "pass"], user=user.pw_uid, group=user.pw_gid,
                                     extra_groups=[], capture_output=True,
                                     cwd="/").returncode == 0), None)
    try:
        if python is None:
            pytest.skip(f"no Python that {OTHER_USER} can run outside the project's venv")
        yield user.pw_uid, user.pw_gid, python
    finally:
        if made:
            subprocess.run(["userdel", OTHER_USER], capture_output=True)


def squat(harness, other_user, directory: Path) -> subprocess.Popen[str]:
    """The other user makes ``directory`` first (mode 0777) and listens in it."""
    uid, gid, python = other_user
    proc = started(harness, [python, "-c", SQUATTER, str(directory)], user=uid, group=gid,
                   extra_groups=[], cwd="/")
    st = os.lstat(directory)
    assert st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o777
    return proc


# -- the socket directory -----------------------------------------------------------------


def test_a_socket_directory_another_user_made_first_stops_the_server_start(
        harness, other_user) -> None:
    home = deep_home(harness)
    directory = temp_socket_dir(home)
    squatter = squat(harness, other_user, directory)

    with pytest.raises(JournalUnavailable) as refused:
        harness.client(home).ping()

    message = str(refused.value)
    assert f"refusing the journal socket directory {directory}" in message
    assert f"owned by {OTHER_USER} (uid {other_user[0]})" in message
    assert "mode is 0777" in message
    assert f"rm -r {directory}" in message and "DURABLE_NB_HOME" in message
    assert harness.server_processes(home) == []
    assert heard(squatter) == ""  # nobody ever connected to the other user's socket


@pytest.mark.parametrize("spoil", ["mode 0755", "a symlink", "a file"])
def test_a_socket_directory_that_is_not_a_private_directory_is_refused(
        harness, tmp_path: Path, spoil: str) -> None:
    home = deep_home(harness)
    directory = temp_socket_dir(home)
    if spoil == "mode 0755":
        directory.mkdir(mode=0o755)
        directory.chmod(0o755)
        expected = "its mode is 0755, not 0700"
    elif spoil == "a symlink":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)  # private and ours: the link is what is wrong
        directory.symlink_to(target)
        expected = f"it is a symbolic link to {target}, not a directory"
    else:
        directory.write_text("")
        expected = "it is not a directory"
    try:
        with pytest.raises(JournalUnavailable) as refused:
            ipc_endpoint(home)
        assert expected in str(refused.value)
        with pytest.raises(JournalUnavailable) as refused:
            harness.client(home).ping()  # the server it starts refuses too, and says why
        assert f"refusing the journal socket directory {directory}: {expected}" in str(
            refused.value)
    finally:
        if directory.is_symlink() or directory.is_file():
            directory.unlink()


def test_a_private_socket_directory_of_an_earlier_server_is_reused(harness) -> None:
    home = deep_home(harness)
    client = harness.client(home)
    client.ping()
    endpoint = read_server_info(home)["endpoint"]
    assert endpoint == f"ipc://{temp_socket_dir(home) / 's'}"
    stop_server(client)
    assert harness.client(home).ping()["ok"]
    assert read_server_info(home)["endpoint"] == endpoint


@pytest.fixture
def runtime_dir(harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private ``$XDG_RUNTIME_DIR`` (servers started by clients inherit it)."""
    path = Path(tempfile.mkdtemp(prefix="xdg-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    yield path
    harness.cleanup()  # its servers first: their sockets are in there
    shutil.rmtree(path, ignore_errors=True)


def test_a_deep_home_puts_its_socket_in_a_private_xdg_runtime_dir(harness, runtime_dir) -> None:
    home = deep_home(harness)
    assert harness.client(home).ping()["ok"]
    endpoint = read_server_info(home)["endpoint"]
    assert endpoint.startswith(f"ipc://{runtime_dir}/durable_nb-") and endpoint.endswith(".sock")
    assert not temp_socket_dir(home).exists()


def test_an_xdg_runtime_dir_others_can_enter_is_passed_over(harness, runtime_dir) -> None:
    runtime_dir.chmod(0o755)
    home = deep_home(harness)
    assert harness.client(home).ping()["ok"]
    assert read_server_info(home)["endpoint"] == f"ipc://{temp_socket_dir(home) / 's'}"


# -- finding the server -------------------------------------------------------------------


def test_server_json_naming_an_unrelated_live_pid_costs_no_wait(
        harness, home: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = harness.client()
    first.ping()
    endpoint = read_server_info(home)["endpoint"]
    stop_server(first)
    # After a reboot, the pid in server.json belongs to something else.
    squatter = started(harness, [sys.executable, "-c", SLEEPER])
    write_server_info(home, {"pid": squatter.pid, "endpoint": endpoint})
    assert not is_journal_server(squatter.pid)

    caplog.set_level(logging.INFO, logger="durable_nb")
    began = time.monotonic()
    pid = harness.client().server_pid
    elapsed = time.monotonic() - began

    assert pid != squatter.pid and harness.server_processes() == [pid]
    waits = [r.getMessage() for r in caplog.records if "to answer" in r.getMessage()]
    assert waits == [], waits
    assert elapsed < 2 * PING_TIMEOUT, elapsed  # before: two ping timeouts, then the start


def test_a_journal_server_is_known_by_its_command_line(harness) -> None:
    unrelated = started(harness, [sys.executable, "-c", SLEEPER])
    assert pid_alive(unrelated.pid) and not is_journal_server(unrelated.pid)
    client = harness.client()
    assert is_journal_server(client.server_pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(unrelated.pid, signal.SIGKILL)
    unrelated.wait(10)
    assert not is_journal_server(unrelated.pid)
