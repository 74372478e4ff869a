"""Text the journal can store: escaped once in the event builder, refused by check_event."""

from __future__ import annotations

import json
import os

import duckdb
import pytest

from durable_nb.journal.schema import check_event, check_signal_name, event, signal_json
from durable_nb.journal.text import (
    is_storable_text,
    json_unstorable_part,
    storable_json,
    storable_text,
)

pytestmark = pytest.mark.timeout(60)

CAFE = os.fsdecode(b"caf\xe9.csv")  # an undecodable byte of a file name: 'caf\udce9.csv'


def test_a_surrogate_escaped_byte_reads_as_that_byte() -> None:
    assert CAFE == "caf\udce9.csv" and not is_storable_text(CAFE)
    assert storable_text(CAFE) == "caf\\xe9.csv"
    assert storable_text("lone \ud800 high") == "lone \\ud800 high"
    for plain in ("", "ascii", "café ✓ 😀", "tab\tnul\x00"):
        assert storable_text(plain) is plain
    assert storable_text(CAFE).encode("utf-8") == b"caf\\xe9.csv"


def test_json_text_with_a_lone_surrogate_escape_is_what_duckdb_refuses() -> None:
    lone, pair = json.dumps(CAFE), json.dumps("😀")  # "\udce9" vs "\ud83d\ude00"
    con = duckdb.connect()
    assert con.execute("SELECT json_valid(?), json_valid(?)", [lone, pair]).fetchall() == [
        (False, True)]
    assert json_unstorable_part(lone) == "a lone surrogate U+DCE9 in a string"
    assert json_unstorable_part(pair) is None
    assert json_unstorable_part('{"a": [1, "ok"]}') is None
    assert json.loads(storable_json(json.dumps({"file": CAFE, "n": 1}))) == {
        "file": "caf\\xe9.csv", "n": 1}
    assert storable_json('{"n": 1}') == '{"n": 1}'


def test_the_event_builder_escapes_shown_text_and_meta_and_keeps_payloads_exact() -> None:
    ev = event("wf-1", "step_failed", seq=1, attempt=1, name="load",
               error=f"ValueError: {CAFE}", traceback=f"Traceback ...\nValueError: {CAFE}\n",
               preview=CAFE, meta={"final": True, "notebook": f"/nb/{CAFE}"},
               data_json='{"x": 1}')
    check_event(ev)  # storable as built
    assert ev["error"] == "ValueError: caf\\xe9.csv"
    assert ev["traceback"].endswith("ValueError: caf\\xe9.csv\n")
    assert ev["preview"] == "caf\\xe9.csv"
    assert json.loads(ev["meta"] or "") == {"final": True, "notebook": "/nb/caf\\xe9.csv"}
    assert ev["data_json"] == '{"x": 1}'
    as_text = event("wf-1", "run_status", status="running", meta=json.dumps({"p": CAFE}))
    assert json.loads(as_text["meta"] or "") == {"p": "caf\\xe9.csv"}


@pytest.mark.parametrize(("column", "value", "said"), [
    ("error", f"ValueError: {CAFE}", "'error' holds a lone surrogate U+DCE9 at position 15"),
    ("traceback", CAFE, "'traceback' holds a lone surrogate U+DCE9"),
    ("name", "\udce9", "'name' holds a lone surrogate U+DCE9 at position 0"),
    ("run_id", CAFE, "'run_id' holds a lone surrogate"),
    ("data_json", json.dumps(CAFE), "'data_json' is JSON holding a lone surrogate U+DCE9"),
    ("meta", json.dumps({"f": CAFE}), "'meta' is JSON holding a lone surrogate U+DCE9"),
])
def test_check_event_refuses_text_the_journal_cannot_store_naming_event_and_column(
        column: str, value: str, said: str) -> None:
    ev = {"eid": "e-1", "ts": 1.7e9, "run_id": "wf-1", "kind": "step_failed", column: value}
    with pytest.raises(ValueError) as info:
        check_event(ev)
    message = str(info.value)
    assert message.startswith("event e-1 (step_failed): ") and said in message
    assert "durable_nb.journal" in message  # the way out
    message.encode("utf-8")  # the error itself is storable and printable


@pytest.mark.parametrize(("field", "value", "said"), [
    ("seq", 2**31, "'seq' must be an integer of at most 32 bits"),
    ("ts", 1e13, "'ts' must be epoch seconds"),
    ("data_json", "{not json", "'data_json' is not valid JSON"),
])
def test_check_event_refuses_values_duckdb_would_not_load(field: str, value: object,
                                                          said: str) -> None:
    ev = {"eid": "e-1", "ts": 1.7e9, "run_id": "wf-1", "kind": "step_started", field: value}
    with pytest.raises(ValueError, match=said):
        check_event(ev)


def test_one_signal_name_check_says_what_a_name_must_be() -> None:
    assert check_signal_name("approve") == "approve"
    for bad, said in [(None, "got nothing"), ("  ", 'got "  "'), (7, "got 7"),
                      ("x" * 201, "at most 200 characters")]:
        with pytest.raises(ValueError, match="'name' must be a non-empty string") as info:
            check_signal_name(bad)
        assert said in str(info.value)
    with pytest.raises(ValueError) as info:
        check_signal_name("\udce9")
    message = str(info.value)
    assert "the signal name '\\xe9' holds a lone surrogate U+DCE9" in message
    assert "valid Unicode" in message
    assert signal_json({"ok": True}) == '{"ok": true}'
    with pytest.raises(ValueError, match="signal value holds a lone surrogate"):
        signal_json({"file": CAFE})
