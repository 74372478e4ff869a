"""Read the journal from Python: ``sql`` and ``runs`` return pandas DataFrames."""

from __future__ import annotations

import numbers
from typing import Any

import pandas as pd

from durable_nb.journal.schema import RUN_STATUSES
from durable_nb.server.client import default_client


def sql(query: str, params: list[Any] | None = None) -> pd.DataFrame:
    """Run a read-only SQL query against the journal (views ``runs`` and ``steps``).

    One query (SELECT, DESCRIBE, SUMMARIZE, EXPLAIN of a SELECT) without file or network
    access; anything else raises ``QueryRefused`` naming what was refused.
    """
    return default_client().query(query, params).to_pandas()


def runs(workflow: str | None = None, status: str | None = None,
         limit: int = 100) -> pd.DataFrame:
    """The most recent runs, newest first; filter by workflow name and status."""
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(sorted(RUN_STATUSES))}; "
                         f"got {status!r}")
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
    where, params = [], []
    if workflow is not None:
        where.append("workflow = ?")
        params.append(workflow)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return sql(f"SELECT * FROM runs {clause} ORDER BY started_at DESC LIMIT {int(limit)}",
               params)


def steps(run_id: str) -> pd.DataFrame:
    """The steps of one run, in order."""
    from durable_nb.engine.identity import find_run

    find_run(default_client(), run_id)
    return sql("SELECT * FROM steps WHERE run_id = ? ORDER BY seq", [run_id])


def shutdown_server() -> None:
    """Ask the journal server of the current home to stop (it restarts on next use)."""
    from durable_nb.server.client import reset_default_client

    client = default_client()
    client.shutdown()
    reset_default_client()
