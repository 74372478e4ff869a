"""The durable contract in real kernels: SIGKILL, restart, re-run, and nothing done twice."""

from __future__ import annotations

import json
from pathlib import Path

import durable_nb
from durable_nb.testing import KernelSession
from durable_nb.testing.kernel import wait_for_file_text
from tests.kernel.conftest import activity_cell, effect_counts, restart

SWEEP = (
    "%%workflow sweep\n"
    "results = [train(i) for i in range({n})]\n"
    "best = min(results, key=lambda r: r['loss'])\n"
)


def test_completed_steps_are_not_rerun_after_kernel_sigkill(
        kernel: KernelSession, effects: Path, journal_home: Path, tmp_path: Path):
    n, k = 8, 4
    kernel.run(activity_cell(effects)).raise_for_error()
    kernel.submit(SWEEP.format(n=n))
    wait_for_file_text(effects, f"start {k}\n")
    kernel.kill()

    restart(kernel)
    kernel.run(activity_cell(effects)).raise_for_error()
    out = kernel.run(SWEEP.format(n=n)).raise_for_error()
    assert "sweep-1 completed" in out.stdout and "resumed (was interrupted)" in out.stdout
    state = json.loads(kernel.run("import json; print(json.dumps([results, best]))")
                       .raise_for_error().stdout)

    counts = effect_counts(effects)
    for i in range(n):
        assert counts[f"done {i}"] == 1, f"step {i} completed more than once: {counts}"
        assert counts[f"start {i}"] == (2 if i == k else 1), counts

    # The final variables equal those of an uninterrupted run in a fresh journal.
    clean_home, clean_effects = tmp_path / "clean", tmp_path / "clean.log"
    with KernelSession(env={"DURABLE_NB_HOME": str(clean_home)}) as clean:
        clean.run("%load_ext durable_nb").raise_for_error()
        clean.run(activity_cell(clean_effects, sleep=0)).raise_for_error()
        clean.run(SWEEP.format(n=n)).raise_for_error()
        expected = json.loads(clean.run("import json; print(json.dumps([results, best]))")
                              .raise_for_error().stdout)
        clean.run("durable_nb.shutdown_server()" if False else "import durable_nb; "
                  "durable_nb.shutdown_server()")
    assert state == expected

    steps = durable_nb.steps("sweep-1")
    assert list(steps.status) == ["completed"] * n
    assert steps.set_index("seq").loc[k, "attempts"] == 2


def test_fix_the_activity_and_resume_from_the_failed_step(
        kernel: KernelSession, effects: Path):
    kernel.run(activity_cell(effects, fail_on=3, sleep=0)).raise_for_error()
    failed = kernel.run(SWEEP.format(n=6))
    assert failed.status == "error" and failed.ename == "ActivityFailed"
    assert "ValueError: bad item 3" in failed.traceback
    assert "sweep-1 failed" in failed.stdout
    assert "Fix the activity" in failed.evalue

    kernel.run(activity_cell(effects, sleep=0)).raise_for_error()  # the fixed activity
    out = kernel.run(SWEEP.format(n=6)).raise_for_error()
    assert "sweep-1 completed: 6 steps (3 replayed, 3 ran)" in out.stdout
    counts = effect_counts(effects)
    assert [counts.get(f"start {i}") for i in range(6)] == [1, 1, 1, 2, 1, 1]
    assert counts["done 3"] == 1


def test_changed_unfinished_run_raises_nondeterminism_then_fork_at_or_new(
        kernel: KernelSession, effects: Path):
    kernel.run(activity_cell(effects, fail_on=2, sleep=0)).raise_for_error()
    assert kernel.run(SWEEP.format(n=4)).status == "error"
    kernel.run(activity_cell(effects, sleep=0)).raise_for_error()

    changed = "%%workflow sweep{opts}\nresults = [train(i + 100) for i in range(4)]\n"
    err = kernel.run(changed.format(opts=""))
    assert err.ename == "NondeterminismError"
    assert "step 0 of run sweep-1" in err.evalue
    assert "--fork-at 0" in err.evalue and "--new" in err.evalue

    partly = "%%workflow sweep{opts}\nresults = [train(i if i < 1 else i * 10) " \
             "for i in range(4)]\n"
    err = kernel.run(partly.format(opts=""))
    assert err.ename == "NondeterminismError" and "step 1 of run sweep-1" in err.evalue
    forked = kernel.run(partly.format(opts=" --fork-at 1")).raise_for_error()
    assert "sweep-2 completed: 4 steps (1 replayed, 3 ran)" in forked.stdout

    fresh = kernel.run(changed.format(opts=" --new")).raise_for_error()
    assert "sweep-3 completed: 4 steps (0 replayed, 4 ran)" in fresh.stdout


