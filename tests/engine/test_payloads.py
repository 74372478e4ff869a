"""Arguments and results that cannot be stored fail at call time, naming the culprit."""

from __future__ import annotations

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
