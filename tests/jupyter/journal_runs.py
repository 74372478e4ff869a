"""Runs written straight into a journal, event by event, as a kernel writes them."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from durable_nb.server.client import JournalClient


def event(run_id: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"eid": uuid.uuid4().hex, "ts": fields.pop("ts", time.time()), "run_id": run_id,
            "kind": kind, **fields}


def make_run(journal: JournalClient, run_id: str, *, workflow: str = "sweep", steps: int = 2,
             status: str | None = None, notebook: str = "nb.ipynb", pid: int | None = None,
             started: float | None = None, fail_last: bool = False) -> str:
    """A run as a kernel writes it: started, ``steps`` steps, then ``status`` if given.

    ``pid`` is the process executing it (default: this live test process); with
    ``fail_last`` the last step fails with a traceback instead of completing.
    """
    t0 = started if started is not None else time.time()
    events = [event(run_id, "run_started", name=workflow, ts=t0, meta=json.dumps(
        {"pid": pid or os.getpid(), "notebook": notebook}))]
    for seq in range(steps):
        events.append(event(run_id, "step_started", seq=seq, attempt=1, name="train",
                            ts=t0 + seq + 0.1, data_json=json.dumps([seq])))
        if fail_last and seq == steps - 1:
            events.append(event(run_id, "step_failed", seq=seq, attempt=1, name="train",
                                ts=t0 + seq + 0.6, error="ValueError: bad lr",
                                traceback="Traceback (most recent call last):\nValueError: "
                                          "bad lr", meta=json.dumps({"final": True})))
        else:
            events.append(event(run_id, "step_completed", seq=seq, attempt=1, name="train",
                                ts=t0 + seq + 0.5, data_json=json.dumps({"loss": seq / 10})))
    if status is not None:
        events.append(event(run_id, "run_status", name=workflow, status=status,
                            ts=t0 + steps, error="step failed" if status == "failed" else None))
    journal.append(events)
    return run_id

