"""The Python reading API: durable_nb.runs, steps and sql refuse bad arguments clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

import durable_nb


def test_runs_refuses_a_bad_limit_or_status_naming_what_is_allowed(journal_home: Path):
    with pytest.raises(ValueError, match="limit must be a whole number >= 1, got -1"):
        durable_nb.runs(limit=-1)
    with pytest.raises(ValueError, match="limit must be a whole number >= 1, got '5'"):
        durable_nb.runs(limit="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status must be one of cancelled, completed, failed, "
                                         "interrupted, running; got 'bogus'"):
        durable_nb.runs(status="bogus")
    assert durable_nb.runs(status="completed", limit=1).empty


def test_sql_refuses_a_write_with_query_refused(journal_home: Path):
    with pytest.raises(durable_nb.QueryRefused, match="DELETE statements are refused"):
        durable_nb.sql("DELETE FROM events")
    assert list(durable_nb.sql("SELECT 41 + 1 AS x").x) == [42]
