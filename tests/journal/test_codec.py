"""Payload codec: exact JSON or pickle, bounded previews, clear errors, stable call hashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest

from durable_nb.errors import PayloadError
from durable_nb.journal.codec import PREVIEW_CHARS, call_hash, decode, encode, preview

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "value",
    [
        {"loss": 0.25, "tags": ["a", "b"], "n": 3, "ok": True, "none": None},
        [1, 2.5, "x", None, False, {"nested": [[], {}]}],
        "plain text",
        -0.0,
        10**30,
    ],
    ids=["dict", "list", "str", "negative-zero", "big-int"],
)
def test_plain_json_values_are_stored_as_queryable_json(value: Any) -> None:
    payload = encode(value, what="result")
    assert payload.json is not None and payload.pickle_b64 is None
    assert json.loads(payload.json) == value
    back = decode(payload.json, payload.pickle_b64)
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        {1: "int key"},
        {"inner": (3, 4)},
        np.float64(1.5),
        [np.float64(2.5)],
        float("nan"),
        float("inf"),
        {"a": {2: "deep int key"}},
        {"s"},
    ],
    ids=["tuple", "int-key", "nested-tuple", "numpy-float", "numpy-in-list", "nan", "inf",
         "nested-int-key", "set"],
)
def test_values_json_would_change_go_to_pickle_and_decode_to_the_same_types(value: Any) -> None:
    payload = encode(value, what="result")
    assert payload.json is None and payload.pickle_b64 is not None
    back = decode(payload.json, payload.pickle_b64)
    assert type(back) is type(value)
    if isinstance(value, float) and value != value:  # nan
        assert back != back
    else:
        assert back == value
    assert repr(back) == repr(value)  # element types too (tuple stays tuple, np stays np)


def test_decode_accepts_raw_pickle_bytes_as_stored_in_duckdb() -> None:
    import base64

    payload = encode((1, "x"), what="result")
    assert payload.pickle_b64 is not None
    assert decode(None, base64.b64decode(payload.pickle_b64)) == (1, "x")
    assert decode(None, None) is None


class _HugeRepr:
    def __repr__(self) -> str:
        return "H" * 10_000


class _BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("boom " * 200)


@pytest.mark.parametrize(
    "value",
    [
        "s" * 5_000,
        ["y" * 300] * 50,
        {f"key{i}": "v" * 100 for i in range(100)},
        list(range(10_000)),
        [[[[["deep"] * 20] * 20] * 20] * 20],
        _HugeRepr(),
        [_HugeRepr()] * 20,
        _BrokenRepr(),
        (("t" * 1000,) * 30),
    ],
    ids=["long-str", "list-of-long-str", "big-dict", "long-list", "deep", "huge-repr",
         "list-of-huge-repr", "broken-repr", "tuple"],
)
def test_preview_is_at_most_200_characters(value: Any) -> None:
    assert PREVIEW_CHARS == 200
    assert len(preview(value)) <= 200
    assert len(encode(value, what="result").preview) <= 200


def test_short_json_preview_is_the_json_text_itself() -> None:
    assert encode({"a": 1}, what="result").preview == '{"a":1}'


def test_unpicklable_value_raises_payload_error_naming_type_and_path() -> None:
    value = [{"ok": 1, "lock": threading.Lock()}]
    with pytest.raises(PayloadError) as info:
        encode(value, what="argument 'cfg' of train at step 3")
    message = str(info.value)
    assert "argument 'cfg' of train at step 3" in message
    assert "value[0]['lock']" in message
    assert "_thread.lock" in message
    assert isinstance(info.value, TypeError)  # callers may catch it as a TypeError


def test_unpicklable_attribute_of_an_object_is_named_by_attribute_path() -> None:
    class Holder:
        def __init__(self) -> None:
            self.name = "fine"
            self.handle = threading.Lock()

    with pytest.raises(PayloadError) as info:
        encode({"model": Holder()}, what="result of train")
    message = str(info.value)
    assert "value['model'].handle" in message
    assert "_thread.lock" in message


def test_call_hash_is_the_same_for_equal_dicts_in_different_insertion_order() -> None:
    a = {"lr": 0.1, "layers": [3, 4], "opt": {"name": "adam", "beta": 0.9}}
    b = {"opt": {"beta": 0.9, "name": "adam"}, "layers": [3, 4], "lr": 0.1}
    assert list(a) != list(b)
    assert call_hash((a,), {"x": 1, "y": 2}) == call_hash((b,), {"y": 2, "x": 1})


def test_call_hash_is_the_same_for_equal_non_json_dicts_in_different_order() -> None:
    a = {1: (1, 2), "b": {3: "c", 4: "d"}}
    b = {"b": {4: "d", 3: "c"}, 1: (1, 2)}
    assert call_hash((a,), {}) == call_hash((b,), {})


def test_call_hash_differs_when_arguments_differ() -> None:
    assert call_hash(({"lr": 0.1},), {}) != call_hash(({"lr": 0.2},), {})
    assert call_hash((1,), {}) != call_hash((), {"x": 1})
    assert call_hash(({"a", "b"},), {}) != call_hash(({"a", "c"},), {})


_HASH_SCRIPT = """
from durable_nb.journal.codec import call_hash
words = {f"word{i}" for i in range(50)}
print(call_hash((words, frozenset(["x", "y", "z"])), {"tags": {"alpha", "beta", "gamma"}}))
print(list({f"word{i}" for i in range(50)})[:5])
"""


def test_call_hash_of_sets_of_strings_is_stable_across_hash_seeds() -> None:
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", _HASH_SCRIPT], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout.splitlines())
    (hash1, order1), (hash2, order2) = outputs
    assert order1 != order2, "precondition: the two seeds iterate the set differently"
    assert hash1 == hash2
    words = {f"word{i}" for i in range(50)}
    here = call_hash((words, frozenset(["x", "y", "z"])), {"tags": {"alpha", "beta", "gamma"}})
    assert here == hash1


CAFE = os.fsdecode(b"caf\xe9.csv")  # an undecodable byte of a file name: 'caf\udce9.csv'


@pytest.mark.parametrize(
    "value",
    [CAFE, [CAFE, 1], {"file": CAFE}, {CAFE: 1}, {"deep": [{"x": "\ud800"}]}],
    ids=["str", "in-list", "dict-value", "dict-key", "lone-high-surrogate"],
)
def test_strings_with_lone_surrogates_are_pickled_and_decode_exactly(value: Any) -> None:
    payload = encode(value, what="result")
    assert payload.json is None and payload.pickle_b64 is not None  # DuckDB's JSON refuses it
    back = decode(payload.json, payload.pickle_b64)
    assert back == value and type(back) is type(value)
    payload.preview.encode("utf-8")  # the preview is storable text


def test_preview_escapes_a_lone_surrogate_from_a_repr() -> None:
    class FileRef:
        def __repr__(self) -> str:
            return f"FileRef({CAFE})"

    assert preview(FileRef()) == "FileRef(caf\\xe9.csv)"
    assert preview(CAFE) == "'caf\\udce9.csv'"  # repr() of a str already escapes it


def test_call_hash_of_surrogate_strings_is_stable_and_distinct() -> None:
    assert call_hash((CAFE,), {}) == call_hash((os.fsdecode(b"caf\xe9.csv"),), {})
    assert call_hash((CAFE,), {}) != call_hash(("caf\\xe9.csv",), {})


def test_an_int_too_long_for_json_is_a_payload_error_naming_path_type_and_way_out() -> None:
    with pytest.raises(PayloadError) as info:
        encode({"n": 10**5000}, what="the result of big() at step 1")
    message = str(info.value)
    assert message.startswith("cannot record the result of big() at step 1: value['n'] of "
                              "type builtins.int cannot be written as JSON")
    assert "str(value)" in message and "sys.set_int_max_str_digits()" in message
    assert isinstance(info.value.__cause__, ValueError)
    assert call_hash((10**5000,), {}) == call_hash((10**5000,), {})  # hashing does not raise
