"""Only this OS user reaches the journal server, and only the real server reaches its clients.

The socket lives in a directory this user owns with mode 0700 (checked, never assumed), and
both ends prove they hold the home's keys (CURVE), so another local user can neither answer
for the server (and have a kernel unpickle what they send) nor ask it anything. Real
processes throughout; the other user is a real OS account when the tests run as root.
"""

from __future__ import annotations

import contextlib
import json
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
import zmq
from zmq.utils.monitor import recv_monitor_message

from durable_nb.errors import JournalUnavailable
from durable_nb.journal import codec
from durable_nb.journal.home import ipc_endpoint, journal_home, temp_socket_dir
from durable_nb.server import auth, protocol
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
# The same, with a command line that passes for a journal server's.
LOOKALIKE = [sys.executable, "-c", SLEEPER, "-m", "durable_nb.server"]

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

# A process at the journal's endpoint without the home's keys, answering every request
# with a pickle that would write a marker file when unpickled.
FAKE_SERVER = """
import json, os, pickle, sys
import pyarrow as pa, zmq
endpoint, server_json, marker, mode = sys.argv[1:5]

class Poison:
    def __reduce__(self):
        return (exec, (f"open({marker!r}, 'w').write('unpickled')",))

table = pa.table({"data_pickle": pa.array([pickle.dumps(Poison())], pa.binary())})
sink = pa.BufferOutputStream()
with pa.ipc.new_stream(sink, table.schema) as writer:
    writer.write_table(table)
ctx = zmq.Context()
sock = ctx.socket(zmq.ROUTER)
if mode == "curve with keys of its own":
    public, secret = zmq.curve_keypair()
    sock.curve_server = True
    sock.curve_secretkey, sock.curve_publickey = secret, public
sock.bind(endpoint)
with open(server_json, "w") as f:
    json.dump({"pid": os.getpid(), "endpoint": endpoint}, f)
print("up", flush=True)
while True:
    ident, frame, *_ = sock.recv_multipart()
    print("request", flush=True)
    request = json.loads(frame)
    reply = {"id": request.get("id"), "ok": True, "pid": os.getpid(), "protocol": 1, "rows": 1}
    sock.send_multipart([ident, json.dumps(reply).encode(), sink.getvalue().to_pybytes()])
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


def test_a_client_does_not_connect_into_a_socket_directory_another_user_made(
        harness, other_user) -> None:
    # server.json (ours, in the private home) still names the temp dir, which the other
    # user took over after it was cleaned away.
    home = journal_home(deep_home(harness))
    directory = temp_socket_dir(home)
    squatter = squat(harness, other_user, directory)
    lookalike = started(harness, LOOKALIKE)
    write_server_info(home, {"pid": lookalike.pid, "endpoint": f"ipc://{directory / 's'}"})

    with pytest.raises(JournalUnavailable, match="refusing the journal socket directory"):
        harness.client(home).ping()

    assert heard(squatter) == ""


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


# -- the home's keys ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["plain zmq", "curve with keys of its own"])
def test_a_server_without_the_home_keys_is_refused_and_nothing_it_sends_is_unpickled(
        harness, home: Path, tmp_path: Path, mode: str) -> None:
    journal_home(home)
    marker = tmp_path / "unpickled"
    fake = started(harness, [sys.executable, "-c", FAKE_SERVER, ipc_endpoint(home),
                             str(home / "server.json"), str(marker), mode,
                             "-m", "durable_nb.server"])
    assert is_journal_server(fake.pid)  # its command line passes: only the keys tell

    client = harness.client(home)
    with pytest.raises(JournalUnavailable) as refused:
        table = client.query("SELECT data_pickle FROM events")
        [codec.decode(None, raw) for raw in table.column("data_pickle").to_pylist()]

    assert "refusing the process listening at" in str(refused.value)
    assert f"it is not the journal server of {home}" in str(refused.value)
    assert not marker.exists()
    assert heard(fake) == ""  # not even the hello reached it


def test_a_client_without_the_home_keys_gets_no_answer(harness, home: Path) -> None:
    client = harness.client()
    client.append([harness.event()])
    endpoint = read_server_info(home)["endpoint"]
    query = protocol.dumps({"id": 1, "op": "query", "sql": "SELECT * FROM events"})
    ctx = zmq.Context()
    try:
        plain = ctx.socket(zmq.DEALER)
        plain.linger = 0
        plain.connect(endpoint)
        plain.send(query)
        # A stranger who even knows the server's public key, with a client key of its own.
        stranger = ctx.socket(zmq.DEALER)
        stranger.linger = 0
        stranger.curve_serverkey = auth.HomeKeys.of(home).server_public
        stranger.curve_publickey, stranger.curve_secretkey = zmq.curve_keypair()
        monitor = stranger.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        stranger.connect(endpoint)
        stranger.send(query)
        assert monitor.poll(10_000), "the server did not refuse the stranger's key"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert not plain.poll(2000) and not stranger.poll(0)
        stranger.disable_monitor()
        for sock in (monitor, plain, stranger):
            sock.close()
    finally:
        ctx.term()
    assert client.query("SELECT count(*) AS n FROM events").column("n")[0].as_py() == 1


@pytest.mark.parametrize("spoil", ["mode 0644", "a symlink", "owned by another user"])
def test_a_key_file_others_could_read_or_swap_is_refused(
        harness, home: Path, tmp_path: Path, spoil: str) -> None:
    stop_server(harness.client())
    keys = home / auth.KEYS_FILE
    if spoil == "mode 0644":
        keys.chmod(0o644)
        expected = "its mode is 0644, not 0600"
    elif spoil == "a symlink":
        moved = tmp_path / "elsewhere.keys"
        keys.rename(moved)
        keys.symlink_to(moved)
        expected = "it cannot be opened as a file"
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root to give the key file to another user")
        os.chown(keys, 65534, 65534)
        expected = f"it is owned by uid 65534, not by you (uid {os.getuid()})"

    with pytest.raises(JournalUnavailable) as refused:
        harness.client().ping()

    assert f"refusing the journal key file {keys}: {expected}" in str(refused.value)
    assert "chmod 600" in str(refused.value)


def test_first_starts_racing_to_make_the_keys_agree_on_one_file(harness, home: Path) -> None:
    journal_home(home)
    go = home / "go"
    code = ("import os, time; from pathlib import Path; from durable_nb.server.auth import "
            f"HomeKeys\nwhile not os.path.exists({str(go)!r}): time.sleep(0.001)\n"
            f"print(HomeKeys.of(Path({str(home)!r})).server_public.decode())")
    procs = [harness.python(code) for _ in range(6)]
    time.sleep(0.5)  # let them all reach the starting line
    go.touch()
    keys = set()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        keys.add(out.strip())
    assert len(keys) == 1
    assert keys == {auth.HomeKeys.of(home).server_public.decode()}
    assert stat.S_IMODE((home / auth.KEYS_FILE).stat().st_mode) == 0o600


# -- finding the server -------------------------------------------------------------------


@pytest.mark.parametrize("stale", ["an unrelated process", "a process that looks like one"])
def test_server_json_naming_a_live_pid_that_serves_nothing_costs_no_wait(
        harness, home: Path, caplog: pytest.LogCaptureFixture, stale: str) -> None:
    first = harness.client()
    first.ping()
    endpoint = read_server_info(home)["endpoint"]
    stop_server(first)
    # After a reboot, the pid in server.json belongs to something else.
    squatter = started(harness, LOOKALIKE if stale != "an unrelated process"
                       else [sys.executable, "-c", SLEEPER])
    write_server_info(home, {"pid": squatter.pid, "endpoint": endpoint})
    assert is_journal_server(squatter.pid) == (stale != "an unrelated process")

    caplog.set_level(logging.INFO, logger="durable_nb")
    began = time.monotonic()
    pid = harness.client().server_pid
    elapsed = time.monotonic() - began

    assert pid != squatter.pid and harness.server_processes() == [pid]
    waits = [r.getMessage() for r in caplog.records
             if "to answer" in r.getMessage() or "handshake" in r.getMessage()]
    assert waits == [], waits
    assert elapsed < 2 * PING_TIMEOUT, elapsed  # before: two ping timeouts, then the start


def test_a_server_that_does_not_answer_is_named_after_a_second(
        harness, home: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = harness.client()
    pid = client.server_pid
    endpoint = read_server_info(home)["endpoint"]
    ctx = zmq.Context()
    os.kill(pid, signal.SIGSTOP)
    try:
        with caplog.at_level(logging.WARNING, logger="durable_nb"):
            assert not auth.connect(ctx.socket(zmq.DEALER), home, endpoint, timeout=1.6)
    finally:
        os.kill(pid, signal.SIGCONT)
        ctx.term()
    said = [r.getMessage() for r in caplog.records if "handshake" in r.getMessage()]
    assert said == [f"still waiting for the journal server at {endpoint} to complete the "
                    "handshake; giving up after 2 s"]
    assert client.ping()["pid"] == pid


def test_a_journal_server_is_known_by_its_command_line(harness) -> None:
    unrelated = started(harness, [sys.executable, "-c", SLEEPER])
    assert pid_alive(unrelated.pid) and not is_journal_server(unrelated.pid)
    client = harness.client()
    assert is_journal_server(client.server_pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(unrelated.pid, signal.SIGKILL)
    unrelated.wait(10)
    assert not is_journal_server(unrelated.pid)


def test_the_home_keys_are_a_private_file_of_this_user(harness, home: Path) -> None:
    assert harness.client().ping()["ok"]
    keys = home / auth.KEYS_FILE
    st = os.lstat(keys)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    assert set(json.loads(keys.read_text())) == {
        "server_public", "server_secret", "client_public", "client_secret"}


KEYLESS_SERVER = """
import sys
import durable_nb.server.app as app
from durable_nb.server import auth
auth.bind = lambda sock, home, endpoint: sock.bind(endpoint)  # as servers were before keys
sys.exit(app.main(["--home", {home!r}]))
"""


def test_server_stop_stops_a_server_of_an_older_version_that_holds_no_keys(harness, home):
    proc = harness.python(KEYLESS_SERVER.format(home=str(home)),
                          "-m", "durable_nb.server", "--home", str(home))
    assert harness.wait_until(
        lambda: (info := read_server_info(home)) is not None and info["pid"] == proc.pid, 30)
    done = subprocess.run([sys.executable, "-m", "durable_nb.cli", "server", "stop"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DURABLE_NB_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert "did not prove the home's keys" in done.stderr and "SIGTERM" in done.stderr
    assert f"stopped the journal server (pid {proc.pid})" in done.stdout
    assert proc.wait(timeout=30) == 0
