"""The example notebooks run top to bottom in a real kernel, twice against the same journal.

The second execution of a finished workflow replays it: nothing runs again.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from durable_nb.parameters import assignments, parameters_index

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
SUMMARY = re.compile(r"^(\S+) (\w+): (\d+) steps? \((\d+) replayed, (\d+) ran\)", re.M)


# Fast in CI: the notebooks' parameter cells default to steps long enough to kill by hand.
FAST = {"step_seconds": 0.05}


def execute(path: Path) -> str:
    """Run every cell in a fresh kernel, with FAST parameters after the cell tagged
    ``parameters`` (if any); return all the text the cells showed."""
    nb = nbformat.read(path, as_version=4)
    at = parameters_index(nb.cells)
    if at is not None:
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell(assignments(FAST)))
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    texts: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            assert out.output_type != "error", (
                f"{path.name}: cell failed: {out.ename}: {out.evalue}\n{cell.source}")
            if out.output_type == "stream":
                texts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                texts.append(out.data.get("text/plain", ""))
    return "\n".join(texts)


def test_notebooks_exist() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "sweep.ipynb"}


def test_notebooks_are_saved_without_outputs() -> None:
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_twice(path: Path, journal_home: Path) -> None:
    # journal_home (tests/conftest.py) sets DURABLE_NB_HOME; nbclient's kernel inherits it.
    first = execute(path)
    second = execute(path)
    assert (journal_home / "journal.duckdb").exists()
    if path.name != "sweep.ipynb":
        return

    (run_id, status, steps, replayed, ran), = SUMMARY.findall(first)
    assert (run_id, status) == ("sweep-1", "completed"), first
    assert int(steps) == 12 and int(replayed) == 0 and int(ran) == 12, first

    # The run finished: executing the notebook again replays it, nothing trains.
    (run_id2, status2, steps2, replayed2, ran2), = SUMMARY.findall(second)
    assert (run_id2, status2) == ("sweep-1", "completed"), second
    assert int(steps2) == 12 and int(replayed2) == 12 and int(ran2) == 0, second
    best = [line for line in second.splitlines() if line.startswith("best:")]
    assert best and best == [line for line in first.splitlines() if line.startswith("best:")]


def test_sweep_is_slow_enough_to_kill_by_hand() -> None:
    # Its text asks the reader to kill the kernel mid-sweep: 12 steps of step_seconds each.
    nb = nbformat.read(NOTEBOOKS[0].parent / "sweep.ipynb", as_version=4)
    at = parameters_index(nb.cells)
    assert at is not None, "sweep.ipynb has no cell tagged `parameters`"
    defaults: dict[str, object] = {}
    exec(nb.cells[at].source, defaults)  # noqa: S102 - the shipped notebook's own cell
    assert isinstance(defaults["step_seconds"], float) and defaults["step_seconds"] >= 1.5
    assert any("time.sleep(step_seconds)" in c.source for c in nb.cells)


def test_injected_parameters_are_assignments_of_identifiers() -> None:
    assert assignments({"step_seconds": 0.05, "name": "a'b"}).splitlines()[1:] == [
        "step_seconds = 0.05", "name = \"a'b\""]
    with pytest.raises(ValueError, match="not a Python identifier"):
        assignments({"step seconds": 1})
