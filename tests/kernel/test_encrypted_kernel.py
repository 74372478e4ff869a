"""Encryption at rest in a real kernel: a workflow cell whose inputs (names from other cells),
arguments and results carry a marker is SIGKILLed mid-run and resumed in a fresh kernel
with the key; the journal files never hold the marker; without the key the resume stops
with the error naming it, and nothing recorded is lost."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from durable_nb.journal import crypto
from durable_nb.testing import KernelSession
from durable_nb.testing.kernel import wait_for_file_text
from tests.conftest import stop_server
from tests.journal.test_encryption import files_holding
from tests.kernel.conftest import activity_cell, effect_counts, restart

pytest.importorskip("cryptography")

PIECES = ("zq", "kernel-marker-", "51d2")
SETUP = f"secret = {PIECES[0]!r} + {PIECES[1]!r} + {PIECES[2]!r}\ngrid = [1, 2, 3, 4]\n"
SWEEP = "%%workflow vault\nresults = [train(f'{secret}-{i}') for i in grid]\n"


@pytest.fixture
def keyed_kernel(journal_home: Path) -> Iterator[KernelSession]:
    session = KernelSession(env={"DURABLE_NB_HOME": str(journal_home),
                                 crypto.KEY_ENV: crypto.new_key()})
    session.start()
    session.run("%load_ext durable_nb").raise_for_error()
    yield session
    session.shutdown()


def test_an_encrypted_run_resumes_after_sigkill_and_leaves_no_marker(
        keyed_kernel: KernelSession, journal_home: Path, effects: Path):
    marker = "".join(PIECES)
    kernel = keyed_kernel
    kernel.run(activity_cell(effects, sleep=0.3).replace(
        "return {'item': i, 'loss': (i - 3) ** 2}", "return {'echo': i}")).raise_for_error()
    kernel.run(SETUP).raise_for_error()
    kernel.submit(SWEEP)
    wait_for_file_text(effects, f"done {marker}-2\n")
    kernel.kill()

    restart(kernel)  # a fresh process: grid and secret come back from the journal, sealed
    out = kernel.run("%workflow resume vault-1").raise_for_error()
    assert "restored from the journal: grid, secret" in out.stdout
    assert "vault-1 completed: 4 steps" in out.stdout
    echoed = kernel.run("print([r['echo'] for r in results])").raise_for_error().stdout
    assert echoed.strip() == str([f"{marker}-{i}" for i in range(1, 5)])
    counts = effect_counts(effects)
    assert counts[f"done {marker}-1"] == 1 and counts[f"done {marker}-2"] == 1

    # Without the key, a kernel cannot resume (or record) anything in this journal.
    kernel.run("import os; os.environ.pop('DURABLE_NB_KEY')\n"
               "from durable_nb.journal import crypto; crypto.reset()").raise_for_error()
    out = kernel.run("%workflow resume vault-1")
    assert out.ename == "EncryptionKeyError" and "no key is set" in out.evalue
    assert crypto.KEY_ENV in out.evalue

    kernel.shutdown()
    stop_server(journal_home)
    assert files_holding(journal_home, marker) == []
    assert files_holding(journal_home, "kernel-marker-") == []
    assert base64.b64encode(marker.encode()) not in (journal_home / "journal.duckdb").read_bytes()
