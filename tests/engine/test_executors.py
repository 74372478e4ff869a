"""Executors, futures, heartbeats and concurrency limits, against a real journal server."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import durable_nb
from durable_nb.engine import executors
from durable_nb.engine.history import fold_steps, load_step_events
from durable_nb.engine.identity import open_run
from durable_nb.errors import ActivityFailed, ActivityTimeout, PayloadError
from durable_nb.journal.codec import CALL_DIGEST_PREFIX, call_hash
from durable_nb.server.discovery import pid_alive, wait_until


@pytest.fixture(autouse=True)
def _stop_worker_processes():
    yield
    executors.shutdown()


def test_a_process_activity_runs_in_another_process_and_its_prints_reach_the_caller(
        journal_home: Path, capsys: pytest.CaptureFixture[str]):
    offset = 10  # a closure: the call travels by cloudpickle

    @durable_nb.activity(executor="process")
    def where(x: int) -> dict[str, int]:
        print(f"working on {x}")
        return {"pid": os.getpid(), "value": x + offset}

    ctx = open_run("proc")
    out = ctx.execute(lambda: [where(1), where(2)])
    assert [o["value"] for o in out] == [11, 12]
    assert {o["pid"] for o in out} != {os.getpid()}
    assert "working on 1" in capsys.readouterr().out
    step = durable_nb.steps(ctx.run_id).iloc[0]
    assert step.status == "completed"
    rec = fold_steps(load_step_events(ctx.client, ctx.run_id))[0]
    assert rec.executor == "process"


def test_a_process_attempt_past_its_timeout_is_killed_and_retried(journal_home: Path,
                                                                  tmp_path: Path):
    pids = tmp_path / "pids"

    @durable_nb.activity(executor="process", timeout=1.0, retries=1, backoff=0)
    def slow() -> str:
        with pids.open("a") as f:
            f.write(f"{os.getpid()}\n")
        if durable_nb.current_step().attempt == 1:
            time.sleep(60)
        return "done"

    ctx = open_run("killed")
    assert ctx.execute(slow) == "done"
    first, second = (int(p) for p in pids.read_text().split())
    assert not pid_alive(first), "the timed-out attempt's worker still runs"
    assert second != first
    step = durable_nb.steps(ctx.run_id).iloc[0]
    assert (step.status, step.attempts) == ("completed", 2)
    failed = [r for r in load_step_events(ctx.client, ctx.run_id) if r["kind"] == "step_failed"]
    assert f"worker process {first} was killed" in failed[0]["error"]


def test_a_process_failure_keeps_its_type_and_the_worker_traceback(journal_home: Path):
    @durable_nb.activity(executor="process")
    def broken(x: int) -> int:
        raise KeyError(f"no row {x}")

    ctx = open_run("broken")
    with pytest.raises(ActivityFailed, match="KeyError: 'no row 3'") as info:
        ctx.execute(lambda: broken(3))
    cause = info.value.__cause__
    assert isinstance(cause, KeyError)
    assert any("raised in worker process" in note for note in cause.__notes__)
    step = durable_nb.steps(ctx.run_id).iloc[0]
    tb = durable_nb.sql(f"select traceback from events where run_id = '{ctx.run_id}' "
                        "and kind = 'step_failed'").traceback[0]
    assert step.status == "failed" and "in broken" in tb


def test_a_result_that_cannot_leave_the_worker_process_is_a_clear_error(journal_home: Path):
    @durable_nb.activity(executor="process")
    def locked() -> object:
        return threading.Lock()

    ctx = open_run("locked")
    with pytest.raises(ActivityFailed, match="cannot travel back from the worker process"):
        ctx.execute(locked)


def test_an_argument_that_cannot_reach_the_worker_process_names_the_way_out(
        journal_home: Path):
    @durable_nb.activity(executor="process")
    def use(lock: object) -> None:
        return None

    lock = threading.Lock()
    ctx = open_run("unsendable")
    with pytest.raises(PayloadError, match="argument 1 \\('lock'\\)"):
        ctx.execute(lambda: use(lock))


@pytest.mark.parametrize("where", ["thread", "process"])
def test_the_next_attempt_continues_from_the_last_heartbeat(journal_home: Path,
                                                            tmp_path: Path, where: str):
    log = tmp_path / "epochs"

    @durable_nb.activity(executor=where, retries=1, backoff=0)
    def train(epochs: int) -> int:
        done = durable_nb.current_step().heartbeat
        start = done["epoch"] + 1 if done else 0
        for epoch in range(start, epochs):
            with log.open("a") as f:
                f.write(f"{epoch}\n")
            if epoch == 3 and durable_nb.current_step().attempt == 1:
                raise ConnectionError("lost the GPU")
            durable_nb.heartbeat({"epoch": epoch, "checkpoint": f"ck{epoch}.pt"})
        return epochs

    ctx = open_run(f"train-{where}")
    assert ctx.execute(lambda: train(6)) == 6
    assert log.read_text().split() == ["0", "1", "2", "3", "3", "4", "5"]
    rec = fold_steps(load_step_events(ctx.client, ctx.run_id))[0]
    assert rec.heartbeat() == {"epoch": 5, "checkpoint": "ck5.pt"}


def test_an_attempt_without_heartbeats_past_its_heartbeat_timeout_fails_and_retries(
        journal_home: Path):
    late_beats: list[BaseException] = []

    @durable_nb.activity(heartbeat_timeout=0.3, retries=1, backoff=0)
    def hangs() -> str:
        if durable_nb.current_step().attempt == 1:
            time.sleep(3)
            try:  # woken long after its attempt was given up
                durable_nb.heartbeat("too late")
            except ActivityTimeout as exc:
                late_beats.append(exc)
            return "abandoned"
        for _ in range(5):
            durable_nb.heartbeat()
            time.sleep(0.1)
        return "ok"

    ctx = open_run("hangs")
    started = time.monotonic()
    assert ctx.execute(hangs) == "ok"
    assert time.monotonic() - started < 2.5  # the hung attempt was not waited for
    failed = [r for r in load_step_events(ctx.client, ctx.run_id) if r["kind"] == "step_failed"]
    assert failed[0]["error"] == "ActivityTimeout: activity hangs sent no heartbeat for 0.3 s"
    # The abandoned thread's heartbeat raised at once and recorded nothing.
    wait_until(lambda: late_beats, timeout=10)
    assert "this attempt was abandoned" in str(late_beats[0])
    beats = [r for r in load_step_events(ctx.client, ctx.run_id) if r["kind"] == "step_heartbeat"]
    assert [b["attempt"] for b in beats] == [2] * 5


def test_heartbeat_outside_an_activity_does_nothing():
    assert durable_nb.heartbeat({"epoch": 1}) is None


def test_a_heartbeat_that_cannot_be_stored_fails_the_attempt_with_the_reason(
        journal_home: Path):
    @durable_nb.activity
    def beats() -> None:
        durable_nb.heartbeat(threading.Lock())

    ctx = open_run("bad-beat")
    with pytest.raises(ActivityFailed, match="cannot record the heartbeat details of beats"):
        ctx.execute(beats)


def test_submitted_steps_are_numbered_at_call_time_and_gathered_in_call_order(
        journal_home: Path):
    calls: list[int] = []

    @durable_nb.activity
    def nap(x: float) -> float:
        time.sleep(x)
        calls.append(1)
        return x

    def body() -> list[float]:
        futures = [nap.submit(d) for d in (0.3, 0.0, 0.15)]
        assert [f.seq for f in futures] == [0, 1, 2]
        return durable_nb.gather(*futures)

    ctx = open_run("submit")
    assert ctx.execute(body) == [0.3, 0.0, 0.15]
    steps = durable_nb.steps(ctx.run_id)
    assert list(steps.seq) == [0, 1, 2] and list(steps.args) == [
        '{"x":0.3}', '{"x":0.0}', '{"x":0.15}']
    calls.clear()
    again = open_run("submit")
    assert again.execute(body) == [0.3, 0.0, 0.15]
    assert (calls, again.replayed) == ([], 3)


def test_gather_lets_every_step_finish_then_raises_the_first_failure(journal_home: Path):
    @durable_nb.activity
    def check(x: int) -> int:
        time.sleep(0.05 * x)
        if x in (1, 2):
            raise ValueError(f"bad {x}")
        return x

    ctx = open_run("gather-fail")
    with pytest.raises(ActivityFailed, match="bad 1"):
        ctx.execute(lambda: durable_nb.gather([check.submit(x) for x in range(4)]))
    assert list(durable_nb.steps(ctx.run_id).status) == [
        "completed", "failed", "failed", "completed"]


def test_gather_refuses_what_is_not_a_step_future():
    with pytest.raises(TypeError, match="activity.submit"):
        durable_nb.gather([1, 2])


def test_steps_submitted_and_never_waited_for_finish_before_the_run_completes(
        journal_home: Path):
    @durable_nb.activity
    def later(x: int) -> int:
        time.sleep(0.2)
        return x

    ctx = open_run("ungathered")
    ctx.execute(lambda: [later.submit(i) for i in range(3)] and None)
    steps = durable_nb.steps(ctx.run_id)
    assert list(steps.status) == ["completed"] * 3
    assert durable_nb.runs(workflow="ungathered").status[0] == "completed"


def test_submit_outside_a_workflow_is_a_plain_call():
    @durable_nb.activity
    def double(x: int) -> int:
        return 2 * x

    future = double.submit(4)
    assert (future.result(), future.seq) == (8, None)


def _peak(limit_activity: int | None, limit_run: int | None, workers: int) -> int:
    running, peak, lock = [0], [0], threading.Lock()

    @durable_nb.activity(max_concurrency=limit_activity)
    def busy(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return i

    ctx = open_run(f"limits-{limit_activity}-{limit_run}").configure(
        max_concurrency=limit_run)
    assert ctx.execute(lambda: durable_nb.map(busy, range(24), max_workers=workers)) == list(
        range(24))
    return peak[0]


def test_an_activity_limit_and_a_run_limit_cap_the_attempts_running_at_once(
        journal_home: Path):
    assert _peak(2, None, 8) == 2
    assert _peak(None, 3, 8) == 3
    assert _peak(None, None, 6) == 6


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_a_bad_concurrency_limit_is_refused(bad: object):
    with pytest.raises(ValueError, match="max_concurrency must be a whole number >= 1"):
        durable_nb.activity(max_concurrency=bad)(lambda: None)  # type: ignore[arg-type]


def test_an_unknown_executor_names_the_ones_there_are():
    with pytest.raises(ValueError, match="unknown executor 'gpu': use one of thread, "
                                         "process, dask"):
        durable_nb.activity(executor="gpu")(lambda: None)


def test_digests_come_from_the_stored_encoding_and_older_digests_still_replay(
        journal_home: Path):
    calls: list[int] = []

    @durable_nb.activity
    def f(cfg: dict[str, int], shape: tuple[int, int]) -> int:
        calls.append(1)
        return cfg["a"]

    ctx = open_run("digests")
    ctx.execute(lambda: f({"a": 1, "b": 2}, (2, 3)))
    started = load_step_events(ctx.client, ctx.run_id)
    started = [r for r in started if r["kind"] == "step_started"][0]
    assert started["args_hash"].startswith(CALL_DIGEST_PREFIX)
    assert started["preview"] == "{'cfg': {'a': 1, 'b': 2}, 'shape': (2, 3)}"  # a tuple stays

    # A step recorded before digests came from the encoding: replay compares it the old way.
    from durable_nb.journal.schema import event

    old = open_run("old-digests", new=True)
    old.client.append([event(old.run_id, "step_started", seq=0, attempt=1, name="f",
                             args_hash=call_hash(({"b": 2, "a": 1}, (2, 3)), {}),
                             preview="old"),
                       event(old.run_id, "step_completed", seq=0, attempt=1, name="f",
                             data_json="7", preview="7"),
                       event(old.run_id, "run_status", status="completed", name="f")])
    calls.clear()
    again = open_run("old-digests")
    assert again.execute(lambda: f({"a": 1, "b": 2}, (2, 3))) == 7
    assert (calls, again.replayed) == ([], 1)


def test_the_thread_executor_without_timeouts_runs_on_the_calling_thread(journal_home: Path):
    @durable_nb.activity
    def which() -> int:
        return threading.get_ident()

    ctx = open_run("same-thread")
    assert ctx.execute(which) == threading.get_ident()


def test_a_thread_attempt_past_its_timeout_raises_activity_timeout(journal_home: Path):
    @durable_nb.activity(timeout=0.2)
    def sleepy() -> None:
        time.sleep(2)

    ctx = open_run("sleepy")
    with pytest.raises(ActivityFailed, match="did not finish within 0.2 s") as info:
        ctx.execute(sleepy)
    assert isinstance(info.value.__cause__, ActivityTimeout)


def test_closing_the_process_pool_stops_its_workers(journal_home: Path):
    @durable_nb.activity(executor="process")
    def pid() -> int:
        return os.getpid()

    ctx = open_run("pool-close")
    worker = ctx.execute(pid)
    assert pid_alive(worker)
    executors.shutdown()
    wait_until(lambda: not pid_alive(worker), 5)


def test_a_worker_process_imports_a_module_from_where_its_parent_does(
        journal_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # One module name in two folders: the working directory, and a folder the parent
    # puts first on its path (as a kernel does; it keeps its cwd behind the stdlib).
    for folder in ("cwd", "first"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "dnb_twice.py").write_text(f"WHERE = {folder!r}\n")
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.syspath_prepend(str(tmp_path / "first"))
    import dnb_twice

    @durable_nb.activity(executor="process")
    def where() -> str:
        import dnb_twice

        return str(dnb_twice.WHERE)

    assert dnb_twice.WHERE == "first"
    assert open_run("imports").execute(where) == "first"


@pytest.mark.parametrize("fanout", ["map", "submit"])
def test_an_interrupt_stops_every_branch_of_a_fanout_at_its_next_step(
        journal_home: Path, fanout: str):
    started: list[int] = []
    ctx = open_run(f"interrupted-{fanout}").configure(max_concurrency=8)

    @durable_nb.activity
    def step(i: int) -> int:
        started.append(i)
        if i == 20:
            ctx.request_interrupt()  # Ctrl-C, as the kernel passes it to a running cell
        time.sleep(0.01)
        return i

    def body() -> list[int]:
        if fanout == "map":
            return durable_nb.map(step, range(200), max_workers=8)
        return durable_nb.gather([step.submit(i) for i in range(200)])

    with pytest.raises(KeyboardInterrupt):
        ctx.execute(body)
    # Only the steps already in flight with step 20 (8 at once) began; no branch went on.
    assert 20 < len(started) <= 28, sorted(started)
    assert durable_nb.runs(workflow=f"interrupted-{fanout}").status[0] == "interrupted"


def _most_running_at_once(run_id: str) -> int:
    """The most steps the journal held as started and not yet ended, in event order."""
    rows = durable_nb.sql("SELECT kind FROM events WHERE run_id = ? AND kind IN "
                          "('step_started', 'step_completed', 'step_failed') ORDER BY id",
                          [run_id])
    running = most = 0
    for kind in rows.kind:
        running += 1 if kind == "step_started" else -1
        most = max(most, running)
    return most


@pytest.mark.parametrize("limited_by", ["max_concurrency", "process-pool"])
def test_a_step_waiting_for_a_slot_is_not_journaled_as_started(journal_home: Path,
                                                               limited_by: str):
    from durable_nb.engine.process_pool import ProcessExecutor

    pool = ProcessExecutor(max_workers=2)

    def nap(i: int) -> int:
        time.sleep(0.05)
        return i

    step = (durable_nb.activity(nap, max_concurrency=2) if limited_by == "max_concurrency"
            else durable_nb.activity(nap, executor=pool))
    ctx = open_run(f"slots-{limited_by}")
    try:
        assert ctx.execute(lambda: durable_nb.map(step, range(24), max_workers=8)) \
            == list(range(24))
    finally:
        pool.close()
    # 8 threads, 2 slots: the 6 steps waiting for one have not started.
    assert _most_running_at_once(ctx.run_id) == 2
