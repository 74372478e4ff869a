"""The run view in a real kernel: displayed with an HTML summary, background runs, show()."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

import durable_nb
from durable_nb.testing import KernelSession

WIDGET = "application/vnd.jupyter.widget-view+json"

ACTIVITY = "%%activity\nimport time\ndef work(i, pause=0.0):\n    time.sleep(pause)\n" \
           "    return i * i\n"


def test_workflow_cell_displays_a_live_view_whose_final_summary_is_saved(
        kernel: KernelSession):
    kernel.run(ACTIVITY).raise_for_error()
    out = kernel.run("%%workflow squares\nvalues = [work(i) for i in range(4)]\n")
    out.raise_for_error()
    assert WIDGET in out.data[0]  # the live view while the run goes on
    final = out.data[-1]  # replaced by the static summary once it ended
    assert WIDGET not in final
    assert "squares-1" in final["text/html"] and "dnb-completed" in final["text/html"]
    assert final["text/html"].count("<tr>") >= 5  # header row and four steps
    assert "squares-1 completed: 4 steps (0 replayed, 4 ran)" in out.stdout


def test_background_run_returns_at_once_and_the_kernel_stays_usable(kernel: KernelSession):
    kernel.run(ACTIVITY).raise_for_error()
    started = time.monotonic()
    out = kernel.run("%%workflow slow --background\nvalues = [work(i, 0.3) for i in range(8)]\n")
    out.raise_for_error()
    assert time.monotonic() - started < 2.0  # 8 x 0.3 s of work is still going on
    assert any(WIDGET in d for d in out.data)
    busy = kernel.run("handle = _\nprint(handle.status, 6 * 7)").raise_for_error()
    assert "RunHandle slow-1" in out.data[-1]["text/plain"]
    assert busy.stdout.split() == ["running", "42"]
    done = kernel.run("print(handle.result(timeout=60)); print(handle.status, values)")
    assert "completed [0, 1, 4, 9, 16, 25, 36, 49]" in done.raise_for_error().stdout


def test_background_run_cancelled_from_its_handle(kernel: KernelSession):
    kernel.run(ACTIVITY).raise_for_error()
    kernel.run("%%workflow long --background\nvalues = [work(i, 0.2) for i in range(50)]\n"
               ).raise_for_error()
    kernel.run("handle = _\nimport time\ntime.sleep(0.5)\nhandle.cancel()").raise_for_error()
    out = kernel.run("try:\n    handle.result(timeout=30)\nexcept Exception as e:\n"
                     "    print(type(e).__name__, handle.status)").raise_for_error()
    assert out.stdout.split() == ["RunCancelled", "cancelled"]
    run = durable_nb.runs(workflow="long").iloc[0]
    assert run.status == "cancelled" and 0 < run.steps_completed < 50


def test_show_displays_any_run_of_the_journal(kernel: KernelSession):
    kernel.run(ACTIVITY).raise_for_error()
    kernel.run("%%workflow shown\nvalues = [work(i) for i in range(3)]\n").raise_for_error()
    kernel.restart()
    kernel.run("import durable_nb").raise_for_error()
    out = kernel.run("durable_nb.show('shown-1');").raise_for_error()
    bundle = out.data[-1]  # a finished run shows its summary
    assert "shown-1" in bundle["text/html"] and "dnb-completed" in bundle["text/html"]
    assert bundle["text/html"].count("<tr>") >= 4


def test_saved_notebook_converted_to_html_contains_the_run_summary_table(
        journal_home: Path, tmp_path: Path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%load_ext durable_nb"),
        nbformat.v4.new_code_cell(ACTIVITY),
        nbformat.v4.new_code_cell("%%workflow report\nvalues = [work(i) for i in range(3)]\n"),
    ])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    html, _ = HTMLExporter().from_notebook_node(nb)
    (tmp_path / "report.html").write_text(html)
    assert 'class="dnb-steps"' in html and "report-1" in html
    assert "dnb-completed" in html


def test_after_a_kernel_kill_the_resumed_runs_view_marks_replayed_steps(
        kernel: KernelSession, effects: Path):
    from durable_nb.testing.kernel import wait_for_file_text
    from tests.kernel.conftest import activity_cell, restart

    cell = "%%workflow resumed\nresults = [train(i) for i in range(6)]\n"
    kernel.run(activity_cell(effects, sleep=0.2)).raise_for_error()
    kernel.submit(cell)
    wait_for_file_text(effects, "start 3\n")
    kernel.kill()
    restart(kernel).run(activity_cell(effects, sleep=0.2)).raise_for_error()
    out = kernel.run(cell).raise_for_error()
    final = out.data[-1]["text/html"]
    assert final.count("dnb-replayed") == 3  # steps 0-2 came from the journal
    assert final.count('class="dnb-badge dnb-completed"') == 1 + 3  # header + steps 3-5
