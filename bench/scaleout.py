"""Scale-out on the journal home's Dask workers: a CPU-bound sweep on 1 worker and on 2.

What it measures
----------------
A sweep of ``--steps`` calls of a pure-Python CPU-bound function (a loop of integer
arithmetic that holds the GIL throughout, calibrated on this machine to take ``--seconds``
per call), timed end to end:

1. plain Python, sequential: ``[burn(i) for i in range(steps)]``, the work itself;
2. durable_nb with ``executor="dask"`` on the home's cluster service
   (``durable_nb.workers.start(home, n_workers=N)``, as ``durable-nb workers start
   --workers N`` does) with 1 worker, then with 2: ``durable_nb.map`` submits every step at
   once, each a task that runs on a worker process and journals its own completion;
3. the replay of the 2-worker sweep: the same workflow called again, every step returned
   from the journal without reaching the cluster.

Each cluster gets a small warm-up sweep first (its workers import durable_nb and connect
to the journal server) and is stopped before the next starts; starting it is not timed.
The speed-up is the 1-worker time over the 2-worker time (median rounds, and best rounds:
on a machine shared with other work the best round says more about what the cores can
do). A benchmark, not a test: it
prints figures and asserts nothing but that every sweep returns the sequential results,
in order.

Usage (from the project root)::

    .venv/bin/python bench/scaleout.py [--steps 16] [--seconds 0.5] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from step_overhead import machine_info  # noqa: E402 - a sibling script, not a package

ITERATIONS = 1_000_000  # set by calibrate(); a global, so it travels with burn()


def burn(seed: int) -> int:
    """CPU-bound pure Python: ITERATIONS rounds of a linear congruential generator."""
    x = seed
    for _ in range(ITERATIONS):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def calibrate(seconds: float) -> int:
    """How many iterations make ``burn`` take ``seconds`` here: a short probe for a first
    guess, then the best of three calls of that length to correct it."""
    global ITERATIONS
    for probe in (200_000, None):
        ITERATIONS = probe or ITERATIONS
        took = min(_timed(lambda: burn(1)) for _ in range(3))
        ITERATIONS = max(1, round(ITERATIONS * seconds / took))
    return ITERATIONS


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sequential(steps: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    out = [burn(i) for i in range(steps)]
    return time.perf_counter() - start, out


def on_dask(home: Path, n_workers: int, steps: int, rounds: int,
            expected: list[int]) -> tuple[list[float], list[float]]:
    """Timed sweeps on a fresh cluster of ``n_workers``; then their replays."""
    import durable_nb
    from durable_nb import workers

    step = durable_nb.activity(burn, executor="dask")

    @durable_nb.workflow(name=f"sweep-{n_workers}w")
    def sweep(n: int, round_: int, iterations: int) -> list[int]:
        return durable_nb.map(step, range(n), max_workers=n)

    info = workers.start(home, n_workers=n_workers)
    assert info["workers"] == n_workers, info
    try:
        warm = 2 * n_workers
        assert sweep(warm, -1, ITERATIONS) == expected[:warm]
        times = []
        for r in range(rounds):
            start = time.perf_counter()
            out = sweep(steps, r, ITERATIONS)
            times.append(time.perf_counter() - start)
            assert out == expected, "the sweep on Dask returned other results"
    finally:
        workers.close_clients()
        workers.stop(home)
    replays = []
    for r in range(rounds):  # the cluster is gone: only the journal can answer
        start = time.perf_counter()
        assert sweep(steps, r, ITERATIONS) == expected
        replays.append(time.perf_counter() - start)
    return times, replays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=0.5, help="CPU seconds per step")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    base = tempfile.mkdtemp(prefix="dnb-scaleout-")
    os.environ["DURABLE_NB_HOME"] = os.path.join(base, "home")
    import durable_nb
    from durable_nb.journal.home import journal_home

    home = journal_home()  # made private (0700), as the CLI makes it

    machine = machine_info(base)
    load_before = os.getloadavg()[0]
    iterations = calibrate(args.seconds)
    seq = [sequential(args.steps) for _ in range(args.rounds)]
    expected = seq[0][1]
    assert all(out == expected for _, out in seq)
    peers: list[tuple[str, list[float]]] = [("plain Python, sequential", [t for t, _ in seq])]
    replays: list[float] = []
    for n in (1, 2):
        times, replays = on_dask(home, n, args.steps, args.rounds, expected)
        peers.append((f"durable_nb dask, {n} worker{'s' if n > 1 else ''}", times))
    peers.append(("replay of the 2-worker sweep", replays))
    durable_nb.shutdown_server()
    load_after = os.getloadavg()[0]

    one, two = (statistics.median(ts) for _, ts in peers[1:3])
    best_one, best_two = (min(ts) for _, ts in peers[1:3])
    figures = {
        "steps": args.steps, "iterations": iterations, "rounds": args.rounds,
        "peers": {name: {"best_s": round(min(ts), 3), "median_s": round(statistics.median(ts), 3)}
                  for name, ts in peers},
        "speedup_2_over_1": round(one / two, 2),
        "speedup_2_over_1_best": round(best_one / best_two, 2),
        "sequential_over_2": round(statistics.median(peers[0][1]) / two, 2),
        "loadavg_1min": [round(load_before, 2), round(load_after, 2)],
        "nproc": machine["nproc"], "python": machine["python"],
        "platform": machine["platform"],
    }
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"scale-out: {args.steps} CPU-bound steps of ~{args.seconds:g} s "
          f"({iterations:,} iterations each), {args.rounds} rounds; "
          f"journal on {machine['temp_fs']} ({base})\n")
    print(f"{'peer':<30} {'best s':>8} {'median s':>9} {'steps/s':>9}")
    for name, ts in peers:
        print(f"{name:<30} {min(ts):>8.3f} {statistics.median(ts):>9.3f} "
              f"{args.steps / statistics.median(ts):>9.2f}")
    print(f"\nspeed-up, 2 Dask workers over 1: {figures['speedup_2_over_1']:.2f}x median, "
          f"{figures['speedup_2_over_1_best']:.2f}x best round "
          f"(median over plain sequential: {figures['sequential_over_2']:.2f}x)")
    print(f"machine: nproc={machine['nproc']}, python {machine['python']}, "
          f"{machine['platform']}; 1-min load average {load_before:.2f} at the start, "
          f"{load_after:.2f} at the end (other work competes for the cores above "
          f"{machine['nproc']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
