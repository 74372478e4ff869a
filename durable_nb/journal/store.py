"""The DuckDB store behind the journal server: open, migrate, bulk-insert, query.

Only the journal server process opens the file: DuckDB refuses a second process even
read-only while one holds it, so every other reader is a client of the server. Within the
server several threads use the store at once (the loop, the loader, the readers): each
gets its own cursor on the one database, as DuckDB wants. Clients' SQL goes through ``read``
(one checked query, in a read-only transaction); ``query`` is the server's own SQL.

Events reach the store already acknowledged, so a load never drops one: an event DuckDB
refuses is found by bisecting the batch and quarantined (``quarantine.py``), named in the
log, while every other event is loaded.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from durable_nb.errors import DurableError, JournalCorrupted, JournalUnavailable
from durable_nb.journal import readonly
from durable_nb.journal.codec import encode
from durable_nb.journal.quarantine import quarantine
from durable_nb.journal.schema import ARROW_SCHEMA, EVENT_COLUMNS, MIGRATIONS, SCHEMA_VERSION, VIEWS
from durable_nb.journal.segment import Segment
from durable_nb.journal.text import storable_value

log = logging.getLogger("durable_nb.journal")


def _loaded(column: str) -> str:
    """How ``column`` of the Arrow batch becomes a column of ``events``.

    JSON columns are checked here with DuckDB's own parser, which the views use: text it
    cannot read would load fine and then fail every query of ``steps`` or ``runs``.
    """
    if column == "ts":
        return "to_timestamp(ts)"
    if column in ("data_json", "meta"):
        return (f"CASE WHEN {column} IS NULL OR json_valid({column}) THEN {column} ELSE "
                f"error('{column} of event ' || eid || ' is not JSON DuckDB can read') END")
    return column


_INSERT = ("INSERT OR IGNORE INTO events SELECT "
           + ", ".join(_loaded(c) for c in EVENT_COLUMNS) + " FROM batch")

# Errors caused by what an event holds, not by the database or the disk: bisecting the
# batch finds the events. Anything else (I/O, out of memory, corruption) stops the load.
_RECORD_ERRORS: tuple[type[BaseException], ...] = (
    duckdb.DataError, duckdb.InvalidInputException, duckdb.ConstraintException,
    pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError, OverflowError,
)


class JournalStore:
    """The DuckDB journal file, held read-write by this process.

    The database is opened without file or network access beyond its own files and with its
    configuration locked, so no SQL can ``SET`` that back (``readonly.connect``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        try:
            self._root = readonly.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise JournalUnavailable(
                    f"the journal {path} is held by another process ({exc}). Only the journal "
                    "server opens it; stop stray servers with `durable-nb server stop`."
                ) from exc
            raise _corrupted(path, exc) from exc
        except duckdb.Error as exc:
            raise _corrupted(path, exc) from exc
        try:
            self._exec("SELECT count(*) FROM duckdb_tables()")
        except duckdb.Error as exc:
            self._root.close()
            raise _corrupted(path, exc) from exc
        try:
            self._migrate()
        except BaseException:
            self._root.close()
            raise

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """This thread's own cursor on the database (with the root's settings: no progress
        bar, configuration locked)."""
        con: duckdb.DuckDBPyConnection | None = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = self._root.cursor()
        return con

    def _migrate(self) -> None:
        self._exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = self._exec("SELECT max(version) FROM schema_version")[0][0] or 0
        if current > SCHEMA_VERSION:
            raise JournalUnavailable(
                f"the journal {self.path} has schema version {current}, newer than this "
                f"durable_nb understands ({SCHEMA_VERSION}). Upgrade durable_nb."
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            self._exec("BEGIN")
            try:
                self._exec(MIGRATIONS[version])
                self._exec("INSERT INTO schema_version VALUES (?)", [version])
            except BaseException:
                self._exec("ROLLBACK")
                raise
            self._exec("COMMIT")
        self._repair_unreadable_json()
        self._exec(VIEWS)

    def _repair_unreadable_json(self) -> None:
        """Re-encode JSON columns DuckDB cannot read, which older versions could write.

        Before payloads were checked, a string holding a lone surrogate (an undecodable
        file name) was stored as JSON text with a ``\\udcXX`` escape: Python reads it,
        DuckDB refuses it, and one such row broke the ``steps`` view for every run. Such a
        payload is re-encoded the way it is now (pickled, so replay returns the same
        string); such a ``meta`` gets its text escaped. Servers of this version refuse such
        JSON before it is stored, so a journal is repaired once (noted in ``repairs``).
        """
        self._exec("CREATE TABLE IF NOT EXISTS repairs "
                   "(name VARCHAR PRIMARY KEY, done_at TIMESTAMPTZ)")
        if self._exec("SELECT count(*) FROM repairs WHERE name = 'unreadable-json'")[0][0]:
            return
        rows = self._exec(
            "SELECT eid, data_json, meta FROM events WHERE NOT coalesce(json_valid(data_json), "
            "true) OR NOT coalesce(json_valid(meta), true)")
        for eid, data_json, meta in rows:
            try:
                changes = self._reencoded(eid, data_json, meta)
            except ValueError as exc:  # not even Python reads it: leave the row as it is
                log.error("event %s in %s holds JSON nothing can read: %s", eid, self.path, exc)
                continue
            columns = ", ".join(f"{c} = ?" for c in changes)
            self._exec(f"UPDATE events SET {columns} WHERE eid = ?", [*changes.values(), eid])
            log.warning("re-encoded unreadable JSON of event %s (%s) in %s", eid,
                        ", ".join(changes), self.path)
        self._exec("INSERT INTO repairs VALUES ('unreadable-json', now())")

    def _reencoded(self, eid: str, data_json: str | None, meta: str | None) -> dict[str, Any]:
        """New values for the unreadable JSON columns of one event."""
        changes: dict[str, Any] = {}
        if data_json is not None and not self._exec("SELECT json_valid(?)", [data_json])[0][0]:
            # Rewritten in place, where no blob reference can be added: kept inline.
            payload = encode(json.loads(data_json), what=f"the payload of event {eid}",
                             threshold=sys.maxsize)
            changes.update(data_json=payload.json, preview=payload.preview,
                           data_pickle=base64.b64decode(payload.pickle_b64)
                           if payload.pickle_b64 else None)
        if meta is not None and not self._exec("SELECT json_valid(?)", [meta])[0][0]:
            changes["meta"] = json.dumps(storable_value(json.loads(meta)))
        return changes

    def _exec(self, sql: str, params: list[Any] | None = None) -> list[Any]:
        """Run a statement to completion (DuckDB refuses new work on an unfinished result)."""
        with self._corruption_named():
            return self.con.execute(sql, params or []).fetchall()

    @contextmanager
    def _corruption_named(self) -> Iterator[None]:
        """DuckDB finds a damaged block only when it reads it: name the file and the way out."""
        try:
            yield
        except duckdb.Error as exc:
            if "corrupt" in str(exc).lower():
                raise _corrupted(self.path, exc) from exc
            raise

    def max_id(self) -> int:
        return int(self._exec("SELECT coalesce(max(id), 0) FROM events")[0][0])

    def insert(self, events: Sequence[Mapping[str, Any]]) -> Path | None:
        """Insert events; events already present (same eid) are skipped.

        The batch goes in as one statement. If what some events hold makes it fail, the
        batch is bisected down to those events; all the others are inserted and these are
        quarantined. Returns the quarantine file, if any.
        """
        if not events:
            return None
        rejected = self._insert_or_bisect(events)
        if not rejected:
            return None
        path = quarantine(self.path.parent, rejected)
        log.error(
            "the journal could not load %d event(s) (%s) and quarantined them in %s, each "
            "with its error; the other %d event(s) of the batch are loaded. Fix an event and "
            "append it again, or keep the file as the record of what was lost.",
            len(rejected), ", ".join(str(ev.get("eid")) for ev, _ in rejected), path,
            len(events) - len(rejected))
        return path

    def _insert_or_bisect(self, events: Sequence[Mapping[str, Any]]
                          ) -> list[tuple[Mapping[str, Any], str]]:
        """Insert ``events``; returns those that fail alone, with their errors."""
        try:
            self._insert_batch(events)
            return []
        except _RECORD_ERRORS as exc:
            if len(events) == 1:
                return [(events[0], f"{type(exc).__name__}: {exc}")]
        middle = len(events) // 2
        return self._insert_or_bisect(events[:middle]) + self._insert_or_bisect(events[middle:])

    def _insert_batch(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Insert events in one transaction."""
        rows = [
            {**e, "data_pickle": base64.b64decode(e["data_pickle"])} if e.get("data_pickle") else e
            for e in events
        ]
        self.con.register("batch", pa.Table.from_pylist(rows, schema=ARROW_SCHEMA))
        try:
            self._exec(_INSERT)
        finally:
            self.con.unregister("batch")

    def load_segment(self, path: Path) -> Path | None:
        """Load a write-ahead segment left by a stopped or crashed server (its events were
        acknowledged); returns the quarantine file of events it could not load, if any.

        A failure names the segment and the way out, for the start-up error.
        """
        segment = Segment(path)
        try:
            return self.insert(segment.read())
        except DurableError:
            raise  # names its file already
        except Exception as exc:
            raise JournalUnavailable(
                f"cannot load the write-ahead segment {path} into the journal {self.path}: "
                f"{type(exc).__name__}: {exc}. Its events were acknowledged and are still in "
                "that file. Remove the cause (e.g. free disk space) and start again; or move "
                f"the segment aside (mv {path} {path}.failed) to start without its events."
            ) from exc
        finally:
            segment.close()

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run the server's own SQL (its reads, and the deletes of ``delete_run``)."""
        with self._corruption_named():
            rel = self.con.sql(sql, params=params or None)
            return rel.to_arrow_table() if rel is not None else pa.table({})

    def read(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run a client's SQL: one read-only query (``QueryRefused`` otherwise), in a
        read-only transaction that is rolled back whatever happens."""
        readonly.check_read_only(sql)
        con = self.con
        with self._corruption_named():
            con.execute("BEGIN TRANSACTION READ ONLY")
            try:
                rel = con.sql(sql, params=params or None)
                return rel.to_arrow_table() if rel is not None else pa.table({})
            except duckdb.Error as exc:
                refused = readonly.refusal(exc)
                if refused is None:
                    raise
                raise refused from exc
            finally:
                con.execute("ROLLBACK")

    def checkpoint(self) -> None:
        self._exec("CHECKPOINT")

    def close(self) -> None:
        self._root.close()


def _corrupted(path: Path, exc: BaseException) -> JournalCorrupted:
    return JournalCorrupted(
        f"the journal file {path} cannot be opened: {exc}. To recover, stop the journal "
        f"server (`durable-nb server stop`), move the file aside (mv {path} {path}.corrupt) "
        "and run again: a new, empty journal is created; the old file can still be inspected "
        "with the duckdb CLI."
    )
