"""A training activity that heartbeats its checkpoints, SIGKILLed mid-epoch in a real
kernel: the resumed attempt starts from the last recorded epoch, in either executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import durable_nb
from durable_nb.engine.history import recorded_step
from durable_nb.server.client import default_client
from durable_nb.server.discovery import pid_alive, wait_until
from durable_nb.testing import KernelSession
from durable_nb.testing.kernel import wait_for_file_text
from tests.kernel.conftest import restart

EPOCHS, KILL_IN = 6, 3
EPOCH_S = 0.8  # long enough that the kill lands inside epoch KILL_IN on a busy machine


def training_cell(log: Path, checkpoints: Path, executor: str) -> str:
    """``train`` runs epochs from the step's last heartbeat, logging each epoch's start and
    end (with its attempt and pid) and heartbeating the checkpoint it wrote."""
    return (
        f"%%activity --executor {executor}\n"
        "import json, os, time\n"
        "import durable_nb\n"
        "def train(epochs):\n"
        "    step = durable_nb.current_step()\n"
        "    weights, first = 0, 0\n"
        "    if step.heartbeat:\n"
        "        with open(step.heartbeat['checkpoint']) as f:\n"
        "            weights = json.load(f)['weights']\n"
        "        first = step.heartbeat['epoch'] + 1\n"
        "    for e in range(first, epochs):\n"
        f"        with open({str(log)!r}, 'a') as f:\n"
        "            f.write(f'start {e} attempt {step.attempt} pid {os.getpid()}\\n')\n"
        f"        deadline = time.monotonic() + {EPOCH_S}\n"
        "        while time.monotonic() < deadline:\n"
        "            time.sleep(0.005)\n"
        "        weights += e + 1\n"
        f"        path = os.path.join({str(checkpoints)!r}, f'ck{{e}}.json')\n"
        "        with open(path, 'w') as f:\n"
        "            json.dump({'weights': weights}, f)\n"
        f"        with open({str(log)!r}, 'a') as f:\n"
        "            f.write(f'end {e} attempt {step.attempt}\\n')\n"
        "        durable_nb.heartbeat({'epoch': e, 'checkpoint': path})\n"
        "    return {'epochs': epochs, 'weights': weights}\n"
    )


WORKFLOW = f"%%workflow training\nmodel = train({EPOCHS})\n"


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_training_step_killed_mid_epoch_resumes_from_its_last_heartbeat(
        kernel: KernelSession, tmp_path: Path, executor: str):
    log, checkpoints = tmp_path / "epochs.log", tmp_path / "checkpoints"
    checkpoints.mkdir()
    kernel.run(training_cell(log, checkpoints, executor)).raise_for_error()
    kernel.submit(WORKFLOW)
    # Epoch KILL_IN has started, so the heartbeat of the epoch before it is durable.
    wait_for_file_text(log, f"start {KILL_IN} attempt 1", timeout=120)
    kernel.kill()
    first_pid = int(log.read_text().splitlines()[0].split()[-1])
    # Nothing of the dead kernel's attempt runs on: not its thread, not its worker process.
    assert wait_until(lambda: not pid_alive(first_pid), 30, interval=0.05), \
        f"the killed attempt's process {first_pid} still runs"
    rec = recorded_step(default_client(), "training-1", 0)
    assert rec is not None and rec.status == "started"
    assert rec.heartbeat()["epoch"] == KILL_IN - 1

    restart(kernel)
    kernel.run(training_cell(log, checkpoints, executor)).raise_for_error()
    out = kernel.run(WORKFLOW).raise_for_error()
    assert "training-1 completed: 1 step (0 replayed, 1 ran)" in out.stdout
    model = json.loads(kernel.run("import json; print(json.dumps(model))")
                       .raise_for_error().stdout)
    assert model == {"epochs": EPOCHS, "weights": sum(range(1, EPOCHS + 1))}

    lines = [line.split()[:4] for line in log.read_text().splitlines()]
    starts = [(int(e), int(a)) for kind, e, _, a in lines if kind == "start"]
    ends = [(int(e), int(a)) for kind, e, _, a in lines if kind == "end"]
    # Epochs before the kill ran once, in attempt 1; the one it cut short ran again in
    # attempt 2, which began there and did the rest.
    assert starts == [(e, 1) for e in range(KILL_IN + 1)] + [
        (e, 2) for e in range(KILL_IN, EPOCHS)]
    assert ends == [(e, 1) for e in range(KILL_IN)] + [
        (e, 2) for e in range(KILL_IN, EPOCHS)]

    step = durable_nb.steps("training-1").iloc[0]
    assert (step.status, step.attempts) == ("completed", 2)
    done = recorded_step(default_client(), "training-1", 0)
    assert done is not None and done.heartbeat()["epoch"] == EPOCHS - 1
