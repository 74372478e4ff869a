"""A fan-out of 200 steps at concurrency 8 in a real kernel, SIGKILLed mid-way: what the
journal completed replays, only the steps in flight at the kill run again (in threads of
the kernel, or in its worker processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import durable_nb
from durable_nb.server.discovery import wait_until
from durable_nb.testing import KernelSession
from tests.kernel.conftest import activity_cell, effect_counts, logged, restart

STEPS, WORKERS, KILL_AFTER = 200, 8, 60

FANOUTS = {
    "map": (
        "%%workflow fan\n"
        "import durable_nb\n"
        f"results = durable_nb.map(train, range({STEPS}), max_workers={WORKERS})\n"
    ),
    "submit": (
        f"%%workflow fan --max-concurrency {WORKERS}\n"
        "import durable_nb\n"
        f"futures = [train.submit(i) for i in range({STEPS})]\n"
        "results = durable_nb.gather(futures)\n"
    ),
}


@pytest.mark.parametrize(("fanout", "executor"),
                         [("map", "thread"), ("submit", "thread"), ("map", "process")])
def test_a_killed_fanout_reruns_only_the_steps_in_flight_and_keeps_call_order(
        kernel: KernelSession, effects: Path, fanout: str, executor: str):
    cell = FANOUTS[fanout]
    options = f"--executor {executor}"
    # How many run at once: the threads, or the kernel's pool of one process per core.
    at_once = WORKERS if executor == "thread" else min(WORKERS, os.cpu_count() or 1)
    kernel.run(activity_cell(effects, options=options, sleep=0.1)).raise_for_error()
    kernel.submit(cell)
    assert wait_until(lambda: len(logged(effects, "done")) >= KILL_AFTER, 120, interval=0.02)
    kernel.kill()

    # What the dead kernel left: the journal (its server outlives the kernel) and the log.
    at_kill = durable_nb.steps("fan-1")
    journaled = set(at_kill.seq[at_kill.status == "completed"])
    started = logged(effects, "start")
    in_flight = started - journaled
    assert len(journaled) >= KILL_AFTER - WORKERS and len(journaled) < STEPS, journaled
    assert 0 < len(in_flight) <= at_once, sorted(in_flight)

    restart(kernel)
    kernel.run(activity_cell(effects, options=options, sleep=0.01)).raise_for_error()
    out = kernel.run(cell).raise_for_error()
    assert (f"fan-1 completed: {STEPS} steps ({len(journaled)} replayed, "
            f"{STEPS - len(journaled)} ran)") in out.stdout
    assert "resumed (was interrupted)" in out.stdout
    results = json.loads(kernel.run("import json; print(json.dumps(results))")
                         .raise_for_error().stdout)
    assert results == [{"item": i, "loss": (i - 3) ** 2} for i in range(STEPS)]  # call order

    counts = effect_counts(effects)
    for i in range(STEPS):
        if i in journaled:  # replayed: never logged again
            assert (counts[f"start {i}"], counts[f"done {i}"]) == (1, 1), i
        elif i in in_flight:  # the attempt the kill cut short, and one more
            assert counts[f"start {i}"] == 2 and counts[f"done {i}"] in (1, 2), i
        else:
            assert (counts[f"start {i}"], counts[f"done {i}"]) == (1, 1), i
    assert sum(n for line, n in counts.items() if line.startswith("start")) \
        == STEPS + len(in_flight)

    steps = durable_nb.steps("fan-1")
    assert list(steps.seq) == list(range(STEPS))
    assert set(steps.status) == {"completed"}
    attempts = dict(zip(steps.seq, steps.attempts, strict=True))
    assert all(attempts[i] == 1 for i in journaled)
    # A second attempt only for steps whose first had begun (its start record precedes
    # the activity's first line, so the kill may fall between them): no more than ran
    # at once, and none for a step waiting for a thread or a worker process.
    again = {i for i, n in attempts.items() if n > 1}
    assert again <= set(range(STEPS)) - journaled and len(again) <= at_once, sorted(again)

    # An uninterrupted run of the same cell, from nothing, gives the same results.
    clean = kernel.run(cell.replace("%%workflow fan", "%%workflow fan --new", 1))
    assert f"fan-2 completed: {STEPS} steps (0 replayed, {STEPS} ran)" \
        in clean.raise_for_error().stdout
    again = json.loads(kernel.run("print(json.dumps(results))").raise_for_error().stdout)
    assert again == results
