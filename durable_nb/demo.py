"""``python -m durable_nb.demo``: kill a kernel in the middle of a sweep, then resume it.

Runs the cells of ``notebooks/sweep.ipynb`` in a real kernel with a throw-away journal home,
SIGKILLs the kernel while step ``--kill-at`` trains (watching the journal from this process),
starts a fresh kernel, runs the same cells again, and reports what the journal replayed, what
ran again and what ran for the first time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from durable_nb.parameters import assignments, cell_source, parameters_index
from durable_nb.server.discovery import wait_until

NOTEBOOK = "sweep.ipynb"
WORKFLOW = "sweep"
SUMMARY = re.compile(r"^(\S+) (\w+): (\d+) steps? \((\d+) replayed, (\d+) ran\).*$", re.M)


def find_notebook() -> Path:
    """``notebooks/sweep.ipynb`` of the source tree (beside the package) or of the cwd."""
    candidates = [Path(__file__).resolve().parent.parent / "notebooks" / NOTEBOOK,
                  Path.cwd() / "notebooks" / NOTEBOOK]
    for path in candidates:
        if path.is_file():
            return path
    tried = "\n  ".join(str(p) for p in candidates)
    sys.exit(f"durable_nb.demo: cannot find {NOTEBOOK}; tried:\n  {tried}\n"
             "Run the demo from a clone of the repository (`make demo`).")


def code_cells(path: Path, parameters: dict[str, Any]) -> list[str]:
    """The notebook's code cells, with ``parameters`` assigned after its parameters cell."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    sources = [cell_source(c) for c in cells]
    at = parameters_index(cells)
    if at is not None:
        sources.insert(at + 1, assignments(parameters))
    return sources


