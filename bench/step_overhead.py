"""Per-step overhead of durable execution: durable_nb vs DBOS vs plain Python.

What it measures
----------------
A sequential loop of N no-op steps (``def noop(i): return i``), run once for
warmup and once measured, for each peer:

1. plain Python: a direct call of the no-op function (the floor: call cost
   plus the cost of the timer itself);
2. durable_nb: an ``@durable_nb.activity`` called from a ``@durable_nb.workflow``;
   every call is journaled in DuckDB through the journal server and is
   acknowledged as durable before it returns;
3. DBOS (SQLite system database in a fresh temp file): a ``@DBOS.step()``
   called from a ``@DBOS.workflow()``; SQLite runs with its defaults
   (rollback journal, ``synchronous=FULL``), so each step's commit is fsynced;
4. joblib.Memory (only if joblib is importable): a cached no-op, cache misses
   (each call writes an entry, without fsync: not durable against a crash) and hits.

Each call is timed individually with ``time.perf_counter_ns`` from inside the
loop (inside the workflow for the durable peers), and the script reports the
median, p90 and p99 of those per-call times, plus the mean as total loop
time / N.

Why
---
The point of durable execution in a notebook is that it costs little enough
per step to wrap everything. Per-step overhead is dominated by the durable
write (fdatasync/fsync), so the figures depend on the filesystem holding the
temp dirs: the script prints it (``df -T``) together with the machine.

This is a benchmark, not a test: it prints figures and never asserts timings.

Usage (from the project root)::

    .venv/bin/python bench/step_overhead.py [--steps N] [--warmup W] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

perf_ns = time.perf_counter_ns


class PeerUnavailable(Exception):
    """The peer cannot run here (e.g. its package is not importable)."""


@dataclass(frozen=True)
class Result:
    """Per-step timing figures for one peer, in microseconds."""

    peer: str
    steps: int
    median_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    note: str = ""


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile (0 < q <= 1) of an ascending list, in ns."""
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return float(sorted_ns[rank - 1])


def summarize(peer: str, samples_ns: list[int], total_ns: int, note: str = "") -> Result:
    """Turn per-call samples and the loop's total time into a Result."""
    if not samples_ns:
        raise RuntimeError(f"{peer}: no timing samples were recorded")
    ordered = sorted(samples_ns)
    return Result(
        peer=peer,
        steps=len(samples_ns),
        median_us=percentile(ordered, 0.5) / 1e3,
        p90_us=percentile(ordered, 0.9) / 1e3,
        p99_us=percentile(ordered, 0.99) / 1e3,
        mean_us=total_ns / len(samples_ns) / 1e3,
        note=note,
    )


def check_executions(peer: str, executed: int, expected: int) -> str:
    """Note when the step body did not run exactly once per measured step."""
    if executed == expected:
        return ""
    note = f"step body ran {executed} times for {expected} steps"
    print(f"warning: {peer}: {note}", file=sys.stderr)
    return note


# --------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------


def bench_plain(steps: int, warmup: int, base_dir: str) -> Result:
    """Direct calls of a no-op function: the floor (call + timer cost)."""

    def noop(i: int) -> int:
        return i

    def loop(n: int, offset: int, timings: list[int]) -> int:
        timings.clear()
        start = perf_ns()
        for i in range(n):
            t0 = perf_ns()
            noop(offset + i)
            timings.append(perf_ns() - t0)
        return perf_ns() - start

    timings: list[int] = []
    loop(warmup, -warmup, timings)
    gc.collect()
    total = loop(steps, 0, timings)
    return summarize("plain python", timings, total)


