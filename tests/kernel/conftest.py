"""Real kernels (jupyter_client) sharing one journal home per test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durable_nb.testing import KernelSession


@pytest.fixture
def effects(tmp_path: Path) -> Path:
    """The side-effect log activities append to: it counts real executions."""
    return tmp_path / "effects.log"


@pytest.fixture
def kernel(journal_home: Path) -> Iterator[KernelSession]:
    session = KernelSession(env={"DURABLE_NB_HOME": str(journal_home)})
    session.start()
    session.run("%load_ext durable_nb").raise_for_error()
    yield session
    session.shutdown()


def restart(session: KernelSession) -> KernelSession:
    """A fresh kernel process with the extension loaded, as after a crash."""
    session.restart()
    session.run("%load_ext durable_nb").raise_for_error()
    return session


def activity_cell(effects: Path, *, options: str = "", fail_on: int | None = None,
                  sleep: float = 0.2) -> str:
    """An %%activity cell whose ``train`` logs start/done lines to ``effects``.

    It waits in short slices of Python, as a real workload computes, so an interrupt
    lands in it at once (inside one long C call it would land when the call returns).
    """
    fail = f"    if i == {fail_on}:\n        raise ValueError(f'bad item {{i}}')\n" \
        if fail_on is not None else ""
    return (
        f"%%activity {options}\n"
        "import time\n"
        "def train(i):\n"
        f"    with open({str(effects)!r}, 'a') as f:\n"
        "        f.write(f'start {i}\\n')\n"
        f"    deadline = time.monotonic() + {sleep}\n"
        "    while time.monotonic() < deadline:\n"
        "        time.sleep(0.005)\n"
        f"{fail}"
        f"    with open({str(effects)!r}, 'a') as f:\n"
        "        f.write(f'done {i}\\n')\n"
        "    return {'item': i, 'loss': (i - 3) ** 2}\n"
    )


def logged(effects: Path, word: str) -> set[int]:
    """The items with a ``word`` line (``start``, ``done``) in the side-effect log."""
    if not effects.exists():
        return set()
    return {int(line.split()[1]) for line in effects.read_text().splitlines()
            if line.split()[0] == word}


def effect_counts(effects: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in effects.read_text().splitlines():
        counts[line] = counts.get(line, 0) + 1
    return counts


async def view_shows(view: Any, text: str, timeout: float = 30.0) -> None:
    """Wait until the live run view's table shows ``text``; fail naming what it shows."""
    deadline = time.monotonic() + timeout
    while text not in view.table.value:
        assert time.monotonic() < deadline, f"{text!r} not in {view.table.value}"
        await asyncio.sleep(0.05)
