"""Remote workers: the journal server's TCP endpoint behind the home's keys, a credentials
file on the other side, blobs sent through the server, and a real Dask worker that reaches
the journal only that way (its own DURABLE_NB_HOME points at a directory that never exists)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import durable_nb
from durable_nb.cli import main as cli
from durable_nb.engine.history import load_step_events
from durable_nb.engine.identity import open_run
from durable_nb.journal import blobs
from durable_nb.server.client import JournalClient, reset_default_client
from durable_nb.server.discovery import pid_alive, read_server_info, wait_until
from durable_nb.server.remote import JOURNAL_ENV, read_credentials

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def listening(journal_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The home's server listening on a free loopback port (a fixed one, as a user would
    choose: a restarted server listens there again); the credentials file's path."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert cli(["remote", "listen", f"tcp://127.0.0.1:{port}"]) == 0
    creds = tmp_path / "elsewhere" / "journal.credentials"
    creds.parent.mkdir()
    assert cli(["remote", "credentials", str(creds)]) == 0
    capsys.readouterr()
    return creds


def remote_env(creds: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a process on "another machine": no journal home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_NB_")}
    env.update({JOURNAL_ENV: str(creds), "DURABLE_NB_HOME": str(tmp_path / "no-home"),
                "PYTHONPATH": str(ROOT), "DURABLE_NB_SERVER_START_TIMEOUT": "3", **extra})
    return env


def run_remote(code: str, creds: Path, tmp_path: Path,
               **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], text=True,
                          capture_output=True, env=remote_env(creds, tmp_path, **extra),
                          timeout=120)


def test_status_and_credentials(listening: Path, journal_home: Path,
                                capsys: pytest.CaptureFixture[str]):
    info = read_server_info(journal_home)
    assert info is not None and info["remote_endpoint"].startswith("tcp://127.0.0.1:")
    assert cli(["remote", "status"]) == 0
    assert info["remote_endpoint"] in capsys.readouterr().out
    assert oct(listening.stat().st_mode & 0o777) == "0o600"
    creds = read_credentials(listening)
    assert creds.endpoint == info["remote_endpoint"]
    text = listening.read_text()
    keys = json.loads((journal_home / "journal.keys").read_text())
    assert keys["server_secret"] not in text  # a worker machine cannot pose as the server
    assert keys["client_secret"] in text


def test_a_remote_process_appends_and_stores_blobs_through_the_server(
        listening: Path, journal_home: Path, tmp_path: Path):
    done = run_remote("""
        import os
        from pathlib import Path
        from durable_nb.journal.codec import encode
        from durable_nb.journal.schema import event
        from durable_nb.server.client import default_client
        client = default_client()
        run = client.create_run(event("", "run_started", name="remote"))
        big = encode(os.urandom(3 << 20), what="a result", home=Path("/nonexistent"))
        client.append([event(run, "step_completed", seq=0, attempt=1, name="f",
                             **big.columns())])
        print(run, big.blob.digest)
        """, listening, tmp_path, DURABLE_NB_BLOB_THRESHOLD="1000")
    assert done.returncode == 0, done.stderr
    run_id, digest = done.stdout.split()
    assert not (tmp_path / "no-home").exists()  # it kept no journal of its own
    rows = load_step_events(JournalClient(journal_home), run_id)
    assert [r["kind"] for r in rows] == ["step_completed"]
    ref = blobs.BlobRef.from_meta(rows[0]["meta"])
    assert ref is not None and ref.digest == digest and ref.size > 3 << 20  # pickled bytes
    value = blobs.load(journal_home, ref, "the result")
    assert isinstance(value, bytes) and len(value) == 3 << 20
    assert not list(blobs.blob_dir(journal_home).glob("*/*.tmp"))


def test_bad_credentials_are_refused_with_the_way_out(listening: Path, journal_home: Path,
                                                      tmp_path: Path):
    code = "from durable_nb.server.client import default_client; default_client().ping()"
    listening.chmod(0o644)
    done = run_remote(code, listening, tmp_path)
    assert done.returncode != 0 and "refusing the journal credentials" in done.stderr
    assert "chmod 600" in done.stderr
    listening.chmod(0o600)

    damaged = tmp_path / "damaged.credentials"
    damaged.write_text('{"kind": "durable_nb journal credentials", "endpoint": "tcp://x:1"}')
    damaged.chmod(0o600)
    done = run_remote(code, damaged, tmp_path)
    assert "are damaged" in done.stderr and "durable-nb remote credentials" in done.stderr

    # Credentials of another home, aimed at this server: the handshake fails, nothing is sent.
    other = tmp_path / "other-home"
    other.mkdir(mode=0o700)
    from durable_nb.server import auth, remote
    foreign = tmp_path / "foreign.credentials"
    remote.write_credentials(foreign, read_credentials(listening).endpoint,
                             auth.HomeKeys.of(other))
    done = run_remote(code, foreign, tmp_path)
    assert done.returncode != 0 and "refusing the process listening at" in done.stderr
    assert "credentials are out of date" in done.stderr

    # Nothing listens at the address: it says so and where to look.
    assert cli(["remote", "off"]) == 0
    done = run_remote(code, listening, tmp_path)
    assert done.returncode != 0 and "did not answer within 3 s" in done.stderr
    assert "durable-nb remote status" in done.stderr


def test_a_bad_address_is_refused(journal_home: Path, capsys: pytest.CaptureFixture[str]):
    assert cli(["remote", "listen", "localhost:7450"]) == 1
    err = capsys.readouterr().err
    assert "is not a TCP address of the form tcp://HOST:PORT" in err
    assert not (journal_home / "remote.json").exists()


def test_a_remote_client_survives_a_server_restart(listening: Path, journal_home: Path,
                                                   tmp_path: Path):
    """The remote process keeps one client across a SIGKILL of the server (restarted by a
    local client): its next append reaches the new server, which listens again by itself."""
    script = textwrap.dedent("""
        import sys
        from durable_nb.journal.schema import event
        from durable_nb.server.client import default_client
        client = default_client()
        run = client.create_run(event("", "run_started", name="survivor"))
        print(run, flush=True)
        for line in sys.stdin:
            client.append([event(run, "run_status", status="running", name=line.strip())])
            print("ok", flush=True)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=remote_env(listening, tmp_path,
                                           DURABLE_NB_SERVER_START_TIMEOUT="30"))
    try:
        assert proc.stdout is not None and proc.stdin is not None
        run_id = proc.stdout.readline().strip()
        assert run_id, proc.stderr.read() if proc.stderr else ""
        proc.stdin.write("before\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok"
        pid = int(read_server_info(journal_home)["pid"])  # type: ignore[index]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10)
        reset_default_client()
        JournalClient(journal_home).ping()  # a local client starts the next server
        proc.stdin.write("after\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok", proc.stderr.read()  # type: ignore[union-attr]
        table = JournalClient(journal_home).query(
            "SELECT name FROM events WHERE run_id = ? AND kind = 'run_status' ORDER BY id",
            [run_id])
        assert table.column("name").to_pylist() == ["before", "after"]
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def remote_dask(listening: Path, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Dask scheduler and a worker started as separate processes, the worker with only
    the credentials to reach the journal; the kernel side names the scheduler."""
    pytest.importorskip("distributed")
    sched_file = tmp_path / "scheduler.json"
    env = remote_env(listening, tmp_path, DURABLE_NB_BLOB_THRESHOLD="100000")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        assert wait_until(sched_file.exists, 60)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
             str(sched_file), "--nworkers", "1", "--nthreads", "2", "--no-dashboard"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = json.loads(sched_file.read_text())["address"]
        monkeypatch.setenv("DURABLE_NB_DASK_SCHEDULER", address)
        from distributed import Client
        with Client(address, timeout=60) as c:
            c.wait_for_workers(1, timeout=60)
        yield listening
    finally:
        from durable_nb import workers
        workers.close_clients()
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_a_dask_worker_on_another_machine_journals_its_steps(
        remote_dask: Path, journal_home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch):
    @durable_nb.activity(executor="dask")
    def featurize(i: int) -> dict[str, object]:
        durable_nb.heartbeat({"part": i})
        return {"i": i, "pid": os.getpid(), "env": os.environ.get(JOURNAL_ENV),
                "data": os.urandom(200_000) if i == 1 else b""}

    ctx = open_run("remote-dask")
    results = ctx.execute(lambda: [featurize(i) for i in range(3)])
    assert [r["i"] for r in results] == [0, 1, 2]
    assert {r["env"] for r in results} == {str(remote_dask)}  # ran on the remote worker
    assert os.getpid() not in {r["pid"] for r in results}
    rows = load_step_events(ctx.client, ctx.run_id)
    kinds = [(r["seq"], r["kind"]) for r in rows]
    for seq in range(3):
        assert kinds.count((seq, "step_completed")) == 1
        assert kinds.count((seq, "step_heartbeat")) == 1
    big = [r for r in rows if r["kind"] == "step_completed" and r["seq"] == 1][0]
    ref = blobs.BlobRef.from_meta(big["meta"])
    assert ref is not None and blobs.blob_path(journal_home, ref.digest).is_file()
    assert not (tmp_path / "no-home").exists()

    replayed = open_run("remote-dask", run_id=ctx.run_id)
    again = replayed.execute(lambda: [featurize(i) for i in range(3)])
    assert replayed.executed == 0 and again == results
