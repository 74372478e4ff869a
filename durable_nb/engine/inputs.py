"""A workflow cell's inputs: the notebook names it reads, recorded with its run.

Most workflow cells read names that earlier cells define (``grid``, ``np``, the activities).
So that a run can be resumed from the journal alone (``%workflow resume RUN_ID`` in a fresh
kernel, the sidebar's Resume), each run records those names when its cell starts, one
``run_input`` event per name:

- a value is encoded like a step's argument (``args_hash`` holds its digest);
- a module is recorded as its import name and imported again;
- an activity is recorded by its source (the ``activity_code`` event) and defined again from
  its ``%%activity`` cell;
- a value that cannot be encoded is recorded by name and type only: a resume in a kernel that
  lacks it says which cells to run.

A recorded input that now differs is treated like a differing step: resuming an unfinished
run raises :class:`InputChanged` (a :class:`NondeterminismError`) naming the variable;
replaying a completed run continues as a fork that records the new value.
"""

from __future__ import annotations

import base64
import builtins
import importlib
import json
import re
import symtable
import textwrap
import types
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from durable_nb.errors import InputChanged, MissingInput, PayloadError
from durable_nb.journal.blobs import BlobRef
from durable_nb.journal.codec import (
    KEYED_DIGEST_PREFIX,
    Payload,
    code_hash,
    decode,
    encode,
    preview,
    value_digest,
)
from durable_nb.journal.schema import Event, event

if TYPE_CHECKING:
    from durable_nb.engine.run import RunContext

# IPython's own history names (_, __, _3, _i3, _ih, ...): never inputs of a cell.
_HISTORY = re.compile(r"_+|_i+|_\d+|_i\d+|_[iod]h")

VALUE, MODULE, ACTIVITY, UNRECORDED = "value", "module", "activity", "unrecorded"


