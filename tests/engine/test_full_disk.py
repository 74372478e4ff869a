"""A full disk under the journal home: nothing unsynced is acknowledged, nothing seen re-runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import durable_nb
from durable_nb.engine.identity import open_run
from durable_nb.server.client import reset_default_client
from tests.conftest import fill_disk

STEPS = 60


def test_full_disk_fails_the_write_clearly_and_the_run_resumes_once_space_is_freed(
        small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = small_disk / "home"
    monkeypatch.setenv("DURABLE_NB_HOME", str(home))
    reset_default_client()
    effects = tmp_path / "effects.log"  # on a disk with room: what really ran and was seen

    @durable_nb.activity
    def page(i: int) -> str:
        with open(effects, "a") as f:
            f.write(f"ran {i}\n")
        return f"{i}:" + "x" * 40_000  # big results fill the small disk quickly

    def body() -> list[str]:
        out = []
        for i in range(STEPS):
            out.append(page(i))
            with open(effects, "a") as f:
                f.write(f"seen {i}\n")
        return out

    durable_nb.sql("SELECT 1")  # the server is up and its journal file exists
    filler = fill_disk(small_disk, leave=600_000)
    with pytest.raises(durable_nb.JournalUnavailable) as failure:
        open_run("pages").execute(body)
    message = str(failure.value)
    assert "no space left" in message and str(home) in message, message
    lines = effects.read_text().splitlines()
    seen_before = {int(line.split()[1]) for line in lines if line.startswith("seen")}
    assert 0 < len(seen_before) < STEPS

    filler.unlink()  # space freed: re-run, as a user would
    result = open_run("pages").execute(body)
    assert [r.split(":")[0] for r in result] == [str(i) for i in range(STEPS)]
    runs = [line for line in effects.read_text().splitlines() if line.startswith("ran")]
    for i in seen_before:
        assert runs.count(f"ran {i}") == 1, f"step {i} was seen, then ran again"
    steps = durable_nb.steps(durable_nb.runs(workflow="pages").iloc[0].run_id)
    assert len(steps) == STEPS and set(steps.status) == {"completed"}
    reset_default_client()


def test_a_fan_out_on_a_full_disk_fails_clearly_and_resumes_without_rerunning_recorded_steps(
        small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Fan-out steps hand their results over once a batch is durable: a batch the disk
    refused fails its steps (none of their results reaches the workflow), and a re-run
    replays every step the journal holds."""
    home = small_disk / "home"
    monkeypatch.setenv("DURABLE_NB_HOME", str(home))
    reset_default_client()
    effects = tmp_path / "effects.log"

    @durable_nb.activity
    def page(i: int) -> str:
        with open(effects, "a") as f:
            f.write(f"ran {i}\n")
        return f"{i}:" + "x" * 40_000

    def body() -> list[str]:
        return durable_nb.map(page, range(STEPS), max_workers=8)

    durable_nb.sql("SELECT 1")
    filler = fill_disk(small_disk, leave=600_000)
    with pytest.raises(durable_nb.JournalUnavailable) as failure:
        open_run("fanned").execute(body)
    assert "no space left" in str(failure.value) and str(home) in str(failure.value)

    filler.unlink()  # (reads wait for the journal to take what is staged: after this)
    run_id = durable_nb.runs(workflow="fanned").iloc[0].run_id
    # (what the disk refused stays staged on the server and may be recorded now)
    recorded = set(durable_nb.steps(run_id).query("status == 'completed'").seq)
    result = open_run("fanned").execute(body)
    assert [r.split(":")[0] for r in result] == [str(i) for i in range(STEPS)]
    runs = [line for line in effects.read_text().splitlines() if line.startswith("ran")]
    for i in recorded:
        assert runs.count(f"ran {i}") == 1, f"step {i} was recorded, then ran again"
    assert all(runs.count(f"ran {i}") <= 2 for i in range(STEPS))
    assert len(durable_nb.steps(run_id)) == STEPS
    reset_default_client()
