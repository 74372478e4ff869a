"""Wire format between journal clients and the server.

A request is one MessagePack frame, a map ``{"id": n, "op": ..., ...}``, from a DEALER
socket; the reply echoes ``id`` and carries ``ok``. Query results follow as a second frame
holding an Arrow IPC stream, so the server never builds Python objects from user data.
MessagePack rather than JSON because a fan-out sends tens of thousands of events a
second: it packs an event about four times faster, and a batch of commits is packed by the
threads that made them (``pack``) and joined into one request (``append_batch``). A JSON
frame (what clients of protocol 1 send) is still read.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pyarrow as pa

PROTOCOL_VERSION = 2

# Operations that change the journal; everything else is a read.
WRITE_OPS = frozenset({"append", "create_run", "claim_run", "cancel_run", "signal",
                       "fork_run", "delete_run"})
# Writes that read the journal first, so they need every earlier write made durable.
READING_WRITE_OPS = frozenset({"fork_run", "delete_run"})


def pack(value: Any) -> bytes:
    """``value`` as MessagePack (anything it cannot hold as its text, as JSON did). A lone
    surrogate in a string travels as it is, so the server names it when it refuses it."""
    return msgpack.packb(value, default=str, unicode_errors="surrogatepass")


def dumps(message: dict[str, Any]) -> bytes:
    return pack(message)


def append_batch(rid: int, groups: list[bytes]) -> bytes:
    """The frame of request ``rid`` appending ``groups``, each a list of events already
    packed (a MessagePack array is its header followed by its items)."""
    return b"".join([_BATCH_HEAD, pack(rid), _BATCH_OP, _array_header(len(groups)), *groups])


_BATCH_HEAD = msgpack.Packer().pack_map_header(3) + pack("id")
_BATCH_OP = pack("op") + pack("append") + pack("groups")


def _array_header(n: int) -> bytes:
    return msgpack.Packer().pack_array_header(n)


def loads(frame: bytes) -> dict[str, Any]:
    """A message; ValueError when the frame holds none."""
    if frame[:1] == b"{":  # JSON: a MessagePack map never starts with this byte
        message = json.loads(frame)
    else:
        message = msgpack.unpackb(frame, strict_map_key=False,  # its errors: ValueError
                                  unicode_errors="surrogatepass")
    if not isinstance(message, dict):
        raise ValueError("a message must be a map (a JSON object)")
    return message


def table_to_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_bytes(frame: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(frame)).read_all()
