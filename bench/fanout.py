"""Fan-out throughput: journaled no-op steps per second at 64 workers, beside plain threads.

What it measures
----------------
N no-op calls (``def noop(i): return i``) spread over W threads, timed end to end:

1. plain ``concurrent.futures.ThreadPoolExecutor(W)``: ``list(pool.map(noop, items))``,
   the floor of the same fan-out without any journal;
2. durable_nb: ``durable_nb.map(noop, items, max_workers=W)`` inside a decorated workflow,
   every call a journaled step acknowledged as durable before its result is used (group
   commit shares one fdatasync among the steps that arrive together);
3. the replay: the same workflow called again with the same arguments, so its completed
   run is re-executed and every step returns its recorded result without running (what
   re-running a notebook's cells after a kernel restart costs).

Each peer runs ``--rounds`` times (fresh run ids for durable_nb); the best and the median
round are printed. A benchmark, not a test: it prints figures and asserts nothing but
that every result came back in order.

Usage (from the project root)::

    .venv/bin/python bench/fanout.py [--steps N] [--workers W] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from step_overhead import machine_info  # noqa: E402 - a sibling script, not a package


def noop(i: int) -> int:
    return i


def plain(steps: int, workers: int) -> float:
    items = range(steps)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        out = list(pool.map(noop, items))
    elapsed = time.perf_counter() - start
    assert out == list(items)
    return elapsed


def durable(steps: int, workers: int, rounds: int) -> tuple[list[float], list[float], int]:
    import durable_nb

    step = durable_nb.activity(noop)

    @durable_nb.workflow
    def fan(n: int, round_: int) -> list[int]:
        return durable_nb.map(step, range(n), max_workers=workers)

    fan(10, -1)  # the journal server is up and warm
    times = []
    for r in range(rounds):
        start = time.perf_counter()
        out = fan(steps, r)
        times.append(time.perf_counter() - start)
        assert out == list(range(steps))
    recorded = completed_steps()
    replays = []
    for r in range(rounds):  # the same runs again: every step replays
        start = time.perf_counter()
        out = fan(steps, r)
        replays.append(time.perf_counter() - start)
        assert out == list(range(steps))
    assert completed_steps() == recorded, "a replay ran steps"
    durable_nb.shutdown_server()
    return times, replays, recorded


def completed_steps() -> int:
    import durable_nb

    return int(durable_nb.sql(
        "SELECT count(*) AS n FROM steps WHERE status = 'completed'").n[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    base = tempfile.mkdtemp(prefix="dnb-fanout-")
    os.environ["DURABLE_NB_HOME"] = os.path.join(base, "home")
    machine = machine_info(base)
    print(f"fan-out: {args.steps} no-op steps at {args.workers} workers, "
          f"{args.rounds} rounds; journal on {machine['temp_fs']} ({base})\n")

    results: list[tuple[str, list[float]]] = [
        ("plain ThreadPoolExecutor", [plain(args.steps, args.workers)
                                      for _ in range(args.rounds)]),
    ]
    times, replays, recorded = durable(args.steps, args.workers, args.rounds)
    results.append(("durable_nb.map (journaled)", times))
    results.append(("durable_nb.map (replayed)", replays))
    print(f"{'peer':<28} {'best steps/s':>13} {'median steps/s':>15} {'median s':>9}")
    for name, ts in results:
        print(f"{name:<28} {args.steps / min(ts):>13,.0f} "
              f"{args.steps / statistics.median(ts):>15,.0f} {statistics.median(ts):>9.3f}")
    print(f"\njournaled steps recorded: {recorded} "
          f"(expected {10 + args.steps * args.rounds})")
    print(f"machine: nproc={machine['nproc']}, python {machine['python']}, "
          f"duckdb {machine['duckdb']}, {machine['platform']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