def test_rerunning_a_finished_cell_executes_nothing_and_extending_it_forks(
        kernel: KernelSession, effects: Path):
    kernel.run(activity_cell(effects, sleep=0)).raise_for_error()
    kernel.run(SWEEP.format(n=3)).raise_for_error()
    before = effects.read_text()
    kernel.run("del results, best").raise_for_error()

    out = kernel.run(SWEEP.format(n=3)).raise_for_error()
    assert "sweep-1 completed: 3 steps (3 replayed, 0 ran)" in out.stdout
    assert effects.read_text() == before
    restored = kernel.run("print(len(results), best['item'])").raise_for_error()
    assert restored.stdout.split() == ["3", "2"]

    grown = kernel.run(SWEEP.format(n=5)).raise_for_error()
    assert "step 3 differs from run sweep-1: continuing as sweep-2, steps 0–2 reused" \
        in grown.stdout
    assert "sweep-2 completed: 5 steps (3 replayed, 2 ran)" in grown.stdout
    assert effects.read_text()[len(before):] == "start 3\ndone 3\nstart 4\ndone 4\n"


def test_kernel_interrupt_marks_the_run_interrupted_and_rerun_resumes(
        kernel: KernelSession, effects: Path):
    kernel.run(activity_cell(effects, sleep=0.5)).raise_for_error()
    msg = kernel.submit(SWEEP.format(n=6))
    wait_for_file_text(effects, "start 2\n")
    kernel.interrupt()
    out = kernel.wait(msg)
    assert out.status == "error" and out.ename == "KeyboardInterrupt"
    assert "sweep-1 interrupted" in out.stdout
    assert durable_nb.runs(workflow="sweep").iloc[0].status == "interrupted"

    resumed = kernel.run(SWEEP.format(n=6)).raise_for_error()
    assert "sweep-1 completed: 6 steps (2 replayed, 4 ran)" in resumed.stdout
    assert durable_nb.runs(workflow="sweep").iloc[0].status == "completed"
    counts = effect_counts(effects)
    assert counts["start 2"] == 2 and counts["done 2"] == 1  # the interrupted step re-ran


def test_flaky_activity_retries_show_in_the_steps_view_and_type_errors_do_not_retry(
        kernel: KernelSession):
    kernel.run(
        "%%activity --retries 3 --backoff 0.01\n"
        "tries = {'n': 0}\n"
        "def flaky():\n"
        "    tries['n'] += 1\n"
        "    if tries['n'] < 3:\n"
        "        raise ConnectionError('try again')\n"
        "    return tries['n']\n"
        "def typo():\n"
        "    tries['typo'] = tries.get('typo', 0) + 1\n"
        "    return 1 + 'x'\n"
    ).raise_for_error()
    kernel.run("%%workflow retrying\nvalue = flaky()\n").raise_for_error()
    step = durable_nb.steps("retrying-1").iloc[0]
    assert (step.status, step.attempts) == ("completed", 3)

    err = kernel.run("%%workflow typos\nvalue = typo()\n")
    assert err.ename == "ActivityFailed" and "TypeError" in err.evalue
    assert kernel.run("print(tries['typo'])").stdout.strip() == "1"
    assert durable_nb.steps("typos-1").iloc[0].attempts == 1


def test_workflow_resume_continues_a_run_from_the_journal_in_a_fresh_kernel(
        kernel: KernelSession, effects: Path):
    kernel.run(activity_cell(effects, options="--retries 1")).raise_for_error()
    kernel.submit(SWEEP.format(n=6))
    wait_for_file_text(effects, "start 2\n")
    kernel.kill()
    restart(kernel)  # nothing of the notebook re-run: no activities, no cells
    out = kernel.run("%workflow resume sweep-1").raise_for_error()
    assert "defined from the journal: train" in out.stdout
    assert "sweep-1 completed: 6 steps (2 replayed, 4 ran)" in out.stdout
    assert kernel.run("print(best['item'])").stdout.strip() == "3"
    policy = kernel.run("print(train.policy.retries)").stdout.strip()
    assert policy == "1"  # redefined with the options of its %%activity cell
    counts = effect_counts(effects)
    assert [counts[f"done {i}"] for i in range(6)] == [1] * 6


def test_a_fork_made_outside_the_notebook_resumes_with_the_cell_of_its_parent(
        kernel: KernelSession, effects: Path):
    from durable_nb.server.client import default_client

    kernel.run(activity_cell(effects, sleep=0.01)).raise_for_error()
    kernel.run(SWEEP.format(n=4)).raise_for_error()
    fork = default_client().fork_run("sweep-1", 2)["run_id"]  # as the sidebar and CLI do
    restart(kernel)
    out = kernel.run(f"%workflow resume {fork}").raise_for_error()
    assert f"{fork} completed: 4 steps (2 replayed, 2 ran)" in out.stdout
    counts = effect_counts(effects)
    assert [counts[f"done {i}"] for i in range(4)] == [1, 1, 2, 2]


def test_workflow_resume_names_what_is_wrong(kernel: KernelSession):
    out = kernel.run("%workflow resume")
    assert out.ename == "UsageError" and "usage: %workflow resume RUN_ID" in out.evalue
    out = kernel.run("%workflow resume nope-3")
    assert out.ename == "UsageError" and "no run 'nope-3'" in out.evalue
