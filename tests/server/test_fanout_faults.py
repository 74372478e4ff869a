"""The journal server SIGKILLed at random moments while 64 threads fan out into it."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import durable_nb
from durable_nb.engine.identity import open_run
from durable_nb.engine.run import RunContext
from durable_nb.server.discovery import pid_alive, wait_until

RUNS = 4
KILLS_PER_RUN = 5
ITEMS = 1500


def _live_server_pid(home: Path, killed: set[int]) -> int | None:
    """The pid of the server now serving ``home``, once it is not one already killed."""
    try:
        pid = int(json.loads((home / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None
    return pid if pid not in killed and pid_alive(pid) else None


def test_server_sigkilled_twenty_times_during_a_64_worker_fan_out_loses_no_seen_step(
        journal_home: Path):
    log: list[tuple[str, int]] = []  # ("start" | "acked", item), in real order
    log_lock = threading.Lock()

    @durable_nb.activity
    def work(i: int) -> int:
        with log_lock:
            log.append(("start", i))
        time.sleep(0.002)
        return i * i

    def on_event(ctx: RunContext, ev: dict[str, Any]) -> None:
        # Emitted after the journal acknowledged the step: the workflow now holds its result.
        if ev["kind"] == "step_completed":
            with log_lock:
                log.append(("acked", ev["seq"]))

    killed: set[int] = set()
    rng = random.Random(8)
    for run in range(RUNS):
        log.clear()
        ctx = open_run(f"faults{run}")
        ctx.listeners.append(on_event)
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def body(c: RunContext = ctx, outcome: dict[str, Any] = outcome,
                 done: threading.Event = done) -> None:
            try:
                outcome["value"] = c.execute(
                    lambda: durable_nb.map(work, range(ITEMS), max_workers=64))
            except BaseException as exc:  # reported by the assertion below
                outcome["error"] = exc
            finally:
                done.set()

        runner = threading.Thread(target=body)
        runner.start()
        for _ in range(KILLS_PER_RUN):
            time.sleep(rng.uniform(0.05, 0.4))
            pid = wait_until(lambda: _live_server_pid(journal_home, killed), 30)
            if done.is_set() or not pid:
                break
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
            wait_until(lambda p=pid: not pid_alive(p), 10)
        runner.join(300)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["value"] == [i * i for i in range(ITEMS)]
        # The durability rule: no step whose acknowledgement the run received started again.
        acked: set[int] = set()
        for what, item in log:
            if what == "acked":
                acked.add(item)
            else:
                assert item not in acked, f"step {item} ran again after it was acknowledged"
        assert acked == set(range(ITEMS))
        steps = durable_nb.steps(ctx.run_id)
        assert len(steps) == ITEMS and set(steps.status) == {"completed"}
        assert durable_nb.runs(workflow=f"faults{run}").iloc[0].status == "completed"
    assert len(killed) >= RUNS * KILLS_PER_RUN - 2  # a run may finish before its last kill
