"""The terminal line of ``durable-nb run``, read from a real journal: a running step shows
what its latest heartbeat says."""

from __future__ import annotations

import json
from pathlib import Path

from durable_nb.progress_line import WorkflowProgress
from durable_nb.server.client import JournalClient
from tests.jupyter.journal_runs import event, make_run


def test_the_live_steps_latest_heartbeat_is_on_the_line(journal_home: Path):
    client = JournalClient(journal_home)
    try:
        make_run(client, "fit-1", workflow="fit", steps=1)
        client.append([event("fit-1", "step_started", seq=1, attempt=1, name="train")])
        line = WorkflowProgress(client, "fit", "fit-1", out=None, tty=False)._look(final=False)
        assert line is not None
        assert "step 1 train() running  " in line.render()  # then its time: no heartbeat
        for details, shown in [({"epoch": 3, "of": 10, "loss": 0.2}, "epoch 3/10"),
                               ({"url": "https://example.org/" + "x" * 60},
                                '{"url":"https://example.org/xxxxxxxxxxx…')]:
            client.append([event("fit-1", "step_heartbeat", seq=1, attempt=1, name="train",
                                 data_json=json.dumps(details))])
            line = WorkflowProgress(client, "fit", "fit-1", out=None, tty=False)._look(
                final=False)
            assert line is not None
            assert f"step 1 train() running  {shown}  " in line.render()
    finally:
        client.close()
