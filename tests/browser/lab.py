"""A real JupyterLab server for browser tests, and page helpers for JupyterLab 4.x.

Selectors were checked against the DOM of JupyterLab 4.6: the notebook in front is
``#jp-main-dock-panel .jp-NotebookPanel:not(.lm-mod-hidden)``; its cells are
``.jp-Notebook-cell`` (all in the DOM, in order: the default windowing mode only sets
``content-visibility``), a cell's outputs ``.jp-Cell-outputArea``; the toolbar's kernel
indicator is ``.jp-Notebook-ExecutionIndicator[data-status]``. That indicator alone is not a
readiness signal: it says "idle" before the session even has a kernel ("No Kernel |
Initializing" in the status bar), so ``wait_kernel_idle`` also asks the panel's
``sessionContext`` (through ``window.jupyterapp``) for a connected, idle kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from playwright.sync_api import Locator, Page

CHROMIUM = os.environ.get("DURABLE_NB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# The sidebar's build in this checkout (`make labextension`). A worktree's tests serve it,
# whatever build the venv's labextensions dir links to.
LABEXTENSION_BUILD = Path(__file__).resolve().parents[2] / "durable_nb" / "labextension"
LABEXTENSION_NAME = "@durable-nb/labextension"

START_TIMEOUT = 90.0  # seconds for `jupyter lab` to answer /api/status (2 s when idle)
OPEN_TIMEOUT = 90.0  # seconds for the page, the notebook panel and its kernel
RUN_TIMEOUT = 120.0  # seconds for cells to finish


# --------------------------------------------------------------------------- the server


@dataclass
class LabServer:
    """A running ``jupyter lab``; see :func:`start_lab`."""

    url: str  # http://127.0.0.1:PORT (no trailing slash, no token)
    token: str
    root_dir: Path  # the server's root_dir: write notebooks here
    journal_home: Path  # DURABLE_NB_HOME of the server and of every kernel it starts
    log_path: Path  # the server's stdout + stderr
    base_dir: Path  # private Jupyter/IPython dirs live under it
    process: subprocess.Popen[bytes] = field(repr=False)

    def get(self, path: str, timeout: float = 30.0) -> Any:
        """GET ``path`` (e.g. ``/api/kernels``) with the token; the decoded JSON answer."""
        with urllib.request.urlopen(self._request(path), timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def _request(self, path: str) -> urllib.request.Request:
        return urllib.request.Request(
            self.url + path, headers={"Authorization": f"token {self.token}"})


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_lab_settings(config_dir: Path) -> None:
    """User settings of the private config dir: no news/update toasts over the page."""
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def start_lab(base_dir: Path, *, root_dir: Path | None = None,
              journal_home: Path | None = None, timeout: float = START_TIMEOUT) -> LabServer:
    """Start ``jupyter lab`` with private Jupyter dirs under ``base_dir``; wait until it answers.

    The journal home is not created here: durable_nb creates it (mode 0700) on first use.
    """
    root_dir = root_dir or base_dir / "root"
    journal_home = journal_home or base_dir / "home"
    jupyter_dir = base_dir / "jupyter"
    config_dir, data_dir, runtime_dir = (jupyter_dir / n for n in ("config", "data", "runtime"))
    for d in (root_dir, config_dir, data_dir, runtime_dir, base_dir / "ipython"):
        d.mkdir(parents=True, exist_ok=True)
    _write_lab_settings(config_dir)
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    for name in ("JUPYTER_TOKEN", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTERLAB_SETTINGS_DIR",
                 "JUPYTERLAB_WORKSPACES_DIR", "JUPYTER_PLATFORM_DIRS"):
        env.pop(name, None)
    env.update({
        # Private config/data/runtime. Prebuilt lab extensions (jupyterlab_widgets) are found
        # under <sys.prefix>/share/jupyter/labextensions, which stays on the data path.
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_DATA_DIR": str(data_dir),
        "JUPYTER_RUNTIME_DIR": str(runtime_dir),
        "JUPYTER_PREFER_ENV_PATH": "1",
        "IPYTHONDIR": str(base_dir / "ipython"),
        "DURABLE_NB_HOME": str(journal_home),
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    })
    if (LABEXTENSION_BUILD / "package.json").exists():
        # JUPYTER_PATH comes first on the data path, and the first copy of an extension wins.
        path_dir = jupyter_dir / "path"
        link = path_dir / "labextensions" / LABEXTENSION_NAME
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(LABEXTENSION_BUILD, target_is_directory=True)
        env["JUPYTER_PATH"] = str(path_dir)
    token = secrets.token_hex(24)
    log_path = base_dir / "lab.log"
    last_error = ""
    for _attempt in range(3):  # another process may take the free port before the server does
        port = _free_port()
        cmd = [
            str(bin_dir / "jupyter"), "lab", "--no-browser", "--allow-root",
            # IdentityProvider.token is the non-deprecated spelling of ServerApp.token.
            f"--IdentityProvider.token={token}",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root_dir}", "--ServerApp.disable_check_xsrf=False",
            "--LabApp.expose_app_in_browser=True",
        ]
        with open(log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        server = LabServer(url=f"http://127.0.0.1:{port}", token=token, root_dir=root_dir,
                           journal_home=journal_home, log_path=log_path, base_dir=base_dir,
                           process=proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                status = server.get(f"/api/status?token={token}", timeout=5)
            except (OSError, ValueError):
                time.sleep(0.2)
                continue
            if isinstance(status, dict):
                return server
        if proc.poll() is None:
            stop_lab(server)
            raise RuntimeError(
                f"jupyter lab did not answer GET /api/status within {timeout:g} s "
                f"({server.url}); last lines of {log_path}:\n{server.log_tail()}")
        last_error = server.log_tail()
        if "already in use" not in last_error:
            break
    raise RuntimeError(
        f"jupyter lab exited during start-up; last lines of {log_path}:\n{last_error}")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (kernels of a Jupyter server), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_journal_server(home: Path) -> None:
    """Stop the durable_nb journal server of ``home`` if one runs (SIGTERM, then SIGKILL)."""
    try:
        pid = int(json.loads((home / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not _alive(pid) or "durable_nb" not in _cmdline(pid):  # gone, or the pid was reused
        return
    _kill(pid, signal.SIGTERM)
    if not _wait_gone([pid], 10):
        _kill(pid, signal.SIGKILL)
        _wait_gone([pid], 5)


def stop_lab(server: LabServer, timeout: float = 30.0) -> None:
    """Stop the server (SIGTERM: it shuts its kernels down), then its journal server.

    Kernels that outlive the server (it was killed, or a kernel ignored the shutdown) are
    killed by pid; nothing on disk is deleted.
    """
    proc = server.process
    kernels = [(p, _cmdline(p)) for p in _children(proc.pid)] if proc.poll() is None else []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    survivors = [p for p, cmd in kernels if _alive(p) and _cmdline(p) == cmd]
    if survivors and not _wait_gone(survivors, 5):
        for p in survivors:
            _kill(p, signal.SIGKILL)
    stop_journal_server(server.journal_home)


# --------------------------------------------------------------------------- notebooks


def write_notebook(path: Path, sources: Sequence[str], kernel: str = "python3") -> Path:
    """Write a notebook of code cells, one per source, for the given kernelspec; ``path``."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# --------------------------------------------------------------------------- the page

