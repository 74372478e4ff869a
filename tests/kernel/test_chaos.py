"""Chaos: kernels and the journal server SIGKILLed at random moments of one run.

Checks the durability rule directly: once workflow code has seen a step's result (it
writes ``seen i`` to the log), no later execution ever starts step ``i`` again; and the
final results equal those of an undisturbed run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from durable_nb.server.discovery import pid_alive, read_server_info, wait_until
from durable_nb.testing import KernelSession
from durable_nb.testing.kernel import wait_for_file_text
from tests.kernel.conftest import activity_cell, restart

N = 60


def live_server_pid_of(home: Path) -> int | None:
    info = read_server_info(home)
    return int(info["pid"]) if info and pid_alive(int(info["pid"])) else None


def workflow_cell(log: Path) -> str:
    return (
        "%%workflow chaos\n"
        "results = []\n"
        f"for i in range({N}):\n"
        "    r = train(i)\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f'seen {i}\\n')\n"
        "    results.append(r)\n"
    )


def check_durability_rule(log: Path) -> None:
    seen_before: set[str] = set()
    seen_now: set[str] = set()
    for line in log.read_text().splitlines():
        if line.startswith("KILL"):
            seen_before |= seen_now
            seen_now = set()
            continue
        word, item = line.split()
        if word == "start":
            assert item not in seen_before, f"step {item} ran again after its result was seen"
        elif word == "seen":
            seen_now.add(item)


@pytest.mark.timeout(600)
def test_random_kills_of_kernel_and_server_keep_the_durability_rule(
        kernel: KernelSession, journal_home: Path, effects: Path):
    seed = int(os.environ.get("DURABLE_NB_CHAOS_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    print(f"chaos seed {seed} (set DURABLE_NB_CHAOS_SEED to replay)")
    cell = activity_cell(effects, sleep=0.05)


    kernel.run(cell).raise_for_error()
    for round_ in range(6):
        lines_before = len(effects.read_text().splitlines()) if effects.exists() else 0
        kernel.submit(workflow_cell(effects))
        assert wait_until(lambda n=lines_before: effects.exists()
                          and len(effects.read_text().splitlines()) > n, 60)
        if rng.random() < 0.6:  # the server dies under the running workflow
            time.sleep(rng.uniform(0.0, 0.4))
            pid = wait_until(lambda: live_server_pid_of(journal_home), 30)
            assert pid, "no live journal server while the workflow runs"
            os.kill(pid, signal.SIGKILL)
            with effects.open("a") as f:
                f.write(f"KILL server {round_}\n")
        time.sleep(rng.uniform(0.05, 0.5))
        kernel.kill()  # then the kernel, so the run is still unfinished next round
        with effects.open("a") as f:
            f.write(f"KILL kernel {round_}\n")
        restart(kernel).run(cell).raise_for_error()
    final = kernel.run(workflow_cell(effects)).raise_for_error()
    assert "chaos-1 completed" in final.stdout
    results = json.loads(kernel.run("import json; print(json.dumps(results))").stdout)
    assert results == [{"item": i, "loss": (i - 3) ** 2} for i in range(N)]
    check_durability_rule(effects)
    done = [ln for ln in effects.read_text().splitlines() if ln.startswith("done")]
    assert {ln.split()[1] for ln in done} == {str(i) for i in range(N)}
    wait_for_file_text(effects, f"seen {N - 1}")


def test_the_rule_check_catches_a_step_started_after_its_result_was_seen(tmp_path: Path):
    log = tmp_path / "log"
    log.write_text("start 0\ndone 0\nseen 0\nstart 1\nKILL kernel 0\nstart 1\ndone 1\n")
    check_durability_rule(log)  # re-running the in-flight step 1 is allowed
    log.write_text("start 0\ndone 0\nseen 0\nKILL kernel 0\nstart 0\n")
    with pytest.raises(AssertionError, match="step 0 ran again"):
        check_durability_rule(log)
