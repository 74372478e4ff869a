"""Dask-executed steps outlive the kernel: a real kernel, SIGKILLed while its step runs on
the journal home's Dask workers, and a fresh kernel that resumes the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from durable_nb.testing import KernelSession
from durable_nb.testing.kernel import CellResult, wait_for_file_text
from tests.kernel.conftest import activity_cell, effect_counts, restart

pytest.importorskip("distributed")

WORKFLOW = (
    "%%workflow dasksweep\n"
    "results = [train(i) for i in range({n})]\n"
)


def kill_while_running(kernel: KernelSession, effects: Path, steps: int, seq: int,
                       sleep: float) -> None:
    """Run a sweep of ``steps`` Dask steps of ``sleep`` s each; SIGKILL the kernel once
    step ``seq`` has started on its worker."""
    kernel.run(activity_cell(effects, options="--executor dask", sleep=sleep)).raise_for_error()
    kernel.submit(WORKFLOW.format(n=steps))
    wait_for_file_text(effects, f"start {seq}\n", timeout=120)
    kernel.kill()


def rerun(kernel: KernelSession, effects: Path, steps: int) -> CellResult:
    """The sweep's cells run again in the (restarted) kernel."""
    kernel.run(activity_cell(effects, options="--executor dask", sleep=0)).raise_for_error()
    return kernel.run(WORKFLOW.format(n=steps)).raise_for_error()


def test_a_dask_step_running_when_the_kernel_dies_completes_and_is_replayed(
        kernel: KernelSession, effects: Path):
    kill_while_running(kernel, effects, steps=3, seq=1, sleep=3)
    # The task runs on on its worker, and journals its result, with no kernel alive.
    wait_for_file_text(effects, "done 1\n", timeout=60)

    restart(kernel)
    out = rerun(kernel, effects, steps=3)
    assert "dasksweep-1 completed: 3 steps (2 replayed, 1 ran)" in out.stdout
    results = json.loads(kernel.run("import json; print(json.dumps(results))")
                         .raise_for_error().stdout)
    assert results == [{"item": i, "loss": (i - 3) ** 2} for i in range(3)]
    counts = effect_counts(effects)
    assert (counts["start 1"], counts["done 1"]) == (1, 1)  # it ran exactly once


def test_a_resumed_run_waits_for_its_step_still_running_on_dask(
        kernel: KernelSession, effects: Path):
    kill_while_running(kernel, effects, steps=2, seq=0, sleep=6)

    restart(kernel)  # back while step 0 still runs on its worker
    assert "done 0" not in effects.read_text()
    out = rerun(kernel, effects, steps=2)
    assert "still running on the Dask cluster" in out.stdout + out.stderr
    assert "waiting for it instead of running it again" in out.stdout + out.stderr
    assert "dasksweep-1 completed: 2 steps (1 replayed, 1 ran)" in out.stdout
    counts = effect_counts(effects)
    assert (counts["start 0"], counts["done 0"]) == (1, 1)  # attached to, not re-run
    assert (counts["start 1"], counts["done 1"]) == (1, 1)
