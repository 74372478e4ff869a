"""Read the journal from Python: ``sql``, ``runs``, ``steps`` and ``results`` return pandas
DataFrames."""

from __future__ import annotations

import json
import numbers
from typing import Any

import pandas as pd

from durable_nb.errors import RunNotFound
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


# The columns ``results`` always has, before the argument and result fields.
RESULT_COLUMNS = ("seq", "activity", "status", "attempts", "duration_s")


def results(workflow_or_run_id: str | None = None, *,
            run_id: str | None = None) -> pd.DataFrame:
    """One row per step of a run, its arguments and result flattened into columns.

    The run is the latest of the workflow so named, else the run with that id (``run_id=``
    says which run without doubt). Columns: ``seq``, ``activity``, ``status``, ``attempts``,
    ``duration_s``, then one per argument field (``{"cfg": {"lr": 0.1}}`` gives ``cfg.lr``)
    and one per result field (``{"loss": 0.3}`` gives ``loss``; ``result.loss`` when an
    argument or fixed column has that name; a result that is not a dict is ``result``).
    Values the journal holds pickled appear as their text preview, so reading results never
    unpickles; arguments with one such value are the preview of them all, in ``args``.
    ``df.attrs["run_id"]`` names the run read.
    """
    chosen = _result_run(workflow_or_run_id, run_id)
    rows = sql("SELECT seq, name AS activity, status, attempts, duration_s, args, result "
               "FROM steps WHERE run_id = ? ORDER BY seq", [chosen])
    fixed = rows[list(RESULT_COLUMNS)].reset_index(drop=True)
    args = _fields([_loaded(a) for a in rows["args"]], "args")
    args = args.rename(columns=lambda c: f"args.{c}" if c in RESULT_COLUMNS else c)
    taken = set(RESULT_COLUMNS) | set(args.columns)
    result = _fields([_loaded(r) for r in rows["result"]], "result")
    result = result.rename(columns=lambda c: f"result.{c}" if c in taken else c)
    table = pd.concat([fixed, args, result], axis=1)
    table.attrs["run_id"] = chosen
    return table


def _result_run(name: str | None, run_id: str | None) -> str:
    """The run ``results`` reads: ``run_id``, else the latest run of workflow ``name``,
    else the run with id ``name``; RunNotFound names what is missing and how to list runs."""
    from durable_nb.engine.identity import find_run

    client = default_client()
    if run_id is not None:
        run = find_run(client, run_id)
        if name is not None and name not in (run["workflow"], run_id):
            raise ValueError(f"run {run_id!r} is a run of workflow {run['workflow']!r}, not "
                             f"of {name!r}; pass only run_id={run_id!r}")
        return run_id
    if name is None:
        raise TypeError("results() needs a workflow name or a run id, e.g. "
                        "results('sweep') or results(run_id='sweep-2')")
    found = sql("SELECT run_id FROM runs WHERE workflow = ? OR run_id = ? "
                "ORDER BY workflow = ? DESC, started_at DESC LIMIT 1", [name, name, name])
    if found.empty:
        raise RunNotFound(f"no workflow or run named {name!r} in the journal {client.home}. "
                          "List the runs with durable_nb.runs() or `durable-nb runs`.")
    return str(found["run_id"].iloc[0])


def _loaded(text: Any) -> Any:
    """A payload of the ``steps`` view (JSON text, null while there is none) as a value."""
    return json.loads(text) if isinstance(text, str) else None


def _fields(values: list[Any], whole: str) -> pd.DataFrame:
    """Dicts flattened to dotted columns, in the order their fields first appear; any other
    value in column ``whole``; None, no column."""
    records = [_flat(v) if isinstance(v, dict) else {} if v is None else {whole: v}
               for v in values]
    return pd.DataFrame.from_records(records, index=range(len(values)))


def _flat(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"cfg": {"lr": 0.1}}`` as ``{"cfg.lr": 0.1}`` (as ``pandas.json_normalize`` names
    fields, but keeping the parameters' order); an empty dict stays a value."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict) and item:
            flat.update(_flat(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def shutdown_server() -> None:
    """Ask the journal server of the current home to stop (it restarts on next use)."""
    from durable_nb.server.client import reset_default_client

    client = default_client()
    client.shutdown()
    reset_default_client()
