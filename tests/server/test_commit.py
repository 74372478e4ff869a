"""Group commit: appends nobody blocks on, from many threads, against a real server.

``JournalClient.commit`` sends the commits waiting while a batch is in flight as the next
batch, one request; each commit's ``then`` runs once its events are durable, or with the
error that refused them. A fan-out of short steps stands on this.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from durable_nb import errors
from durable_nb.server.client import JournalClient

pytestmark = pytest.mark.timeout(120)


class Told:
    """What each commit's ``then`` was told, by commit."""

    def __init__(self, expected: int) -> None:
        self.outcomes: dict[str, BaseException | None] = {}
        self._lock = threading.Lock()
        self._all = threading.Event()
        self.expected = expected

    def then(self, key: str) -> Any:
        def told(error: BaseException | None) -> None:
            with self._lock:
                assert key not in self.outcomes, f"{key} was told twice"
                self.outcomes[key] = error
                if len(self.outcomes) == self.expected:
                    self._all.set()
        return told

    def wait(self, timeout: float = 90) -> dict[str, BaseException | None]:
        assert self._all.wait(timeout), (
            f"only {len(self.outcomes)} of {self.expected} commits were told")
        return self.outcomes


def counts_in_journal(client: JournalClient) -> dict[str, int]:
    rows = client.query("SELECT eid, count(*) AS n FROM events GROUP BY eid").to_pylist()
    return {r["eid"]: r["n"] for r in rows}


def test_commits_from_many_threads_share_requests_and_each_is_told_when_durable(
        harness) -> None:
    client = harness.client()
    threads, per_thread = 16, 400
    told = Told(threads * per_thread)
    first_request = client._next_id
    sent: list[str] = []

    def commit_many(t: int) -> None:
        for i in range(per_thread):
            ev = harness.event(f"r-{t}", seq=i, attempt=1, name="a")
            sent.append(ev["eid"])
            client.commit([ev], told.then(ev["eid"]))

    workers = [threading.Thread(target=commit_many, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    outcomes = told.wait()
    assert set(outcomes) == set(sent)
    assert [e for e, error in outcomes.items() if error is not None] == []
    requests = client._next_id - first_request
    assert requests <= len(sent) / 2, f"{requests} requests for {len(sent)} commits"
    assert counts_in_journal(harness.client()) == dict.fromkeys(sent, 1)


def test_a_malformed_commit_is_refused_alone_and_the_others_are_recorded(harness) -> None:
    client = harness.client()
    good = [harness.event("r", seq=i, attempt=1, name="a") for i in range(3)]
    bad = harness.event("r", kind="step_begun", seq=9)
    told = Told(4)
    for i, ev in enumerate([good[0], good[1], bad, good[2]]):
        client.commit([ev], told.then(str(i)))
    outcomes = told.wait()
    assert outcomes["0"] is None and outcomes["1"] is None and outcomes["3"] is None
    assert isinstance(outcomes["2"], errors.DurableError)
    assert "unknown kind 'step_begun'" in str(outcomes["2"])
    assert counts_in_journal(client) == dict.fromkeys((e["eid"] for e in good), 1)


def test_one_request_of_groups_takes_the_good_ones_and_names_the_refused(harness) -> None:
    client = harness.client()
    good = [harness.event("r", seq=i, attempt=1, name="a") for i in range(2)]
    bad = {**harness.event("r", seq=5), "meta": "{not json"}
    reply = client.call("append", groups=[[good[0]], [bad], [good[1]]])
    assert len(reply["ids"]) == 2
    assert [(r["index"], r["type"]) for r in reply["refused"]] == [(1, "ValueError")]
    assert "'meta' is not valid JSON" in reply["refused"][0]["error"]
    assert counts_in_journal(client) == dict.fromkeys((e["eid"] for e in good), 1)


def test_commits_in_flight_when_the_server_is_sigkilled_are_resent_and_told(
        harness) -> None:
    client = harness.client()
    first_pid = client.server_pid
    n = 3000
    told = Told(n)
    sent: list[str] = []
    halfway = threading.Event()

    def stream() -> None:
        for i in range(n):
            ev = harness.event("stream", seq=i, attempt=1, name="a")
            sent.append(ev["eid"])
            client.commit([ev], told.then(ev["eid"]))
            if i == n // 3:
                halfway.set()

    writer = threading.Thread(target=stream)
    writer.start()
    assert halfway.wait(60)
    harness.sigkill(first_pid)
    writer.join(90)
    outcomes = told.wait()
    assert [e for e, error in outcomes.items() if error is not None] == []
    reader = harness.client()
    assert reader.server_pid != first_pid
    assert counts_in_journal(reader) == dict.fromkeys(sent, 1)


def test_closing_the_client_tells_every_commit_not_yet_acknowledged(harness) -> None:
    client = harness.client()
    client.ping()
    n = 500
    told = Told(n)
    for i in range(n):
        client.commit([harness.event("r", seq=i, attempt=1, name="a")], told.then(str(i)))
    client.close()
    outcomes = told.wait(30)  # none is left waiting for an answer that cannot come
    lost = [error for error in outcomes.values() if error is not None]
    assert all(isinstance(e, errors.JournalUnavailable) and "was closed" in str(e)
               for e in lost)
    with pytest.raises(errors.JournalUnavailable, match="was closed"):
        client.commit([harness.event("r", seq=n)], told.then("late"))


def test_a_commit_with_no_server_to_be_had_is_told_why_and_later_ones_too(harness,
                                                                          home: Path) -> None:
    client = harness.client(home)  # (makes the home; no server runs yet)
    shutil.rmtree(home)
    home.write_text("")  # now no server can start there
    told = Told(2)
    client.commit([harness.event("r", seq=0)], told.then("first"))
    client.commit([harness.event("r", seq=1)], told.then("second"))  # not stranded
    outcomes = told.wait(60)
    for key in ("first", "second"):
        assert isinstance(outcomes[key], errors.JournalUnavailable), outcomes[key]
        assert str(home) in str(outcomes[key])