def ranges(seqs: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> 'steps 0–2, 5, 7–8'; [5] -> 'step 5'."""
    if not seqs:
        return "none"
    out: list[str] = []
    start = prev = seqs[0]
    for s in [*seqs[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(str(start) if start == prev else f"{start}–{prev}")
        if s is not None:
            start = prev = s
    return ("step " if len(seqs) == 1 else "steps ") + ", ".join(out)


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    value = wait_until(predicate, timeout)
    if not value:
        raise TimeoutError(f"durable_nb.demo: timed out after {timeout:g} s waiting for {what}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m durable_nb.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kill-at", type=int, default=5,
                        help="SIGKILL the kernel while this step runs (default 5)")
    parser.add_argument("--step-seconds", type=float, default=0.3, metavar="S",
                        help="seconds one training step takes (the notebook's own default, "
                             "for killing by hand, is 2; default here 0.3)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the journal home afterwards and print its path")
    args = parser.parse_args(argv)
    if args.kill_at < 0:
        parser.error("--kill-at takes a step number >= 0")
    if not args.step_seconds >= 0:
        parser.error("--step-seconds takes a number of seconds >= 0")

    notebook = find_notebook()
    cells = code_cells(notebook, {"step_seconds": args.step_seconds})
    wf_index = next((i for i, c in enumerate(cells) if c.lstrip().startswith("%%workflow")),
                    None)
    if wf_index is None:
        sys.exit(f"durable_nb.demo: {notebook} has no %%workflow cell")

    # A short path: the journal server's ipc socket lives in the home.
    home = Path(tempfile.mkdtemp(prefix="dnb-demo-"))
    os.environ["DURABLE_NB_HOME"] = str(home)  # this process reads the same journal

    import durable_nb
    from durable_nb.cli import main as cli
    from durable_nb.server.discovery import pid_alive, read_server_info
    from durable_nb.testing import KernelSession

    def step_rows(run_id: str) -> list[dict[str, Any]]:
        df = durable_nb.sql("SELECT seq, status, attempts FROM steps WHERE run_id = ? "
                            "ORDER BY seq", [run_id])
        return list(df.to_dict("records"))

    def run_status(run_id: str) -> str:
        return str(durable_nb.sql("SELECT status FROM runs WHERE run_id = ?", [run_id]).status[0])

    def latest_run() -> str | None:
        df = durable_nb.runs(workflow=WORKFLOW, limit=1)
        return None if df.empty else str(df.run_id[0])

    t0 = time.monotonic()
    print(f"notebook:     {notebook}")
    print(f"journal home: {home}\n")
    session = KernelSession(env={"DURABLE_NB_HOME": str(home)}, cwd=notebook.parent)
    try:
        # -- 1. run the notebook and kill the kernel while step k trains -------------------
        session.start()
        print(f"[kernel 1] pid {session.pid}: running the cells of {notebook.name}")
        for cell in cells[:wf_index]:
            session.run(cell).raise_for_error()
        session.submit(cells[wf_index])
        run_id = wait_for(latest_run, 60, f"the {WORKFLOW} run to start")
        k = args.kill_at

        def step_k_running() -> bool:
            if any(r["seq"] == k and r["status"] == "running" for r in step_rows(run_id)):
                return True
            if run_status(run_id) != "running":
                sys.exit(f"durable_nb.demo: {run_id} ended before step {k} started; "
                         "choose a smaller --kill-at")
            return False

        wait_for(step_k_running, 60, f"step {k} of {run_id} to start")
        session.kill()
        print(f"[kernel 1] SIGKILL while step {k} of {run_id} was running")
        status = wait_for(lambda: (s := run_status(run_id)) != "running" and s,
                          15, f"the journal server to notice the dead kernel of {run_id}")
        before = step_rows(run_id)
        done_before = [int(r["seq"]) for r in before if r["status"] == "completed"]
        in_flight = [int(r["seq"]) for r in before if r["status"] != "completed"]
        states = sorted({str(r["status"]) for r in before if r["status"] != "completed"})
        print(f"[journal]  {run_id} is {status}: {ranges(done_before)} completed, "
              f"{ranges(in_flight)} {'/'.join(states) or '-'}\n")

        # -- 2. a fresh kernel runs the same cells again ---------------------------------------
        session.restart()
        print(f"[kernel 2] pid {session.pid}: running the same cells again")
        outputs = [session.run(cell).raise_for_error() for cell in cells]
        text = outputs[wf_index].text
        summary = SUMMARY.search(text)
        best = next((line for line in text.splitlines() if line.startswith("best:")), None)

        after = step_rows(run_id)
        seqs = [int(r["seq"]) for r in after]
        replayed = [s for s in seqs if s in done_before]
        again = [s for s in seqs if s in in_flight]
        fresh = [s for s in seqs if s not in done_before and s not in in_flight]
        attempts = {int(r["seq"]): int(r["attempts"]) for r in after}

        print()
        print(f"replayed from the journal (not run): {ranges(replayed)}")
        print(f"ran again (in flight at the kill):   {ranges(again)} "
              f"(attempts: {', '.join(str(attempts[s]) for s in again) or '-'})")
        print(f"ran for the first time:              {ranges(fresh)}")
        print(f"run summary:  {summary.group(0) if summary else '(no summary line found)'}")
        print(f"final {best or 'best: (not printed)'}")
        print()
        print("$ durable-nb runs")
        cli(["runs"])
        print()
        print(f"$ durable-nb sql \"SELECT seq, status, attempts, duration_s, result "
              f"FROM steps WHERE run_id = '{run_id}'\"")
        cli(["sql", "SELECT seq, status, attempts, round(duration_s, 2) AS duration_s, result "
                    f"FROM steps WHERE run_id = '{run_id}' ORDER BY seq"])
        ok = (summary is not None and summary.group(2) == "completed"
              and len(again) == len(in_flight) and all(attempts[s] >= 2 for s in again))
    finally:
        session.shutdown()
        info = read_server_info(home)
        if info and pid_alive(pid := int(info["pid"])):
            durable_nb.shutdown_server()
            wait_for(lambda: not pid_alive(pid), 10, f"the journal server (pid {pid}) to exit")
        if args.keep:
            print(f"\njournal kept in {home}: DURABLE_NB_HOME={home} durable-nb show {WORKFLOW}-1")
        else:
            shutil.rmtree(home, ignore_errors=True)
    print(f"\ndemo finished in {time.monotonic() - t0:.1f} s; journal server stopped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
