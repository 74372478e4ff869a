"""``durable-nb run``: whole notebooks in a real kernel, against a real journal, killed and
resumed by running the same command again."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

import durable_nb
from durable_nb.cli import main as cli_main
from durable_nb.runner import default_output, parse_value
from durable_nb.server.discovery import wait_until

REPO = Path(__file__).resolve().parent.parent
FINAL_LINE = re.compile(r"^(\S+)  [█░]+ (\d+)/(\d+) steps \((\d+) replayed\)  (\w+) in ", re.M)


def run_cmd(home: Path, *args: str | Path,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "durable_nb.cli", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "DURABLE_NB_HOME": str(home)})


def notebook(path: Path, *cells: tuple[str, str] | str) -> Path:
    """A notebook of code cells; a ``(tag, source)`` cell carries that tag."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    for cell in cells:
        tag, source = cell if isinstance(cell, tuple) else (None, cell)
        nb.cells.append(nbformat.v4.new_code_cell(
            source, metadata={"tags": [tag]} if tag else {}))
    nbformat.write(nb, path)
    return path


def outputs_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}")
    return "\n".join(parts)


def completions_per_step(run_id: str) -> dict[int, tuple[int, int]]:
    """seq -> (step_started events, step_completed events) in the journal."""
    rows = durable_nb.sql(
        "SELECT seq, count(*) FILTER (WHERE kind = 'step_started') AS started, "
        "count(*) FILTER (WHERE kind = 'step_completed') AS completed FROM events "
        "WHERE run_id = ? AND seq IS NOT NULL GROUP BY seq ORDER BY seq", [run_id])
    return {int(r.seq): (int(r.started), int(r.completed)) for r in rows.itertuples()}


PARAMS = ("parameters", "n = 2\nlabel = 'default'")
DOUBLE = ("%%activity\n"
          "def double(i):\n"
          "    return 2 * i\n")
WORKFLOW = ("%%workflow doubling\n"
            "results = [double(i) for i in range(n)]\n"
            "print(label, results)\n")


def test_parameter_values_are_python_literals_or_else_strings():
    assert parse_value("0.3") == 0.3 and parse_value("12") == 12
    assert parse_value("True") is True and parse_value("None") is None
    assert parse_value("[1, 2]") == [1, 2] and parse_value("{'a': 1}") == {"a": 1}
    assert parse_value("'quoted'") == "quoted"
    assert parse_value("sweep") == "sweep" and parse_value("a b") == "a b"
    assert parse_value("") == ""
    assert default_output(Path("/x/sweep.ipynb")) == Path("/x/sweep.out.ipynb")


def test_parameters_are_injected_after_the_parameters_cell_and_the_run_is_journaled(
        journal_home: Path, tmp_path: Path):
    path = notebook(tmp_path / "double.ipynb", "%load_ext durable_nb", PARAMS, DOUBLE,
                    WORKFLOW)
    done = run_cmd(journal_home, path, "-p", "n", "3", "-p", "label", "hello")
    assert done.returncode == 0, done.stderr
    # Not a terminal: plain progress lines, the last one the run's final state.
    assert "\r" not in done.stdout
    (run_id, completed, total, replayed, status), = FINAL_LINE.findall(done.stdout)
    assert (run_id, completed, total, replayed, status) == ("doubling-1", "3", "3", "0",
                                                          "completed"), done.stdout
    out = tmp_path / "double.out.ipynb"
    assert f"saved {out}" in done.stdout

    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags[1] == ["parameters"] and tags[2] == ["injected-parameters"]
    assert nb.cells[2].source.splitlines()[1:] == ["n = 3", "label = 'hello'"]
    assert "hello [0, 2, 4]" in outputs_text(nb.cells[4])
    assert any("text/html" in o.get("data", {}) for o in nb.cells[4].outputs)
    assert all(c.execution_count for c in nb.cells)
    assert nb.metadata["durable_nb"]["parameters"] == {"n": 3, "label": "hello"}
    assert nb.metadata["durable_nb"]["status"] == "completed"

    steps = durable_nb.steps("doubling-1")
    assert list(steps.status) == ["completed"] * 3
    assert [int(r) for r in steps.result] == [0, 2, 4]
    assert durable_nb.runs().notebook[0] == str(path)

    # Run again on the output notebook itself: its injected cell is replaced, not doubled;
    # the finished run replays (same parameters: the workflow cell's inputs are as
    # recorded). --json: no progress lines, one object at the end.
    again = run_cmd(journal_home, out, "-p", "n", "3", "-p", "label", "hello",
                    "-o", tmp_path / "again.ipynb", "--json")
    assert again.returncode == 0, again.stderr
    nb2 = nbformat.read(tmp_path / "again.ipynb", as_version=4)
    assert [c.metadata.get("tags", []) for c in nb2.cells].count(["injected-parameters"]) == 1
    report = json.loads(again.stdout)
    assert (report["status"], report["exit_code"], report["cells_executed"]) == (
        "completed", 0, 5)
    assert report["output"] == str(tmp_path / "again.ipynb")
    assert report["runs"] == [{"run_id": "doubling-1", "status": "completed", "completed": 3,
                               "replayed": 3, "recorded": 3}]


