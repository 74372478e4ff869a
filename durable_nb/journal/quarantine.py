"""Quarantine: acknowledged events the journal could not load, kept in a file of their own.

An event DuckDB refuses (say, text with a lone surrogate written by an older server) must
not block the events batched with it, nor stop the server, nor be lost: it was
acknowledged as durable. So the loader inserts the others and moves it here, one JSON line
per event with the error, in ``<home>/quarantine/<UTC time>-<n>.jsonl``. The event is kept
exactly as it was appended (JSON escapes keep even a lone surrogate), so it can be fixed
and appended again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

QUARANTINE_DIR = "quarantine"


def quarantine(home: Path, rejected: Sequence[tuple[Mapping[str, Any], str]]) -> Path:
    """Write ``(event, error)`` pairs to a new file and make it durable; returns its path."""
    folder = home / QUARANTINE_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    n = 1
    while True:
        path = folder / f"{stamp}-{n}.jsonl"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            n += 1
            continue
        break
    with os.fdopen(fd, "w", encoding="ascii") as f:
        for ev, error in rejected:
            f.write(json.dumps({"eid": ev.get("eid"), "error": error, "event": ev},
                               default=repr) + "\n")
        f.flush()
        os.fsync(f.fileno())
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the file's name is durable too, before the segment goes
    finally:
        os.close(dir_fd)
    return path


def read_quarantine(path: Path) -> list[dict[str, Any]]:
    """The records of a quarantine file: ``{"eid", "error", "event"}`` each."""
    with open(path, encoding="ascii") as f:
        return [json.loads(line) for line in f if line.strip()]
