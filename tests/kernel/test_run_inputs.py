"""A workflow cell's inputs (names from other cells) are journaled with its run, so a
resume needs nothing but the journal; a changed input is a named error or a fork."""

from __future__ import annotations

from pathlib import Path

import durable_nb
from durable_nb.server.client import default_client
from durable_nb.testing import KernelSession
from durable_nb.testing.kernel import wait_for_file_text
from tests.kernel.conftest import activity_cell, effect_counts, restart

SETUP = "import math\ngrid = [1, 2, 3, 4, 5, 6]\nscale = {'factor': 10}\n"
SWEEP = (
    "%%workflow sweep\n"
    "results = [train(i * scale['factor']) for i in grid]\n"
    "top = math.floor(max(r['loss'] for r in results))\n"
)


def _inputs(run_id: str) -> dict[str, dict[str, object]]:
    rows = default_client().query(
        "SELECT name, preview, meta->>'input' AS kind FROM events "
        "WHERE run_id = ? AND kind = 'run_input' ORDER BY id", [run_id]).to_pylist()
    return {r["name"]: r for r in rows}


def test_resume_in_a_fresh_kernel_restores_the_names_the_cell_reads(
        kernel: KernelSession, effects: Path):
    kernel.run(activity_cell(effects)).raise_for_error()
    kernel.run(SETUP).raise_for_error()
    kernel.submit(SWEEP)
    wait_for_file_text(effects, "start 30\n")
    kernel.kill()

    recorded = _inputs("sweep-1")
    assert {k: v["kind"] for k, v in recorded.items()} == {
        "grid": "value", "scale": "value", "math": "module", "train": "activity",
        "time": "module"}  # time: what train reads
    assert recorded["grid"]["preview"] == "[1,2,3,4,5,6]"

    restart(kernel)  # no other cell runs: only the journal knows grid, scale, math, train
    out = kernel.run("%workflow resume sweep-1").raise_for_error()
    assert "defined from the journal: train" in out.stdout
    assert "restored from the journal: grid, math, scale" in out.stdout
    assert "sweep-1 completed: 6 steps (2 replayed, 4 ran)" in out.stdout
    assert kernel.run("print(top, grid)").stdout.strip() == "3249 [1, 2, 3, 4, 5, 6]"
    counts = effect_counts(effects)
    assert [counts[f"done {i * 10}"] for i in range(1, 7)] == [1] * 6
    assert durable_nb.runs().set_index("run_id").loc["sweep-1", "status"] == "completed"


def test_rerunning_only_the_workflow_cell_after_a_restart_restores_its_inputs(
        kernel: KernelSession, effects: Path):
    kernel.run(activity_cell(effects, sleep=0)).raise_for_error()
    kernel.run(SETUP).raise_for_error()
    kernel.run(SWEEP.replace("for i in grid]", "for i in grid if i < 4]")).raise_for_error()
    restart(kernel)
    out = kernel.run(SWEEP.replace("for i in grid]", "for i in grid if i < 4]"))
    out.raise_for_error()
    assert "restored from the journal: grid, math, scale" in out.stdout
    assert "sweep-1 completed: 3 steps (3 replayed, 0 ran)" in out.stdout


def test_a_changed_input_of_an_unfinished_run_is_a_named_error(
        kernel: KernelSession, effects: Path):
    kernel.run(activity_cell(effects, fail_on=30, sleep=0)).raise_for_error()
    kernel.run(SETUP).raise_for_error()
    assert kernel.run(SWEEP).ename == "ActivityFailed"  # sweep-1 failed at step 2

    kernel.run("grid = [1, 2, 4, 5, 6]").raise_for_error()
    out = kernel.run(SWEEP)
    assert out.ename == "InputChanged", out.text  # a NondeterminismError
    assert "Traceback" not in out.traceback  # the message, not internal frames
    assert "`grid` recorded [1,2,3,4,5,6], now [1,2,4,5,6]" in out.evalue
    assert "del grid" in out.evalue and "%%workflow sweep --new" in out.evalue
    # Nothing recorded is lost, and the old input is still the run's.
    assert _inputs("sweep-1")["grid"]["preview"] == "[1,2,3,4,5,6]"
    assert list(durable_nb.steps("sweep-1").status) == ["completed", "completed", "failed"]

    # The way out it names: drop the name, the journal's value comes back.
    kernel.run(activity_cell(effects, sleep=0)).raise_for_error()
    out = kernel.run("del grid").raise_for_error()
    out = kernel.run(SWEEP).raise_for_error()
    assert "restored from the journal: grid" in out.stdout
    assert "sweep-1 completed: 6 steps (2 replayed, 4 ran)" in out.stdout


