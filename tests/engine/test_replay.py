"""Replay, identity and forking of runs, exercised in-process against a real journal server."""

from __future__ import annotations

from pathlib import Path

import pytest

import durable_nb
from durable_nb.engine.identity import open_run
from durable_nb.errors import NondeterminismError, RunNotFound


def make_sweep(calls: list[int]):
    @durable_nb.activity
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    return square


def test_completed_steps_are_returned_from_the_journal_without_running(journal_home: Path):
    calls: list[int] = []
    square = make_sweep(calls)

    def body(n: int) -> list[int]:
        return [square(i) for i in range(n)]

    ctx = open_run("sweep", source="v1")
    assert ctx.execute(lambda: body(4)) == [0, 1, 4, 9]
    assert calls == [0, 1, 2, 3]

    calls.clear()
    again = open_run("sweep", source="v1")
    assert again.run_id == ctx.run_id and again.mode == "replay"
    assert again.execute(lambda: body(4)) == [0, 1, 4, 9]
    assert calls == []
    assert (again.replayed, again.executed) == (4, 0)


def test_finished_run_forks_at_the_first_new_step(journal_home: Path):
    calls: list[int] = []
    square = make_sweep(calls)
    first = open_run("grid")
    first.execute(lambda: [square(i) for i in range(3)])
    calls.clear()

    grown = open_run("grid")
    notices: list[str] = []
    grown.notify = notices.append
    assert grown.execute(lambda: [square(i) for i in range(5)]) == [0, 1, 4, 9, 16]
    assert calls == [3, 4]
    assert grown.run_id != first.run_id and grown.forked_from == first.run_id
    assert notices == [f"step 3 differs from run {first.run_id}: continuing as "
                       f"{grown.run_id}, steps 0–2 reused"]
    steps = durable_nb.steps(grown.run_id)
    assert list(steps.seq) == [0, 1, 2, 3, 4]
    assert set(steps.status) == {"completed"}
    original = durable_nb.steps(first.run_id)
    assert list(original.seq) == [0, 1, 2]


def test_finished_run_with_fewer_calls_forks_instead_of_claiming_the_old_outcome(
        journal_home: Path):
    square = make_sweep([])
    first = open_run("shrink")
    first.execute(lambda: [square(i) for i in range(4)])
    shorter = open_run("shrink")
    shorter.notify = lambda _: None
    shorter.execute(lambda: [square(i) for i in range(2)])
    assert shorter.forked_from == first.run_id
    assert durable_nb.runs(workflow="shrink").set_index("run_id").loc[
        shorter.run_id, "steps_completed"] == 2


def test_changed_arguments_in_an_unfinished_run_raise_nondeterminism_naming_the_step(
        journal_home: Path):
    square = make_sweep([])

    @durable_nb.activity
    def boom(x: int) -> int:
        raise RuntimeError("stop here")

    ctx = open_run("changing")
    with pytest.raises(durable_nb.ActivityFailed):
        ctx.execute(lambda: [square(1), square(2), boom(0)])
    resumed = open_run("changing")
    assert resumed.mode == "resume" and resumed.run_id == ctx.run_id
    with pytest.raises(NondeterminismError) as info:
        resumed.execute(lambda: [square(1), square(20), boom(0)])
    message = str(info.value)
    assert f"step 1 of run {ctx.run_id}" in message
    assert 'square({"x":2})' in message and 'square({"x":20})' in message
    assert "--new" in message and "--fork-at 1" in message


def test_fork_at_keeps_the_steps_before_it_and_runs_the_rest(journal_home: Path):
    calls: list[int] = []
    square = make_sweep(calls)
    base = open_run("forked")
    base.execute(lambda: [square(i) for i in range(4)])
    calls.clear()
    fork = open_run("forked", fork_at=2)
    assert fork.forked_from == base.run_id
    assert fork.execute(lambda: [square(i) for i in (0, 1, 7, 8)]) == [0, 1, 49, 64]
    assert calls == [7, 8]


def test_new_starts_from_nothing(journal_home: Path):
    calls: list[int] = []
    square = make_sweep(calls)
    open_run("fresh").execute(lambda: square(3))
    calls.clear()
    again = open_run("fresh", new=True)
    again.execute(lambda: square(3))
    assert calls == [3]
    assert len(durable_nb.runs(workflow="fresh")) == 2


