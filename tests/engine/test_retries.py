"""Retry policy: attempts, backoff, fail-fast programming errors, timeouts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import durable_nb
from durable_nb.engine.identity import open_run
from durable_nb.engine.retry import RetryPolicy


def test_flaky_activity_completes_on_the_third_attempt_and_the_steps_view_says_so(
        journal_home: Path):
    attempts: list[int] = []

    @durable_nb.activity(retries=3, backoff=0.01)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("transient")
        return "ok"

    ctx = open_run("flaky")
    assert ctx.execute(flaky) == "ok"
    step = durable_nb.steps(ctx.run_id).iloc[0]
    assert (step.status, step.attempts, step.result) == ("completed", 3, '"ok"')


def test_type_error_is_not_retried(journal_home: Path):
    attempts: list[int] = []

    @durable_nb.activity(retries=5, backoff=0.01)
    def buggy() -> None:
        attempts.append(1)
        raise TypeError("unsupported operand")

    ctx = open_run("buggy")
    with pytest.raises(durable_nb.ActivityFailed, match="not retried: a programming error"):
        ctx.execute(buggy)
    assert len(attempts) == 1
    step = durable_nb.steps(ctx.run_id).iloc[0]
    assert (step.status, step.attempts) == ("failed", 1)
    assert step.error == "TypeError: unsupported operand"
    run = durable_nb.runs(workflow="buggy").iloc[0]
    assert run.status == "failed" and "step 0" in run.error


def test_programming_errors_retry_when_asked(journal_home: Path):
    attempts: list[int] = []

    @durable_nb.activity(retries=1, backoff=0, retry_programming_errors=True)
    def wobbly() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise AttributeError("not yet")
        return 1

    assert open_run("wobbly").execute(wobbly) == 1
    assert len(attempts) == 2


def test_non_retryable_types_fail_at_once(journal_home: Path):
    class QuotaExceeded(Exception):
        pass

    attempts: list[int] = []

    @durable_nb.activity(retries=4, backoff=0, non_retryable=(QuotaExceeded,))
    def call_api() -> None:
        attempts.append(1)
        raise QuotaExceeded("monthly quota")

    with pytest.raises(durable_nb.ActivityFailed) as info:
        open_run("quota").execute(call_api)
    assert len(attempts) == 1
    assert isinstance(info.value.__cause__, QuotaExceeded)


def test_retries_exhausted_fail_the_run_with_the_last_error(journal_home: Path):
    @durable_nb.activity(retries=2, backoff=0)
    def down() -> None:
        raise ConnectionError("still down")

    ctx = open_run("down")
    with pytest.raises(durable_nb.ActivityFailed, match="after 3 attempts: ConnectionError"):
        ctx.execute(down)
    assert durable_nb.steps(ctx.run_id).iloc[0].attempts == 3


def test_an_attempt_that_outlives_its_timeout_is_retried(journal_home: Path):
    attempts: list[int] = []

    @durable_nb.activity(retries=1, backoff=0, timeout=0.2)
    def sometimes_slow() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            time.sleep(2)
        return "fast"

    ctx = open_run("slow")
    assert ctx.execute(sometimes_slow) == "fast"
    assert durable_nb.steps(ctx.run_id).iloc[0].attempts == 2


def test_backoff_grows_exponentially_within_its_jitter():
    policy = RetryPolicy(retries=5, backoff=1.0, backoff_factor=2.0, max_backoff=5.0, jitter=0.1)
    for n, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0)]:
        for _ in range(20):
            assert base * 0.9 <= policy.delay(n) <= base * 1.1


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"retries": -1}, "retries must be a whole number >= 0, got -1"),
    ({"retries": 1.5}, "retries must be a whole number >= 0"),
    ({"retries": True}, "retries must be a whole number >= 0, got True"),
    ({"timeout": 0}, "timeout must be a positive, finite number of seconds"),
    ({"timeout": -1}, "timeout must be a positive, finite number of seconds"),
    ({"timeout": NAN}, "got nan"),
    ({"timeout": INF}, "got inf"),
    ({"backoff": NAN}, "backoff must be a finite number of seconds >= 0, got nan"),
    ({"backoff": INF}, "backoff must be a finite number of seconds >= 0, got inf"),
    ({"backoff": -0.5}, "backoff must be a finite number of seconds >= 0, got -0.5"),
    ({"backoff": "1"}, "backoff must be a finite number"),
    ({"max_backoff": NAN}, "max_backoff must be a finite number of seconds >= 0"),
    ({"backoff_factor": 0.5}, "backoff_factor must be a finite number >= 1"),
    ({"backoff_factor": INF}, "backoff_factor must be a finite number >= 1"),
    ({"jitter": NAN}, "jitter must be a fraction between 0 and 1"),
    ({"jitter": 1.5}, "jitter must be a fraction between 0 and 1"),
])
def test_bad_policy_values_are_refused_naming_the_value(kwargs: dict, words: str):
    with pytest.raises(ValueError) as info:
        RetryPolicy(**kwargs)
    assert words in str(info.value)


@pytest.mark.parametrize("kwargs", [{"backoff": NAN}, {"backoff": INF}, {"backoff": -1},
                                    {"timeout": NAN}, {"timeout": INF}, {"retries": -1}])
def test_the_decorator_refuses_bad_policy_values_at_definition(kwargs: dict):
    with pytest.raises(ValueError, match="must be"):
        @durable_nb.activity(**kwargs)
        def train() -> None: ...


def test_many_retries_keep_the_delay_under_the_cap():
    policy = RetryPolicy(retries=5000, backoff=1.0, max_backoff=3.0, jitter=0.0)
    assert policy.delay(4000) == 3.0
    assert RetryPolicy(retries=5000, backoff=0).delay(4000) == 0.0


def test_fixed_activity_resumes_the_failed_run_from_the_failed_step(journal_home: Path):
    calls: list[str] = []

    def parse(doc: str) -> str:
        calls.append(doc)
        if doc == "bad":
            raise ValueError("cannot parse")
        return doc.upper()

    docs = ["a", "b", "bad", "c"]
    broken = durable_nb.activity(parse, name="parse")
    failed = open_run("docs")
    with pytest.raises(durable_nb.ActivityFailed):
        failed.execute(lambda: [broken(d) for d in docs])
    assert calls == ["a", "b", "bad"]

    calls.clear()
    fixed = durable_nb.activity(lambda doc: (calls.append(doc), doc.upper())[1], name="parse")
    resumed = open_run("docs")
    assert resumed.run_id == failed.run_id
    assert resumed.execute(lambda: [fixed(d) for d in docs]) == ["A", "B", "BAD", "C"]
    assert calls == ["bad", "c"]
    step = durable_nb.steps(failed.run_id).set_index("seq").loc[2]
    assert (step.status, step.attempts) == ("completed", 2)
