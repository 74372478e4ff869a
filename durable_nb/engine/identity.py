"""Which run a workflow execution belongs to: resume, replay a finished run, fork, or new."""

from __future__ import annotations

import re
import uuid
from typing import Any

from durable_nb.engine.history import fold_steps, load_step_events, process_meta
from durable_nb.engine.run import RunContext
from durable_nb.errors import RunNotFound
from durable_nb.journal.codec import code_hash
from durable_nb.journal.schema import event
from durable_nb.server.client import JournalClient, default_client

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,99}")


def check_workflow_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid workflow name {name!r}: use letters, digits, '_', '.' or '-', starting "
            "with a letter or '_' (for example `%%workflow sweep`)"
        )
    return name


def find_run(client: JournalClient, run_id: str,
             columns: str = "run_id, workflow, status") -> dict[str, Any]:
    """The ``runs`` row of ``run_id`` (the given columns); RunNotFound names the way on."""
    rows = client.query(f"SELECT {columns} FROM runs WHERE run_id = ?", [run_id]).to_pylist()
    if not rows:
        raise RunNotFound.in_journal(run_id, client.home)
    return rows[0]


def recorded_cell(client: JournalClient, run_id: str) -> str | None:
    """The ``%%workflow`` cell that last started or resumed ``run_id`` (what
    ``%workflow resume`` runs), or None when a ``@workflow`` function runs it.

    A fork made outside the notebook (sidebar, REST API, CLI) records no cell of its own
    until it is resumed: it runs the cell of the run it was forked from.
    """
    seen: set[str] = set()
    while run_id not in seen:
        seen.add(run_id)
        rows = client.query(
            "SELECT meta->>'source' AS source, meta->>'key' AS key, "
            "meta->>'parent_run_id' AS parent FROM events "
            "WHERE run_id = ? AND kind IN ('run_started', 'run_status') "
            "AND (meta->>'source' IS NOT NULL OR kind = 'run_started') "
            "ORDER BY meta->>'source' IS NULL, id DESC LIMIT 1", [run_id]).to_pylist()
        if not rows:
            return None
        row = rows[0]
        if row["source"] is not None:
            return str(row["source"]) if row["key"] is None else None
        if row["parent"] is None:
            return None
        run_id = str(row["parent"])
    return None


def latest_run(client: JournalClient, workflow: str, key: str | None) -> dict[str, Any] | None:
    sql = """SELECT r.run_id, r.workflow, r.status FROM runs r
             JOIN events e ON e.run_id = r.run_id AND e.kind = 'run_started'
             WHERE r.workflow = ?"""
    params: list[Any] = [workflow]
    if key is not None:
        sql += " AND json_extract_string(e.meta, '$.key') = ?"
        params.append(key)
    rows = client.query(sql + " ORDER BY e.id DESC LIMIT 1", params).to_pylist()
    return rows[0] if rows else None


def run_meta(source: str | None, key: str | None) -> dict[str, Any]:
    """What a new run records of who starts it and with which code."""
    return {**process_meta(), "source": source, "code_hash": code_hash(source or ""),
            "key": key}


def create_run(client: JournalClient, workflow: str, source: str | None,
               key: str | None) -> str:
    meta = run_meta(source, key)
    return client.create_run(event("", "run_started", name=workflow, meta=meta))


def fork_run(client: JournalClient, parent_run_id: str, at: int, source: str | None,
             key: str | None) -> str:
    """A new run holding the parent's steps before ``at`` (copied by the journal server);
    returns its id. Whoever executes it runs the rest with the current code."""
    if isinstance(at, bool) or not isinstance(at, int) or at < 0:
        raise ValueError(f"fork_at must be a step number >= 0, got {at!r}")
    reply = client.fork_run(parent_run_id, at, uuid.uuid4().hex, run_meta(source, key))
    return str(reply["run_id"])


def open_fork(client: JournalClient, parent: dict[str, Any], at: int, source: str | None,
              key: str | None) -> RunContext:
    run_id = fork_run(client, parent["run_id"], at, source, key)
    rows = load_step_events(client, run_id)
    ctx = RunContext(client, run_id, parent["workflow"], "resume", fold_steps(rows), rows,
                     source=source, key=key)
    ctx.forked_from = parent["run_id"]
    ctx.inputs = {}  # the fork runs on with the notebook's current inputs: it records them
    return ctx


def open_run(workflow: str, *, source: str | None = None, new: bool = False,
             run_id: str | None = None, fork_at: int | None = None, key: str | None = None,
             client: JournalClient | None = None) -> RunContext:
    """The run a workflow execution continues, following DESIGN.md §2 (Identity).

    - ``run_id``: that run; ``new``: a fresh run; otherwise the latest run of ``workflow``
      (with ``key``, the latest with that key: decorated workflows key runs by arguments).
    - ``fork_at``: a new run reusing the chosen run's steps before that number.
    - An unfinished run (running, failed, interrupted) is resumed; a completed one is
      replayed and forked at the first step that differs; after a cancelled one, a new run
      starts.
    """
    check_workflow_name(workflow)
    client = client or default_client()
    base: dict[str, Any] | None = None
    if run_id is not None:
        base = find_run(client, run_id)
        if base["workflow"] != workflow:
            raise ValueError(
                f"run {run_id} belongs to workflow {base['workflow']!r}, not {workflow!r}: "
                f"use `%%workflow {base['workflow']} --id {run_id}`"
            )
    elif not new:
        base = latest_run(client, workflow, key)

    if fork_at is not None:
        if base is None:
            raise RunNotFound(
                f"--fork-at needs a run to fork, and workflow {workflow!r} has none in "
                f"{client.home}. Run it once first, or drop --fork-at."
            )
        return open_fork(client, base, fork_at, source, key)

    if base is None or (base["status"] == "cancelled" and run_id is None):
        return RunContext(client, create_run(client, workflow, source, key), workflow,
                          "resume", {}, [], source=source, key=key)
    if base["status"] == "cancelled":
        raise ValueError(
            f"run {run_id} was cancelled and cannot be resumed. Start a new run with --new, "
            f"or reuse its steps with --fork-at N."
        )
    rows = load_step_events(client, base["run_id"])
    if base["status"] == "completed":
        return RunContext(client, base["run_id"], workflow, "replay", fold_steps(rows), rows,
                          source=source, key=key)
    client.claim_run(base["run_id"], process_meta()["pid"], uuid.uuid4().hex,
                     {"source": source})
    ctx = RunContext(client, base["run_id"], workflow, "resume", fold_steps(rows), rows,
                     source=source, key=key)
    ctx.resumed_from_status = base["status"]
    return ctx
