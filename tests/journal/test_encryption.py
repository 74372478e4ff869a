"""Encryption at rest against real journal files: with a key set, no recorded value reaches
journal.duckdb, the segments or the blobs in clear (a run without the key, recorded the same
way, shows where the marker would be); replay opens everything; a wrong or missing key is an
error naming which; safe names stay in clear; rotation re-wraps the data key."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

import durable_nb
from durable_nb.cli import main as cli
from durable_nb.engine.history import load_step_events
from durable_nb.engine.identity import open_run
from durable_nb.errors import ActivityFailed, EncryptionKeyError
from durable_nb.journal import crypto
from durable_nb.journal.home import SEGMENT_FILE
from durable_nb.server.client import default_client, reset_default_client
from tests.conftest import stop_server

pytest.importorskip("cryptography")

MARKER = "zq" + "marker-7f3a9c-" + "secret"  # never written whole in this file's code


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    made = crypto.new_key()
    monkeypatch.setenv(crypto.KEY_ENV, made)
    monkeypatch.delenv(crypto.KEY_FILE_ENV, raising=False)
    crypto.reset()
    yield made
    crypto.reset()


def forms(marker: str) -> list[bytes]:
    """The marker as bytes, and as it reads inside base64 at each of the three offsets."""
    raw = marker.encode()
    found = [raw]
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw)[4:-4]
        found.append(enc)
    return found


def files_holding(home: Path, marker: str) -> list[str]:
    patterns = forms(marker)
    hits = []
    for path in sorted(home.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(p in data for p in patterns):
                hits.append(str(path.relative_to(home)))
    return hits


def record_everything(home: Path) -> tuple[str, list[object]]:
    """A run whose arguments, results, heartbeats, a blob and a failure carry MARKER."""
    failed_once: list[int] = []

    @durable_nb.activity(retries=1, backoff=0)
    def step(text: str, n: int) -> dict[str, object]:
        durable_nb.heartbeat({"progress": f"{text}-beat"})
        if n == 1 and not failed_once:
            failed_once.append(1)
            raise ValueError(f"failed on {text}")
        return {"echo": text, "n": n, "big": (text * 40_000) if n == 2 else ""}

    ctx = open_run("secret-run")
    results = ctx.execute(lambda: [step(f"{MARKER}-{i}", i) for i in range(3)])
    return ctx.run_id, results


def test_no_marker_reaches_the_journal_files_and_replay_opens_them(
        journal_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str):
    monkeypatch.setenv("DURABLE_NB_BLOB_THRESHOLD", "100000")
    # The control: the same run in a home without a key leaves the marker in every kind of file.
    plain_home = tmp_path / "plain-home"
    monkeypatch.setenv("DURABLE_NB_HOME", str(plain_home))
    monkeypatch.delenv(crypto.KEY_ENV)
    reset_default_client()
    record_everything(plain_home)
    stop_server(plain_home)  # its checkpoint writes journal.duckdb
    plain_hits = files_holding(plain_home, MARKER)
    assert "journal.duckdb" in plain_hits
    assert any(h.startswith("blobs/") for h in plain_hits)

    monkeypatch.setenv("DURABLE_NB_HOME", str(journal_home))
    monkeypatch.setenv(crypto.KEY_ENV, key)
    reset_default_client()
    crypto.reset()
    run_id, results = record_everything(journal_home)
    assert [r["n"] for r in results] == [0, 1, 2]  # type: ignore[index]
    default_client().query("SELECT count(*) FROM events")  # segments loaded into DuckDB
    assert list(journal_home.glob(f"{SEGMENT_FILE}*")), "the server writes segments"
    hits_before_stop = files_holding(journal_home, MARKER)  # the segments, live
    reset_default_client()
    stop_server(journal_home)
    assert hits_before_stop == [] and files_holding(journal_home, MARKER) == []
    assert (journal_home / "journal.duckdb").stat().st_size > 0
    assert list(journal_home.glob("blobs/*/*")), "the big result went to a blob"

    # Replay in a fresh client (a new server) opens every value.
    crypto.reset()
    replayed = open_run("secret-run", run_id=run_id)

    @durable_nb.activity(retries=1, backoff=0)
    def step(text: str, n: int) -> dict[str, object]:
        raise AssertionError("replay must not run the step")

    again = replayed.execute(lambda: [step(f"{MARKER}-{i}", i) for i in range(3)])
    assert again == results and replayed.executed == 0
    rows = load_step_events(replayed.client, run_id)
    failed = [r for r in rows if r["kind"] == "step_failed"]
    assert failed and failed[0]["error"] == f"ValueError: {crypto.REDACTED}"
    assert failed[0]["traceback"] == crypto.REDACTED
    started = [r for r in rows if r["kind"] == "step_started"]
    assert all(r["args_hash"].startswith("v2k:") for r in started)  # keyed digests
    assert all(r["preview"] == f"{{'n': {crypto.REDACTED}, 'text': {crypto.REDACTED}}}"
               for r in started)


def test_a_wrong_missing_or_malformed_key_is_named(journal_home: Path, key: str,
                                                   monkeypatch: pytest.MonkeyPatch):
    @durable_nb.activity
    def add(a: int, b: int) -> int:
        return a + b

    ctx = open_run("keyed")
    assert ctx.execute(lambda: add(1, 2)) == 3
    journal_id = crypto.key_id(base64.b64decode(key))

    monkeypatch.setenv(crypto.KEY_ENV, crypto.new_key())
    crypto.reset()
    with pytest.raises(EncryptionKeyError, match="is not the key of the journal") as wrong:
        open_run("keyed", run_id=ctx.run_id).execute(lambda: add(1, 2))
    assert journal_id in str(wrong.value) and crypto.KEY_ENV in str(wrong.value)

    monkeypatch.delenv(crypto.KEY_ENV)
    crypto.reset()
    with pytest.raises(EncryptionKeyError, match="is encrypted .* and no key is set"):
        open_run("keyed", run_id=ctx.run_id).execute(lambda: add(1, 2))

    monkeypatch.setenv(crypto.KEY_ENV, "not-a-key")
    crypto.reset()
    with pytest.raises(EncryptionKeyError, match="is not 32 bytes in base64"):
        open_run("keyed", run_id=ctx.run_id).execute(lambda: add(1, 2))

    # The right key again: the run replays; nothing recorded was lost meanwhile.
    monkeypatch.setenv(crypto.KEY_ENV, key)
    crypto.reset()
    again = open_run("keyed", run_id=ctx.run_id)
    assert again.execute(lambda: add(1, 2)) == 3 and again.executed == 0


def test_safe_names_stay_in_clear_and_queryable(journal_home: Path, key: str):
    @durable_nb.activity(safe=("lr", "return"))
    def train(lr: float, data: str) -> float:
        return round(lr * 10, 3)

    ctx = open_run("safe-sweep")
    ctx.execute(lambda: [train(lr, f"{MARKER}-{lr}") for lr in (0.1, 0.2)])
    steps = durable_nb.steps(ctx.run_id)
    assert steps["args"].tolist() == ['{"lr": 0.1}', '{"lr": 0.2}']  # data is not safe
    assert steps["result"].tolist() == ["1.0", "2.0"]
    table = durable_nb.results("safe-sweep")
    assert table["lr"].tolist() == [0.1, 0.2] and table["result"].tolist() == [1.0, 2.0]
    assert "data" not in table.columns
    assert MARKER not in table.to_string() + steps.to_string()


def test_an_encrypted_failure_keeps_its_type_and_the_run_fails_cleanly(journal_home: Path,
                                                                      key: str):
    @durable_nb.activity
    def boom(x: str) -> None:
        raise KeyError(x)

    ctx = open_run("boom")
    with pytest.raises(ActivityFailed) as caught:
        ctx.execute(lambda: boom(MARKER))
    assert isinstance(caught.value.__cause__, KeyError)  # the live run sees it whole
    rows = load_step_events(ctx.client, ctx.run_id)
    failed = [r for r in rows if r["kind"] == "step_failed"][0]
    assert failed["error"] == f"KeyError: {crypto.REDACTED}" and "sealed_error" in failed["meta"]
    assert MARKER not in str(rows)


def test_rotate_rewraps_the_data_key(journal_home: Path, key: str,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]):
    @durable_nb.activity
    def greet(name: str) -> str:
        return f"hello {name}"

    ctx = open_run("rotating")
    assert ctx.execute(lambda: greet(MARKER)) == f"hello {MARKER}"
    assert cli(["key", "status"]) == 0
    assert "the key set here (DURABLE_NB_KEY) opens it" in capsys.readouterr().out

    new = crypto.new_key()
    assert cli(["key", "rotate"]) == 1
    assert "set DURABLE_NB_NEW_KEY" in capsys.readouterr().err
    monkeypatch.setenv("DURABLE_NB_NEW_KEY", new)
    assert cli(["key", "rotate"]) == 0
    assert crypto.key_id(base64.b64decode(new)) in capsys.readouterr().out

    crypto.reset()  # the old key no longer opens the journal ...
    assert cli(["key", "status"]) == 1
    assert "is not the key of the journal" in capsys.readouterr().err
    monkeypatch.setenv(crypto.KEY_ENV, new)  # ... the new one opens what the old one sealed
    crypto.reset()
    again = open_run("rotating", run_id=ctx.run_id)
    assert again.execute(lambda: greet(MARKER)) == f"hello {MARKER}" and again.executed == 0
