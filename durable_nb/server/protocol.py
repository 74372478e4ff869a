"""Wire format between journal clients and the server.

A request is one JSON frame ``{"id": n, "op": ..., ...}`` from a DEALER socket; the reply
echoes ``id`` and carries ``ok``. Query results follow as a second frame holding an Arrow
IPC stream, so the server never builds Python objects from user data.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

PROTOCOL_VERSION = 1

# Operations that change the journal; everything else is a read.
WRITE_OPS = frozenset({"append", "create_run", "claim_run", "cancel_run", "signal",
                       "fork_run", "delete_run"})
# Writes that read the journal first, so they need every earlier write made durable.
READING_WRITE_OPS = frozenset({"fork_run", "delete_run"})


def dumps(message: dict[str, Any]) -> bytes:
    return dumps_text(message).encode()


def dumps_text(value: Any) -> str:
    """The JSON text of a message or a part of one (ASCII: ``json.dumps`` escapes the rest)."""
    return json.dumps(value, separators=(",", ":"), default=str)


def loads(frame: bytes) -> dict[str, Any]:
    message = json.loads(frame)
    if not isinstance(message, dict):
        raise ValueError("a message must be a JSON object")
    return message


def table_to_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_bytes(frame: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(frame)).read_all()
