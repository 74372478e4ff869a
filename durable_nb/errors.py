"""Exceptions a notebook user can catch, each naming what went wrong and the way on."""

from __future__ import annotations


class DurableError(Exception):
    """Base class of every durable_nb error."""


class JournalUnavailable(DurableError):
    """The journal home or the journal server cannot be used (permissions, start failure)."""


class JournalCorrupted(JournalUnavailable):
    """A journal file cannot be read; the message names the file and how to recover."""


class BlobCorrupted(JournalCorrupted):
    """A payload stored as a blob is missing or does not match its digest; the message names
    the value, the file and the way out. Nothing else the journal holds is affected."""

    def __init__(self, message: str, *, path: object = None, digest: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.digest = digest


class EncryptionKeyError(DurableError):
    """The journal is encrypted and the key is missing or wrong (the message says which),
    or a sealed value does not open."""


class ConfigurationError(DurableError, ValueError):
    """An environment setting of durable_nb (``DURABLE_NB_*``) is ill-formed."""


class RunNotFound(DurableError, KeyError):
    """No run with the given id exists in the journal."""

    @classmethod
    def in_journal(cls, run_id: object, home: object) -> RunNotFound:
        return cls(f"no run {run_id!r} in the journal {home}. List the runs with "
                   "durable_nb.runs() or `durable-nb runs`.")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunBusy(DurableError):
    """Another live process is executing the run."""


class RunFinished(DurableError):
    """The action needs a run that is not over (completed or cancelled)."""


class NondeterminismError(DurableError):
    """Replaying a run, the workflow asked for a different call than the journal holds."""


class MissingInput(DurableError, NameError):
    """A workflow cell reads a name this kernel lacks, and its run could not record it."""

    def __init__(self, name: str, run_id: str, type_name: str, why: str | None) -> None:
        because = f" ({why})" if why else ""
        super().__init__(
            f"the workflow cell reads `{name}`, which this kernel does not define, and run "
            f"{run_id} could not record it: a {type_name} cannot be stored{because}. Run the "
            f"cells that define `{name}`, then re-run this cell.")
        self.name = name

    def _render_traceback_(self) -> list[str]:
        return [f"MissingInput: {self}"]


class InputChanged(NondeterminismError):
    """A workflow cell's input differs from what its unfinished run recorded."""

    def _render_traceback_(self) -> list[str]:  # about the notebook's names, not a code line
        return [f"InputChanged: {self}"]


class ActivityFailed(DurableError):
    """An activity failed for good (retries exhausted or a non-retryable error).

    The original exception is chained as ``__cause__`` and kept in ``cause``.
    """

    def __init__(self, message: str, *, run_id: str, seq: int, activity: str,
                 attempts: int, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.seq = seq
        self.activity = activity
        self.attempts = attempts
        self.cause = cause


class ActivityTimeout(DurableError, TimeoutError):
    """One attempt of an activity ran longer than its timeout."""


class PayloadError(DurableError, TypeError):
    """An argument or result cannot be stored (not JSON-able and not picklable)."""


class RunCancelled(DurableError):
    """The run was cancelled (from the widget, the sidebar or the CLI)."""

    def _render_traceback_(self) -> list[str]:
        # A stop the user asked for: IPython shows this line instead of a traceback.
        return [f"RunCancelled: {self}"]


class ParameterError(DurableError, ValueError):
    """A notebook parameter (``durable-nb run -p NAME VALUE``) is ill-formed or is not one
    the notebook's parameters cell assigns."""


class NotebookError(DurableError):
    """A notebook to run cannot be read: missing, not a notebook, or invalid."""


class QueryError(DurableError, ValueError):
    """A SQL query sent to the journal failed; the message is the database's."""


class QueryRefused(QueryError):
    """The journal refused a SQL statement: user SQL is one read-only query, without file or
    network access. The message names what was refused and what is allowed."""
