"""The wire format: MessagePack maps, a batch of packed commits joined into one request,
and JSON frames of protocol 1 still read."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from durable_nb.journal.schema import event
from durable_nb.server import protocol


def test_a_batch_frame_is_the_request_its_packed_groups_make() -> None:
    groups = [[event("r-1", "step_started", seq=i, attempt=1, name="a")] for i in range(40)]
    frame = protocol.append_batch(7, [protocol.pack(g) for g in groups])
    assert protocol.loads(frame) == {"id": 7, "op": "append", "groups": groups}


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65535, 65536])
def test_a_batch_of_any_size_has_the_right_array_header(n: int) -> None:
    one = protocol.pack([{"eid": "e"}])
    assert len(protocol.loads(protocol.append_batch(1, [one] * n))["groups"]) == n


def test_a_json_frame_of_protocol_1_is_still_read() -> None:
    assert protocol.loads(json.dumps({"id": 3, "op": "ping"}).encode()) == {"id": 3,
                                                                          "op": "ping"}


@pytest.mark.parametrize("frame", [b"", b"\xc1", protocol.pack([1, 2]), b"{not json",
                                   protocol.pack({"id": 1}) + b"\x01"])
def test_a_frame_holding_no_message_is_a_value_error(frame: bytes) -> None:
    with pytest.raises(ValueError):
        protocol.loads(frame)


def test_values_msgpack_cannot_hold_travel_as_their_text_as_they_did_in_json() -> None:
    assert protocol.loads(protocol.dumps({"path": pathlib.Path("/x")})) == {"path": "/x"}
    assert protocol.loads(protocol.pack({"value": {1: "a"}})) == {"value": {1: "a"}}


def test_event_ids_are_unique_across_threads_and_forked_children() -> None:
    import threading

    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.extend(
        event("r", "step_started")["eid"] for _ in range(2000))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == len(seen) == 16000
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child numbers from a fresh prefix: none of its ids is the parent's
        os.write(w, "\n".join(event("r", "step_started")["eid"] for _ in range(100)).encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 1 << 20).decode().split("\n")
    os.waitpid(pid, 0)
    mine = [event("r", "step_started")["eid"] for _ in range(100)]
    assert len(child) == 100 and not set(child) & set(mine + seen)
    assert all(e.isascii() for e in child + mine)


def test_a_lone_surrogate_travels_as_it_is_for_the_server_to_name() -> None:
    message = {"op": "signal", "name": "go", "value": ["caf\udce9"]}
    assert protocol.loads(protocol.dumps(message)) == message
