"""A real IPython kernel driven over jupyter_client: execute cells, SIGKILL it, restart it.

Used where durability must be shown against the real thing, never a mock: the end-to-end
tests and ``make demo`` kill a kernel mid-run and resume in a fresh one.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from durable_nb.server.discovery import wait_until


@dataclass
class CellResult:
    """What a cell printed and how it ended."""

    status: str = "ok"
    stdout: str = ""
    stderr: str = ""
    ename: str | None = None
    evalue: str | None = None
    traceback: str = ""
    data: list[dict[str, Any]] = field(default_factory=list)  # results, displays, updates

    @property
    def text(self) -> str:
        """Everything a person would read under the cell, in one string."""
        plain = [d.get("text/plain", "") for d in self.data]
        return "\n".join([self.stdout, self.stderr, *plain, self.traceback])

    def raise_for_error(self) -> CellResult:
        if self.status != "ok":
            raise AssertionError(f"cell failed: {self.ename}: {self.evalue}\n{self.text}")
        return self


class KernelSession:
    """One kernel process at a time; ``restart`` gives a fresh process, as a user would."""

    def __init__(self, env: dict[str, str] | None = None, cwd: str | Path | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        self.cwd = str(cwd) if cwd else None
        self.km: KernelManager | None = None
        self.kc: Any = None
        self.pid: int | None = None
        self._pending: dict[str, CellResult] = {}
        self._runtime: str | None = None

    def _connection_file(self) -> str:
        # ipc sockets live beside the connection file; keep the path short and private.
        import tempfile

        self._runtime = tempfile.mkdtemp(prefix="dnbk-")
        return os.path.join(self._runtime, "kernel.json")

    def start(self, timeout: float = 60) -> KernelSession:
        self.km = KernelManager(kernel_name="python3", transport="ipc",
                                connection_file=self._connection_file())
        self.km.start_kernel(env=self.env, cwd=self.cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=timeout)
        self.pid = int(self.run("import os; print(os.getpid())").raise_for_error().stdout)
        return self

    def __enter__(self) -> KernelSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- executing ---------------------------------------------------------------------------
    def submit(self, code: str) -> str:
        """Send a cell for execution without waiting; returns its message id."""
        msg_id: str = self.kc.execute(code, allow_stdin=False)
        self._pending[msg_id] = CellResult()
        return msg_id

    def wait(self, msg_id: str, timeout: float = 180) -> CellResult:
        """Collect a submitted cell's output until the kernel reports it idle."""
        result = self._pending[msg_id]
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"cell did not finish within {timeout} s:\n{result.text}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                if self.km is not None and not self.km.is_alive():
                    result.status = "dead"
                    return self._pending.pop(msg_id)
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind in ("execute_result", "display_data", "update_display_data"):
                result.data.append(content["data"])
            elif kind == "error":
                result.status = "error"
                result.ename, result.evalue = content["ename"], content["evalue"]
                result.traceback = "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                self._read_reply(msg_id, result)
                return self._pending.pop(msg_id)

    def _read_reply(self, msg_id: str, result: CellResult) -> None:
        """The execute_reply says how a cell ended even when no error went to iopub
        (IPython reports a UsageError on stderr only)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                reply = self.kc.get_shell_msg(timeout=1.0)
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") != msg_id:
                continue
            content = reply["content"]
            if content.get("status") == "error" and result.status == "ok":
                result.status = "error"
                result.ename, result.evalue = content.get("ename"), content.get("evalue")
            return

    def run(self, code: str, timeout: float = 180) -> CellResult:
        return self.wait(self.submit(code), timeout)

    # -- killing -----------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the kernel process, as the OOM killer would."""
        km = self.km
        assert self.pid is not None and km is not None
        os.kill(self.pid, signal.SIGKILL)
        wait_until(lambda: not km.is_alive(), 30, interval=0.05)
        self._pending.clear()

    def interrupt(self) -> None:
        """Ctrl-C: the kernel's interrupt (SIGINT to the kernel process)."""
        assert self.km is not None
        self.km.interrupt_kernel()

    def restart(self, timeout: float = 60) -> KernelSession:
        """A fresh kernel process: nothing of the old one's memory survives."""
        self.shutdown()
        return self.start(timeout)

    def shutdown(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None
        if self.km is not None:
            if self.km.is_alive():
                self.km.shutdown_kernel(now=True)
            else:
                self.km.cleanup_resources()
            self.km = None
        if self._runtime:
            shutil.rmtree(self._runtime, ignore_errors=True)
            self._runtime = None
        self._pending.clear()


def wait_for_file_text(path: Path, text: str, timeout: float = 60) -> None:
    """Block until ``path`` contains ``text`` (a side-effect log written by an activity)."""
    if wait_until(lambda: path.exists() and text in path.read_text(), timeout):
        return
    got = path.read_text() if path.exists() else "<no file>"
    raise TimeoutError(f"{path} did not show {text!r} within {timeout} s; it holds:\n{got}")
