"""What a heartbeat's details say about a step's progress: ``{"epoch": 3, "of": 10}`` or
``{"done": 30, "total": 100}`` is a fraction that every view (widget, sidebar, CLI) shows
as a bar; any other details are only shown as text.

One reading for all of them, here in the journal layer, because the Jupyter server extension
(which may not import the engine) serves it to the sidebar.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

# The count so far, and what it counts up to; the first key present wins.
DONE_KEYS = ("done", "epoch", "step")
TOTAL_KEYS = ("total", "of")


class HeartbeatProgress(NamedTuple):
    """``done`` of ``total`` (``unit`` is the key that held ``done`` unless it was "done")."""

    done: float
    total: float
    unit: str | None = None

    @property
    def fraction(self) -> float:
        """Between 0 and 1 (a count past its total is full)."""
        return min(max(self.done / self.total, 0.0), 1.0)

    @property
    def text(self) -> str:
        """``epoch 3/10``, ``30/100``."""
        count = f"{self.done:g}/{self.total:g}"
        return f"{self.unit} {count}" if self.unit else count

    def as_json(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "unit": self.unit}


def heartbeat_progress(details: Any) -> HeartbeatProgress | None:
    """The progress ``details`` state, or None when they hold no count and total."""
    if not isinstance(details, dict):
        return None
    done_key = next((k for k in DONE_KEYS if k in details), None)
    total_key = next((k for k in TOTAL_KEYS if k in details), None)
    if done_key is None or total_key is None:
        return None
    done, total = details[done_key], details[total_key]
    if not (_number(done) and _number(total)) or total <= 0 or done < 0:
        return None
    return HeartbeatProgress(done, total, None if done_key == "done" else done_key)


def stored_heartbeat(text: str | None) -> tuple[str | None, HeartbeatProgress | None]:
    """The ``heartbeat`` column of the ``steps`` view (JSON text: the details, or a JSON
    string holding their preview when they were pickled) as a one-line preview and the
    progress they state."""
    if text is None:
        return None, None
    try:
        value = json.loads(text)
    except ValueError:
        return text, None
    if isinstance(value, str):
        return value, None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False), \
        heartbeat_progress(value)


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
