"""A big step result through the engine: what it costs, and what the journal server holds.

What it measures
----------------
In a fresh journal home (a temp dir unless ``--home``), a workflow whose one activity
returns a DataFrame of ``--mb`` megabytes of random floats (Parquet cannot shrink them):

1. the live run: the activity, encoding the result, writing its blob durably and
   appending the step's completion, timed as a whole;
2. the replay (a second execution of the completed run), which reads the blob back;
3. the journal server's peak resident set size (``VmHWM`` in ``/proc/<pid>/status``)
   before the run (after a small warm-up run and its replay, so every query the big run
   makes has been made once) and after the replay, and the size of the blob on disk.

Why
---
Large values are stored by reference in a content-addressed blob store written by the
encoding process, so the server's memory should not depend on the payload's size. This
prints the figures; it is a benchmark, not a test, and never asserts them.

Usage (from the project root)::

    .venv/bin/python bench/big_payload.py [--mb 300] [--home DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

MB = 1 << 20


def peak_rss(pid: int) -> int:
    """A process's peak resident set size (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def measure(mb: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    import durable_nb
    from durable_nb.engine.identity import open_run
    from durable_nb.journal.blobs import blob_dir
    from durable_nb.server.client import default_client

    client = default_client()

    @durable_nb.activity
    def warm_up(i: int) -> int:
        return i

    for _ in range(2):
        open_run("warm-up").execute(lambda: warm_up(1))
    pid = client.server_pid
    assert pid is not None
    before = peak_rss(pid)

    rows = mb * MB // (4 * 8)

    @durable_nb.activity
    def build() -> pd.DataFrame:
        rng = np.random.default_rng(0)
        return pd.DataFrame({name: rng.random(rows) for name in "abcd"})

    started = time.perf_counter()
    frame = build.fn()
    compute_s = time.perf_counter() - started

    started = time.perf_counter()
    open_run("big").execute(lambda: build())
    live_s = time.perf_counter() - started

    started = time.perf_counter()
    replayed = open_run("big").execute(lambda: build())
    replay_s = time.perf_counter() - started
    assert replayed.shape == frame.shape

    # The peer: the same frame written to Parquet and fsynced by hand, then read back.
    peer = client.home / "peer.parquet"
    started = time.perf_counter()
    frame.to_parquet(peer)
    with open(peer, "rb+") as f:
        os.fsync(f.fileno())
    peer_write_s = time.perf_counter() - started
    started = time.perf_counter()
    pd.read_parquet(peer)
    peer_read_s = time.perf_counter() - started
    peer.unlink()

    blob_bytes = sum(p.stat().st_size for p in blob_dir(client.home).rglob("*") if p.is_file())
    after = peak_rss(pid)
    return {
        "payload_mb": round(int(frame.memory_usage(index=False).sum()) / MB, 1),
        "blob_mb": round(blob_bytes / MB, 1),
        "compute_s": round(compute_s, 3),
        "live_run_s": round(live_s, 3),
        "journal_overhead_s": round(live_s - compute_s, 3),
        "replay_s": round(replay_s, 3),
        "peer_parquet_write_s": round(peer_write_s, 3),
        "peer_parquet_read_s": round(peer_read_s, 3),
        "server_vmhwm_before_mb": round(before / MB, 1),
        "server_vmhwm_after_mb": round(after / MB, 1),
        "server_pid": pid,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=300, help="size of the result (default 300)")
    parser.add_argument("--home", help="journal home to use (default: a fresh temp dir)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--encrypted", action="store_true",
                        help="with a fresh DURABLE_NB_KEY: the blob is sealed (AES-GCM)")
    args = parser.parse_args()
    if args.encrypted:
        from durable_nb.journal import crypto

        os.environ[crypto.KEY_ENV] = crypto.new_key()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="durable_nb-bench-"))
    os.environ["DURABLE_NB_HOME"] = str(home)
    from durable_nb.server.client import default_client

    try:
        figures = measure(args.mb)
        default_client().shutdown()
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    figures["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
    if args.json:
        print(json.dumps(figures))
        return
    print(f"result: DataFrame of {figures['payload_mb']} MB; blob on disk "
          f"{figures['blob_mb']} MB{', encrypted' if args.encrypted else ''} "
          f"({figures['machine']})")
    print(f"  computing it (plain call)      {figures['compute_s']:8.3f} s")
    print(f"  live run (compute + journal)   {figures['live_run_s']:8.3f} s "
          f"(journal: {figures['journal_overhead_s']:.3f} s)")
    print(f"  replay (reads the blob)        {figures['replay_s']:8.3f} s")
    print(f"  peer: to_parquet + fsync       {figures['peer_parquet_write_s']:8.3f} s")
    print(f"  peer: read_parquet             {figures['peer_parquet_read_s']:8.3f} s")
    print(f"  journal server VmHWM before    {figures['server_vmhwm_before_mb']:8.1f} MB")
    print(f"  journal server VmHWM after     {figures['server_vmhwm_after_mb']:8.1f} MB")


if __name__ == "__main__":
    main()