def test_a_changed_input_of_a_completed_run_forks_and_says_so(
        kernel: KernelSession, effects: Path):
    kernel.run(activity_cell(effects, sleep=0)).raise_for_error()
    kernel.run(SETUP).raise_for_error()
    kernel.run(SWEEP).raise_for_error()

    # Only the final expression reads the changed input: every step still matches.
    kernel.run("import math as m2\nmath = m2\nscale2 = 1").raise_for_error()
    kernel.run("scale = {'factor': 10, 'note': 'x'}").raise_for_error()
    out = kernel.run(SWEEP).raise_for_error()
    assert ("input `scale` differs from run sweep-1: continuing as sweep-2, steps 0–5 reused"
            in out.stdout), out.stdout
    assert "sweep-2 completed: 6 steps (6 replayed, 0 ran)" in out.stdout
    assert _inputs("sweep-2")["scale"]["preview"] == '{"factor":10,"note":"x"}'
    assert _inputs("sweep-1")["scale"]["preview"] == '{"factor":10}'

    # A replay with the same inputs stays the same run.
    out = kernel.run(SWEEP).raise_for_error()
    assert "sweep-2 completed: 6 steps (6 replayed, 0 ran)" in out.stdout
    assert "continuing as" not in out.stdout


def test_an_input_that_cannot_be_recorded_names_the_cells_to_run(
        kernel: KernelSession, effects: Path):
    kernel.run(activity_cell(effects)).raise_for_error()
    kernel.run("import threading\nmodel = threading.Lock()\ngrid = [1, 2, 3, 4]").raise_for_error()
    kernel.submit("%%workflow fit\nout = [train(i) for i in grid if model is not None]\n")
    wait_for_file_text(effects, "start 3\n")
    kernel.kill()
    recorded = _inputs("fit-1")
    assert recorded["model"]["kind"] == "unrecorded"

    restart(kernel)
    out = kernel.run("%workflow resume fit-1")
    assert out.ename == "MissingInput", out.text
    assert ("reads `model`, which this kernel does not define, and run fit-1 could not "
            "record it: a _thread.lock cannot be stored") in out.evalue
    assert "Run the cells that define `model`, then re-run this cell." in out.evalue
    assert "Traceback" not in out.traceback  # the message, not internal frames
    assert list(durable_nb.steps("fit-1").status[:2]) == ["completed", "completed"]

    kernel.run("import threading\nmodel = threading.Lock()").raise_for_error()
    out = kernel.run("%workflow resume fit-1").raise_for_error()
    assert "restored from the journal: grid" in out.stdout
    assert "fit-1 completed: 4 steps (2 replayed, 2 ran)" in out.stdout


def test_names_the_activities_read_are_restored_too_and_may_change(
        kernel: KernelSession, effects: Path):
    # As in notebooks/sweep.ipynb: the activity sleeps for a parameter from another cell.
    kernel.run("step_seconds = 0.3").raise_for_error()
    kernel.run(activity_cell(effects).replace("deadline = time.monotonic() + 0.2",
                                              "deadline = time.monotonic() + step_seconds"))
    kernel.run("grid = [1, 2, 3, 4, 5]").raise_for_error()
    cell = "%%workflow slow\nout = [train(i) for i in grid]\n"
    kernel.submit(cell)
    wait_for_file_text(effects, "start 3\n")
    kernel.kill()
    assert _inputs("slow-1")["step_seconds"]["preview"] == "0.3"

    restart(kernel)
    out = kernel.run("%workflow resume slow-1").raise_for_error()
    assert "restored from the journal: grid, step_seconds" in out.stdout
    assert "slow-1 completed: 5 steps (2 replayed, 3 ran)" in out.stdout

    # A changed activity global is no divergence (like changed activity code): recorded anew.
    kernel.run("step_seconds = 0.01").raise_for_error()
    kernel.run("%%workflow slow2\nout = [train(i) for i in grid[:1]]\n").raise_for_error()
    kernel.kill()
    restart(kernel)
    kernel.run("step_seconds = 0.02").raise_for_error()
    out = kernel.run("%workflow resume slow2-1").raise_for_error()
    assert "slow2-1 completed: 1 step (1 replayed, 0 ran)" in out.stdout


def test_values_of_notebook_defined_classes_match_after_a_kernel_restart(
        kernel: KernelSession, effects: Path):
    # A class defined in a cell pickles by value, with that cell's file name, which is new
    # in every kernel: its instances (an input, a step's argument) must still hash alike.
    define = ("from dataclasses import dataclass\n@dataclass\nclass Cfg:\n    lr: float\n"
              "    def label(self):\n        return f'lr={self.lr}'\n"
              "grid = [Cfg(0.1), Cfg(0.01), Cfg(0.001), Cfg(0.0001)]\n")
    train = ("%%activity\nimport time\ndef train(cfg):\n"
             f"    with open({str(effects)!r}, 'a') as f:\n"
             "        f.write(f'start {cfg.label()}\\n')\n"
             "    time.sleep(0.3)\n    return cfg.lr * 2\n")
    cell = "%%workflow cfgs\nout = [train(c) for c in grid]\n"
    kernel.run(train).raise_for_error()
    kernel.run(define).raise_for_error()
    kernel.submit(cell)
    wait_for_file_text(effects, "start lr=0.001\n")
    kernel.kill()

    restart(kernel)  # the user runs all cells again
    kernel.run(train).raise_for_error()
    kernel.run(define).raise_for_error()
    out = kernel.run(cell)
    assert out.status == "ok", out.text
    assert "cfgs-1 completed: 4 steps (2 replayed, 2 ran)" in out.stdout