def free_names(code: str, filename: str = "<cell>") -> list[str]:
    """Names the code reads at module level (or from inside its functions and classes)
    without assigning them at module level, sorted: the cell's free variables."""
    top = symtable.symtable(code, filename, "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    read: set[str] = set()

    def visit(table: symtable.SymbolTable, nested: bool) -> None:
        for sym in table.get_symbols():
            name = sym.get_name()
            if nested and sym.is_declared_global() and sym.is_assigned():
                bound.add(name)  # `global x; x = ...` in a function defines x for the cell
            if sym.is_referenced() and (not nested or sym.is_global()):
                read.add(name)
        for child in table.get_children():
            visit(child, True)

    visit(top, False)
    return sorted(read - bound)


@dataclass(frozen=True)
class Input:
    """One name a workflow cell reads, as the journal records it."""

    name: str
    kind: str  # VALUE, MODULE, ACTIVITY or UNRECORDED
    digest: str | None  # compared on re-run; None: not compared (activities, some code)
    payload: Payload | None
    type_name: str
    why: str | None = None  # UNRECORDED: why the value could not be encoded

    @property
    def preview(self) -> str:
        return self.payload.preview if self.payload else f"<{self.type_name}>"

    def missing(self, run_id: str) -> MissingInput:
        """The error for this input when the kernel lacks it and the journal cannot help."""
        return MissingInput(self.name, run_id, self.type_name, self.why)

    def as_event(self, run_id: str) -> Event:
        meta = {"input": self.kind, "type": self.type_name, "why": self.why}
        columns = (self.payload.columns(meta) if self.payload else
                   {"data_json": None, "data_pickle": None, "meta": meta})
        return event(run_id, "run_input", name=self.name, args_hash=self.digest,
                     **{**columns, "preview": self.preview})

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Input:
        meta = json.loads(row["meta"]) if row.get("meta") else {}
        pickled = row.get("data_pickle")
        if isinstance(pickled, bytes):
            pickled = base64.b64encode(pickled).decode("ascii")
        blob = BlobRef.from_meta(meta)
        payload = (Payload(row.get("data_json"), pickled, row.get("preview") or "", blob)
                   if row.get("data_json") is not None or pickled is not None or blob
                   else None)
        return cls(name=row["name"], kind=meta.get("input", VALUE), digest=row.get("args_hash"),
                   payload=payload, type_name=meta.get("type") or "object",
                   why=meta.get("why"))


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def comparable(recorded: str | None, now: str | None) -> bool:
    """Whether two input digests can be compared: both made, and both keyed or neither
    (an input recorded before the journal was encrypted is not compared)."""
    return (recorded is not None and now is not None
            and recorded.startswith(KEYED_DIGEST_PREFIX) == now.startswith(KEYED_DIGEST_PREFIX))


def capture(name: str, value: Any, home: Path | None = None) -> Input:
    """How ``value``, read by the cell as ``name``, is recorded (a large value as a blob
    in ``home``)."""
    from durable_nb.engine.activity import Activity

    type_name = _type_name(value)
    if isinstance(value, types.ModuleType):
        payload = Payload(json.dumps(value.__name__), None, value.__name__)
        return Input(name, MODULE, code_hash(value.__name__), payload, type_name)
    if isinstance(value, Activity):
        return Input(name, ACTIVITY, None, None, type_name)
    try:
        payload = encode(value, what=f"input {name!r} of the workflow cell", home=home)
    except (PayloadError, RecursionError) as exc:
        cause = exc.__cause__ or exc  # the pickler's own words: "cannot pickle ..."
        why = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        return Input(name, UNRECORDED, None,
                     Payload(None, None, preview(value)), type_name, why=why)
    # call_hash digests a notebook-defined function or class by its source, so a value
    # hashes alike in every kernel.
    return Input(name, VALUE, value_digest(value, home), payload, type_name)


def restore(rec: Input, run_id: str, home: Path | None = None) -> Any:
    """The value a recorded input stands for (imports a module again)."""
    if rec.kind == MODULE and rec.payload is not None:
        return importlib.import_module(str(decode(rec.payload.json, None)))
    if rec.kind == VALUE and rec.payload is not None:
        p = rec.payload
        return decode(p.json, p.pickle_b64, p.blob, home=home,
                      what=f"input {rec.name!r} of run {run_id}",
                      remedy=f"Define `{rec.name}` in the notebook (run the cells that make "
                             "it), then re-run the workflow cell.")
    raise rec.missing(run_id)


def recorded_inputs(rows: Iterable[dict[str, Any]]) -> dict[str, Input]:
    """The latest ``run_input`` record of each name among a run's events (in id order)."""
    return {row["name"]: Input.from_row(row) for row in rows if row["kind"] == "run_input"}


def cell_inputs(names: Iterable[str], ns: MutableMapping[str, Any],
                hidden: Iterable[str] = ()) -> list[str]:
    """Of a cell's free names, those that are the notebook's (not builtins, not IPython's)."""
    skip = set(hidden)
    return [n for n in names if n not in skip and not _HISTORY.fullmatch(n)
            and (n in ns or not hasattr(builtins, n))]


def activity_globals(names: list[str], ns: MutableMapping[str, Any],
                     hidden: Iterable[str] = ()) -> list[str]:
    """The notebook names that the cell's activities read (``step_seconds`` in a ``train``
    that sleeps for it), other than the cell's own inputs."""
    from durable_nb.engine.activity import Activity

    read: set[str] = set()
    for name in names:
        activity = ns.get(name)
        if isinstance(activity, Activity) and activity.source:
            try:
                read.update(free_names(textwrap.dedent(activity.source)))
            except SyntaxError:  # a source text that does not parse alone: nothing to add
                continue
    return [n for n in cell_inputs(sorted(read), ns, hidden) if n not in names]


def bind_inputs(ctx: RunContext, names: list[str], ns: MutableMapping[str, Any],
                hidden: Iterable[str] = ()) -> None:
    """Before a workflow body runs: restore recorded inputs the namespace lacks, check the
    others against the record, and record the ones the run has not recorded yet.

    Names only the activities read are restored and recorded but not compared: like an
    activity's code, they may change between attempts (fix and resume).
    """
    __tracebackhide__ = True  # its errors name the variable: this frame adds nothing
    recorded = ctx.inputs
    loose = set(activity_globals(names, ns, hidden))
    names = [*names, *sorted(loose)]
    lacking = [recorded[n] for n in names if n not in ns and n in recorded
               and recorded[n].kind == UNRECORDED]
    if lacking:  # before anything is restored: the namespace stays as it was
        raise lacking[0].missing(ctx.run_id)
    restored: list[str] = []
    changed: list[tuple[Input, Input]] = []
    fresh: list[Input] = []
    for name in names:
        rec = recorded.get(name)
        if name not in ns:
            if rec is not None and rec.kind != ACTIVITY:
                ns[name] = restore(rec, ctx.run_id, ctx.client.home)
                restored.append(name)
            continue
        now = capture(name, ns[name], ctx.client.home)
        if rec is None:
            fresh.append(now)
        elif comparable(rec.digest, now.digest) and rec.digest != now.digest:
            if name in loose:
                fresh.append(now)  # recorded anew: what the next resume restores
            else:
                changed.append((rec, now))
        if now.kind == ACTIVITY:
            ctx.record_code(ns[name])
    if restored:
        ctx.notice(f"restored from the journal: {', '.join(restored)}")
    if changed and ctx.mode == "resume":
        raise InputChanged(_divergence(ctx, changed))
    if changed:  # replaying a completed run: continue as a fork that records the new values
        ctx.fork_reason = ", ".join(f"input `{now.name}`" for _, now in changed) + (
            " differs" if len(changed) == 1 else " differ")
        ctx.pending_inputs = [now for _, now in changed] + fresh
    elif fresh and ctx.mode == "resume":
        ctx.record_inputs(fresh)


def _divergence(ctx: RunContext, changed: list[tuple[Input, Input]]) -> str:
    listed = "; ".join(f"`{now.name}` recorded {rec.preview}, now {now.preview}"
                       for rec, now in changed)
    first = changed[0][1].name
    return (
        f"the workflow cell's {'inputs differ' if len(changed) > 1 else 'input differs'} "
        f"from what run "
        f"{ctx.run_id} recorded: {listed}. The run is unfinished and its steps so far were "
        f"computed from the recorded values. To go on with those, delete the name (`del "
        f"{first}`) and re-run this cell: it is restored from the journal. To use the new "
        f"value, start over with `%%workflow {ctx.workflow} --new`."
    )