SLOW = ("%%activity\n"
        "import time\n"
        "def double(i):\n"
        "    time.sleep(0.4)\n"
        "    return 2 * i\n")


def test_on_a_terminal_the_progress_line_is_redrawn_in_place(journal_home: Path,
                                                             tmp_path: Path):
    import pty

    path = notebook(tmp_path / "slow.ipynb", "%load_ext durable_nb", PARAMS, SLOW, WORKFLOW)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "durable_nb.cli", "run", str(path),
                             "-p", "n", "4"], stdout=slave, stderr=subprocess.PIPE,
                            env={**os.environ, "DURABLE_NB_HOME": str(journal_home)})
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    shown = b"".join(chunks).decode()
    redraws = [part for part in shown.split("\r") if part.startswith("doubling-1  ")]
    assert any("steps completed" in part for part in redraws), shown  # while it ran
    assert "\x1b[K" in shown
    assert "doubling-1  ██████████ 4/4 steps (0 replayed)  completed" in redraws[-1], shown


def test_without_durable_nb_home_the_kernel_uses_the_default_home(tmp_path: Path):
    from tests.conftest import stop_server

    data_dir = tmp_path / "jupyter-data"
    env = {k: v for k, v in os.environ.items() if k != "DURABLE_NB_HOME"}
    env["JUPYTER_DATA_DIR"] = str(data_dir)
    path = notebook(tmp_path / "double.ipynb", "%load_ext durable_nb", PARAMS, DOUBLE,
                    WORKFLOW)
    try:
        done = subprocess.run([sys.executable, "-m", "durable_nb.cli", "run", str(path)],
                              capture_output=True, text=True, timeout=180, env=env)
        assert done.returncode == 0, done.stderr
        # The kernel recorded into the home this process read the progress from.
        assert "doubling-1  ██████████ 2/2 steps (0 replayed)  completed" in done.stdout
        assert (data_dir / "durable_nb" / "journal.duckdb").exists()
        nb = nbformat.read(tmp_path / "double.out.ipynb", as_version=4)
        assert nb.metadata["durable_nb"]["journal_home"] == str(data_dir / "durable_nb")
    finally:
        stop_server(data_dir / "durable_nb")


FLAKY = ("%%activity\n"
         "def check(i):\n"
         "    if i == fail_at:\n"
         "        raise ValueError(f'item {i} is bad')\n"
         "    return i\n")


