"""Text the journal can store: UTF-8, so no lone surrogates, in text and in JSON text.

Python turns an undecodable byte of a file name, an environment variable or a command line
(``os.fsdecode``, ``os.listdir``, ``os.environ``) into a lone surrogate, U+DC80-U+DCFF, so
``ValueError(os.fsdecode(b"caf\\xe9.csv"))`` carries one. UTF-8 cannot encode it: Arrow and
DuckDB refuse the string, and DuckDB's JSON type refuses its ``\\udce9`` escape. Text that is
only shown (errors, tracebacks, previews, names, meta) is escaped here; identities and
payloads are never altered, so the journal refuses them instead (``schema.check_event``)
and the codec pickles payload strings that hold one.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
# In JSON text: the escape of a surrogate. Only an unpaired one is unstorable, which the
# slower exact check below decides; most text has no escape of this kind at all.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def is_storable_text(text: str) -> bool:
    """True when ``text`` encodes as UTF-8 (holds no lone surrogate)."""
    return text.isascii() or _SURROGATE.search(text) is None


def unstorable_part(text: str) -> str | None:
    """Where ``text`` cannot be stored ("a lone surrogate U+DCE9 at position 3"), or None."""
    if text.isascii():
        return None
    m = _SURROGATE.search(text)
    return None if m is None else f"a lone surrogate U+{ord(m[0]):04X} at position {m.start()}"


def shortened(text: str, chars: int) -> str:
    """``text``, cut to at most ``chars`` characters with an ellipsis when longer."""
    return text if len(text) <= chars else text[:chars - 1] + "…"


def storable_text(text: str) -> str:
    """``text`` with every lone surrogate written as a backslash escape.

    A surrogate that stands for an undecodable byte reads as that byte (``caf\\xe9.csv``),
    any other as its code point (``\\ud800``). Text without one is returned unchanged.
    """
    if is_storable_text(text):
        return text
    return _SURROGATE.sub(_escape, text)


def _escape(m: re.Match[str]) -> str:
    code = ord(m[0])
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def storable_value(value: Any) -> Any:
    """A JSON-able value with :func:`storable_text` applied to every string and key."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_value(k): storable_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable_value(v) for v in value]
    return value


def json_unstorable_part(text: str) -> str | None:
    """Where valid JSON ``text`` holds a string DuckDB's JSON type refuses, or None.

    DuckDB takes a surrogate escape only as half of a pair (``\\ud83d\\ude00``); Python's
    decoder joins such pairs, so what stays a lone surrogate after decoding is refused.
    """
    if not is_storable_text(text):
        return unstorable_part(text)
    if _SURROGATE_ESCAPE.search(text) is None:
        return None
    try:
        json.dumps(json.loads(text), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate U+{ord(exc.object[exc.start]):04X} in a string"
    return None


def storable_json(text: str) -> str:
    """JSON ``text`` with its unstorable strings escaped; unchanged when it has none (or is
    no JSON at all, which ``schema.check_event`` then refuses by name)."""
    try:
        if json_unstorable_part(text) is None:
            return text
        return json.dumps(storable_value(json.loads(text)))
    except ValueError:
        return text