def test_unknown_run_id_is_a_clear_error(journal_home: Path):
    open_run("known").execute(lambda: None)
    with pytest.raises(RunNotFound, match=r"no run 'known-99'.*durable-nb runs"):
        open_run("known", run_id="known-99")


def test_run_of_another_workflow_is_refused(journal_home: Path):
    ctx = open_run("first")
    ctx.execute(lambda: None)
    with pytest.raises(ValueError, match=r"belongs to workflow 'first'"):
        open_run("second", run_id=ctx.run_id)


def test_invalid_workflow_name_is_refused(journal_home: Path):
    with pytest.raises(ValueError, match="invalid workflow name"):
        open_run("no spaces please")


def test_decorated_workflow_resumes_the_run_of_the_same_arguments(journal_home: Path):
    calls: list[int] = []
    square = make_sweep(calls)

    @durable_nb.workflow
    def total(n: int) -> int:
        return sum(square(i) for i in range(n))

    assert total(3) == 5 and total(4) == 14
    first_runs = set(durable_nb.runs(workflow="total").run_id)
    calls.clear()
    assert total(3) == 5 and total(4) == 14
    assert calls == []
    assert set(durable_nb.runs(workflow="total").run_id) == first_runs
    assert len(first_runs) == 2


def test_map_numbers_steps_in_item_order_whatever_finishes_first(journal_home: Path):
    import time

    @durable_nb.activity
    def slow_echo(x: float) -> float:
        time.sleep(x)
        return x

    delays = [0.2, 0.0, 0.1, 0.05]
    ctx = open_run("fan")
    assert ctx.execute(lambda: durable_nb.map(slow_echo, delays)) == delays
    steps = durable_nb.steps(ctx.run_id)
    assert [s["x"] for s in steps.args.map(__import__("json").loads)] == delays
    replay = open_run("fan")
    assert replay.execute(lambda: durable_nb.map(slow_echo, delays)) == delays
    assert replay.executed == 0 and replay.replayed == 4


def test_replay_safe_helpers_return_the_recorded_values(journal_home: Path):
    def body():
        return (durable_nb.now(), durable_nb.random(), durable_nb.uuid4(),
                durable_nb.side_effect(lambda: object.__repr__(object())))

    first = open_run("clock").execute(body)
    assert open_run("clock").execute(body) == first


def test_activity_sees_its_run_and_step_as_an_idempotency_key(journal_home: Path):
    @durable_nb.activity
    def key() -> str:
        info = durable_nb.current_step()
        assert info is not None
        return info.key

    ctx = open_run("keys")
    assert ctx.execute(lambda: [key(), key()]) == [f"{ctx.run_id}/0", f"{ctx.run_id}/1"]
    assert durable_nb.current_step() is None  # outside any activity


def test_a_run_records_its_workflow_source_and_each_activity_source_with_a_hash(
        journal_home: Path):
    from durable_nb.journal.codec import code_hash

    square = make_sweep([])
    source = "results = [square(i) for i in range(2)]\n"
    ctx = open_run("sources", source=source)
    ctx.execute(lambda: [square(i) for i in range(2)])
    started = durable_nb.sql(
        "SELECT meta->>'source' AS source, meta->>'code_hash' AS hash FROM events "
        "WHERE run_id = ? AND kind = 'run_started'", [ctx.run_id]).iloc[0]
    assert (started.source, started.hash) == (source, code_hash(source))
    code = durable_nb.sql(
        "SELECT name, code_hash, meta->>'source' AS source FROM events "
        "WHERE run_id = ? AND kind = 'activity_code'", [ctx.run_id])
    assert list(code.name) == ["square"]  # once per run, not once per call
    assert "def square(x: int) -> int:" in code.source[0]
    assert code.code_hash[0] == square.code_hash == code_hash(code.source[0])


def test_a_fork_reuses_pickled_results_unchanged(journal_home: Path):
    calls: list[int] = []

    @durable_nb.activity
    def pair(i: int) -> tuple[int, set[int]]:
        calls.append(i)
        return (i, {i, i + 1})

    open_run("pickles").execute(lambda: [pair(i) for i in range(3)])
    calls.clear()
    fork = open_run("pickles", fork_at=2)
    assert fork.execute(lambda: [pair(i) for i in range(3)]) == [(0, {0, 1}), (1, {1, 2}),
                                                                 (2, {2, 3})]
    assert calls == [2]
