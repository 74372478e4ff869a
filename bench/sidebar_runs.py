"""Latency of the sidebar's run list (``GET /durable-nb/api/runs?limit=50``) on a big journal.

What it measures
----------------
A fresh journal home is filled with N runs (default 10,000) written through
``JournalClient.append`` in batches, as kernels write them: each run has a
``run_started``, three steps (started + completed) and, for most runs, a final
status (completed, failed, cancelled, interrupted; one in ten stays running).
Then a real Jupyter server is started in a subprocess with the ``durable_nb.jupyter``
extension, and each request below is sent sequentially over one keep-alive HTTP
connection (token-authenticated) after a warmup; the script prints median, p90 and
max milliseconds per request. The same run-list page is also timed as a direct
journal query from this process, which separates the SQL from the HTTP and
Jupyter overhead.

Why
---
The sidebar polls the run list while Lab is open; with months of runs in one journal
it must stay interactive. The ``runs`` view is derived from the events table on every
query, so its cost grows with the journal: this shows by how much.

This is a benchmark, not a test: it prints figures and never asserts timings.

Usage (from the project root)::

    .venv/bin/python bench/sidebar_runs.py [--runs N] [--requests R] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from durable_nb.jupyter import queries
from durable_nb.server.client import JournalClient

STATUSES = ("completed", "completed", "completed", "failed", "completed", "cancelled",
            "completed", "interrupted", "completed", None)  # None: still running
WORKFLOWS = ("sweep", "train", "evaluate", "ingest")
STEPS_PER_RUN = 3
BATCH_RUNS = 500


def fill_journal(client: JournalClient, n_runs: int) -> float:
    """Append ``n_runs`` runs; returns the seconds it took."""
    t_start = time.perf_counter()
    t0 = time.time() - n_runs * 60
    for first in range(0, n_runs, BATCH_RUNS):
        events: list[dict[str, Any]] = []
        for n in range(first, min(first + BATCH_RUNS, n_runs)):
            workflow = WORKFLOWS[n % len(WORKFLOWS)]
            run_id = f"{workflow}-{n + 1}"
            ts = t0 + n * 60
            events.append(_event(run_id, "run_started", ts, name=workflow, meta=json.dumps(
                {"pid": 1, "notebook": f"notebooks/{workflow}.ipynb"})))
            for seq in range(STEPS_PER_RUN):
                events.append(_event(run_id, "step_started", ts + seq * 10 + 1, seq=seq,
                                     attempt=1, name="step", data_json=json.dumps([seq])))
                events.append(_event(run_id, "step_completed", ts + seq * 10 + 9, seq=seq,
                                     attempt=1, name="step",
                                     data_json=json.dumps({"loss": 1 / (seq + 1)})))
            status = STATUSES[n % len(STATUSES)]
            if status is not None:
                events.append(_event(run_id, "run_status", ts + 40, name=workflow,
                                     status=status,
                                     error=None if status == "completed" else status))
        client.append(events)
    return time.perf_counter() - t_start


def _event(run_id: str, kind: str, ts: float, **fields: Any) -> dict[str, Any]:
    return {"eid": uuid.uuid4().hex, "ts": ts, "run_id": run_id, "kind": kind, **fields}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_jupyter(workdir: Path, home: Path, token: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DURABLE_NB_HOME": str(home),
           "JUPYTER_CONFIG_DIR": str(workdir / "config"),
           "JUPYTER_RUNTIME_DIR": str(workdir / "runtime")}
    (workdir / "root").mkdir()
    args = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
            "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.root_dir={workdir / 'root'}", f"--IdentityProvider.token={token}",
            "--ServerApp.jpserver_extensions={'durable_nb.jupyter': True}"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    log = open(workdir / "jupyter.log", "wb")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(conn: http.client.HTTPConnection, headers: dict[str, str],
               proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"jupyter server exited:\n{log.read_text()[-3000:]}")
        try:
            conn.request("GET", "/durable-nb/api/runs?limit=1", headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
        except OSError:
            conn.close()
        time.sleep(0.2)
    raise SystemExit(f"jupyter server did not answer within 60 s:\n{log.read_text()[-3000:]}")


def time_requests(conn: http.client.HTTPConnection, headers: dict[str, str], path: str,
                  n: int, warmup: int = 5) -> list[float]:
    times = []
    for i in range(warmup + n):
        t = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - t) * 1000
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
        if i >= warmup:
            times.append(elapsed)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": statistics.median(ordered),
            "p90_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))],
            "max_ms": ordered[-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="durable_nb-sidebar-bench-"))
    home = workdir / "home"
    client = JournalClient(home)
    proc: subprocess.Popen[bytes] | None = None
    figures: dict[str, Any] = {"runs": args.runs, "events": args.runs * (
        2 + 2 * STEPS_PER_RUN) - args.runs // len(STATUSES), "requests": args.requests,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "python": platform.python_version()}
    try:
        figures["fill_s"] = fill_journal(client, args.runs)
        page = queries.RunFilter(limit=50)
        queries.list_runs(client, page)  # warm the journal server's caches
        direct = []
        for _ in range(args.requests):
            t = time.perf_counter()
            queries.list_runs(client, page)
            direct.append((time.perf_counter() - t) * 1000)
        figures["direct list_runs(limit=50)"] = summary(direct)

        token = uuid.uuid4().hex
        port = free_port()
        proc = start_jupyter(workdir, home, token, port)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Authorization": f"token {token}"}
        wait_ready(conn, headers, proc, workdir / "jupyter.log")
        last = f"{WORKFLOWS[(args.runs - 1) % len(WORKFLOWS)]}-{args.runs}"
        for label, path in [
            ("GET runs?limit=50", "/durable-nb/api/runs?limit=50"),
            ("GET runs?limit=50&status=failed", "/durable-nb/api/runs?limit=50&status=failed"),
            ("GET runs?limit=50&q=sweep-99", "/durable-nb/api/runs?limit=50&q=sweep-99"),
            (f"GET runs?limit=50&offset={max(0, args.runs - 50)}",
             f"/durable-nb/api/runs?limit=50&offset={max(0, args.runs - 50)}"),
            ("GET runs/{id}", f"/durable-nb/api/runs/{last}"),
            ("GET runs/{id}/events?since=0", f"/durable-nb/api/runs/{last}/events?since=0"),
        ]:
            figures[label] = summary(time_requests(conn, headers, path, args.requests))
        conn.close()
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(Exception):
            client.call("shutdown", timeout=10)
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)

    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"sidebar run list on a journal of {figures['runs']:,} runs "
          f"({figures['events']:,} events), {args.requests} sequential requests each")
    print(f"machine: {figures['machine']}; python {figures['python']}")
    print(f"filling the journal through JournalClient.append: {figures['fill_s']:.1f} s")
    print(f"{'':34} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}")
    for label, value in figures.items():
        if isinstance(value, dict):
            print(f"{label:34} {value['median_ms']:10.1f} {value['p90_ms']:8.1f} "
                  f"{value['max_ms']:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