def bench_durable_nb(steps: int, warmup: int, base_dir: str) -> Result:
    """@durable_nb.activity no-op called from a @durable_nb.workflow."""
    home = tempfile.mkdtemp(prefix="durable_nb_home_", dir=base_dir)
    # Must be set before durable_nb is first used (and imported, to be safe).
    os.environ["DURABLE_NB_HOME"] = home
    try:
        import durable_nb
    except Exception as exc:  # ImportError, or the package failing to import
        shutil.rmtree(home, ignore_errors=True)
        raise PeerUnavailable(f"{type(exc).__name__}: {exc}") from exc
    missing = [name for name in ("activity", "workflow") if not hasattr(durable_nb, name)]
    if missing:
        shutil.rmtree(home, ignore_errors=True)
        raise PeerUnavailable(f"the durable_nb package does not export {', '.join(missing)} yet")

    timings: list[int] = []
    totals: list[int] = []
    executed = [0]

    try:

        @durable_nb.activity
        def noop(i: int) -> int:
            executed[0] += 1
            return i

        @durable_nb.workflow
        def loop(n: int, offset: int) -> None:
            timings.clear()
            start = perf_ns()
            for i in range(n):
                t0 = perf_ns()
                noop(offset + i)
                timings.append(perf_ns() - t0)
            totals.append(perf_ns() - start)

        if warmup:
            loop(warmup, -warmup)
        gc.collect()
        executed[0] = 0
        loop(steps, 0)
        note = check_executions("durable_nb", executed[0], steps)
        journaled = count_journaled_steps(durable_nb)
        print(f"durable_nb journaled steps: {journaled} (expected {warmup + steps})")
        return summarize("durable_nb", timings, totals[-1], note)
    finally:
        shutdown = getattr(durable_nb, "shutdown_server", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception as exc:
                print(f"durable_nb.shutdown_server() failed: {exc!r}", file=sys.stderr)
        shutil.rmtree(home, ignore_errors=True)


def count_journaled_steps(durable_nb: Any) -> str:
    """Best effort: how many steps the journal holds, via the public ``sql`` API."""
    try:
        frame = durable_nb.sql("SELECT count(*) AS n FROM steps")
        return str(int(frame["n"].iloc[0]))
    except Exception as exc:
        return f"unknown ({type(exc).__name__}: {exc})"


def bench_dbos(steps: int, warmup: int, base_dir: str) -> Result:
    """@DBOS.step() no-op called from a @DBOS.workflow(), SQLite system DB."""
    try:
        from dbos import DBOS, DBOSConfig
    except Exception as exc:
        raise PeerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    db_dir = tempfile.mkdtemp(prefix="dbos_sqlite_", dir=base_dir)
    config: DBOSConfig = {
        "name": "step_overhead_bench",
        "system_database_url": f"sqlite:///{os.path.join(db_dir, 'dbos_sys.sqlite')}",
        "log_level": "WARNING",
    }
    timings: list[int] = []
    totals: list[int] = []
    executed = [0]

    @DBOS.step()
    def noop(i: int) -> int:
        executed[0] += 1
        return i

    @DBOS.workflow()
    def loop(n: int, offset: int) -> None:
        timings.clear()
        start = perf_ns()
        for i in range(n):
            t0 = perf_ns()
            noop(offset + i)
            timings.append(perf_ns() - t0)
        totals.append(perf_ns() - start)

    try:
        DBOS(config=config)
        DBOS.launch()
        if warmup:
            loop(warmup, -warmup)
        gc.collect()
        executed[0] = 0
        loop(steps, 0)
        note = check_executions("DBOS", executed[0], steps)
        return summarize("DBOS (SQLite)", timings, totals[-1], note)
    finally:
        DBOS.destroy(destroy_registry=True)
        shutil.rmtree(db_dir, ignore_errors=True)


def bench_joblib(steps: int, warmup: int, base_dir: str) -> list[Result]:
    """joblib.Memory-cached no-op: cache misses (distinct args), then hits."""
    try:
        import joblib
    except Exception as exc:
        raise PeerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    cache_dir = tempfile.mkdtemp(prefix="joblib_cache_", dir=base_dir)
    try:
        memory = joblib.Memory(location=cache_dir, verbose=0)

        def noop(i: int) -> int:
            return i

        cached = memory.cache(noop)

        def loop(n: int, offset: int, timings: list[int]) -> int:
            timings.clear()
            start = perf_ns()
            for i in range(n):
                t0 = perf_ns()
                cached(offset + i)
                timings.append(perf_ns() - t0)
            return perf_ns() - start

        timings: list[int] = []
        loop(warmup, -warmup, timings)
        gc.collect()
        miss_total = loop(steps, 0, timings)  # fresh args: every call misses
        miss = summarize("joblib.Memory miss", timings, miss_total, note="no fsync")
        hit_total = loop(steps, 0, timings)  # same args again: every call hits
        hit = summarize("joblib.Memory hit", timings, hit_total)
        return [miss, hit]
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# Environment and report
# --------------------------------------------------------------------------


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def filesystem_of(path: str) -> tuple[str, str]:
    """Return (fs type, df -T line) for path, best effort."""
    try:
        out = subprocess.run(
            ["df", "-T", path], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return "unknown", f"df -T failed: {exc}"
    lines = out.strip().splitlines()
    if len(lines) < 2:
        return "unknown", out.strip()
    line = " ".join(lines[1:])  # df may wrap a long device name onto two lines
    fields = line.split()
    return (fields[1] if len(fields) > 1 else "unknown"), line


def machine_info(base_dir: str) -> dict[str, Any]:
    fs_type, df_line = filesystem_of(base_dir)
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    return {
        "nproc": nproc,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "duckdb": package_version("duckdb"),
        "dbos": package_version("dbos"),
        "joblib": package_version("joblib"),
        "temp_dir": base_dir,
        "temp_fs": fs_type,
        "df": df_line,
    }


def print_table(results: list[Result]) -> None:
    headers = ("peer", "median µs", "p90 µs", "p99 µs", "mean µs")
    rows = [
        (r.peer, f"{r.median_us:.2f}", f"{r.p90_us:.2f}", f"{r.p99_us:.2f}", f"{r.mean_us:.2f}")
        for r in results
    ]
    widths = [max(len(row[c]) for row in [headers, *rows]) for c in range(len(headers))]

    def fmt(row: tuple[str, ...]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))
    for r in results:
        if r.note:
            print(f"note: {r.peer}: {r.note}")


def comparison(results: list[Result]) -> float | None:
    """DBOS median / durable_nb median (>1 means durable_nb is faster)."""
    by_peer = {r.peer: r for r in results}
    ours, theirs = by_peer.get("durable_nb"), by_peer.get("DBOS (SQLite)")
    if ours is None or theirs is None or ours.median_us <= 0:
        return None
    return theirs.median_us / ours.median_us


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=2000, help="measured steps (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="warmup steps (default 200)")
    parser.add_argument(
        "--tmpdir",
        default=None,
        help="base directory for the peers' temp dirs (default: the system temp dir)",
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON line at the end")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base_dir = os.path.realpath(args.tmpdir or tempfile.gettempdir())
    machine = machine_info(base_dir)
    print(f"step overhead: {args.steps} sequential no-op steps after {args.warmup} warmup steps")
    print(f"temp dir {base_dir}: filesystem {machine['temp_fs']}  ({machine['df']})")
    print()

    peers: list[tuple[str, Callable[[int, int, str], Result | list[Result]]]] = [
        ("plain python", bench_plain),
        ("durable_nb", bench_durable_nb),
        ("DBOS", bench_dbos),
        ("joblib", bench_joblib),
    ]
    results: list[Result] = []
    unavailable: dict[str, str] = {}
    for name, bench in peers:
        try:
            outcome = bench(args.steps, args.warmup, base_dir)
        except PeerUnavailable as exc:
            unavailable[name] = str(exc)
            print(f"{name} unavailable: {exc}")
            continue
        except Exception as exc:
            unavailable[name] = f"failed: {type(exc).__name__}: {exc}"
            print(f"{name} failed: {type(exc).__name__}: {exc}")
            continue
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    if unavailable:
        print()

    print_table(results)
    print()
    ratio = comparison(results)
    if ratio is None:
        print("durable_nb vs DBOS (median): n/a (both peers must have run)")
    elif ratio >= 1:
        print(f"durable_nb vs DBOS (median): {ratio:.1f}x faster")
    else:
        print(f"durable_nb vs DBOS (median): {1 / ratio:.1f}x slower")
    print(
        f"machine: nproc={machine['nproc']}, python {machine['python']} "
        f"({machine['implementation']}), duckdb {machine['duckdb']}, dbos {machine['dbos']}, "
        f"{machine['platform']}"
    )

    if args.json:
        payload = {
            "steps": args.steps,
            "warmup": args.warmup,
            "results": [asdict(r) for r in results],
            "unavailable": unavailable,
            "durable_nb_vs_dbos_median_speedup": ratio,
            "machine": machine,
        }
        print(json.dumps(payload, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
