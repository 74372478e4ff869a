"""durable_nb: durable execution for Jupyter notebooks.

Mark functions as activities and run workflows that call them; every call is journaled in
DuckDB, so after a kernel restart a re-run continues where it stopped.

The public names load on first use, so ``durable_nb.jupyter`` (the Jupyter server
extension, which must not import the engine) and ``durable_nb.server`` stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from durable_nb.errors import (
    ActivityFailed,
    ActivityTimeout,
    DurableError,
    EncryptionKeyError,
    JournalCorrupted,
    JournalUnavailable,
    NondeterminismError,
    PayloadError,
    QueryError,
    QueryRefused,
    RunBusy,
    RunCancelled,
    RunFinished,
    RunNotFound,
)

if TYPE_CHECKING:
    from durable_nb.api import results, runs, shutdown_server, sql, steps
    from durable_nb.engine.activity import Activity, activity
    from durable_nb.engine.determinism import now, random, side_effect, uuid4
    from durable_nb.engine.executors import heartbeat
    from durable_nb.engine.fanout import map
    from durable_nb.engine.futures import StepFuture, gather
    from durable_nb.engine.retry import RetryPolicy
    from durable_nb.engine.run import StepInfo, current_step
    from durable_nb.engine.workflow import Workflow, workflow
    from durable_nb.kernel.view import show

__version__ = "0.1.0"

_LAZY = {
    "results": "durable_nb.api", "runs": "durable_nb.api", "shutdown_server": "durable_nb.api",
    "sql": "durable_nb.api", "steps": "durable_nb.api", "Activity": "durable_nb.engine.activity",
    "activity": "durable_nb.engine.activity", "now": "durable_nb.engine.determinism",
    "random": "durable_nb.engine.determinism", "side_effect": "durable_nb.engine.determinism",
    "uuid4": "durable_nb.engine.determinism", "map": "durable_nb.engine.fanout",
    "heartbeat": "durable_nb.engine.executors", "StepFuture": "durable_nb.engine.futures",
    "gather": "durable_nb.engine.futures",
    "RetryPolicy": "durable_nb.engine.retry", "StepInfo": "durable_nb.engine.run",
    "current_step": "durable_nb.engine.run", "Workflow": "durable_nb.engine.workflow",
    "workflow": "durable_nb.engine.workflow", "show": "durable_nb.kernel.view",
}

__all__ = [
    "Activity", "ActivityFailed", "ActivityTimeout", "DurableError", "EncryptionKeyError",
    "JournalCorrupted",
    "JournalUnavailable", "NondeterminismError", "PayloadError", "QueryError", "QueryRefused",
    "RetryPolicy", "RunBusy", "RunCancelled", "RunFinished", "RunNotFound", "StepFuture",
    "StepInfo", "Workflow", "activity", "current_step", "gather", "heartbeat",
    "load_ipython_extension", "map", "now", "random",
    "results", "runs", "show", "shutdown_server", "side_effect", "sql", "steps", "uuid4",
    "workflow",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'durable_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab sidebar lives (``jupyter labextension develop``)."""
    return [{"src": "labextension", "dest": "@durable-nb/labextension"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext durable_nb``: register ``%%activity``, ``%%workflow`` and ``%%journal``."""
    from durable_nb.kernel import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from durable_nb.kernel import unload_ipython_extension as unload

    unload(ipython)
