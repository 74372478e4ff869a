"""How long a client takes to reach a journal server when ``server.json`` is stale.

What it measures
----------------
After a reboot, ``server.json`` in the journal home may name a pid that now belongs to an
unrelated live process. The script makes that case for real (a fresh home, a server started
and stopped, then ``server.json`` rewritten to name a live ``sleep`` process) and times the
first ``ping`` of a new client, which has to see through the stale file and start a server.
For comparison it times the same first ping on a home with no ``server.json`` at all (a cold
start). Each case runs ``--repeat`` times in a fresh home; it prints every time, the median,
and the ping timeout a client would otherwise wait for.

This is a benchmark, not a test: it prints figures and never asserts timings.

Usage (from the project root)::

    .venv/bin/python bench/stale_server_json.py [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from durable_nb.server.client import PING_TIMEOUT, JournalClient
from durable_nb.server.discovery import pid_alive, read_server_info, wait_until, write_server_info


def first_ping_seconds(home: Path) -> float:
    client = JournalClient(home)
    began = time.monotonic()
    client.ping()
    elapsed = time.monotonic() - began
    stop(client)
    return elapsed


def stop(client: JournalClient) -> None:
    pid = client.server_pid
    client.shutdown()
    client.close()
    wait_until(lambda: not pid_alive(pid), 10, interval=0.02)


def stale_case(home: Path) -> float:
    client = JournalClient(home)
    client.ping()
    info = read_server_info(home)
    assert info is not None
    stop(client)
    unrelated = subprocess.Popen(["sleep", "120"])
    try:
        write_server_info(home, {**info, "pid": unrelated.pid})
        return first_ping_seconds(home)
    finally:
        unrelated.kill()
        unrelated.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"cold start": [], "stale server.json": []}
    for _ in range(args.repeat):
        for case, measure in (("cold start", first_ping_seconds),
                              ("stale server.json", stale_case)):
            home = Path(tempfile.mkdtemp(prefix="dnb-bench-"))
            try:
                figures[case].append(measure(home))
            finally:
                shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps({"ping_timeout_s": PING_TIMEOUT, **figures}))
        return
    print(f"ping timeout: {PING_TIMEOUT:.1f} s")
    for case, times in figures.items():
        shown = ", ".join(f"{t:.2f}" for t in times)
        print(f"{case:>18}: median {statistics.median(times):.2f} s  ({shown})")


if __name__ == "__main__":
    main()
