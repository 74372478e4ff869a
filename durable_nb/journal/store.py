"""The DuckDB store behind the journal server: open, migrate, bulk-insert, query.

Only the journal server process opens the file: DuckDB refuses a second process even
read-only while one holds it, so every other reader is a client of the server. Within the
server several threads use the store at once (the loop, the loader, the readers): each
gets its own cursor on the one database, as DuckDB wants.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from durable_nb.errors import JournalCorrupted, JournalUnavailable
from durable_nb.journal.schema import ARROW_SCHEMA, EVENT_COLUMNS, MIGRATIONS, SCHEMA_VERSION, VIEWS

_INSERT = (
    "INSERT OR IGNORE INTO events SELECT "
    + ", ".join("to_timestamp(ts)" if c == "ts" else c for c in EVENT_COLUMNS)
    + " FROM batch"
)


class JournalStore:
    """The DuckDB journal file, held read-write by this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        try:
            self._root = duckdb.connect(str(path))
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
        """This thread's own cursor on the database."""
        con: duckdb.DuckDBPyConnection | None = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = self._root.cursor()
            # No progress bar: a long query would draw one into the server's log.
            con.execute("SET enable_progress_bar = false")
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
        self._exec(VIEWS)

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

    def insert(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Insert events in one transaction; events already present (same eid) are skipped."""
        if not events:
            return
        rows = [
            {**e, "data_pickle": base64.b64decode(e["data_pickle"])} if e.get("data_pickle") else e
            for e in events
        ]
        self.con.register("batch", pa.Table.from_pylist(rows, schema=ARROW_SCHEMA))
        try:
            self._exec(_INSERT)
        finally:
            self.con.unregister("batch")

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        with self._corruption_named():
            rel = self.con.sql(sql, params=params or None)
            return rel.to_arrow_table() if rel is not None else pa.table({})

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
