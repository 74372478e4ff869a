"""Group commit: events durable in write-ahead segments first, loaded into DuckDB in bulk.

Two verbs, as in any journal backend: ``append`` makes batches durable with one fdatasync
(the moment the server may acknowledge them), and ``wait_loaded`` is the read barrier: it
returns once DuckDB holds every event appended before it was called. A background loader
moves appended events into DuckDB every ``FLUSH_INTERVAL`` seconds (or at once when a
reader waits or many are pending) and deletes a segment only after DuckDB committed its
events, so a crash at any point leaves every acknowledged event in a segment or in DuckDB;
the next start loads what the segments still hold (inserts skip known event ids).

When DuckDB cannot take a batch (a full disk), the events stay pending and their segments
stay on disk; the loader tries again and readers are told why they wait. The loop that
acknowledges appends never waits for DuckDB.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from durable_nb.errors import DurableError, JournalUnavailable
from durable_nb.journal.home import SEGMENT_FILE
from durable_nb.journal.schema import Event
from durable_nb.journal.segment import Segment
from durable_nb.journal.store import JournalStore

log = logging.getLogger("durable_nb.server")

FLUSH_INTERVAL = 0.05  # seconds an acknowledged event may wait before it is in DuckDB
FLUSH_MAX_EVENTS = 20_000  # load at once past this many pending events
RETRY_INTERVAL = 1.0  # seconds between attempts to load after DuckDB refused a batch


def segment_number(path: Path) -> int | None:
    """``journal.segment.00000012`` is 12; the bare name (older servers) is 0; a file moved
    aside by hand (``journal.segment.damaged``) is no segment."""
    suffix = path.name[len(SEGMENT_FILE):]
    if not suffix:
        return 0
    return int(suffix[1:]) if suffix[:1] == "." and suffix[1:].isdigit() else None


class WriteAheadLog:
    """The server's durable write path; one thread appends, one loader thread loads."""

    def __init__(self, home: Path, store: JournalStore) -> None:
        self.home = home
        self.store = store
        numbered = [(n, p) for p in home.glob(f"{SEGMENT_FILE}*")
                    if (n := segment_number(p)) is not None]
        leftovers = [p for _, p in sorted(numbered)]
        for path in leftovers:  # events acknowledged before a crash or a stop
            store.load_segment(path)
        if leftovers:
            store.checkpoint()
        for path in leftovers:
            path.unlink()
        self._number = max((n for n, _ in numbered), default=0)
        self._cv = threading.Condition()
        self._segment = self._next_segment()
        self._pending: list[Event] = []  # durable in a segment, not yet in DuckDB
        self._pending_since = 0.0
        self._retained: list[Segment] = []  # segments whose events DuckDB has not taken
        self.appended_id = store.max_id()  # the id of the last event made durable
        self.loaded_id = self.appended_id  # the id of the last event DuckDB holds
        self.load_error: DurableError | None = None  # why the last load failed, if it did
        self._hurry = False
        self._closing = False
        self._loader = threading.Thread(target=self._run_loader, name="durable_nb-loader",
                                        daemon=True)
        self._loader.start()

    def _next_segment(self) -> Segment:
        self._number += 1
        return Segment(self.home / f"{SEGMENT_FILE}.{self._number:08d}")

    # -- the two verbs -----------------------------------------------------------------------
    def append(self, batches: list[list[Event]]) -> None:
        """Make ``batches`` durable with one fdatasync; JournalUnavailable if they are not
        (nothing of them is then kept, and the caller must acknowledge none of them)."""
        with self._cv:
            self._segment.append(batches)
            if not self._pending:
                self._pending_since = time.monotonic()
            for batch in batches:
                self._pending.extend(batch)
            self.appended_id = max(self.appended_id, int(batches[-1][-1]["id"]))
            if len(self._pending) >= FLUSH_MAX_EVENTS:
                self._cv.notify_all()

    def wait_loaded(self, event_id: int | None = None, timeout: float | None = None) -> None:
        """Return once DuckDB holds every event up to ``event_id`` (default: every event
        appended so far). Raises the loader's error if DuckDB refuses them meanwhile."""
        target = self.appended_id if event_id is None else event_id
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self.loaded_id < target:
                if self.load_error is not None:
                    raise self.load_error
                if deadline is not None and time.monotonic() > deadline:
                    raise JournalUnavailable(
                        f"the journal {self.store.path} did not take the events waiting in "
                        f"{self.home} within {timeout:.0f} s; see the server log")
                self._hurry = True
                self._cv.notify_all()
                self._cv.wait(0.1)

    # -- state -----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._cv:
            return len(self._pending)

    def close(self) -> None:
        """Load what is pending (when DuckDB takes it) and stop the loader."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._loader.join()
        self._segment.close()

    # -- the loader thread -------------------------------------------------------------------
    def _run_loader(self) -> None:
        while True:
            with self._cv:
                while True:
                    now = time.monotonic()
                    due = self._pending_since + (RETRY_INTERVAL if self.load_error
                                                 else FLUSH_INTERVAL)
                    if self._pending and (self._closing or self._hurry or now >= due
                                          or len(self._pending) >= FLUSH_MAX_EVENTS):
                        break
                    if self._closing:
                        return
                    self._cv.wait(max(0.0, due - now) if self._pending else None)
                batch, self._pending = self._pending, []
                self._hurry = False
                done = [*self._retained, self._segment]
                self._retained = []
                try:
                    self._segment = self._next_segment()
                except OSError:  # no room even for an empty file: keep appending to it
                    done.pop()
            failure: Exception | None = None
            try:
                self.store.insert(batch)
            except Exception as exc:
                failure = exc
            with self._cv:
                if failure is None:
                    self.loaded_id = max(self.loaded_id, int(batch[-1]["id"]))
                    self.load_error = None
                else:  # keep the events and their segments; try again later
                    log.error("loading %d events into %s failed (will retry): %s",
                              len(batch), self.store.path, failure)
                    self._pending = batch + self._pending
                    self._pending_since = time.monotonic()
                    self._retained = done
                    self.load_error = JournalUnavailable(
                        f"the journal {self.store.path} cannot take new events: {failure}. "
                        f"They are safe in the write-ahead segments of {self.home}; free "
                        "space there (or fix the cause) and they are loaded.")
                    if self._closing:
                        return  # the segments stay for the next start
                self._cv.notify_all()
            if failure is None:
                for segment in done:
                    segment.close()
                    segment.path.unlink()
