"""``durable-nb run``: execute a whole notebook headless in a fresh kernel, resumably.

papermill with a journal: parameters go in a cell after the one tagged ``parameters``, the
executed notebook is saved as it runs, and when the process or the kernel dies, the same
command run again re-runs the cells before the first workflow cell while every ``%%workflow``
cell replays what the journal recorded and runs only the rest.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

from durable_nb.errors import NotebookError
from durable_nb.parameters import (
    INJECTED_TAG,
    assignments,
    cell_source,
    check_parameters,
    injected_index,
)
from durable_nb.progress_line import WorkflowProgress, failed_step
from durable_nb.server.client import JournalClient
from durable_nb.server.discovery import wait_until

EXIT_FAILED = 1  # a cell failed (its traceback is in the output notebook and on stderr)
EXIT_KERNEL_DIED = 3  # run the same command again to resume
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: likewise resumable
SAVE_EVERY = 2.0  # seconds between saves of the output notebook while a cell runs
PREVIOUS_KERNEL_WAIT = 10.0  # seconds to wait for a killed execution's kernel to exit
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def parse_value(text: str) -> Any:
    """A ``-p`` value: the Python literal it spells (``0.3``, ``True``, ``None``, ``[1, 2]``,
    ``"'x'"``) when it is one, else the text itself (``-p name sweep`` gives ``"sweep"``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def default_output(notebook: Path) -> Path:
    """``sweep.ipynb`` -> ``sweep.out.ipynb``, beside it."""
    stem = notebook.stem if notebook.suffix == ".ipynb" else notebook.name
    return notebook.with_name(f"{stem}.out.ipynb")


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path`` (nbformat 4), or NotebookError saying what is wrong."""
    if not path.exists():
        raise NotebookError(f"no notebook at {path}")
    if path.is_dir():
        raise NotebookError(f"{path} is a directory; give the path of an .ipynb file")
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except OSError as exc:
        raise NotebookError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # nbformat raises ValueError, ValidationError, TypeError, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotebookError(f"{path} is not a Jupyter notebook: {reason}") from None
    return nb


def prepare(nb: nbformat.NotebookNode, parameters: dict[str, Any]) -> None:
    """Clear outputs and inject ``parameters`` after the parameters cell, replacing a cell a
    previous run injected (so an output notebook can be run again, as with papermill)."""
    at = check_parameters(nb.cells, parameters)
    if parameters:
        old = injected_index(nb.cells)
        if old is not None:
            del nb.cells[old]
            at = check_parameters(nb.cells, parameters)
        assert at is not None  # check_parameters refuses values without a parameters cell
        cell = nbformat.v4.new_code_cell(assignments(parameters),
                                         metadata={"tags": [INJECTED_TAG]})
        nb.cells.insert(at + 1, cell)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)


def workflow_target(source: str) -> tuple[str, str | None] | None:
    """``(workflow name, --id RUN_ID or None)`` of a ``%%workflow`` cell, else None."""
    from IPython.core.error import UsageError

    from durable_nb.kernel.magics import DurableMagics, _parse

    first = source.lstrip().split("\n", 1)[0]
    if not first.startswith("%%workflow"):
        return None
    try:  # the magic's own parser: the runner reads the line as the kernel will
        opts = _parse(DurableMagics.workflow, first[len("%%workflow"):])
    except UsageError:
        return None  # the magic reports its own usage error when the cell runs
    return (opts.name, opts.run_id) if opts.name else None


def first_line(cell: nbformat.NotebookNode) -> str:
    line = cell_source(cell).strip().split("\n", 1)[0]
    return line if len(line) <= 60 else line[:57] + "..."


class _SavingClient(NotebookClient):
    """nbclient's executor, saving the notebook every SAVE_EVERY seconds while a cell
    prints, from nbclient's own loop (the only code that changes the outputs)."""

    def __init__(self, nb: nbformat.NotebookNode, save: Any, **kw: Any) -> None:
        super().__init__(nb, **kw)
        self._save_cb = save
        self._saved_at = time.monotonic()

    def process_message(self, msg: dict[str, Any], cell: nbformat.NotebookNode,
                        cell_index: int) -> nbformat.NotebookNode | None:
        try:
            return super().process_message(msg, cell, cell_index)
        finally:
            if time.monotonic() - self._saved_at >= SAVE_EVERY:
                self._save_cb(autosave=True)
                self._saved_at = time.monotonic()


@dataclass
class RunReport:
    """How ``durable-nb run`` ended (``--json`` prints it)."""

    notebook: str
    output: str
    status: str  # completed | failed | kernel_died | interrupted | error (kernel start)
    exit_code: int
    cells_executed: int
    seconds: float
    failed_cell: int | None = None  # 1-based, as in the output notebook
    error: str | None = None
    runs: list[dict[str, Any]] | None = None


def _kernel_death(client: NotebookClient) -> str:
    """How the kernel ended, from its exit status: ``killed by SIGKILL``, ``exit status 1``."""
    process = getattr(getattr(client.km, "provisioner", None), "process", None)
    code = process.poll() if process is not None else None
    if code is None:
        return "the kernel died"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        oom = ": out of memory?" if -code == signal.SIGKILL else ""
        return f"the kernel died (killed by {name}{oom})"
    return f"the kernel died (exit status {code})"


class NotebookRun:
    """One execution of a notebook in a fresh kernel, saved to ``output`` as it goes."""

    def __init__(self, notebook: Path, output: Path, parameters: dict[str, Any],
                 kernel_name: str | None = None, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        from durable_nb.journal.home import journal_home

        self.notebook, self.output, self.parameters = notebook, output, parameters
        self.out = out  # None: no progress lines (--json)
        self.err = err or sys.stderr
        self.tty = bool(out is not None and out.isatty())
        self.nb = read_notebook(notebook)
        prepare(self.nb, parameters)
        self.kernel_name = kernel_name or self.nb.metadata.get("kernelspec", {}).get(
            "name") or "python3"
        try:
            KernelSpecManager().get_kernel_spec(self.kernel_name)
        except NoSuchKernel:
            raise NotebookError(
                f"no Jupyter kernel named {self.kernel_name!r}: `jupyter kernelspec list` shows "
                "the installed ones; choose one with --kernel NAME") from None
        self.home = journal_home()
        self.client: NotebookClient | None = None
        self._save_failed = False

    def save(self, autosave: bool = False) -> None:
        """Write the notebook so far (atomically: a crash leaves the previous save)."""
        if self.client is not None:
            self.client.set_widgets_metadata()
        tmp = self.output.with_name(f".{self.output.name}.tmp")
        try:
            nbformat.write(self.nb, tmp)
            os.replace(tmp, self.output)
        except OSError as exc:
            if not autosave:
                raise NotebookError(f"cannot write {self.output}: "
                                    f"{exc.strerror or exc}") from None
            if not self._save_failed:
                self._save_failed = True
                print(f"durable-nb: cannot save {self.output}: {exc.strerror or exc}",
                      file=self.err)

    def _status(self, text: str) -> None:
        """On a terminal, which cell runs (a line redrawn in place; "" clears it)."""
        assert self.out is not None
        width = shutil.get_terminal_size().columns - 1
        self.out.write(f"\r{text[:width]}\x1b[K")
        self.out.flush()

    def _set_status(self, status: str) -> None:
        self.nb.metadata["durable_nb"] = {
            "input": str(self.notebook), "parameters": self.parameters,
            "journal_home": str(self.home), "status": status}

    def execute(self) -> RunReport:
        t0 = time.monotonic()
        journal = JournalClient(self.home)
        runs: list[dict[str, Any]] = []
        # "error" unless the cells all ran or a handler below says how it ended.
        report = RunReport(str(self.notebook), str(self.output), "error", EXIT_FAILED, 0, 0.0,
                           runs=runs)
        self._set_status("running")
        self.save()
        self._wait_for_previous_kernel(journal)
        # ipc sockets (in a short private directory) rather than TCP on localhost: no port
        # for another local user to reach, and no warning from ipykernel about it.
        runtime = tempfile.mkdtemp(prefix="dnbr-")
        km = AsyncKernelManager(kernel_name=self.kernel_name, transport="ipc",
                                connection_file=os.path.join(runtime, "kernel.json"))
        client = self.client = _SavingClient(
            self.nb, self.save, km=km, timeout=None, kernel_name=self.kernel_name,
            resources={"metadata": {"path": str(self.notebook.parent)}})
        # The kernel writes to the journal this process reads, whatever its own defaults;
        # JPY_SESSION_NAME is what the journal records as the run's notebook.
        env = {**os.environ, "DURABLE_NB_HOME": str(self.home),
               "JPY_SESSION_NAME": str(self.notebook.absolute())}
        index, death = -1, "the kernel died"
        workflow_run: dict[str, Any] | None = None  # of the workflow cell that ran last
        in_main = threading.current_thread() is threading.main_thread()
        previous_term = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
        try:
            with client.setup_kernel(env=env, cleanup_kc=True):
                assert client.kc is not None
                info = client.wait_for_reply(client.kc.kernel_info())
                if info and "language_info" in info["content"]:
                    self.nb.metadata["language_info"] = info["content"]["language_info"]
                for index, cell in enumerate(self.nb.cells):
                    if cell.cell_type != "code" or not cell.source.strip():
                        continue
                    target = workflow_target(cell.source)
                    progress = (WorkflowProgress(journal, *target, self.out, self.tty).start()
                                if target else None)
                    if self.tty and not target:
                        self._status(f"cell {index + 1}/{len(self.nb.cells)}: "
                                     f"{first_line(cell)}")
                    try:
                        client.execute_cell(cell, index,
                                            execution_count=client.code_cells_executed + 1)
                        report.cells_executed += 1
                    except DeadKernelError:
                        death = _kernel_death(client)  # before cleanup forgets the process
                        raise
                    finally:
                        if self.tty and not target:
                            self._status("")
                        line = progress.stop() if progress else None
                        workflow_run = None
                        if line is not None:
                            workflow_run = {k: v for k, v in asdict(line).items()
                                            if k in ("run_id", "status", "completed",
                                                     "replayed", "recorded")}
                            runs.append(workflow_run)
                        self.save(autosave=True)
            report.status, report.exit_code = "completed", 0
        except CellExecutionError as exc:
            report.status, report.exit_code = "failed", EXIT_FAILED
            report.failed_cell = index + 1
            report.error = self._report_failure(index, exc, workflow_run, journal)
        except DeadKernelError:
            report.status, report.exit_code = "kernel_died", EXIT_KERNEL_DIED
            report.failed_cell = index + 1
            report.error = (f"{death} during cell {index + 1} "
                            f"({first_line(self.nb.cells[index])}); run the same command "
                            "again to resume")
            self._tell(report.error, runs)
        except KeyboardInterrupt:
            report.status, report.exit_code = "interrupted", EXIT_INTERRUPTED
            report.failed_cell = index + 1 if index >= 0 else None
            where = (f"during cell {index + 1} ({first_line(self.nb.cells[index])})"
                     if index >= 0 else "while the kernel started")
            report.error = (f"interrupted {where}; the kernel was shut down. Run the same "
                            "command again to resume")
            self._tell(report.error, runs)
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous_term)
            journal.close()
            shutil.rmtree(runtime, ignore_errors=True)
            self._set_status(report.status)
            self.save()
        report.seconds = round(time.monotonic() - t0, 2)
        return report

    def _wait_for_previous_kernel(self, journal: JournalClient) -> None:
        """Give the kernel of an execution that was killed a moment to exit.

        Jupyter starts a kernel in a session of its own, so killing this command's process
        group leaves the kernel running until it notices its parent is gone (ipykernel looks
        once a second). Until the journal marks its run interrupted, resuming the run would
        be refused as busy, so wait for that, briefly; a run still busy after that (another
        live execution) is the workflow cell's to report.
        """
        def busy() -> list[str]:
            rows = journal.query("SELECT run_id FROM runs WHERE notebook = ? AND status = "
                                 "'running'", [str(self.notebook.absolute())]).to_pylist()
            return [r["run_id"] for r in rows]

        running = busy()
        if running and self.out is not None:
            print(f"waiting for the previous kernel of {self.notebook.name} to exit "
                  f"(run {', '.join(running)} is marked running)", file=self.out, flush=True)
        if running:
            wait_until(lambda: not busy(), PREVIOUS_KERNEL_WAIT, interval=0.2)

    def _tell(self, message: str, runs: list[dict[str, Any]]) -> None:
        lines = [f"durable-nb: {message}"]
        for run in runs:
            if run["status"] != "completed":
                lines.append(f"  run {run['run_id']}: {run['completed']} completed steps "
                             "recorded; they replay on resume")
        lines.append(f"  the notebook so far: {self.output}")
        print("\n".join(lines), file=self.err)

    def _report_failure(self, index: int, exc: CellExecutionError,
                        run: dict[str, Any] | None, journal: JournalClient) -> str:
        """The failing cell's traceback, then what failed: the cell and, for a workflow, the
        step the journal records as failed, and the way on. Returns the one-line error."""
        cell = self.nb.cells[index]
        errors = [o for o in cell.outputs if o.output_type == "error"]
        traceback = "\n".join(errors[-1].traceback) if errors else exc.traceback
        print(_ANSI.sub("", traceback).rstrip(), file=self.err)
        evalue = (exc.evalue or "").strip().split("\n", 1)[0]
        what = f"{exc.ename}: {evalue}" if evalue else exc.ename
        hint = ""
        step = None
        if run is not None:
            try:
                step = failed_step(journal, run["run_id"])
            except Exception:  # the cell's own error still says what happened
                step = None
        if run is not None and step is not None:
            attempts = f"{step['attempts']} attempt{'s' if step['attempts'] != 1 else ''}"
            what = (f"step {step['seq']} of run {run['run_id']}, {step['name']}(), failed "
                    f"after {attempts}: {step['error']}")
            hint = (f"\n  Fix it and run the same command again: the steps before "
                    f"{step['seq']} replay from the journal and step {step['seq']} runs again.")
        summary = f"cell {index + 1} ({first_line(cell)}) failed: {what}"
        print(f"durable-nb: {summary}{hint}\n  the notebook so far, with the traceback: "
              f"{self.output}", file=self.err)
        return summary


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_notebook(notebook: Path, output: Path | None = None,
                 parameters: dict[str, Any] | None = None, kernel_name: str | None = None,
                 out: TextIO | None = None, err: TextIO | None = None) -> RunReport:
    """Execute ``notebook`` in a fresh kernel, saving the executed copy to ``output``
    (default ``<name>.out.ipynb`` beside it); resumes workflow cells a previous execution
    left unfinished. Bad input raises NotebookError or ParameterError."""
    notebook = Path(notebook)
    output = Path(output) if output is not None else default_output(notebook)
    if output.suffix != ".ipynb":
        raise NotebookError(f"the output {output} must be an .ipynb file")
    if not output.parent.is_dir():
        raise NotebookError(f"the output's directory {output.parent} does not exist")
    run = NotebookRun(notebook, output, dict(parameters or {}), kernel_name, out, err)
    return run.execute()


def report_json(report: RunReport) -> str:
    return json.dumps(asdict(report))
