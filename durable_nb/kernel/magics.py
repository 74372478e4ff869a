"""``%%activity`` and ``%%workflow``: the notebook face of activities and workflows."""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from durable_nb.engine.activity import Activity, check_safe
from durable_nb.engine.executors import check_executor, check_limit
from durable_nb.engine.identity import find_run, open_run, recorded_cell
from durable_nb.engine.inputs import bind_inputs, cell_inputs, free_names
from durable_nb.engine.retry import RetryPolicy
from durable_nb.engine.run import RunContext, current_run
from durable_nb.errors import RunNotFound
from durable_nb.kernel.cells import (
    RunHandle,
    background_runs,
    cell_body,
    run_on_worker,
    start_worker,
)
from durable_nb.server.client import default_client


def _top_level_functions(tree: ast.Module, source: str) -> dict[str, str]:
    """Names and source text (decorators included) of the functions a cell defines."""
    lines = source.splitlines(keepends=True)
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef):
            raise UsageError(
                f"%%activity: {node.name} is an async function; activities are plain "
                "functions (call asyncio.run(...) inside one if it needs async I/O)"
            )
        if isinstance(node, ast.FunctionDef):
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            found[node.name] = "".join(lines[first - 1 : node.end_lineno])
    return found


def _nested_workflow(why: str) -> UsageError:
    return UsageError(
        f"%%workflow: a workflow cannot run inside another ({why}). Run each workflow in a "
        "cell of its own (one after the other, or the first with --background), or call the "
        "inner workflow's activities directly in this one."
    )


def _workflow_magic_line(tree: ast.Module) -> int | None:
    """The first line of a cell that runs ``%%workflow`` or ``%workflow`` (as IPython writes
    them: ``get_ipython().run_cell_magic('workflow', ...)``), if any."""
    lines = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr in ("run_cell_magic", "run_line_magic") and node.args
             and isinstance(node.args[0], ast.Constant) and node.args[0].value == "workflow"]
    return min(lines, default=None)


def _parse(magic: Any, line: str) -> Any:
    """Parse magic arguments; a mistake gets the usage line with it."""
    try:
        return parse_argstring(magic, line)
    except UsageError as exc:
        raise _usage_error(magic, str(exc)) from None


def _usage_error(magic: Any, message: str) -> UsageError:
    # IPython writes the usage as "::" and then the line, wrapped when it is long.
    usage = " ".join(magic.parser.format_usage().split()).removeprefix(":: ")
    return UsageError(f"{message}\nusage: %{usage}")


