"""Dask workers that outlive the kernel: the journal home's cluster service.

``--executor dask`` runs attempts on a Dask distributed cluster. Unless
``DURABLE_NB_DASK_SCHEDULER`` names one (``tcp://host:8786``, ``tls://…``), the home gets its
own: a detached process (its own session, so a kernel's death or restart leaves it running)
that owns a ``LocalCluster`` of worker processes, started on first use or with
``durable-nb workers start``. It writes ``workers.json`` (0600) with its scheduler's address.

The scheduler listens on loopback only and speaks TLS with mutual authentication: its
certificate and key are made for the home when the service starts and kept in
``<home>/dask/`` (0700, files 0600), so only this user's processes, which can read them, can
submit work — on a shared machine another user cannot run code as you through it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from durable_nb.errors import DurableError
from durable_nb.server.discovery import (
    file_lock,
    pid_alive,
    wait_until,
    write_private,
    write_private_json,
)

WORKERS_FILE = "workers.json"
WORKERS_LOG = "workers.log"
WORKERS_LOCK = "workers.lock"
TLS_DIR = "dask"
SCHEDULER_ENV = "DURABLE_NB_DASK_SCHEDULER"
START_TIMEOUT = float(os.environ.get("DURABLE_NB_WORKERS_START_TIMEOUT", "120"))
CONNECT_TIMEOUT_ENV = "DURABLE_NB_DASK_CONNECT_TIMEOUT"  # seconds; default 30


class WorkersUnavailable(DurableError):
    """The Dask cluster for ``--executor dask`` could not be started or reached."""


def read_info(home: Path) -> dict[str, Any] | None:
    """The running service's ``workers.json``, or None when none runs for ``home``."""
    try:
        info = json.loads((home / WORKERS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not pid_alive(int(info.get("pid", 0))):
        return None
    return info


def security(home: Path) -> Any:
    """The TLS credentials of the home's cluster (for a client, a worker or the scheduler)."""
    from distributed.security import Security

    tls = home / TLS_DIR
    ca, cert, key = (str(tls / name) for name in ("ca.pem", "cert.pem", "key.pem"))
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key,
                    tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)


def _make_credentials(home: Path) -> None:
    """A fresh self-signed certificate for the cluster, readable by this user only."""
    from distributed.security import Security

    made = Security.temporary()
    tls = home / TLS_DIR
    tls.mkdir(mode=0o700, exist_ok=True)
    os.chmod(tls, 0o700)
    for name, pem in (("ca.pem", made.tls_ca_file), ("cert.pem", made.tls_client_cert),
                      ("key.pem", made.tls_client_key)):
        write_private(tls / name, pem)


def start(home: Path, n_workers: int | None = None) -> dict[str, Any]:
    """Start the home's cluster service unless one runs; its ``workers.json``."""
    with file_lock(home / WORKERS_LOCK):
        info = read_info(home)
        if info is not None:
            return info
        (home / WORKERS_FILE).unlink(missing_ok=True)
        from durable_nb.engine.process_pool import child_python

        # Modules the kernel imports by path (the notebook's folder) import in tasks too.
        command, env = child_python("durable_nb.workers", str(home))
        if n_workers is not None:
            command += ["--workers", str(n_workers)]
        log = open(home / WORKERS_LOG, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True, cwd=str(home),
                                    env=env)
        finally:
            log.close()

        def up() -> dict[str, Any] | None:
            if proc.poll() is not None:
                raise WorkersUnavailable(
                    f"the Dask workers of {home} exited with code {proc.returncode} while "
                    f"starting; see {home / WORKERS_LOG}")
            found = read_info(home)
            return found if found and found["pid"] == proc.pid else None

        found = wait_until(up, START_TIMEOUT, interval=0.1)
        if found is None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise WorkersUnavailable(
                f"the Dask workers of {home} did not start within {START_TIMEOUT:.0f} s; see "
                f"{home / WORKERS_LOG} (raise DURABLE_NB_WORKERS_START_TIMEOUT on a slow "
                "machine)")
        return found


def stop(home: Path, timeout: float = 30.0) -> int | None:
    """Stop the home's cluster service; the pid it had, or None if none ran."""
    info = read_info(home)
    if info is None:
        return None
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not pid_alive(pid), timeout, interval=0.05):
        os.killpg(pid, signal.SIGKILL)  # its session: the workers too
    (home / WORKERS_FILE).unlink(missing_ok=True)
    return pid


def scheduler_env() -> str | None:
    """The scheduler ``DURABLE_NB_DASK_SCHEDULER`` names, if any."""
    return os.environ.get(SCHEDULER_ENV) or None


def scheduler(home: Path) -> tuple[str, Any]:
    """The scheduler to send work to and the security to reach it with: the one
    ``DURABLE_NB_DASK_SCHEDULER`` names, else the home's own (started on first use)."""
    named = scheduler_env()
    if named:
        return named, None
    info = read_info(home) or start(home)
    return str(info["scheduler"]), security(home)


_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


def dask_client(home: Path) -> Any:
    """This process's Dask client of the home's scheduler (made once, then reused)."""
    from distributed import Client

    address, sec = scheduler(home)
    with _clients_lock:
        client = _clients.get((str(home), address))
        if client is None or client.status not in ("running", "connecting"):
            try:
                timeout = float(os.environ.get(CONNECT_TIMEOUT_ENV, "30"))
                client = Client(address, security=sec, set_as_default=False, timeout=timeout)
            except (OSError, TimeoutError) as exc:
                raise WorkersUnavailable(
                    f"cannot reach the Dask scheduler at {address}: {exc}. "
                    + (f"Check {SCHEDULER_ENV}." if scheduler_env() else
                       "Restart the workers: `durable-nb workers stop`, then run again.")
                ) from exc
            _clients[(str(home), address)] = client
        return client


def close_clients() -> None:
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def _serve(home: Path, n_workers: int | None) -> None:
    """The service: a LocalCluster owned by this process until SIGTERM."""
    from distributed import LocalCluster

    _make_credentials(home)
    os.environ["DURABLE_NB_HOME"] = str(home)  # the workers' tasks open this journal
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    cluster = LocalCluster(n_workers=n_workers or os.cpu_count() or 1, threads_per_worker=1,
                           processes=True, host="127.0.0.1", protocol="tls://",
                           security=security(home), dashboard_address=None)
    try:
        write_private_json(home / WORKERS_FILE, {
            "pid": os.getpid(), "scheduler": cluster.scheduler_address,
            "workers": len(cluster.workers), "started": time.time()})
        print(f"durable_nb workers: scheduler {cluster.scheduler_address}, "
              f"{len(cluster.workers)} workers", flush=True)
        stopping.wait()
    finally:
        cluster.close(timeout=20)
        info = read_info(home)
        if info is None or info.get("pid") == os.getpid():
            (home / WORKERS_FILE).unlink(missing_ok=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m durable_nb.workers")
    parser.add_argument("home", type=Path)
    parser.add_argument("--workers", type=int, default=None)
    ns = parser.parse_args()
    _serve(ns.home, ns.workers)
