"""durable_nb: durable execution for Jupyter notebooks.

Mark functions as activities and run workflows that call them; every call is journaled in
DuckDB, so after a kernel restart a re-run continues where it stopped.
"""

from __future__ import annotations

from durable_nb.api import runs, shutdown_server, sql, steps
from durable_nb.engine.activity import Activity, activity
from durable_nb.engine.determinism import now, random, side_effect, uuid4
from durable_nb.engine.fanout import map
from durable_nb.engine.retry import RetryPolicy
from durable_nb.engine.run import StepInfo, current_step
from durable_nb.engine.workflow import Workflow, workflow
from durable_nb.errors import (
    ActivityFailed,
    ActivityTimeout,
    DurableError,
    JournalCorrupted,
    JournalUnavailable,
    NondeterminismError,
    PayloadError,
    QueryError,
    RunBusy,
    RunCancelled,
    RunNotFound,
)

__version__ = "0.1.0"

__all__ = [
    "Activity", "ActivityFailed", "ActivityTimeout", "DurableError", "JournalCorrupted",
    "JournalUnavailable", "NondeterminismError", "PayloadError", "QueryError", "RetryPolicy",
    "RunBusy", "RunCancelled", "RunNotFound", "StepInfo", "Workflow", "activity",
    "current_step", "load_ipython_extension", "map", "now", "random", "runs", "show",
    "shutdown_server", "side_effect", "sql", "steps", "uuid4", "workflow",
]


def show(run_id: str) -> object:
    """Display the live view of any run in the journal (in a notebook)."""
    from durable_nb.kernel.view import show as show_run

    return show_run(run_id)


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext durable_nb``: register ``%%activity`` and ``%%workflow``."""
    from durable_nb.kernel import load_ipython_extension as load

    load(ipython)
