"""The extension as Jupyter sees it: installed, light to import, owning its journal client."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import durable_nb
from durable_nb.server.discovery import pid_alive, read_server_info


def test_importing_the_extension_loads_neither_the_engine_nor_the_kernel_layer():
    code = ("import sys, durable_nb.jupyter as j; j._jupyter_server_extension_points(); "
            "print(sorted(m for m in sys.modules if m.startswith('durable_nb')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    loaded = ast.literal_eval(out)
    assert "durable_nb.jupyter.handlers" in loaded
    forbidden = [m for m in loaded if m.startswith(("durable_nb.engine", "durable_nb.kernel"))]
    assert forbidden == []


def test_jupyter_server_extension_list_shows_it_enabled_and_ok():
    jupyter = Path(sys.executable).parent / "jupyter"
    result = subprocess.run([str(jupyter), "server", "extension", "list"],
                            capture_output=True, text=True, timeout=120)
    out = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert re.search(r"durable_nb\.jupyter\s+enabled", out), out
    assert re.search(rf"durable_nb\.jupyter\s+{re.escape(durable_nb.__version__)}\s+OK", out), out


def journal_clients(home: Path) -> list[int]:
    """The client pids the journal server knows, asked from another process."""
    code = ("import sys; from durable_nb.server.client import JournalClient; "
            "print(JournalClient(sys.argv[1]).call('status')['clients'])")
    out = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return list(ast.literal_eval(out))


async def test_start_connects_to_the_journal_and_stop_disconnects(jp_serverapp, journal_home):
    extension = jp_serverapp.web_app.settings["durable_nb"]
    assert Path(extension.journal_home) == journal_home  # from DURABLE_NB_HOME
    assert read_server_info(journal_home) is None
    await extension._start_jupyter_server_extension(jp_serverapp)
    info = read_server_info(journal_home)  # started by the extension
    assert info is not None and pid_alive(int(info["pid"]))
    assert os.getpid() in journal_clients(journal_home)  # keeps the journal server alive
    await extension.stop_extension()
    assert os.getpid() not in journal_clients(journal_home)


async def test_the_heartbeat_restarts_a_journal_server_that_died(jp_serverapp, journal_home):
    extension = jp_serverapp.web_app.settings["durable_nb"]
    await extension.ping_journal()
    first = read_server_info(journal_home)
    assert first is not None
    os.kill(int(first["pid"]), signal.SIGKILL)
    await extension.ping_journal()
    second = read_server_info(journal_home)
    assert second is not None and second["pid"] != first["pid"] and pid_alive(second["pid"])
    assert os.getpid() in journal_clients(journal_home)


async def test_an_unusable_journal_home_is_503_naming_it(api, jp_serverapp, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    jp_serverapp.web_app.settings["durable_nb"].journal_home = str(blocker / "home")
    r = await api("GET", "runs")
    assert r.code == 503
    assert f"cannot create the journal home {blocker / 'home'}" in json.loads(r.body)[
        "message"]
