"""Arguments and results that cannot be stored fail at call time, naming the culprit."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

import durable_nb
from durable_nb.engine.identity import open_run


def test_unpicklable_argument_names_its_type_and_which_argument(journal_home: Path):
    ran: list[int] = []

    @durable_nb.activity
    def fit(data: list, model: object) -> None:
        ran.append(1)

    ctx = open_run("payload")
    with pytest.raises(durable_nb.PayloadError) as info:
        ctx.execute(lambda: fit([1, 2], {"lock": threading.Lock()}))
    message = str(info.value)
    assert "argument 2 ('model') of fit() at step 0" in message
    assert "_thread.lock" in message and "value['lock']" in message
    assert ran == []


def test_unpicklable_result_fails_the_step_and_keeps_earlier_steps(journal_home: Path):
    @durable_nb.activity
    def ok() -> int:
        return 1

    @durable_nb.activity
    def leaky() -> threading.Lock:
        return threading.Lock()

    ctx = open_run("result")
    with pytest.raises(durable_nb.PayloadError, match=r"the result of leaky\(\) at step 1"):
        ctx.execute(lambda: [ok(), leaky()])
    steps = durable_nb.steps(ctx.run_id)
    assert list(steps.status) == ["completed", "failed"]


def test_pickled_results_come_back_as_equal_objects_on_replay(journal_home: Path):
    import numpy as np
    import pandas as pd

    @durable_nb.activity
    def frame() -> pd.DataFrame:
        return pd.DataFrame({"a": [1, 2], "b": np.array([0.5, 1.5])})

    @durable_nb.activity
    def pair() -> tuple[int, int]:
        return (1, 2)

    live = open_run("objects").execute(lambda: (frame(), pair()))
    replayed = open_run("objects").execute(lambda: (frame(), pair()))
    pd.testing.assert_frame_equal(live[0], replayed[0])
    assert replayed[1] == (1, 2) and type(replayed[1]) is tuple


def test_activity_called_outside_a_workflow_is_a_plain_call(journal_home: Path):
    @durable_nb.activity
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert not (journal_home / "server.json").exists()  # the journal was never touched


CAFE = os.fsdecode(b"caf\xe9.csv")  # 'caf\udce9.csv': not UTF-8 on disk


def test_strings_with_lone_surrogates_in_arguments_and_results_replay_exactly(
        journal_home: Path):
    ran: list[str] = []

    @durable_nb.activity
    def rename(name: str, extra: dict) -> dict:
        ran.append(name)
        return {"old": name, "new": name.replace(".csv", ".bak"), **extra}

    def body() -> list:
        return [rename(CAFE, {"\udc80key": [CAFE]}), rename("plain.csv", {})]

    live = open_run("rename").execute(body)
    replayed = open_run("rename").execute(body)
    assert replayed == live and ran == [CAFE, "plain.csv"]  # replayed, not re-run
    assert replayed[0]["new"] == "caf\udce9.bak"
    steps = durable_nb.steps(durable_nb.runs(workflow="rename").run_id[0])
    assert list(steps.status) == ["completed", "completed"]
    assert "'new': 'caf\\udce9.bak'" in json.loads(steps.result[0])  # the preview, escaped


def test_a_result_too_long_for_json_fails_its_step_with_a_payload_error(journal_home: Path):
    @durable_nb.activity
    def ok() -> int:
        return 1

    @durable_nb.activity
    def huge() -> int:
        return 10**5000

    ctx = open_run("huge")
    with pytest.raises(durable_nb.PayloadError) as info:
        ctx.execute(lambda: [ok(), huge()])
    message = str(info.value)
    assert message.startswith("cannot record the result of huge() at step 1: value of type "
                              "builtins.int cannot be written as JSON")
    assert "str(value)" in message
    steps = durable_nb.steps(ctx.run_id)
    assert list(steps.status) == ["completed", "failed"]
    assert steps.error[1].startswith("PayloadError: cannot record the result of huge()")
    assert durable_nb.runs(workflow="huge").status[0] == "failed"


def test_an_argument_too_long_for_json_is_a_payload_error_before_the_step_runs(
        journal_home: Path):
    ran: list[int] = []

    @durable_nb.activity
    def digits(n: int) -> int:
        ran.append(1)
        return 0

    with pytest.raises(durable_nb.PayloadError,
                       match=r"argument 1 \('n'\) of digits\(\) at step 0: value of type "
                             "builtins.int cannot be written as JSON"):
        open_run("digits").execute(lambda: digits(10**5000))
    assert ran == []


def test_sys_exit_in_an_activity_fails_its_step_naming_system_exit(journal_home: Path):
    import sys

    calls: list[int] = []

    @durable_nb.activity(retries=3, backoff=0)
    def quit_early(code: int) -> int:
        calls.append(code)
        sys.exit(code)

    ctx = open_run("exits")
    with pytest.raises(durable_nb.ActivityFailed) as info:
        ctx.execute(lambda: quit_early(3))
    assert isinstance(info.value.cause, SystemExit)
    assert "(not retried: the activity called sys.exit()): SystemExit: 3" in str(info.value)
    assert calls == [3]
    steps = durable_nb.steps(ctx.run_id)
    assert list(steps.status) == ["failed"] and steps.error[0] == "SystemExit: 3"
    (run,) = durable_nb.runs(workflow="exits").itertuples()
    assert run.status == "failed" and "SystemExit: 3" in run.error


def test_keyboard_interrupt_in_an_activity_still_abandons_the_step(journal_home: Path):
    @durable_nb.activity
    def stop() -> None:
        raise KeyboardInterrupt

    ctx = open_run("interrupted")
    with pytest.raises(KeyboardInterrupt):
        ctx.execute(stop)
    assert list(durable_nb.steps(ctx.run_id).status) == ["abandoned"]
    assert durable_nb.runs(workflow="interrupted").status[0] == "interrupted"