def test_a_failing_activity_exits_1_naming_the_step_and_resumes_once_fixed(
        journal_home: Path, tmp_path: Path):
    path = notebook(tmp_path / "flaky.ipynb", "%load_ext durable_nb",
                    ("parameters", "fail_at = 2"), FLAKY,
                    "%%workflow checks\nchecked = [check(i) for i in range(4)]",
                    "print('after the workflow')")
    failed = run_cmd(journal_home, path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert ("durable-nb: cell 4 (%%workflow checks) failed: step 2 of run checks-1, check(), "
            "failed after 1 attempt: ValueError: item 2 is bad\n") in failed.stderr
    assert "raise ValueError(f'item {i} is bad')" in failed.stderr  # the traceback
    assert "run the same command again" in failed.stderr
    assert "checks-1  ██████" in failed.stdout and "2/3 steps (0 replayed)  failed" in (
        failed.stdout)
    nb = nbformat.read(tmp_path / "flaky.out.ipynb", as_version=4)
    nbformat.validate(nb)
    assert any(o.output_type == "error" and o.ename == "ActivityFailed"
               for o in nb.cells[3].outputs)
    assert nb.cells[4].outputs == [] and nb.metadata["durable_nb"]["status"] == "failed"

    # The fix comes in as a parameter: steps 0-1 replay, step 2 runs again, then the rest.
    fixed = run_cmd(journal_home, path, "-p", "fail_at", "-1")
    assert fixed.returncode == 0, fixed.stderr
    assert "checks-1  ██████████ 4/4 steps (2 replayed)  completed" in fixed.stdout
    assert completions_per_step("checks-1") == {0: (1, 1), 1: (1, 1), 2: (2, 1), 3: (1, 1)}
    nb = nbformat.read(tmp_path / "flaky.out.ipynb", as_version=4)
    assert "after the workflow" in outputs_text(nb.cells[5])


def test_a_kernel_death_is_reported_and_the_same_command_resumes(
        journal_home: Path, tmp_path: Path):
    marker = tmp_path / "died-once"
    path = notebook(
        tmp_path / "dies.ipynb", "%load_ext durable_nb",
        "%%activity\n"
        "import os, signal\n"
        "def step(i):\n"
        f"    if i == 2 and not os.path.exists({str(marker)!r}):\n"
        f"        open({str(marker)!r}, 'w').close()\n"
        "        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would\n"
        "    return i\n",
        "%%workflow dying\nvalues = [step(i) for i in range(4)]")
    died = run_cmd(journal_home, path)
    assert died.returncode == 3, died.stdout + died.stderr
    assert ("the kernel died (killed by SIGKILL: out of memory?) during cell 3 "
            "(%%workflow dying); run the same command again to resume") in died.stderr
    assert "run dying-1: 2 completed steps recorded" in died.stderr
    assert nbformat.read(tmp_path / "dies.out.ipynb", as_version=4).metadata[
        "durable_nb"]["status"] == "kernel_died"

    again = run_cmd(journal_home, path)
    assert again.returncode == 0, again.stderr
    assert "dying-1  ██████████ 4/4 steps (2 replayed)  completed" in again.stdout
    counts = completions_per_step("dying-1")
    # Step 2 ran again; its first start may not have reached the journal before the kill
    # (a start is sent without waiting for the server's acknowledgement).
    assert counts[2][1] == 1 and counts[2][0] in (1, 2)
    assert {s: counts[s] for s in (0, 1, 3)} == {0: (1, 1), 1: (1, 1), 3: (1, 1)}


def test_sweep_resumes_after_sigkill_of_the_whole_process_group(
        journal_home: Path, tmp_path: Path):
    path = tmp_path / "sweep.ipynb"
    shutil.copy(REPO / "notebooks" / "sweep.ipynb", path)
    command = [sys.executable, "-m", "durable_nb.cli", "run", str(path),
               "-p", "step_seconds", "0.3"]
    env = {**os.environ, "DURABLE_NB_HOME": str(journal_home)}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)  # its own process group

    def mid_sweep() -> list[int] | None:
        """The steps completed so far, once at least 3 are and one is running."""
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        if durable_nb.runs(workflow="sweep").empty:
            return None
        steps = durable_nb.steps("sweep-1")
        done = [int(s) for s in steps.seq[steps.status == "completed"]]
        return done if len(done) >= 3 and (steps.status == "running").any() else None

    try:
        done_before = wait_until(mid_sweep, 120, interval=0.1)
        assert done_before, (tmp_path / "first.log").read_text()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert len(done_before) < 12
    # What was saved before the kill opens as a notebook.
    nbformat.validate(nbformat.read(tmp_path / "sweep.out.ipynb", as_version=4))

    # At once: the kernel (in a session of its own, as Jupyter starts kernels) may still be
    # finishing its step; the command waits for it to notice its parent is gone and exit.
    t0 = time.monotonic()
    again = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert time.monotonic() - t0 < 0.3 * 12 + 30  # not a second full sweep

    (run_id, completed, total, replayed, status), = FINAL_LINE.findall(again.stdout)
    assert (run_id, completed, total, status) == ("sweep-1", "12", "12", "completed")
    assert len(done_before) <= int(replayed) < 12, again.stdout
    # Each step completed exactly once; those completed before the kill never started again.
    counts = completions_per_step("sweep-1")
    assert sorted(counts) == list(range(12))
    assert all(done == 1 for _, done in counts.values()), counts
    assert all(counts[s] == (1, 1) for s in done_before), counts

    nb = nbformat.read(tmp_path / "sweep.out.ipynb", as_version=4)
    nbformat.validate(nb)
    workflow_cell = next(c for c in nb.cells if c.source.startswith("%%workflow"))
    html = [o.data["text/html"] for o in workflow_cell.outputs if "text/html" in o.get("data", {})]
    assert html and "sweep-1" in html[0]
    text = outputs_text(workflow_cell)
    assert f"sweep-1 completed: 12 steps ({replayed} replayed" in text
    assert "resumed (was interrupted)" in text and "best:" in text
    sql_cell = next(c for c in nb.cells if "durable_nb.sql(" in c.source)
    assert any("text/html" in o.get("data", {}) for o in sql_cell.outputs)


