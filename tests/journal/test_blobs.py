"""Payloads by reference: large values live in the home's blob store, the event holds the
reference; blobs are durable before their event, read only when needed, and collected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import durable_nb
from durable_nb.engine.history import fold_steps, load_step_events
from durable_nb.engine.identity import open_run
from durable_nb.errors import BlobCorrupted, ConfigurationError
from durable_nb.journal import blobs
from durable_nb.journal.blobs import BlobRef
from durable_nb.journal.codec import decode, encode
from durable_nb.server.client import default_client

SMALL = "4096"  # bytes: a threshold the tests' values pass without being big


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(blobs.THRESHOLD_ENV, SMALL)


def blob_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "blobs").rglob("*") if p.is_file())


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "durable_nb.cli", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DURABLE_NB_HOME": str(home)})


def events(run_id: str, kind: str) -> list[dict]:
    return default_client().query(
        "SELECT data_json, data_pickle, preview, meta FROM events WHERE run_id = ? "
        "AND kind = ? ORDER BY id", [run_id, kind]).to_pylist()


# -- the codec ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, fmt", [
    (pd.DataFrame({"a": np.arange(2000), "b": np.linspace(0, 1, 2000), "c": ["x"] * 2000}),
     "parquet"),
    (np.arange(5000, dtype="float64").reshape(50, 100), "npy"),
    ({"rows": [(i, str(i)) for i in range(2000)]}, "pickle"),  # tuples: not plain JSON
    ({"rows": list(range(5000))}, "json"),
])
def test_large_values_round_trip_through_a_blob_in_their_format(
        journal_home: Path, small_threshold: None, value: object, fmt: str):
    payload = encode(value, what="the value")
    assert payload.json is None and payload.pickle_b64 is None and payload.blob is not None
    assert payload.blob.format == fmt
    path = blobs.blob_path(journal_home, payload.blob.digest)
    assert path.parent.name == payload.blob.digest[:2]
    assert path.stat().st_size == payload.blob.size
    assert 0 < len(payload.preview) <= 200
    back = decode(None, None, payload.blob)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(back, value, check_exact=True)
    elif isinstance(value, np.ndarray):
        assert back.dtype == value.dtype and np.array_equal(back, value)
    else:
        assert back == value


def test_values_at_or_under_the_threshold_stay_inline(journal_home: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(blobs.THRESHOLD_ENV, "100")
    exactly = "x" * 98  # its JSON text, with the quotes, is 100 bytes
    assert encode(exactly, what="v").json == json.dumps(exactly)
    assert encode(exactly + "x", what="v").blob is not None
    monkeypatch.delenv(blobs.THRESHOLD_ENV)
    assert blobs.threshold() == 1 << 20
    big = np.zeros(200_000)  # 1.6 MB: past the default of 1 MiB
    assert encode(big, what="v").blob is not None
    assert encode(np.zeros(1000), what="v").pickle_b64 is not None
    assert len(blob_files(journal_home)) == 2


@pytest.mark.parametrize("bad", ["1MB", "-1", "1.5"])
def test_an_ill_formed_threshold_says_what_it_must_be(journal_home: Path,
                                                      monkeypatch: pytest.MonkeyPatch, bad: str):
    monkeypatch.setenv(blobs.THRESHOLD_ENV, bad)
    with pytest.raises(ConfigurationError, match=r"DURABLE_NB_BLOB_THRESHOLD must be a whole "
                                                 r"number of bytes >= 0 .*Fix or unset it"):
        encode("x", what="v")


def test_a_frame_parquet_cannot_hold_exactly_is_pickled_instead(journal_home: Path,
                                                                small_threshold: None):
    seconds = pd.DataFrame({"t": pd.date_range("2020", periods=2000, freq="s").as_unit("s")})
    mixed = pd.DataFrame({"v": [1, "two", 3.0] * 700}, dtype=object)
    for frame in (seconds, mixed):
        payload = encode(frame, what="v")
        assert payload.blob is not None and payload.blob.format == "pickle"
        pd.testing.assert_frame_equal(decode(None, None, payload.blob), frame, check_exact=True)


def test_the_same_value_is_stored_once(journal_home: Path, small_threshold: None):
    frame = pd.DataFrame({"a": np.arange(5000)})
    first = encode(frame, what="v").blob
    path = blobs.blob_path(journal_home, first.digest)
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    inode = path.stat().st_ino
    second = encode(frame.copy(), what="v").blob
    assert second == first and blob_files(journal_home) == [path]
    assert path.stat().st_ino == inode  # not rewritten
    assert time.time() - path.stat().st_mtime < 60  # touched: gc's grace covers the reuse


def test_a_blob_reference_in_meta_never_collides_with_user_json(journal_home: Path,
                                                                small_threshold: None):
    lookalike = {"blob": {"digest": "0" * 64, "size": 1, "format": "json", "type": "x"}}
    payload = encode(lookalike, what="v")
    assert payload.blob is None and decode(payload.json, None) == lookalike


# -- through the engine --------------------------------------------------------------------

def test_a_big_json_argument_goes_to_a_blob_and_replays(journal_home: Path,
                                                        small_threshold: None):
    calls: list[int] = []

    @durable_nb.activity
    def total(numbers: list) -> int:
        calls.append(1)
        return sum(numbers)

    numbers = list(range(3000))
    ctx = open_run("bigarg")
    assert ctx.execute(lambda: total(numbers)) == sum(numbers)
    (started,) = events(ctx.run_id, "step_started")
    assert started["data_json"] is None and started["data_pickle"] is None
    ref = BlobRef.from_meta(started["meta"])
    assert ref is not None and ref.format == "json"
    assert json.loads(blobs.read_blob(journal_home, ref.digest)) == {"numbers": numbers}
    assert json.loads(started["meta"])["executor"] == "thread"  # the meta it had is kept
    args = durable_nb.steps(ctx.run_id).args.iloc[0]
    assert "numbers" in args and len(args) < 300  # the view shows the preview
    assert open_run("bigarg").execute(lambda: total(numbers)) == sum(numbers)
    assert calls == [1]  # the digest of the blob's text matched: replayed
    assert open_run("bigarg").execute(lambda: total(numbers[:-1])) == sum(numbers[:-1])
    assert calls == [1, 1]  # a different argument: the completed run forks and runs it


def three_steps(frame: pd.DataFrame, calls: list[int]) -> tuple[int, pd.DataFrame, int]:
    """The workflow body: a small step, ``load()`` returning ``frame``, a small step."""

    @durable_nb.activity
    def small(i: int) -> int:
        return i

    @durable_nb.activity
    def load() -> pd.DataFrame:
        calls.append(1)
        return frame

    return small(0), load(), small(2)


def big_run(name: str) -> tuple[str, list[int], pd.DataFrame]:
    calls: list[int] = []
    frame = pd.DataFrame({"x": np.arange(10_000)})
    ctx = open_run(name)
    ctx.execute(lambda: three_steps(frame, calls))
    return ctx.run_id, calls, frame


def replay(name: str) -> object:
    @durable_nb.activity
    def small(i: int) -> int:
        return i

    @durable_nb.activity
    def load() -> pd.DataFrame:
        raise AssertionError("replayed steps do not run")

    return open_run(name).execute(lambda: (small(0), load(), small(2)))


def test_listing_steps_reads_no_blob_and_replay_reads_it(journal_home: Path,
                                                         small_threshold: None):
    run_id, calls, frame = big_run("lazy")
    (path,) = blob_files(journal_home)
    (completed,) = [e for e in events(run_id, "step_completed") if e["meta"]]
    assert completed["data_pickle"] is None and "[10000 rows" in completed["preview"]
    path.rename(path.with_name("elsewhere"))
    steps = fold_steps(load_step_events(default_client(), run_id))  # no blob read
    assert steps[1].result_blob is not None and steps[1].status == "completed"
    assert list(durable_nb.steps(run_id).status) == ["completed"] * 3
    path.with_name("elsewhere").rename(path)
    replayed = replay("lazy")
    pd.testing.assert_frame_equal(replayed[1], frame)
    assert calls == [1]


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_missing_or_altered_blob_is_a_clear_error_and_loses_nothing_else(
        journal_home: Path, small_threshold: None, damage: str):
    run_id, _, frame = big_run(f"damaged-{damage}")
    (path,) = blob_files(journal_home)
    if damage == "missing":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(BlobCorrupted) as info:
        replay(f"damaged-{damage}")
    message = str(info.value)
    assert f"the result of step 1 (load()) of run {run_id}" in message
    assert str(path) in message
    assert ("is missing" if damage == "missing" else "does not match its digest") in message
    assert "--fork-at 1" in message and f"durable-nb fork {run_id} --at 1" in message
    assert info.value.path == path
    # Nothing else is lost: every step is still recorded, and a fork at the step runs on.
    assert list(durable_nb.steps(run_id).status) == ["completed"] * 3
    calls: list[int] = []
    fork = open_run(f"damaged-{damage}", fork_at=1)
    assert fork.execute(lambda: three_steps(frame, calls))[0] == 0 and calls == [1]


def test_a_blob_reference_that_is_not_a_digest_is_refused(journal_home: Path):
    ref = BlobRef("../../server.json", 10, "json", "dict")
    with pytest.raises(BlobCorrupted, match="is not a sha256 digest"):
        decode(None, None, ref, what="the value")


def test_a_large_workflow_input_is_a_blob_restored_from_the_journal(journal_home: Path,
                                                                    small_threshold: None):
    from durable_nb.engine.inputs import VALUE, capture, restore

    table = pd.DataFrame({"x": np.arange(4000)})
    rec = capture("table", table, journal_home)
    assert rec.kind == VALUE and rec.payload is not None and rec.payload.blob is not None
    pd.testing.assert_frame_equal(restore(rec, "r-1", journal_home), table)


# -- gc ------------------------------------------------------------------------------------

def test_gc_lists_deletes_and_spares_young_and_referenced_blobs(journal_home: Path,
                                                                small_threshold: None):
    kept_run, _, _ = big_run("kept")
    (kept,) = blob_files(journal_home)

    @durable_nb.activity
    def other() -> np.ndarray:
        return np.ones(5000)

    gone = open_run("gone")
    gone.execute(lambda: other())
    (orphan,) = set(blob_files(journal_home)) - {kept}
    default_client().delete_run(gone.run_id)
    stray = orphan.parent / f".{orphan.name[:16]}.1234.tmp"  # an interrupted write's leftover
    stray.write_bytes(b"partial")

    young = cli(journal_home, "gc")  # the default grace: everything is young
    assert young.returncode == 0, young.stderr
    assert "no blob to free" in young.stdout

    for path in (kept, orphan, stray):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    dry = cli(journal_home, "gc")
    assert dry.returncode == 0, dry.stderr
    assert orphan.name in dry.stdout and stray.name in dry.stdout and kept.name not in dry.stdout
    assert "2 blobs" in dry.stdout and "would be freed" in dry.stdout
    assert "durable-nb gc --delete" in dry.stdout
    assert orphan.exists() and stray.exists()
    listed = json.loads(cli(journal_home, "gc", "--json").stdout)
    assert listed["count"] == 2 and listed["bytes"] == orphan.stat().st_size + 7
    assert listed["deleted"] is False

    spared = cli(journal_home, "gc", "--delete", "--grace", "86400")
    assert "no blob to free" in spared.stdout and orphan.exists()
    deleted = cli(journal_home, "gc", "--delete", "--grace", "60")
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted 2 blobs" in deleted.stdout
    assert not orphan.exists() and not stray.exists() and kept.exists()
    pd.testing.assert_frame_equal(replay("kept")[1], pd.DataFrame({"x": np.arange(10_000)}))
    assert kept_run


@pytest.mark.parametrize("bad", ["-5", "soon", "inf"])
def test_gc_refuses_a_grace_that_is_not_seconds(journal_home: Path, bad: str):
    done = cli(journal_home, "gc", "--grace", bad)
    assert done.returncode == 2
    assert "must be a number of seconds >= 0" in done.stderr
