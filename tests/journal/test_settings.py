"""A run reads the blob threshold and the encryption key once; outside a run, afresh."""

from __future__ import annotations

import threading

import pytest

from durable_nb.errors import ConfigurationError
from durable_nb.journal import blobs, settings


def test_within_a_run_the_first_reading_holds_outside_each_reads_again(monkeypatch) -> None:
    monkeypatch.setenv(blobs.THRESHOLD_ENV, "100")
    assert blobs.threshold() == 100
    with settings.per_run():
        assert blobs.threshold() == 100
        monkeypatch.setenv(blobs.THRESHOLD_ENV, "200")
        assert blobs.threshold() == 100  # a run's steps agree on where blobs begin
        seen: list[int] = []
        import contextvars

        thread = threading.Thread(target=contextvars.copy_context().run,
                                  args=(lambda: seen.append(blobs.threshold()),))
        thread.start()
        thread.join()
        assert seen == [100]  # its fan-out threads too
    assert blobs.threshold() == 200
    with settings.per_run():
        assert blobs.threshold() == 200


def test_a_bad_setting_is_not_kept_so_fixing_it_takes_effect(monkeypatch) -> None:
    with settings.per_run():
        monkeypatch.setenv(blobs.THRESHOLD_ENV, "lots")
        with pytest.raises(ConfigurationError, match="whole number of bytes"):
            blobs.threshold()
        monkeypatch.setenv(blobs.THRESHOLD_ENV, "300")
        assert blobs.threshold() == 300