CURRENT_PANEL = "#jp-main-dock-panel .jp-NotebookPanel:not(.lm-mod-hidden)"

# JavaScript: the notebook panel in front (JupyterLab's shell.currentWidget), or null.
_JS_PANEL = """
const __panel = () => {
  const app = window.jupyterapp;
  const w = app && app.shell && app.shell.currentWidget;
  return w && w.sessionContext && w.content && 'activeCellIndex' in w.content ? w : null;
};
"""

_JS_KERNEL_IDLE = _JS_PANEL + """
const w = __panel();
const ctx = w && w.sessionContext;
const k = ctx && ctx.session && ctx.session.kernel;
if (!k || !ctx.isReady || k.status !== 'idle' || k.connectionStatus !== 'connected') return false;
const ind = w.node.querySelector('.jp-Notebook-ExecutionIndicator');
return !!ind && ind.getAttribute('data-status') === 'idle';
"""


def _fn(body: str) -> str:
    return "(arg) => {" + body + "}"


def _await_js(page: Page, body: str, arg: Any = None, timeout: float = RUN_TIMEOUT) -> Any:
    """Run async JS ``body`` (sees ``arg`` and ``__panel()``) in the page; its JSON-able result.

    The promise is not awaited inside ``page.evaluate`` (which has no timeout): it is parked on
    ``window`` and polled with ``wait_for_function``, so a hung command fails the test in
    ``timeout`` seconds with a clear message.
    """
    key = page.evaluate(
        "([body, arg]) => {"
        "  const box = window.__dnbPending = window.__dnbPending || {n: 0};"
        "  const key = ++box.n; box[key] = {done: false};"
        "  const fn = new Function('arg', 'return (async () => {' + body + '})()');"
        "  const keep = v => (v === undefined || v === null || typeof v === 'boolean' ||"
        "    typeof v === 'number' || typeof v === 'string') ? (v === undefined ? null : v) : null;"
        "  Promise.resolve().then(() => fn(arg)).then("
        "    v => { box[key] = {done: true, value: keep(v)}; },"
        "    e => { box[key] = {done: true, error: String(e && e.stack || e)}; });"
        "  return key; }",
        [_JS_PANEL + body, arg])
    try:
        page.wait_for_function(
            "k => window.__dnbPending && window.__dnbPending[k] && window.__dnbPending[k].done",
            arg=key, timeout=timeout * 1000)
    except Exception as exc:
        raise AssertionError(f"timed out after {timeout:g} s waiting for: {body.strip()}") \
            from exc
    result = page.evaluate("k => window.__dnbPending[k]", key)
    if "error" in result:
        raise AssertionError(f"JupyterLab raised: {result['error']}\nwhile running: {body}")
    return result.get("value")


