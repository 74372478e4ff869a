"""Big results go by reference: the journal server never holds them, replay reads them back,
and they survive the death of the kernel that computed them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

import durable_nb
from durable_nb.engine.identity import open_run
from durable_nb.journal.blobs import BlobRef, blob_path
from durable_nb.server.client import default_client

MB = 1 << 20
# The journal server's own peak, with small payloads only, is ~185 MB on the project's
# machines once it has answered its first query over a non-empty journal (DuckDB's first
# scan); a server that received a 200 MB payload would peak hundreds of MB above it.
SERVER_GROWTH_LIMIT = 25 * MB


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def test_a_200_mb_frame_is_a_blob_the_server_never_holds_and_replays_without_running(
        journal_home: Path):
    rows = 200 * MB // (4 * 8)
    calls: list[int] = []
    client = default_client()

    @durable_nb.activity
    def warm_up(i: int) -> int:
        return i

    for _ in range(2):  # a run and its replay: every query the big run makes, small
        open_run("warm-up").execute(lambda: warm_up(1))
    assert client.server_pid is not None
    server_pid, baseline = client.server_pid, peak_rss(client.server_pid)

    @durable_nb.activity
    def build() -> pd.DataFrame:
        calls.append(1)
        rng = np.random.default_rng(0)  # random floats: Parquet cannot shrink them
        return pd.DataFrame({name: rng.random(rows) for name in "abcd"})

    live = open_run("big-frame").execute(lambda: build())
    assert live.memory_usage(index=False).sum() >= 200 * MB
    (event,) = client.query(
        "SELECT data_json, data_pickle, meta FROM events WHERE run_id = 'big-frame-1' "
        "AND kind = 'step_completed'").to_pylist()
    ref = BlobRef.from_meta(event["meta"])
    assert event["data_json"] is None and event["data_pickle"] is None
    assert ref is not None and ref.format == "parquet" and ref.size >= 150 * MB
    assert blob_path(journal_home, ref.digest).stat().st_size == ref.size

    replayed = open_run("big-frame").execute(lambda: build())
    assert calls == [1]
    pd.testing.assert_frame_equal(replayed, live)
    assert durable_nb.steps("big-frame-1").status.tolist() == ["completed"]

    assert client.server_pid == server_pid
    peak = peak_rss(server_pid)
    assert peak - baseline < SERVER_GROWTH_LIMIT, (
        f"the journal server peaked at {peak / MB:.0f} MB, {(peak - baseline) / MB:.0f} MB "
        f"above its {baseline / MB:.0f} MB with small payloads")


SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import durable_nb
    from durable_nb.engine.identity import open_run

    log, phase = sys.argv[1], sys.argv[2]

    def note(text):
        with open(log, "a") as f:
            f.write(text + "\\n")

    @durable_nb.activity
    def make():
        note("make")
        return np.arange(50 * 2**20 // 8, dtype="float64")

    @durable_nb.activity
    def after(n):
        note("after " + phase)
        if phase == "first":
            time.sleep(600)  # killed here: make's result is durable by now
        return n

    def body():
        values = make()
        return {"sum": float(values.sum()), "n": after(int(values.size))}

    print(json.dumps(open_run("killed").execute(body)))
""")


def test_a_50_mb_array_is_replayed_after_the_kernel_that_made_it_is_killed(
        journal_home: Path, tmp_path: Path):
    script, log = tmp_path / "run.py", tmp_path / "calls.log"
    script.write_text(SCRIPT)
    env = {**os.environ, "DURABLE_NB_HOME": str(journal_home)}
    first = subprocess.Popen([sys.executable, str(script), str(log), "first"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while "after first" not in (log.read_text() if log.exists() else ""):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run never reached its second step"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()

    second = subprocess.run([sys.executable, str(script), str(log), "second"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    n = 50 * MB // 8
    assert json.loads(second.stdout.splitlines()[-1]) == {"sum": float(n * (n - 1) / 2),
                                                          "n": n}
    assert log.read_text().splitlines() == ["make", "after first", "after second"]
    (ref_meta,) = default_client().query(
        "SELECT meta FROM events WHERE run_id = 'killed-1' AND kind = 'step_completed' "
        "AND seq = 0").to_pylist()
    ref = BlobRef.from_meta(ref_meta["meta"])
    assert ref is not None and ref.format == "npy"
