"""Fixtures shared by every layer's tests: an isolated journal home with its own server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest


def stop_server(home: Path) -> None:
    """Stop the journal server of ``home`` if one runs (SIGTERM, then SIGKILL), and its
    Dask workers if a test started them."""
    from durable_nb.server.discovery import pid_alive, wait_until

    if (home / "workers.json").exists():
        from durable_nb import workers

        workers.close_clients()
        workers.stop(home)
    try:
        pid = int(json.loads((home / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), 10, interval=0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def journal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh DURABLE_NB_HOME for this test; its server is stopped afterwards."""
    from durable_nb.server.client import reset_default_client

    home = tmp_path / "home"
    monkeypatch.setenv("DURABLE_NB_HOME", str(home))
    reset_default_client()
    yield home
    reset_default_client()
    stop_server(home)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MB tmpfs at a fresh directory (root can mount one), unmounted afterwards."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs",
                           str(mount_point)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        for home in mount_point.iterdir():
            stop_server(home)
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill_disk(mount_point: Path, leave: int) -> Path:
    """Fill the file system of ``mount_point`` with one file until ``leave`` bytes are free."""
    filler = mount_point / "filler"
    free = os.statvfs(mount_point).f_bavail * os.statvfs(mount_point).f_frsize
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler
