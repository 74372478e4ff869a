"""``%%activity --executor process`` in a real kernel: prints reach the cell, a timed-out
attempt's worker is killed and the retry's result used, a failure keeps its type, and a
kernel interrupt stops the attempt in its worker."""

from __future__ import annotations

import json
from pathlib import Path

import durable_nb
from durable_nb.server.discovery import pid_alive
from durable_nb.testing import KernelSession
from durable_nb.testing.kernel import wait_for_file_text


def pid_log(path: Path) -> list[int]:
    """The worker pids an activity wrote to ``path``, one per attempt."""
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_what_a_process_activity_prints_reaches_the_cell_output(kernel: KernelSession):
    kernel.run(
        "%%activity --executor process\n"
        "import os, sys\n"
        "def hello(i):\n"
        "    print(f'hello {i} from {os.getpid()}')\n"
        "    print(f'warning {i}', file=sys.stderr)\n"
        "    return os.getpid()\n"
    ).raise_for_error()
    out = kernel.run("%%workflow greet\npids = [hello(i) for i in range(3)]\n")
    out.raise_for_error()
    pids = json.loads(kernel.run("print(pids)").raise_for_error().stdout)
    assert kernel.pid not in pids
    for i, pid in enumerate(pids):
        assert f"hello {i} from {pid}\n" in out.stdout
        assert f"warning {i}\n" in out.stderr
    assert "greet-1 completed: 3 steps (0 replayed, 3 ran)" in out.stdout


def test_an_attempt_past_its_timeout_has_its_worker_killed_and_the_retry_is_used(
        kernel: KernelSession, tmp_path: Path):
    pids = tmp_path / "pids"
    kernel.run(
        "%%activity --executor process --timeout 2 --retries 1 --backoff 0\n"
        "import os, time\n"
        "import durable_nb\n"
        "def fit(x):\n"
        f"    with open({str(pids)!r}, 'a') as f:\n"
        "        f.write(f'{os.getpid()}\\n')\n"
        "    if durable_nb.current_step().attempt == 1:\n"
        "        time.sleep(300)  # hangs: only killing its process ends it\n"
        "    return {'x': x, 'attempt': durable_nb.current_step().attempt}\n"
    ).raise_for_error()
    out = kernel.run("%%workflow fitting\nfitted = fit(7)\n").raise_for_error()
    assert "fitting-1 completed: 1 step (0 replayed, 1 ran)" in out.stdout
    fitted = json.loads(kernel.run("import json; print(json.dumps(fitted))")
                        .raise_for_error().stdout)
    assert fitted == {"x": 7, "attempt": 2}

    first, second = pid_log(pids)
    assert first != second
    assert not pid_alive(first), f"the timed-out attempt's worker {first} still runs"
    assert pid_alive(second)  # the retry's worker stays in the pool for the next attempt
    step = durable_nb.steps("fitting-1").iloc[0]
    assert (step.status, step.attempts) == ("completed", 2)
    failed = durable_nb.sql("SELECT error FROM events WHERE run_id = 'fitting-1' "
                            "AND kind = 'step_failed'").error
    assert list(failed) == [f"ActivityTimeout: activity fit did not finish within 2 s "
                            f"(its worker process {first} was killed)"]


def test_an_exception_raised_in_the_worker_keeps_its_type_and_names_its_step(
        kernel: KernelSession):
    kernel.run(
        "%%activity --executor process\n"
        "class BadRow(Exception):\n"
        "    pass\n"
        "def load(row):\n"
        "    if row == 2:\n"
        "        raise BadRow(f'row {row} is malformed')\n"
        "    return row\n"
    ).raise_for_error()
    out = kernel.run("%%workflow loading\nrows = [load(i) for i in range(4)]\n")
    assert out.status == "error" and out.ename == "ActivityFailed"
    assert "activity load() failed at step 2 of run loading-1" in out.evalue
    assert "BadRow: row 2 is malformed" in out.evalue
    # The worker's traceback is in the note, which says which step raised it, and where:
    # the line of the notebook cell, as a traceback from the kernel shows it.
    assert "in load\n    raise BadRow(f'row {row} is malformed')" in out.traceback
    assert "raised in worker process" in out.traceback
    assert "running load() at step 2 of run loading-1" in out.traceback

    cause = kernel.run(
        "import sys\n"
        "cause = sys.last_value.__cause__\n"
        "print(type(cause) is BadRow, isinstance(cause, BadRow), cause.args[0])\n"
        "print(cause.__notes__[0].splitlines()[0])\n"
    ).raise_for_error().stdout.splitlines()
    assert cause[0] == "True True row 2 is malformed"
    assert "load() at step 2 of run loading-1" in cause[1]
    assert list(durable_nb.steps("loading-1").status) == ["completed"] * 2 + ["failed"]


def test_a_kernel_interrupt_stops_the_attempt_in_its_worker_and_rerun_resumes(
        kernel: KernelSession, tmp_path: Path):
    log = tmp_path / "effects.log"
    kernel.run(
        "%%activity --executor process\n"
        "import time\n"
        "import durable_nb\n"
        "def slow(i):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f'start {i}\\n')\n"
        "    try:\n"
        "        if i == 1 and durable_nb.current_step().attempt == 1:\n"
        "            time.sleep(300)  # the attempt the interrupt lands in\n"
        "    except KeyboardInterrupt:\n"
        f"        with open({str(log)!r}, 'a') as f:\n"
        "            f.write(f'interrupted {i}\\n')\n"
        "        raise\n"
        "    return i * 10\n"
    ).raise_for_error()
    cell = "%%workflow slowly\nvalues = [slow(i) for i in range(3)]\n"
    msg = kernel.submit(cell)
    wait_for_file_text(log, "start 1\n")
    kernel.interrupt()
    out = kernel.wait(msg)
    assert out.status == "error" and out.ename == "KeyboardInterrupt"
    assert "slowly-1 interrupted" in out.stdout
    # Ctrl-C reaches the activity in its worker process, as it would in the kernel.
    wait_for_file_text(log, "interrupted 1\n")
    step = durable_nb.steps("slowly-1").set_index("seq").loc[1]
    assert step.status == "abandoned"  # not failed: the re-run runs it again

    resumed = kernel.run(cell).raise_for_error()
    assert "slowly-1 completed: 3 steps (1 replayed, 2 ran)" in resumed.stdout
    assert kernel.run("print(values)").raise_for_error().stdout.strip() == "[0, 10, 20]"
    assert log.read_text().splitlines() == [
        "start 0", "start 1", "interrupted 1", "start 1", "start 2"]
