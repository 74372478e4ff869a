"""Write-ahead segment: roundtrip, torn last record dropped, damage in the middle refused."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from durable_nb.errors import JournalCorrupted, JournalUnavailable
from durable_nb.journal.segment import Segment

pytestmark = pytest.mark.timeout(30)

HEADER = 8  # <u32 length><u32 crc32>


def ev(i: int) -> dict[str, Any]:
    return {"eid": f"e{i}", "ts": 1700000000.0 + i, "run_id": "r-1", "kind": "step_started",
            "seq": i, "data_json": f'{{"i": {i}}}'}


def write(path: Path, batches: list[list[dict[str, Any]]]) -> list[int]:
    """Append each batch as its own record; return the file size after each record."""
    seg = Segment(path)
    sizes = []
    try:
        for batch in batches:
            seg.append([batch])
            sizes.append(seg.size)
    finally:
        seg.close()
    return sizes


def read(path: Path) -> list[dict[str, Any]]:
    seg = Segment(path)
    try:
        return seg.read()
    finally:
        seg.close()


def test_appended_batches_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.segment"
    seg = Segment(path)
    seg.append([[ev(1), ev(2)], [ev(3)]])
    seg.append([[ev(4)]])
    assert seg.read() == [ev(1), ev(2), ev(3), ev(4)]
    assert seg.size == path.stat().st_size
    seg.close()
    assert read(path) == [ev(1), ev(2), ev(3), ev(4)]  # a new process sees the same


def test_segment_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "journal.segment"
    write(path, [[ev(1)]])
    assert path.stat().st_mode & 0o077 == 0


def test_truncated_last_record_is_dropped_and_file_truncated_to_last_good_record(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.segment"
    sizes = write(path, [[ev(1)], [ev(2), ev(3)], [ev(4)]])
    with open(path, "r+b") as f:
        f.truncate(sizes[2] - 5)  # mid-body of the last record
    assert read(path) == [ev(1), ev(2), ev(3)]
    assert path.stat().st_size == sizes[1]


def test_torn_header_at_the_end_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "journal.segment"
    sizes = write(path, [[ev(1)], [ev(2)]])
    with open(path, "r+b") as f:
        f.truncate(sizes[0] + 3)  # only 3 bytes of the second header
    assert read(path) == [ev(1)]
    assert path.stat().st_size == sizes[0]


def test_last_record_with_flipped_bytes_is_dropped_and_truncated(tmp_path: Path) -> None:
    path = tmp_path / "journal.segment"
    sizes = write(path, [[ev(1)], [ev(2)], [ev(3)]])
    data = bytearray(path.read_bytes())
    for i in range(sizes[1] + HEADER + 2, sizes[1] + HEADER + 6):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    assert read(path) == [ev(1), ev(2)]
    assert path.stat().st_size == sizes[1]


def test_appends_after_dropping_a_torn_record_follow_the_last_good_record(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.segment"
    sizes = write(path, [[ev(1)], [ev(2)]])
    with open(path, "r+b") as f:
        f.truncate(sizes[1] - 1)
    seg = Segment(path)
    assert seg.read() == [ev(1)]
    seg.append([[ev(3)]])
    seg.close()
    assert read(path) == [ev(1), ev(3)]


def test_damaged_middle_record_followed_by_data_raises_naming_file_and_mv(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.segment"
    sizes = write(path, [[ev(1)], [ev(2)], [ev(3)]])
    data = bytearray(path.read_bytes())
    data[sizes[0] + HEADER + 3] ^= 0xFF  # a body byte of the second (middle) record
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(JournalCorrupted) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message
    assert "mv " in message
    assert path.read_bytes() == before, "a damaged segment must be left as it was"


def test_damaged_length_of_a_middle_record_raises_instead_of_truncating(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.segment"
    sizes = write(path, [[ev(1)], [ev(2)], [ev(3)]])
    data = bytearray(path.read_bytes())
    length, crc = struct.unpack_from("<II", data, sizes[0])
    struct.pack_into("<II", data, sizes[0], length | 0x00100000, crc)  # one flipped bit
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    try:
        with pytest.raises(JournalCorrupted):
            read(path)
    finally:
        assert path.read_bytes() == before, "acknowledged records after the damage were cut"


def test_empty_or_missing_segment_reads_as_no_events(tmp_path: Path) -> None:
    path = tmp_path / "journal.segment"
    assert read(path) == []
    assert path.exists() and path.stat().st_size == 0


def test_a_full_disk_is_never_acknowledged_and_the_segment_stays_whole(small_disk: Path):
    from tests.conftest import fill_disk

    path = small_disk / "journal.segment.00000001"
    seg = Segment(path)
    seg.append([[ev(0)]])
    good_size = seg.size
    filler = fill_disk(small_disk, leave=8192)
    big = [{**ev(i), "data_json": '"' + "x" * 3000 + '"'} for i in range(1, 10)]
    with pytest.raises(JournalUnavailable) as failure:
        for e in big:  # some fit, then the disk is full part-way through a record
            seg.append([[e]])
            good_size = seg.size
    message = str(failure.value)
    assert "no space left" in message and str(small_disk) in message
    assert path.stat().st_size == good_size == seg.size, "the torn write was cut off"
    kept = read(path)
    assert kept[0] == ev(0) and all(e in big for e in kept[1:])
    filler.unlink()  # space freed: appends go on after the last good record
    seg.append([[ev(99)]])
    seg.close()
    assert read(path) == [*kept, ev(99)]


def test_records_of_older_servers_in_json_read_beside_new_ones(tmp_path: Path) -> None:
    """A segment left by a server that wrote JSON records still loads after an upgrade,
    also when a newer server appended MessagePack records after them."""
    import json
    import zlib

    path = tmp_path / "journal.segment"
    body = json.dumps([ev(1), ev(2)]).encode()
    size = len(body)
    path.write_bytes(struct.pack("<III", size, zlib.crc32(size.to_bytes(4, "little")),
                                 zlib.crc32(body)) + body)
    write(path, [[ev(3)]])
    assert path.read_bytes()[12:13] == b"["  # the first record is JSON, the second is not
    assert b'"eid"' not in path.read_bytes()[12 + size:]
    assert read(path) == [ev(1), ev(2), ev(3)]
