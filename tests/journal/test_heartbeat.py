"""Heartbeat details as progress: the reading every view shares."""

from __future__ import annotations

import pytest

from durable_nb.journal.heartbeat import HeartbeatProgress, heartbeat_progress, stored_heartbeat


@pytest.mark.parametrize(("details", "text", "fraction"), [
    ({"epoch": 3, "of": 10, "loss": 0.2}, "epoch 3/10", 0.3),
    ({"done": 30, "total": 120}, "30/120", 0.25),
    ({"step": 7, "total": 7}, "step 7/7", 1.0),
    ({"done": 12, "of": 10}, "12/10", 1.0),  # past its total: full, the count as it came
    ({"done": 0.5, "total": 2.0}, "0.5/2", 0.25),
])
def test_a_count_and_its_total_are_progress(details: dict[str, object], text: str,
                                            fraction: float) -> None:
    progress = heartbeat_progress(details)
    assert progress is not None
    assert (progress.text, progress.fraction) == (text, pytest.approx(fraction))


@pytest.mark.parametrize("details", [
    None, "epoch 3 of 10", [3, 10], {"epoch": 3}, {"of": 10}, {"epoch": "3", "of": 10},
    {"epoch": True, "of": 10}, {"done": 1, "total": 0}, {"done": -1, "total": 5},
    {"done": float("nan"), "total": 5}, {"done": 1, "total": float("inf")},
])
def test_details_without_a_usable_count_and_total_are_no_progress(details: object) -> None:
    assert heartbeat_progress(details) is None


def test_the_steps_views_heartbeat_column_reads_as_a_preview_and_its_progress() -> None:
    assert stored_heartbeat('{"epoch": 2, "of": 4}') == (
        '{"epoch":2,"of":4}', HeartbeatProgress(2, 4, "epoch"))
    assert stored_heartbeat('"<Checkpoint epoch=3>"') == ("<Checkpoint epoch=3>", None)
    assert stored_heartbeat(None) == (None, None)
