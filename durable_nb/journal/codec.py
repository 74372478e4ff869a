"""Payload codec: JSON when a value round-trips exactly, else cloudpickle, plus a short preview.

JSON payloads stay queryable in SQL (``result->>'loss'``). A value is stored as JSON only
when decoding gives back the same types (no tuples, no non-str keys, no float subclasses
such as numpy scalars); otherwise replay would hand the workflow a different object than
the live run saw.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import reprlib
from dataclasses import dataclass
from typing import Any

import cloudpickle

from durable_nb.errors import PayloadError

PREVIEW_CHARS = 200

_repr = reprlib.Repr()
_repr.maxstring = 120
_repr.maxother = 120
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_repr.maxlevel = 3


@dataclass(frozen=True, slots=True)
class Payload:
    """An encoded value: exactly one of ``json`` / ``pickle_b64`` is set."""

    json: str | None
    pickle_b64: str | None
    preview: str


def is_plain_json(value: Any, _depth: int = 0) -> bool:
    """True when ``json.loads(json.dumps(value))`` gives back equal values of equal types."""
    t = type(value)
    if value is None or t is str or t is bool or t is int:
        return True
    if t is float:
        return math.isfinite(value)
    if _depth > 64:
        return False
    if t is list:
        return all(is_plain_json(v, _depth + 1) for v in value)
    if t is dict:
        return all(type(k) is str and is_plain_json(v, _depth + 1) for k, v in value.items())
    return False


def preview(value: Any) -> str:
    try:
        text = _repr.repr(value)
    except Exception as exc:  # a broken __repr__ must not fail the step
        text = f"<{type(value).__name__} (repr failed: {exc!r})>"
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def encode(value: Any, *, what: str) -> Payload:
    """Encode ``value``; ``what`` names it in errors ("argument 'cfg' of train at step 3")."""
    if is_plain_json(value):
        text = json.dumps(value, separators=(",", ":"))
        return Payload(text, None, text if len(text) <= PREVIEW_CHARS else preview(value))
    try:
        raw = cloudpickle.dumps(value)
    except Exception as exc:
        path, culprit = _find_unpicklable(value, "value")
        raise PayloadError(
            f"cannot record {what}: {path} of type {type(culprit).__module__}."
            f"{type(culprit).__qualname__} can be neither JSON-encoded nor pickled ({exc}). "
            "Pass something serialisable (e.g. a path or a config dict) and build the object "
            "inside the activity."
        ) from exc
    return Payload(None, base64.b64encode(raw).decode("ascii"), preview(value))


def decode(json_text: str | None, pickle_b64: str | bytes | None) -> Any:
    if json_text is not None:
        return json.loads(json_text)
    if pickle_b64 is not None:
        raw = pickle_b64 if isinstance(pickle_b64, bytes) else base64.b64decode(pickle_b64)
        return cloudpickle.loads(raw)
    return None


def _find_unpicklable(value: Any, path: str) -> tuple[str, Any]:
    """The deepest element of a container that fails to pickle, with its access path."""
    children: list[tuple[str, Any]] = []
    if isinstance(value, (list, tuple)):
        children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        children = [(f"{path}[{k!r}]", v) for k, v in value.items()]
    elif hasattr(value, "__dict__") and isinstance(getattr(value, "__dict__", None), dict):
        children = [(f"{path}.{k}", v) for k, v in vars(value).items()]
    for child_path, child in children:
        try:
            cloudpickle.dumps(child)
        except Exception:
            return _find_unpicklable(child, child_path)
    return path, value


def _canonical(value: Any) -> Any:
    """A form of ``value`` whose pickle does not depend on set order or dict insertion."""
    if isinstance(value, dict):
        return ("__dict__", sorted(((repr(k), _canonical(v)) for k, v in value.items()),
                                   key=lambda kv: kv[0]))
    if isinstance(value, (set, frozenset)):
        return ("__set__", sorted((_canonical(v) for v in value), key=repr))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_canonical(v) for v in value])
    return value


def call_hash(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A stable digest of a call's arguments, used to detect replay divergence."""
    h = hashlib.sha256()
    payload: Any = {"a": list(args), "k": kwargs}
    if is_plain_json(payload):
        h.update(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
    else:
        try:
            h.update(cloudpickle.dumps(_canonical(payload)))
        except Exception:
            h.update(repr(payload).encode())  # encode() raises the useful error first
    return h.hexdigest()[:32]


def code_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]
