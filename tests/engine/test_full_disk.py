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
