"""Several processes on one journal home: kernels writing, a CLI reading, a server crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import durable_nb
from durable_nb.server.discovery import pid_alive, wait_until
from durable_nb.testing import KernelSession
from durable_nb.testing.kernel import wait_for_file_text
from tests.kernel.conftest import activity_cell, effect_counts

STEPS = 25


def _events_by_kind(run_id: str) -> dict[str, int]:
    rows = durable_nb.sql("SELECT kind, count(*) AS n FROM events WHERE run_id = ? "
                          "GROUP BY kind", [run_id])
    return dict(zip(rows.kind, rows.n, strict=True))


def test_two_kernels_and_a_polling_reader_lose_nothing_and_hit_no_lock(
        journal_home: Path, tmp_path: Path):
    env = {"DURABLE_NB_HOME": str(journal_home)}
    kernels = [KernelSession(env=env).start() for _ in range(2)]
    stop = threading.Event()
    problems: list[str] = []
    polls = {"cli": 0, "sql": 0}

    def poll() -> None:
        while not stop.is_set():
            proc = subprocess.run([sys.executable, "-m", "durable_nb.cli", "runs", "--json"],
                                  capture_output=True, text=True,
                                  env={**os.environ, **env}, timeout=60)
            if proc.returncode != 0 or "lock" in proc.stderr.lower():
                problems.append(proc.stderr)
            polls["cli"] += 1
            try:
                durable_nb.sql("SELECT count(*) FROM steps")
                polls["sql"] += 1
            except Exception as exc:  # any failure here is what the test looks for
                problems.append(repr(exc))

    poller = threading.Thread(target=poll)
    try:
        pending = []
        for name, kernel in zip(("left", "right"), kernels, strict=True):
            kernel.run("%load_ext durable_nb").raise_for_error()
            kernel.run(activity_cell(tmp_path / f"{name}.log", sleep=0.04)).raise_for_error()
            pending.append(kernel.submit(
                f"%%workflow {name}\nresults = [train(i) for i in range({STEPS})]\n"))
        poller.start()
        outs = [k.wait(m) for k, m in zip(kernels, pending, strict=True)]
    finally:
        stop.set()
        if poller.is_alive():
            poller.join()
        for kernel in kernels:
            kernel.shutdown()
    for out, name in zip(outs, ("left", "right"), strict=True):
        out.raise_for_error()
        assert f"{name}-1 completed: {STEPS} steps (0 replayed, {STEPS} ran)" in out.stdout
    assert problems == []
    assert polls["cli"] >= 2 and polls["sql"] >= 2
    for name in ("left", "right"):
        assert _events_by_kind(f"{name}-1") == {
            # inputs: train, and the time module it reads
            "run_started": 1, "activity_code": 1, "run_input": 2, "step_started": STEPS,
            "step_completed": STEPS, "run_status": 1,
        }


def test_journal_server_sigkill_mid_run_the_workflow_continues_and_loses_nothing(
        kernel: KernelSession, effects: Path, journal_home: Path):
    kernel.run(activity_cell(effects, sleep=0.1)).raise_for_error()
    msg = kernel.submit(f"%%workflow sweep\nresults = [train(i) for i in range({STEPS})]\n")
    wait_for_file_text(effects, "done 5\n")
    old_pid = json.loads((journal_home / "server.json").read_text())["pid"]
    os.kill(old_pid, signal.SIGKILL)
    out = kernel.wait(msg).raise_for_error()
    assert f"sweep-1 completed: {STEPS} steps" in out.stdout
    wait_until(lambda: not pid_alive(old_pid), 10, interval=0.05)
    new_pid = json.loads((journal_home / "server.json").read_text())["pid"]
    assert new_pid != old_pid and not pid_alive(old_pid)

    counts = effect_counts(effects)
    assert all(counts[f"done {i}"] == 1 for i in range(STEPS)), counts
    kinds = _events_by_kind("sweep-1")
    assert kinds["step_completed"] == STEPS and kinds["run_status"] == 1
    steps = durable_nb.steps("sweep-1")
    assert list(steps.seq) == list(range(STEPS)) and set(steps.status) == {"completed"}


def test_three_kernels_fanning_out_at_once_into_one_journal(journal_home: Path):
    env = {"DURABLE_NB_HOME": str(journal_home)}
    names = ("north", "south", "east")
    kernels = [KernelSession(env=env).start() for _ in names]
    items = 1500
    try:
        pending = []
        for name, kernel in zip(names, kernels, strict=True):
            kernel.run("%load_ext durable_nb").raise_for_error()
            kernel.run("%%activity\ndef square(i):\n    return i * i\n").raise_for_error()
            pending.append(kernel.submit(
                f"%%workflow {name}\nimport durable_nb\n"
                f"out = durable_nb.map(square, range({items}), max_workers=32)\n"
                f"assert out == [i * i for i in range({items})]\n"))
        outs = [k.wait(m) for k, m in zip(kernels, pending, strict=True)]
    finally:
        for kernel in kernels:
            kernel.shutdown()
    for out, name in zip(outs, names, strict=True):
        out.raise_for_error()
        assert f"{name}-1 completed: {items} steps (0 replayed, {items} ran)" in out.stdout
        assert _events_by_kind(f"{name}-1") == {
            "run_started": 1, "activity_code": 1, "run_input": 1, "step_started": items,
            "step_completed": items, "run_status": 1,
        }
