"""Bad input in a real kernel: a clear error naming the problem and the way out, nothing lost."""

from __future__ import annotations

import os
from pathlib import Path

import durable_nb
from durable_nb.testing import KernelSession
from tests.kernel.conftest import effect_counts


def test_bad_magic_arguments_print_usage(kernel: KernelSession):
    out = kernel.run("%%workflow\nx = 1\n")
    assert out.ename == "UsageError"
    assert "the following arguments are required: NAME" in out.evalue
    assert ("usage: %%workflow [--new] [--id RUN_ID] [--fork-at N] [--executor NAME] "
            "[--max-concurrency N] [--background] NAME" in out.evalue)
    out = kernel.run("%%activity --retries many\ndef f():\n    pass\n")
    assert out.ename == "UsageError" and "--retries" in out.evalue
    assert ("usage: %%activity [--retries N] [--timeout S] [--backoff S] [--executor NAME] "
            "[--max-concurrency N] [--heartbeat-timeout S] [--safe NAMES]" in out.evalue)
    out = kernel.run("%%workflow sweep --fork-at -1\nx = 1\n")
    assert out.ename == "UsageError" and "--fork-at takes a step number" in out.evalue
    out = kernel.run("%%workflow sweep --new --id sweep-1\nx = 1\n")
    assert out.ename == "UsageError" and "cannot be combined" in out.evalue
    out = kernel.run("%%workflow two words\nx = 1\n")
    assert out.ename == "UsageError"
    out = kernel.run("%%workflow 'bad name'\nx = 1\n")
    assert out.ename == "UsageError" and "invalid workflow name" in out.evalue
    out = kernel.run("%%activity\nx = 1\n")
    assert out.ename == "UsageError" and "defines no function" in out.evalue
    out = kernel.run("%%activity\nasync def f():\n    pass\n")
    assert out.ename == "UsageError" and "async function" in out.evalue
    out = kernel.run("%%activity --retries -2\ndef f():\n    pass\n")
    assert out.ename == "UsageError" and "retries must be" in out.evalue


def test_unknown_run_id_names_it_and_how_to_list_runs(kernel: KernelSession):
    kernel.run("%%workflow sweep\nx = 1\n").raise_for_error()
    out = kernel.run("%%workflow sweep --id sweep-42\nx = 1\n")
    assert out.ename == "UsageError"
    assert "no run 'sweep-42'" in out.evalue and "durable-nb runs" in out.evalue
    assert list(durable_nb.runs().run_id) == ["sweep-1"]


def test_activity_outside_a_workflow_is_a_plain_call(kernel: KernelSession):
    kernel.run("%%activity\ndef double(x):\n    return 2 * x\n").raise_for_error()
    out = kernel.run("print(double(21))").raise_for_error()
    assert out.stdout.strip() == "42"
    assert durable_nb.runs().empty


def test_unpicklable_argument_names_type_and_argument_and_keeps_earlier_steps(
        kernel: KernelSession):
    kernel.run("%%activity\ndef fit(data, model=None):\n    return len(data)\n"
               ).raise_for_error()
    out = kernel.run("%%workflow fitting\nimport threading\nn = fit([1, 2])\n"
                     "m = fit([1], model=threading.Lock())\n")
    assert out.ename == "PayloadError"
    assert "argument 2 ('model') of fit() at step 1" in out.evalue
    assert "_thread.lock" in out.evalue
    steps = durable_nb.steps("fitting-1")
    assert list(steps.status) == ["completed"]
    assert durable_nb.runs().iloc[0].status == "failed"