# -- bad input: a clear message, exit status 1, and nothing written ------------------------


def _refused(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    assert cli_main(["run", *map(str, args)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_a_missing_notebook_is_refused(journal_home: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]):
    err = _refused(capsys, tmp_path / "nope.ipynb")
    assert err == f"durable-nb: no notebook at {tmp_path / 'nope.ipynb'}\n"
    assert "is a directory" in _refused(capsys, tmp_path)


def test_a_file_that_is_not_a_notebook_is_refused(journal_home: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]):
    (tmp_path / "notes.ipynb").write_text("just some text")
    err = _refused(capsys, tmp_path / "notes.ipynb")
    assert err.startswith(f"durable-nb: {tmp_path / 'notes.ipynb'} is not a Jupyter notebook: ")
    (tmp_path / "empty.ipynb").write_text("{}")
    assert "is not a Jupyter notebook" in _refused(capsys, tmp_path / "empty.ipynb")
    assert not list(tmp_path.glob("*.out.ipynb"))


def test_parameters_for_a_notebook_without_a_parameters_cell_are_refused(
        journal_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = notebook(tmp_path / "plain.ipynb", "x = 1")
    err = _refused(capsys, path, "-p", "x", "2")
    assert "the notebook has no cell tagged `parameters`" in err and "x" in err
    assert not (tmp_path / "plain.out.ipynb").exists()


def test_unknown_and_ill_formed_parameter_names_are_refused(
        journal_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = notebook(tmp_path / "p.ipynb", PARAMS, "print(n)")
    err = _refused(capsys, path, "-p", "m", "3")
    assert err == ("durable-nb: unknown parameter m: the cell tagged `parameters` (cell 1) "
                   "assigns n, label\n")
    assert "parameter name 'two words' is not a Python identifier" in _refused(
        capsys, path, "-p", "two words", "3")
    assert "not a Python identifier" in _refused(capsys, path, "-p", "class", "3")
    assert "must be an .ipynb file" in _refused(capsys, path, "-o", tmp_path / "out.txt")
    assert "no Jupyter kernel named 'no-such-kernel'" in _refused(
        capsys, path, "-k", "no-such-kernel", "-o", tmp_path / "k.ipynb")
    assert not (tmp_path / "k.ipynb").exists()
    assert not (tmp_path / "p.out.ipynb").exists()
