"""The wheel ships the JupyterLab sidebar prebuilt and enables the Jupyter server extension.

Installed into a fresh venv with no Node.js on the PATH, JupyterLab lists the sidebar as
enabled and OK, and the Jupyter server lists ``durable_nb.jupyter`` as enabled: nothing is
built at install time. The fresh venv borrows the dependencies (JupyterLab, DuckDB, ...)
from the development venv through a ``.pth`` line, which adds that site-packages directory
to ``sys.path`` without running its own ``.pth`` files, so the editable durable_nb is not
importable there: the only durable_nb is the wheel's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LABEXT = "share/jupyter/labextensions/@durable-nb/labextension"
SERVER_CONFIG = "etc/jupyter/jupyter_server_config.d/durable_nb.json"

pytestmark = pytest.mark.timeout(180)  # wheel build ~2 s, venv + install + listings ~15 s


def _run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=cwd)
    output = f"{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}"
    return output


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the working tree, built by pip as a user's ``pip install .`` does."""
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
          "--disable-pip-version-check", "-w", str(out)])
    (path,) = out.glob("durable_nb-*.whl")
    return path


def test_the_wheel_holds_the_prebuilt_sidebar_and_the_server_extension_config(
        wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        data = {name.split(".data/data/", 1)[1] for name in zf.namelist()
                if ".data/data/" in name}
    assert f"{LABEXT}/package.json" in data
    assert f"{LABEXT}/install.json" in data
    assert f"{LABEXT}/static/style.js" in data
    assert any(re.fullmatch(rf"{LABEXT}/static/remoteEntry\.[0-9a-f]+\.js", n) for n in data)
    assert SERVER_CONFIG in data


def test_a_fresh_venv_without_node_lists_the_sidebar_enabled_and_ok(
        wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    fresh_site = Path(_run([str(python), "-c",
                            "import sysconfig; print(sysconfig.get_path('purelib'))"]).split()[0])
    (fresh_site / "dev_venv_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "--disable-pip-version-check", str(wheel)])

    # Nothing but the fresh venv on the PATH: no node, no npm, no jupyter of the dev venv.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=str(env_dir / "bin"), HOME=str(tmp_path / "home"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_PREFER_ENV_PATH="1",
               DURABLE_NB_HOME=str(tmp_path / "journal"))
    assert shutil.which("node", path=env["PATH"]) is None
    assert shutil.which("npm", path=env["PATH"]) is None

    where = _run([str(python), "-c", "import durable_nb; print(durable_nb.__file__)"],
                 env=env, cwd=tmp_path)
    assert str(fresh_site) in where, f"durable_nb does not come from the wheel: {where}"

    listing = _run([str(python), "-m", "jupyterlab.labextensions", "list"], env=env,
                   cwd=tmp_path)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", listing)  # drop the colours
    assert re.search(r"@durable-nb/labextension v0\.1\.0 enabled OK \(python, durable_nb\)",
                     plain), plain
    assert str(env_dir / LABEXT.rsplit("/@", 1)[0]) in plain, plain

    servers = _run([str(python), "-m", "jupyter_server.extension.serverextension", "list"],
                   env=env, cwd=tmp_path)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", servers)
    assert re.search(r"durable_nb\.jupyter\s+enabled", plain), plain
    assert re.search(r"durable_nb\.jupyter (\S+ )?OK", plain), plain