def execute_command(page: Page, command: str, args: dict[str, Any] | None = None,
                    timeout: float = RUN_TIMEOUT) -> Any:
    """Run a JupyterLab command (as its menu item would) and wait for it to finish."""
    return _await_js(page, "return await window.jupyterapp.commands.execute(arg[0], arg[1]);",
                     [command, args or {}], timeout)


def wait_kernel_idle(page: Page, timeout: float = OPEN_TIMEOUT) -> None:
    """Wait until the notebook in front has a connected kernel that is idle."""
    try:
        page.wait_for_function(_fn(_JS_KERNEL_IDLE), timeout=timeout * 1000)
    except Exception as exc:
        status = page.locator("#jp-main-statusbar").inner_text(timeout=5000) \
            if page.locator("#jp-main-statusbar").count() else "(no status bar)"
        raise AssertionError(
            f"the notebook's kernel was not idle within {timeout:g} s; status bar: "
            f"{status!r}") from exc


def open_notebook(page: Page, server: LabServer, path: str,
                  timeout: float = OPEN_TIMEOUT) -> Locator:
    """Open ``path`` (relative to ``server.root_dir``) alone in Lab; wait for an idle kernel.

    Returns the notebook panel. ``reset`` in the URL starts from an empty workspace, so the
    notebook is the only tab whatever earlier tests or page loads left open.
    """
    url = (f"{server.url}/lab/tree/{urllib.parse.quote(path)}"
           f"?reset&token={urllib.parse.quote(server.token)}")
    page.goto(url, timeout=timeout * 1000)
    page.locator(CURRENT_PANEL).first.wait_for(state="visible", timeout=timeout * 1000)
    page.wait_for_function(
        _fn(_JS_PANEL + "const w = __panel(); return !!w && w.context.path === arg;"),
        arg=path, timeout=timeout * 1000)
    wait_kernel_idle(page, timeout)
    return page.locator(CURRENT_PANEL)


def cell(page: Page, index: int) -> Locator:
    """Cell ``index`` (0-based) of the notebook in front."""
    return page.locator(CURRENT_PANEL).locator(".jp-Notebook-cell").nth(index)


def cell_output(page: Page, index: int) -> Locator:
    """The output area of cell ``index`` of the notebook in front."""
    return cell(page, index).locator(".jp-Cell-outputArea")


def run_cell(page: Page, index: int, timeout: float = RUN_TIMEOUT) -> bool:
    """Run cell ``index`` (Run > Run Selected Cell and Do not Advance); wait for it to finish.

    True when the cell ran without error.
    """
    page.evaluate(_fn(_JS_PANEL + """
        const nb = __panel().content;
        nb.deselectAll();
        nb.activeCellIndex = arg;"""), index)
    ok = execute_command(page, "notebook:run-cell", timeout=timeout)
    wait_kernel_idle(page, timeout)
    return bool(ok)


def start_cell(page: Page, index: int) -> None:
    """Start running cell ``index`` and return at once (to act on the page while it runs)."""
    page.evaluate(_fn(_JS_PANEL + """
        const nb = __panel().content;
        nb.deselectAll();
        nb.activeCellIndex = arg;
        window.jupyterapp.commands.execute('notebook:run-cell');"""), index)


def run_all(page: Page, timeout: float = RUN_TIMEOUT) -> bool:
    """Run > Run All Cells; wait until every cell finished. True when none failed."""
    ok = execute_command(page, "notebook:run-all-cells", timeout=timeout)
    wait_kernel_idle(page, timeout)
    return bool(ok)


def restart_kernel(page: Page, timeout: float = OPEN_TIMEOUT) -> None:
    """Restart the kernel of the notebook in front (no dialog); wait until it is idle again."""
    _await_js(page, "await __panel().sessionContext.restartKernel();", timeout=timeout)
    wait_kernel_idle(page, timeout)