def test_unwritable_journal_home_is_named_with_the_way_out(tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the home's parent should be")
    home = blocker / "home"
    with KernelSession(env={"DURABLE_NB_HOME": str(home)}) as kernel:
        kernel.run("%load_ext durable_nb").raise_for_error()
        kernel.run("%%activity\ndef f():\n    return 1\n").raise_for_error()
        out = kernel.run("%%workflow w\nx = f()\n")
    assert out.ename == "JournalUnavailable"
    assert str(home) in out.evalue and "DURABLE_NB_HOME" in out.evalue
    assert blocker.read_text() == "a file where the home's parent should be"


def test_corrupted_journal_file_names_the_file_and_how_to_recover(journal_home: Path):
    journal_home.mkdir(mode=0o700)
    db = journal_home / "journal.duckdb"
    garbage = os.urandom(64 * 1024)
    db.write_bytes(garbage)
    with KernelSession(env={"DURABLE_NB_HOME": str(journal_home)}) as kernel:
        kernel.run("%load_ext durable_nb").raise_for_error()
        kernel.run("%%activity\ndef f():\n    return 1\n").raise_for_error()
        out = kernel.run("%%workflow w\nx = f()\n")
        assert out.ename == "JournalCorrupted"
        assert str(db) in out.evalue and "mv " in out.evalue
        assert db.read_bytes() == garbage  # nothing was overwritten

        db.rename(journal_home / "journal.duckdb.corrupt")
        kernel.run("%%workflow w\nx = f()\n").raise_for_error()
    assert (journal_home / "journal.duckdb.corrupt").read_bytes() == garbage
    assert list(durable_nb.runs().status) == ["completed"]


def reader_cell(effects: Path, *, broken: bool) -> str:
    """An activity that fails, when ``broken``, on a file name that is not UTF-8."""
    fail = "    if i == 1:\n        raise ValueError(os.fsdecode(b'caf\\xe9.csv'))\n" \
        if broken else ""
    return (
        "%%activity\n"
        "import os\n"
        "def read(i):\n"
        f"    with open({str(effects)!r}, 'a') as f:\n"
        "        f.write(f'start {i}\\n')\n"
        f"{fail}"
        f"    with open({str(effects)!r}, 'a') as f:\n"
        "        f.write(f'done {i}\\n')\n"
        "    return i\n"
    )


def test_a_failure_on_an_undecodable_file_name_is_recorded_and_the_fixed_run_resumes(
        kernel: KernelSession, effects: Path):
    workflow = "%%workflow files\nresults = [read(i) for i in range(3)]\n"
    kernel.run(reader_cell(effects, broken=True)).raise_for_error()
    out = kernel.run(workflow)
    assert out.ename == "ActivityFailed"
    assert "failed at step 1 of run files-1" in out.evalue
    assert "ValueError: caf\\xe9.csv" in out.evalue  # readable, the byte escaped
    steps = durable_nb.steps("files-1")
    assert list(steps.status) == ["completed", "failed"]
    assert steps.error[1] == "ValueError: caf\\xe9.csv"
    assert durable_nb.runs().iloc[0].status == "failed"

    kernel.run(reader_cell(effects, broken=False)).raise_for_error()
    fixed = kernel.run(workflow).raise_for_error()
    assert "files-1 completed: 3 steps (1 replayed, 2 ran)" in fixed.stdout
    assert kernel.run("print(results)").raise_for_error().stdout.strip() == "[0, 1, 2]"
    counts = effect_counts(effects)
    assert counts["start 0"] == 1 and counts["done 0"] == 1  # the completed step not re-run
    assert counts["start 1"] == 2 and counts["done 1"] == 1 and counts["done 2"] == 1
    assert list(durable_nb.steps("files-1").status) == ["completed"] * 3


def test_bad_retry_policy_values_print_usage_and_define_nothing(kernel: KernelSession):
    for options, words in [
        ("--backoff nan", "backoff must be a finite number of seconds >= 0, got nan"),
        ("--backoff inf", "got inf"),
        ("--backoff -1", "backoff must be a finite number of seconds >= 0, got -1"),
        ("--timeout nan", "timeout must be a positive, finite number of seconds"),
        ("--timeout inf", "timeout must be a positive, finite number of seconds"),
        ("--timeout 0", "timeout must be a positive, finite number of seconds"),
        ("--timeout -1", "timeout must be a positive, finite number of seconds"),
        ("--retries -1", "retries must be a whole number >= 0, got -1"),
    ]:
        out = kernel.run(f"%%activity {options}\ndef train():\n    return 1\n")
        assert out.ename == "UsageError", (options, out.text)
        assert words in out.evalue, out.evalue
        assert "usage: %%activity [--retries N] [--timeout S] [--backoff S]" in out.evalue
    assert kernel.run("train").ename == "NameError"  # no activity was defined
    out = kernel.run("import durable_nb\n@durable_nb.activity(backoff=float('nan'))\n"
                     "def train():\n    return 1\n")
    assert out.ename == "ValueError" and "backoff must be a finite number" in out.evalue


def test_a_workflow_inside_a_workflow_is_refused_with_the_way_out(kernel: KernelSession):
    kernel.run("%%activity\ndef f(x):\n    return x\n").raise_for_error()
    for nested in ["get_ipython().run_cell_magic('workflow', 'inner', 'b = f(2)')",
                   'get_ipython().run_cell_magic("workflow", "inner", "b = f(2)")',
                   "if True:\n    get_ipython().run_cell_magic('workflow', 'inner', 'b = 1')",
                   "%workflow resume outer-1"]:
        out = kernel.run(f"%%workflow outer\na = f(1)\n{nested}\n")
        assert out.ename == "UsageError", (nested, out.text)
        assert "a workflow cannot run inside another" in out.evalue
        assert "in a cell of its own" in out.evalue
        assert "await" not in out.text, out.text
    assert durable_nb.runs().empty  # refused before any run started

    # Started in a way the cell does not show: refused when it runs.
    out = kernel.run("%%workflow outer\na = f(1)\nmagic = 'work' + 'flow'\n"
                     "get_ipython().run_cell_magic(magic, 'inner', 'b = f(2)')\n")
    assert out.ename == "UsageError", out.text
    assert "a workflow cannot run inside another" in out.evalue
    assert "inside run outer-1" in out.evalue
    assert list(durable_nb.runs().workflow) == ["outer"]
    kernel.run("%%workflow inner\nb = f(2)\n").raise_for_error()
    assert kernel.run("print(b)").raise_for_error().stdout.strip() == "2"
