"""Write-ahead segment: the small file that makes a batch durable before DuckDB sees it.

A durable DuckDB commit costs ~1 ms; an append plus one fdatasync costs ~0.12 ms. The server
appends each batch of events here, syncs, acknowledges, and loads segments into DuckDB in
bulk later (and before answering any query), then deletes them.

Record layout: ``<u32 length><u32 crc32 of length><u32 crc32 of body><body>``, one record
per append (the batches one fdatasync makes durable), written with a single ``write``; the
body is a MessagePack array of events (or, from older servers, a JSON array: it starts with
``[``, which a MessagePack array never does). A crash can leave the last record torn (a
prefix of it): it was never acknowledged, so it is dropped and the file truncated.
A record whose complete header fails its checksum, or whose body fails its checksum with
more data after it, was damaged after it was written; that raises instead of silently
losing acknowledged events. The header's own checksum is what tells a damaged length
(which could point past the end and pass for a torn record) from a torn one.

A write that the disk cannot take whole (no space left, a quota, an I/O error) or a sync
that fails is never reported as durable: ``append`` truncates the file back to its last
good record and raises ``JournalUnavailable``, so the caller acknowledges nothing and the
file stays a sequence of whole records that later appends can follow.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack

from durable_nb.errors import JournalCorrupted, JournalUnavailable

_HEADER = struct.Struct("<III")


class Segment:
    """An append-only file of event batches."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = os.fstat(self._fd).st_size
        self.broken: JournalUnavailable | None = None  # a failed append could not be undone

    def append(self, batches: Sequence[Sequence[Mapping[str, Any]]]) -> None:
        """Append batches and make them durable with one fdatasync."""
        # (a lone surrogate is kept as it is: what was acknowledged is what loads, or is
        # quarantined by name)
        body = msgpack.packb([ev for batch in batches for ev in batch],
                             unicode_errors="surrogatepass")
        size = len(body)
        out = _HEADER.pack(size, zlib.crc32(size.to_bytes(4, "little")), zlib.crc32(body)) + body
        if self.broken:
            raise self.broken
        try:
            view = memoryview(out)
            while view:  # os.write may take only a part (a full disk, a signal)
                written = os.write(self._fd, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
            os.fdatasync(self._fd)
        except OSError as exc:
            raise self._undo(exc) from exc
        self.size += len(out)

    def _undo(self, exc: OSError) -> JournalUnavailable:
        """Cut a failed append off, back to the last good record; the error to raise."""
        what = "no space left on the device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) \
            else (exc.strerror or str(exc))
        error = JournalUnavailable(
            f"cannot make events durable in the journal home {self.path.parent}: {what} "
            f"(writing {self.path.name}). Nothing of this write was acknowledged; free space "
            "there (or move DURABLE_NB_HOME) and re-run: recorded steps replay.")
        try:
            os.ftruncate(self._fd, self.size)
            os.fsync(self._fd)
        except OSError:
            # The torn tail stays: it reads as a torn last record as long as nothing
            # follows it, so this file takes no more appends.
            self.broken = error
        return error

    def read(self) -> list[dict[str, Any]]:
        """All events held, in order; a torn last record is dropped and truncated away."""
        with open(self.path, "rb") as f:
            data = f.read()
        events: list[dict[str, Any]] = []
        pos = 0
        while pos < len(data):
            if pos + _HEADER.size > len(data):
                break  # torn header
            length, header_crc, body_crc = _HEADER.unpack_from(data, pos)
            if zlib.crc32(length.to_bytes(4, "little")) != header_crc:
                raise self._damaged(pos, len(data) - pos)
            end = pos + _HEADER.size + length
            body = data[pos + _HEADER.size : end]
            if len(body) < length:
                break  # torn body: never acknowledged
            if zlib.crc32(body) != body_crc:
                if end < len(data):
                    raise self._damaged(pos, len(data) - end)
                break  # torn last record
            events.extend(json.loads(body) if body[:1] == b"[" else
                          msgpack.unpackb(body, unicode_errors="surrogatepass"))
            pos = end
        if pos < len(data):
            os.ftruncate(self._fd, pos)
            os.fsync(self._fd)
            self.size = pos
        return events

    def _damaged(self, pos: int, after: int) -> JournalCorrupted:
        return JournalCorrupted(
            f"the write-ahead segment {self.path} is damaged at byte {pos} with {after} "
            f"bytes after it. Move it aside (mv {self.path} {self.path}.damaged) to start the "
            "journal server; events in it that were not yet loaded into the journal are then "
            "lost."
        )

    def close(self) -> None:
        os.close(self._fd)