@magics_class
class DurableMagics(Magics):
    """Cell magics that make notebook code durable."""

    @property
    def _ipython(self) -> InteractiveShell:
        """The shell the magics were registered with (always set once loaded)."""
        assert self.shell is not None
        return self.shell

    def _compile(self, cell: str) -> tuple[str, ast.Module, str]:
        """IPython-transform a cell and register its source so tracebacks show its lines."""
        with cell_body():
            code = self._ipython.transform_cell(cell)
        # IPython counts the running cell before executing it: its number is one less.
        filename = self._ipython.compile.cache(code, self._ipython.execution_count - 1)
        try:
            tree = ast.parse(code, filename)
        except SyntaxError as exc:
            raise UsageError(f"the cell does not parse: {exc}") from None
        return code, tree, filename

    @magic_arguments()
    @argument("--retries", type=int, default=0, metavar="N",
              help="retries after the first attempt (0 = one attempt)")
    @argument("--timeout", type=float, default=None, metavar="S", help="seconds per attempt")
    @argument("--backoff", type=float, default=1.0, metavar="S",
              help="seconds before the first retry")
    @argument("--executor", default=None, metavar="NAME",
              help="where attempts run: thread (default), process or dask")
    @argument("--max-concurrency", dest="max_concurrency", type=int, default=None,
              metavar="N", help="at most N attempts of each function at once")
    @argument("--heartbeat-timeout", dest="heartbeat_timeout", type=float, default=None,
              metavar="S", help="fail an attempt with no durable_nb.heartbeat() for S s")
    @argument("--safe", default="", metavar="NAMES",
              help="in an encrypted journal, keep these parameters (and 'return', the "
                   "result) in clear: --safe lr,epochs,return")
    @cell_magic
    def activity(self, line: str, cell: str) -> None:
        """Define the cell's top-level functions as activities: journaled inside workflows.

        Usage: %%activity [--retries N] [--timeout S] [--backoff S] [--executor NAME]
                          [--max-concurrency N] [--heartbeat-timeout S] [--safe NAMES]
        """
        opts = _parse(self.activity, line)
        try:
            policy = RetryPolicy(retries=opts.retries, timeout=opts.timeout,
                                 backoff=opts.backoff,
                                 heartbeat_timeout=opts.heartbeat_timeout)
            check_executor(opts.executor)
            check_limit(opts.max_concurrency)
            safe = check_safe(opts.safe)
        except ValueError as exc:
            raise _usage_error(self.activity, f"%%activity: {exc}") from None
        code, tree, filename = self._compile(cell)
        functions = _top_level_functions(tree, code)
        if not functions:
            raise UsageError(
                "%%activity: the cell defines no function. Write `def name(...):` at the top "
                "level of the cell; each such function becomes an activity."
            )
        ns = self._ipython.user_ns
        exec(compile(tree, filename, "exec"), ns)  # noqa: S102 - the user's own cell
        for name, source in functions.items():
            ns[name] = Activity(ns[name], policy, name=name, source=source,
                                executor=opts.executor, max_concurrency=opts.max_concurrency,
                                safe=safe)
            ns[name].defined_by = f"%%activity {line}".rstrip() + "\n" + cell

    @magic_arguments()
    @argument("name", metavar="NAME",
              help="workflow name: runs of the same name resume each other")
    @argument("--new", action="store_true", help="start a fresh run")
    @argument("--id", dest="run_id", default=None, help="resume or replay this run")
    @argument("--fork-at", dest="fork_at", type=int, default=None, metavar="N",
              help="keep steps before N of the run, run the rest with the current code")
    @argument("--executor", default=None, metavar="NAME",
              help="where activities without their own --executor run: thread, process, dask")
    @argument("--max-concurrency", dest="max_concurrency", type=int, default=None,
              metavar="N", help="at most N activity attempts of the run at once")
    @argument("--background", action="store_true",
              help="return at once with a handle; the kernel stays usable")
    @cell_magic
    def workflow(self, line: str, cell: str) -> Any:
        """Run the cell as a durable workflow: its activity calls are journaled steps.

        Re-running the cell resumes the latest unfinished run of NAME; a finished run is
        replayed from the journal (nothing executes) unless a step now differs, in which
        case a new run continues from there. In a kernel the cell shows a live view of the
        run and stays interruptible; ``--background`` returns a handle at once.

        Usage: %%workflow NAME [--new] [--id RUN_ID] [--fork-at N] [--background]
        """
        __tracebackhide__ = True
        opts, ctx, body = self._open_workflow(line, cell)
        if opts.background:  # no event loop to await on: a plain worker thread
            handle = RunHandle(ctx)
            start_worker(ctx, body, handle._finish)
            background_runs[ctx.run_id] = handle
            return handle
        try:
            return ctx.execute(body)
        finally:
            print(ctx.summary())

    async def workflow_async(self, line: str, cell: str) -> Any:
        """``%%workflow`` as the kernel runs it: awaited, body on a worker thread
        (see ``durable_nb.kernel.cells``)."""
        __tracebackhide__ = True
        opts, ctx, body = self._open_workflow(line, cell)
        return await run_on_worker(ctx, body, background=opts.background,
                                   summary=lambda: print(ctx.summary()))

    def _open_workflow(self, line: str, cell: str) -> tuple[Any, RunContext, Callable[[], Any]]:
        """Parse the magic line, compile the cell and open its run (resume, replay or new)."""
        opts = _parse(self.workflow, line)
        if opts.fork_at is not None and opts.fork_at < 0:
            raise UsageError("%%workflow: --fork-at takes a step number >= 0")
        if opts.new and (opts.run_id or opts.fork_at is not None):
            raise UsageError("%%workflow: --new starts from nothing; it cannot be combined "
                             "with --id or --fork-at")
        outer = current_run()
        if outer is not None:
            raise _nested_workflow(f"this code runs inside run {outer.run_id}")
        code, tree, filename = self._compile(cell)
        nested = _workflow_magic_line(tree)
        if nested is not None:
            lines = cell.splitlines()  # IPython keeps one line per magic line
            shown = f": `{lines[nested - 1].strip()}`" if nested <= len(lines) else ""
            raise _nested_workflow(f"the cell starts one{shown}")
        ns = self._ipython.user_ns
        inputs = cell_inputs(free_names(code, filename), ns, self._ipython.user_ns_hidden)
        last_expr = None
        if tree.body and isinstance(last := tree.body[-1], ast.Expr):
            tree.body.pop()
            last_expr = ast.Expression(last.value)
        body_code = compile(tree, filename, "exec")
        expr_code = compile(last_expr, filename, "eval") if last_expr else None

        def body() -> Any:
            __tracebackhide__ = True
            bind_inputs(ctx, inputs, ns, self._ipython.user_ns_hidden)
            exec(body_code, ns)  # noqa: S102 - the user's own cell
            return eval(expr_code, ns) if expr_code else None  # noqa: S307

        try:
            check_executor(opts.executor)
            check_limit(opts.max_concurrency)
            ctx = open_run(opts.name, source=cell, new=opts.new, run_id=opts.run_id,
                           fork_at=opts.fork_at)
            ctx.configure(executor=opts.executor, max_concurrency=opts.max_concurrency)
        except (RunNotFound, ValueError) as exc:
            raise UsageError(f"%%workflow: {exc}") from None
        for notice in ctx.notices:
            print(notice)
        self._define_recorded_activities(ctx.run_id, [n for n in inputs if n not in ns])
        return opts, ctx, body

    @line_magic("workflow")  # type: ignore[arg-type]  # IPython types the named form as Never
    def workflow_line(self, line: str) -> Any:
        """``%workflow resume RUN_ID``: continue a run from the journal's record of its cell.

        For when the notebook's cells were not re-run (after a kernel restart, or from the
        sidebar's Resume): activities the kernel lacks are defined again from their recorded
        ``%%activity`` cells, then the recorded workflow cell runs as ``--id RUN_ID``.
        """
        __tracebackhide__ = True
        return self.workflow(*self._resume_cell(line))

    async def workflow_line_async(self, line: str) -> Any:
        __tracebackhide__ = True
        return await self.workflow_async(*self._resume_cell(line))

    def _resume_cell(self, line: str) -> tuple[str, str]:
        """The ``%%workflow`` line and cell that resume the run named in ``resume RUN_ID``."""
        words = line.split()
        if len(words) != 2 or words[0] != "resume":
            raise UsageError("usage: %workflow resume RUN_ID  (to run a workflow cell, use "
                             "the cell magic %%workflow NAME)")
        run_id = words[1]
        client = default_client()
        try:
            run = find_run(client, run_id)
        except RunNotFound as exc:
            raise UsageError(f"%workflow resume: {exc}") from None
        cell = recorded_cell(client, run_id)
        if cell is None:
            raise UsageError(
                f"%workflow resume: run {run_id} was not started by a %%workflow cell, so the "
                "journal holds no cell to run; call its @durable_nb.workflow function again")
        self._define_recorded_activities(run_id)
        return f"{run['workflow']} --id {run_id}", cell

    def _define_recorded_activities(self, run_id: str,
                                    names: list[str] | None = None) -> None:
        """Define the run's activities that the kernel lacks (of ``names``, or all) from
        their recorded ``%%activity`` cells."""
        if names == []:
            return
        activities = default_client().query(
            "SELECT name, arg_max(meta->>'cell', id) AS cell FROM events WHERE run_id = ? "
            "AND kind = 'activity_code' GROUP BY name", [run_id]).to_pylist()
        ns = self._ipython.user_ns
        missing: dict[str, list[str]] = {}  # recorded %%activity cell -> activities it makes
        for a in activities:
            if (a["cell"] and (names is None or a["name"] in names)
                    and not isinstance(ns.get(a["name"]), Activity)):
                missing.setdefault(a["cell"], []).append(a["name"])
        for cell_of, made in missing.items():
            first, _, body = cell_of.partition("\n")
            self.activity(first.removeprefix("%%activity").strip(), body)
            print(f"defined from the journal: {', '.join(sorted(made))}")
