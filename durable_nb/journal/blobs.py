"""Content-addressed blob store: payloads too large to keep inline in a journal event.

A value whose encoding is larger than the threshold (``DURABLE_NB_BLOB_THRESHOLD`` bytes,
default 1 MiB) is written to ``<home>/blobs/<first 2 hex>/<sha256 hex>`` by the process that
encodes it (the kernel, or a worker), so the journal server never receives or holds it. The
event keeps a reference in its ``meta`` column, under the key ``blob``::

    {"blob": {"digest": "<sha256 hex>", "size": 209715200, "format": "parquet",
              "type": "pandas.DataFrame"}}

with ``data_json`` and ``data_pickle`` left NULL and the usual text in ``preview``. Why
``meta``: it is JSON the journal owns (never user data), so the reference cannot collide with
a user's JSON value; the ``steps`` view already falls back to the preview when a payload is
not JSON, so big values show as their preview and views need no change; and no migration is
needed. Referenced digests are one query away (``meta->'$.blob'``), for ``durable-nb gc``.

Formats: pandas DataFrames as Parquet (when their first rows come back from Parquet exactly;
object columns never do), numpy arrays without Python objects as ``.npy`` (``allow_pickle``
off), JSON text as itself, everything else as cloudpickle bytes.

Durability: a blob is written to a temporary file in its final directory, fsynced, renamed
into place and its directory fsynced, all before the event that references it is appended;
so a durable event never points at a blob a crash could lose. A blob already present with
the right size is not rewritten, only touched: its fresh modification time keeps ``gc``
(which spares blobs younger than its grace period) from removing it before the new event
that references it is appended. Reading checks the digest: a missing or altered blob is a
``BlobCorrupted`` error naming the file and the way out, and affects nothing else.

All bytes go through ``write_blob`` and ``read_blob``, the one place for encryption at rest.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from durable_nb.errors import BlobCorrupted, ConfigurationError, JournalUnavailable
from durable_nb.journal import settings

BLOB_DIR = "blobs"
THRESHOLD_ENV = "DURABLE_NB_BLOB_THRESHOLD"
DEFAULT_THRESHOLD = 1 << 20  # bytes
META_KEY = "blob"  # where an event's meta holds its payload's reference
FORMATS = ("parquet", "npy", "json", "pickle")
TEMP_SUFFIX = ".tmp"
PROBE_ROWS = 3  # rows of a DataFrame tried through Parquet before the whole frame goes

_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class BlobRef:
    """What a journal event records of a payload stored as a blob."""

    digest: str  # sha256 of the stored bytes, hex
    size: int  # bytes
    format: str  # one of FORMATS
    type: str  # the value's type, for people

    def as_meta(self) -> dict[str, Any]:
        return {META_KEY: asdict(self)}

    @classmethod
    def from_meta(cls, meta: str | dict[str, Any] | None) -> BlobRef | None:
        """The reference an event's ``meta`` holds, or None. A reference that is not well
        formed is kept as it is: reading it raises ``BlobCorrupted``, naming the problem."""
        if isinstance(meta, str):
            meta = json.loads(meta)
        ref = meta.get(META_KEY) if isinstance(meta, dict) else None
        if not isinstance(ref, dict):
            return None
        return cls(str(ref.get("digest")), int(ref.get("size") or 0), str(ref.get("format")),
                   str(ref.get("type") or "object"))


def threshold() -> int:
    """Payloads larger than this many bytes are stored as blobs (read once per run)."""
    return settings.once(_read_threshold, None)


def _read_threshold(_: None) -> int:
    text = os.environ.get(THRESHOLD_ENV)
    if text is None or not text.strip():
        return DEFAULT_THRESHOLD
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigurationError(
            f"{THRESHOLD_ENV} must be a whole number of bytes >= 0 (e.g. 1048576 for 1 MiB), "
            f"got {text!r}. Fix or unset it (the default is {DEFAULT_THRESHOLD}).")
    return value


def blob_dir(home: Path) -> Path:
    return home / BLOB_DIR


def blob_path(home: Path, digest: str) -> Path:
    return blob_dir(home) / digest[:2] / digest


# -- raw bytes: the only two functions that touch blob files' contents --------------------

def write_blob(home: Path, data: bytes | memoryview) -> str:
    """Store ``data`` durably; returns its digest. Present already (same size): touched only.

    In a process that reaches its journal over TCP (``remote.configured()``), the bytes go
    to the journal server in chunks, which stores them the same way.
    """
    from durable_nb.journal import crypto
    from durable_nb.server import remote

    sealer = crypto.sealer(home)
    if sealer is not None:  # sealed by content: the same value is still stored once
        data = sealer.seal_blob(data)
    if remote.configured():
        from durable_nb.server.client import default_client

        return default_client().put_blob(data)
    digest = hashlib.sha256(data).hexdigest()
    upload = Upload.begin(home, digest, len(data))
    if upload is not None:
        upload.write(0, data)
    return digest


class Upload:
    """A blob being written: to a temporary file in its final directory, checked against
    its digest, fsynced, renamed into place and its directory fsynced. Written at once by
    ``write_blob``, or chunk by chunk by the journal server for a remote process."""

    def __init__(self, home: Path, digest: str, size: int) -> None:
        self.home, self.digest, self.size = home, digest, size
        self.path = blob_path(home, digest)
        self.received = 0
        self.hash = hashlib.sha256()
        self.touched = time.monotonic()
        with self._failing("create"):
            _make_dirs(self.path.parent, home)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{digest[:16]}.",
                                       suffix=TEMP_SUFFIX)
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb")

    @classmethod
    def begin(cls, home: Path, digest: str, size: int) -> Upload | None:
        """An upload of blob ``digest`` (``size`` bytes), or None when it is stored already
        (then touched: a fresh mtime keeps gc's grace period over the new reference)."""
        if not _DIGEST.fullmatch(digest) or size < 0:
            raise ValueError(f"not a blob: digest {digest[:80]!r}, size {size}")
        path = blob_path(home, digest)
        try:
            if path.stat().st_size == size:
                os.utime(path)
                return None
        except FileNotFoundError:
            pass
        return cls(home, digest, size)

    def idle(self) -> float:
        return time.monotonic() - self.touched

    def write(self, offset: int, data: bytes | memoryview) -> bool:
        """Add the bytes at ``offset``; True once the whole blob is stored durably."""
        if offset != self.received or offset + len(data) > self.size:
            self.discard()
            raise ValueError(f"blob {self.digest[:12]}: bytes {offset}..{offset + len(data)} "
                             f"arrived after {self.received} of {self.size}")
        self.touched = time.monotonic()
        try:
            with self._failing("write"):
                self.file.write(data)
            self.hash.update(data)
            self.received += len(data)
            if self.received < self.size:
                return False
            if self.hash.hexdigest() != self.digest:
                raise BlobCorrupted(f"the bytes sent for blob {self.digest} have another "
                                    "digest", path=self.path, digest=self.digest)
            with self._failing("write"):
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
                os.rename(self.tmp, self.path)
                _fsync_dir(self.path.parent)
        except BaseException:
            self.discard()
            raise
        return True

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)

    @contextlib.contextmanager
    def _failing(self, doing: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            remedy = (f"Free space in {self.home} (`durable-nb gc` lists blobs no run uses)"
                      if exc.errno in (errno.ENOSPC, errno.EDQUOT) else
                      f"Make sure {blob_dir(self.home)} is a writable directory of yours")
            raise JournalUnavailable(
                f"cannot {doing} the blob {self.path} ({self.size} bytes): "
                f"{exc.strerror or exc}. {remedy}; nothing was recorded of the value."
            ) from exc


def read_blob(home: Path, digest: str) -> bytes:
    """The bytes stored under ``digest``; ``BlobCorrupted`` if missing or altered."""
    path = blob_path(home, digest) if _DIGEST.fullmatch(digest) else None
    if path is None:
        raise BlobCorrupted(f"the journal's blob reference {digest[:80]!r} is not a sha256 "
                            "digest", path=None, digest=digest)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BlobCorrupted(f"its blob {path} is missing", path=path, digest=digest) from None
    except OSError as exc:
        raise BlobCorrupted(f"its blob {path} cannot be read ({exc.strerror or exc})",
                            path=path, digest=digest) from exc
    found = hashlib.sha256(data).hexdigest()
    if found != digest:
        raise BlobCorrupted(
            f"its blob {path} does not match its digest: it holds {len(data)} bytes with "
            f"sha256 {found[:16]}…, not the recorded {digest[:16]}…", path=path, digest=digest)
    from durable_nb.journal import crypto

    if crypto.is_sealed(data):
        return crypto.opener(home, f"the blob {path}").open(data, f"the blob {path}")
    return data


# -- values ------------------------------------------------------------------------------

def typed_bytes(value: Any, limit: int) -> tuple[str, bytes | memoryview] | None:
    """A DataFrame or array larger than ``limit`` in its own format (Parquet, .npy), or
    None: the value is not one, is not that large, or its format cannot hold it exactly."""
    import sys

    pd = sys.modules.get("pandas")  # a value can only be a DataFrame if pandas is loaded
    if pd is not None and type(value) is pd.DataFrame:
        if int(value.memory_usage(deep=False, index=True).sum()) <= limit:
            return None
        data = _parquet_bytes(value)
        return None if data is None else ("parquet", data)
    np = sys.modules.get("numpy")
    if np is not None and type(value) is np.ndarray:
        if value.nbytes <= limit or value.dtype.hasobject:
            return None
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return "npy", buffer.getbuffer()
    return None


def _parquet_bytes(frame: Any) -> memoryview | None:
    """``frame`` as Parquet, if Parquet gives it back exactly.

    Parquet changes some frames silently (a ``datetime64[s]`` column comes back in µs) and
    refuses others (non-text column names, mixed object columns). Object columns are never
    sent (their later rows could hold anything); for the rest, the first rows go through
    Parquet and back, and the frame is written only if they return equal, dtypes included.
    """
    import pandas as pd
    from pandas.api.types import is_object_dtype

    if any(is_object_dtype(dtype) for dtype in frame.dtypes) or is_object_dtype(frame.index):
        return None
    try:
        probe = frame.head(PROBE_ROWS)
        buffer = io.BytesIO()
        probe.to_parquet(buffer, engine="pyarrow")
        back = pd.read_parquet(io.BytesIO(buffer.getvalue()), engine="pyarrow")
        pd.testing.assert_frame_equal(probe, back, check_exact=True)
        if back.attrs != probe.attrs:
            return None
        buffer = io.BytesIO()
        frame.to_parquet(buffer, engine="pyarrow")
    except Exception:  # anything Parquet cannot hold exactly: pickled instead
        return None
    return buffer.getbuffer()


def store(home: Path, data: bytes | memoryview, fmt: str, value: Any) -> BlobRef:
    """Write an encoded value's bytes as a blob; its reference."""
    t = type(value)
    return BlobRef(write_blob(home, data), len(data), fmt, f"{t.__module__}.{t.__qualname__}")


def load(home: Path, ref: BlobRef, what: str, remedy: str | None = None) -> Any:
    """The value ``ref`` stands for, read now. A missing or altered blob is
    ``BlobCorrupted`` naming ``what`` it holds and the way out (``remedy``)."""
    way_out = remedy or ("Restore the file from a backup, or run the step that recorded it "
                         "again in a new run (`--fork-at N` keeps the steps before step N).")
    try:
        if ref.format not in FORMATS:
            raise BlobCorrupted(f"its blob reference names the format {ref.format!r}, not one "
                                f"of {', '.join(FORMATS)}", path=None, digest=ref.digest)
        data = read_blob(home, ref.digest)
    except BlobCorrupted as exc:
        raise BlobCorrupted(
            f"cannot read {what} ({ref.type}, {ref.size} bytes): {exc}. Nothing else the "
            f"journal holds is affected. {way_out}", path=exc.path, digest=ref.digest) from None
    if ref.format == "parquet":
        import pandas as pd

        return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    if ref.format == "npy":
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    if ref.format == "json":
        return json.loads(data)
    return cloudpickle.loads(data)


# -- what is stored (for gc) ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A file in the blob directory: a blob, or the leftover of an interrupted write."""

    digest: str | None  # None: a temporary file
    path: Path
    size: int
    mtime: float

    @property
    def age(self) -> float:
        return time.time() - self.mtime


def stored_blobs(home: Path) -> Iterator[StoredBlob]:
    """Every blob file (and temporary file) in ``home``'s blob directory."""
    root = blob_dir(home)
    if not root.is_dir():
        return
    for sub in sorted(root.iterdir()):
        if not sub.is_dir():
            continue
        for path in sorted(sub.iterdir()):
            try:
                st = path.stat()
            except FileNotFoundError:  # removed meanwhile (a write renamed its temp file)
                continue
            name = path.name
            if _DIGEST.fullmatch(name) and name[:2] == sub.name:
                yield StoredBlob(name, path, st.st_size, st.st_mtime)
            elif name.startswith(".") and name.endswith(TEMP_SUFFIX):
                yield StoredBlob(None, path, st.st_size, st.st_mtime)


# The digests the journal's events reference (a forked run's copies included).
REFERENCED_SQL = """
    SELECT DISTINCT json_extract_string(meta, '$.blob.digest') AS digest
    FROM events
    WHERE json_extract_string(meta, '$.blob.digest') IS NOT NULL
"""
DEFAULT_GRACE = 3600.0  # seconds


def old_blobs(home: Path, grace: float) -> list[StoredBlob]:
    """Blob files and temporary files older than ``grace`` seconds.

    A blob is written just before the event that references it is appended (and an
    existing one is touched when reused), so a young file may be about to be referenced:
    the grace period spares it. List the files before querying which digests are
    referenced: an event appended in between then references a file that is young.
    """
    return [b for b in stored_blobs(home) if b.age >= grace]


def unreferenced(listed: list[StoredBlob], referenced: set[str]) -> list[StoredBlob]:
    """The ``listed`` files no event references (temporary files among them)."""
    return [b for b in listed if b.digest is None or b.digest not in referenced]


def remove(blob: StoredBlob, grace: float) -> bool:
    """Delete an unreferenced blob unless it was touched since it was listed (reused by a
    new event) or is younger than ``grace``; True if deleted."""
    try:
        if time.time() - blob.path.stat().st_mtime < grace:
            return False
        blob.path.unlink()
    except FileNotFoundError:
        return False
    return True


def _make_dirs(directory: Path, home: Path) -> None:
    """Create ``directory`` (and the blob root) durably: each new entry's parent is synced."""
    made: list[Path] = []
    for path in (blob_dir(home), directory):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        made.append(path)
    for path in made:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
