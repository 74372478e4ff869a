"""What durability saved a run's latest execution, read from the journal.

Shared by the CLI (``durable-nb show``) and the REST API (``GET runs/{id}``), so both say
the same; a client of the journal server only (the Jupyter extension imports no engine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durable_nb.server.client import JournalClient

REPLAY_SAVINGS_SQL = """
    WITH claim AS (  -- the latest resume: what that execution found already done
        SELECT max(ts) AS claimed_at FROM events
        WHERE run_id = ? AND kind = 'run_status' AND status = 'running'
    ), done AS (
        SELECT c.seq, epoch(c.ts) - epoch(s.ts) AS took
        FROM events c JOIN events s ON s.run_id = c.run_id AND s.seq = c.seq
             AND s.attempt = c.attempt AND s.kind = 'step_started'
        WHERE c.run_id = ? AND c.kind = 'step_completed' AND c.ts < (SELECT claimed_at FROM claim)
    )
    SELECT count(DISTINCT seq) AS replayed_steps, coalesce(sum(took), 0.0) AS saved_s
    FROM done
"""


def replay_savings(client: JournalClient, run_id: str,
                   timeout: float = 300.0) -> dict[str, Any]:
    """What the journal saved the run's latest execution: ``replayed_steps`` (completed
    before it resumed the run, so replayed) and ``saved_s``, their recorded attempt time.
    Zero for a run executed once from the start."""
    row = client.query(REPLAY_SAVINGS_SQL, [run_id, run_id], timeout=timeout).to_pylist()[0]
    return {"replayed_steps": int(row["replayed_steps"]),
            "saved_s": round(float(row["saved_s"]), 3)}
