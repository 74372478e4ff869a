"""Payload codec: JSON when a value round-trips exactly, else cloudpickle, plus a short preview;
values larger than the blob threshold go to the blob store (journal/blobs.py) by reference.

JSON payloads stay queryable in SQL (``result->>'loss'``). A value is stored as JSON only
when decoding gives back the same types (no tuples, no non-str keys, no float subclasses
such as numpy scalars) and DuckDB's JSON type can hold it (no string with a lone surrogate,
as an undecodable file name gives); otherwise replay would hand the workflow a different
object than the live run saw, or the ``steps`` view could not read the journal.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import inspect
import io
import json
import math
import reprlib
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import cloudpickle

from durable_nb.errors import PayloadError
from durable_nb.journal import blobs, crypto
from durable_nb.journal.blobs import BlobRef
from durable_nb.journal.home import journal_home
from durable_nb.journal.text import is_storable_text, shortened, storable_text

PREVIEW_CHARS = 200


def _plain_json_encoder() -> Callable[[Any], str]:
    """``json.dumps(value, separators=(",", ":"))`` for a value ``is_plain_json`` took.

    ``json.dumps`` builds its C encoder anew at every call, which costs more than encoding
    a small value (twice per step of a fan-out); this one is built once. It does not look
    for cycles: ``is_plain_json`` refused any value nested deeper than 64 levels.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return json.JSONEncoder(separators=(",", ":")).encode
    chunks = make(None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii,
                  None, ":", ",", False, False, True)
    return lambda value: "".join(chunks(value, 0))


plain_json = _plain_json_encoder()

_repr = reprlib.Repr()
_repr.maxstring = 120
_repr.maxother = 120
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_repr.maxlevel = 3


class Payload(NamedTuple):
    """An encoded value: at most one of ``json`` / ``pickle_b64`` / ``blob`` is set (none:
    a value only described by its preview)."""

    json: str | None
    pickle_b64: str | None
    preview: str
    blob: BlobRef | None = None

    def columns(self, meta: dict[str, Any] | str | None = None) -> dict[str, Any]:
        """The event columns that record this payload, ``meta`` included (a blob's
        reference is added to it; ``meta`` is then a dict, else it may be JSON text)."""
        if self.blob is not None:
            assert not isinstance(meta, str), "a blob's payload takes its meta as a dict"
            meta = {**(meta or {}), **self.blob.as_meta()}
        return {"data_json": self.json, "data_pickle": self.pickle_b64,
                "preview": self.preview, "meta": meta}


def is_plain_json(value: Any, _depth: int = 0) -> bool:
    """True when ``json.loads(json.dumps(value))`` gives back equal values of equal types
    and DuckDB can read the JSON text (its strings encode as UTF-8)."""
    t = type(value)
    if value is None or t is bool or t is int:
        return True
    if t is str:
        return is_storable_text(value)
    if t is float:
        return math.isfinite(value)
    if _depth > 64:
        return False
    if t is list:
        return all(is_plain_json(v, _depth + 1) for v in value)
    if t is dict:
        return all(type(k) is str and is_storable_text(k) and is_plain_json(v, _depth + 1)
                   for k, v in value.items())
    return False


def preview(value: Any) -> str:
    """A short text of ``value`` for people (and SQL), storable whatever the value holds."""
    try:
        text = _repr.repr(value)
    except Exception as exc:  # a broken __repr__ must not fail the step
        text = f"<{type(value).__name__} (repr failed: {exc!r})>"
    text = storable_text(text)
    return shortened(text, PREVIEW_CHARS)


def encode(value: Any, *, what: str, home: Path | None = None,
           threshold: int | None = None, safe: bool = False) -> Payload:
    """Encode ``value``; ``what`` names it in errors ("argument 'cfg' of train at step 3").

    A value larger than ``threshold`` bytes (default: ``blobs.threshold()``) is written to
    the blob store of ``home`` (default: the current journal home) now, durably, and the
    payload holds its reference. In an encrypted journal the payload is sealed unless the
    value is marked ``safe`` (a blob's bytes are sealed in any case).
    """
    plain = _encode_plain(value, what=what, home=home, threshold=threshold)
    return plain if safe else seal_payload(plain, home)


def seal_payload(p: Payload, home: Path | None, *, clear_json: str | None = None,
                 clear_preview: str | None = None) -> Payload:
    """``p`` sealed when the journal of ``home`` is encrypted (``crypto.py``), else ``p``.

    ``clear_json`` / ``clear_preview``: what may stay in clear (the arguments marked safe).
    """
    sealer = _sealer(home)
    if sealer is None:
        return p
    shown = clear_preview or crypto.REDACTED
    if p.blob is not None:  # its bytes were sealed as they were written
        return Payload(clear_json, None, shown, p.blob)
    if p.json is not None:
        plain = b"J" + p.json.encode()
    elif p.pickle_b64 is not None:
        plain = b"P" + base64.b64decode(p.pickle_b64)
    else:
        return Payload(None, None, shown)
    return Payload(clear_json, base64.b64encode(sealer.seal(plain)).decode("ascii"), shown)


def _encode_plain(value: Any, *, what: str, home: Path | None,
                  threshold: int | None) -> Payload:
    limit = blobs.threshold() if threshold is None else threshold
    if is_plain_json(value):
        try:
            text = plain_json(value)
        except ValueError as exc:  # an int past sys.get_int_max_str_digits()
            path, culprit = _find_culprit(value, "value", _json_fails)
            raise PayloadError(
                f"cannot record {what}: {path} of type {_type_name(culprit)} cannot be "
                f"written as JSON ({exc}). Return or pass it in a form the journal can hold "
                "(for a huge int: str(value)), or raise the limit with "
                "sys.set_int_max_str_digits()."
            ) from exc
        return json_payload(text, value, home, limit)
    typed = blobs.typed_bytes(value, limit)
    if typed is not None:
        fmt, data = typed
        return Payload(None, None, preview(value), blobs.store(_home(home), data, fmt, value))
    try:
        raw = cloudpickle.dumps(value)
    except Exception as exc:
        path, culprit = _find_culprit(value, "value", _pickle_fails)
        raise PayloadError(
            f"cannot record {what}: {path} of type {_type_name(culprit)} can be neither "
            f"JSON-encoded nor pickled ({exc}). "
            "Pass something serialisable (e.g. a path or a config dict) and build the object "
            "inside the activity."
        ) from exc
    if len(raw) > limit:
        return Payload(None, None, preview(value), blobs.store(_home(home), raw, "pickle", value))
    return Payload(None, base64.b64encode(raw).decode("ascii"), preview(value))


def json_payload(text: str, value: Any, home: Path | None, limit: int | None = None) -> Payload:
    """The payload of a value already dumped as JSON ``text``: inline, or a blob when the
    text is larger than ``limit`` (``json.dumps`` writes ASCII: characters are bytes)."""
    shown = text if len(text) <= PREVIEW_CHARS else preview(value)
    if len(text) > (blobs.threshold() if limit is None else limit):
        return Payload(None, None, shown, blobs.store(_home(home), text.encode(), "json", value))
    return Payload(text, None, shown)


def recorded_error(error: str | None, tb: str | None,
                   home: Path | None) -> tuple[str | None, str | None, dict[str, Any]]:
    """The error text and traceback a failure event records, and what its ``meta`` adds.

    In an encrypted journal both are sealed into the meta (``sealed_error``), and the
    columns keep only the exception's type ("ValueError: ‹encrypted›").
    """
    sealer = _sealer(home)
    if sealer is None or (error is None and tb is None):
        return error, tb, {}
    kind = (error or "").split(":", 1)[0]
    sealed = sealer.seal(b"J" + json.dumps({"error": error, "traceback": tb}).encode())
    return (f"{kind}: {crypto.REDACTED}", crypto.REDACTED if tb else None,
            {"sealed_error": base64.b64encode(sealed).decode("ascii")})


def _sealer(home: Path | None) -> crypto.Sealer | None:
    return crypto.sealer(home if home is not None else journal_home(create=False))


def _home(home: Path | None) -> Path:
    return journal_home(home)  # made if needed, private (0700) like every journal file


def decode(json_text: str | None, pickle_b64: str | bytes | None, blob: BlobRef | None = None,
           *, home: Path | None = None, what: str = "a recorded value",
           remedy: str | None = None) -> Any:
    """The value a payload stands for. A blob is read now (from ``home``, default the
    current journal home); if it is missing or altered, ``BlobCorrupted`` names ``what``
    it held and the way out (``remedy``)."""
    if blob is not None:
        return blobs.load(_home(home), blob, what, remedy)
    raw = None
    if pickle_b64 is not None:
        raw = pickle_b64 if isinstance(pickle_b64, bytes) else base64.b64decode(pickle_b64)
        if crypto.is_sealed(raw):  # its data_json, if any, holds only what was safe
            plain = crypto.opener(_home(home), what).open(raw, what)
            return json.loads(plain[1:]) if plain[:1] == b"J" else cloudpickle.loads(plain[1:])
    if json_text is not None:
        return json.loads(json_text)
    if raw is not None:
        return cloudpickle.loads(raw)
    return None


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _pickle_fails(value: Any) -> bool:
    try:
        cloudpickle.dumps(value)
    except Exception:
        return True
    return False


def _json_fails(value: Any) -> bool:
    try:
        json.dumps(value)
    except ValueError:
        return True
    return False


def _find_culprit(value: Any, path: str, fails: Callable[[Any], bool]) -> tuple[str, Any]:
    """The deepest element of a container for which ``fails``, with its access path."""
    children: list[tuple[str, Any]] = []
    if isinstance(value, (list, tuple)):
        children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        children = [(f"{path}[{k!r}]", v) for k, v in value.items()]
    elif hasattr(value, "__dict__") and isinstance(getattr(value, "__dict__", None), dict):
        children = [(f"{path}.{k}", v) for k, v in vars(value).items()]
    for child_path, child in children:
        if fails(child):
            return _find_culprit(child, child_path, fails)
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


def _code_token(qualname: str, digest: str) -> None:
    """Stands in a digest pickle for a notebook-defined class or function (never called)."""


def _code_digest(obj: Any) -> str:
    try:
        return code_hash(inspect.getsource(obj))
    except (OSError, TypeError):  # no source to be had: the name alone
        return ""


class _DigestPickler(cloudpickle.Pickler):
    """cloudpickle for hashing only: a class or function defined in the notebook
    (``__main__``) is pickled by value, and so would carry its cell's file name, which
    differs in every kernel; here it is its name and source instead, so the same value
    hashes alike after a kernel restart."""

    def reducer_override(self, obj: Any) -> Any:
        if (isinstance(obj, (type, types.FunctionType))
                and getattr(obj, "__module__", None) == "__main__"):
            return _code_token, (obj.__qualname__, _code_digest(obj))
        return super().reducer_override(obj)


def _digest_dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    _DigestPickler(buffer, protocol=5).dump(value)
    return buffer.getvalue()


def call_hash(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A stable digest of a call's arguments, used to detect replay divergence."""
    h = hashlib.sha256()
    payload: Any = {"a": list(args), "k": kwargs}
    if is_plain_json(payload):
        with contextlib.suppress(ValueError):  # an int too long for JSON: hashed below
            h.update(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
            return h.hexdigest()[:32]
    try:
        h.update(_digest_dumps(_canonical(payload)))
    except Exception:  # not storable either: encode() raises the useful error first
        h.update(preview(payload).encode())
    return h.hexdigest()[:32]


def value_digest(value: Any, home: Path | None) -> str:
    """A workflow input's digest: ``call_hash`` of it, keyed in an encrypted journal."""
    plain = call_hash((value,), {})
    sealer = _sealer(home)
    return plain if sealer is None else KEYED_DIGEST_PREFIX + sealer.digest(plain.encode())[:32]


# Digests made from a call's stored encoding start with this; older journals hold
# ``call_hash`` digests (32 hex digits), which replay still compares the old way.
CALL_DIGEST_PREFIX = "v2:"
KEYED_DIGEST_PREFIX = "v2k:"  # the same, keyed, in an encrypted journal


class _Redacted:
    """Stands for an argument not marked safe in an encrypted journal's previews."""

    def __repr__(self) -> str:
        return crypto.REDACTED


class CallEncoding:
    """A call's arguments (by parameter name) encoded once for the journal, with the
    digest replay compares.

    Plain-JSON arguments are dumped once, in call order (so the journal, its views and
    ``results`` show them as the code passed them), and the digest is the hash of that
    very text; a digest that differs only because a dict was built in another order is
    told apart by comparing the recorded text itself (``matches``). Other arguments are
    pickled for the journal and digested with ``_DigestPickler`` (which hashes
    notebook-defined code by source, so the digest is stable across kernels where the
    stored pickle is not); each is made on first use, so a replayed step never pickles its
    arguments for storage. Arguments larger than the blob threshold, JSON ones included,
    are stored as a blob in ``home`` (see ``encode``).
    """

    __slots__ = ("named", "what", "home", "safe", "_text", "_payload", "_digest", "_plain",
                 "_sealer")

    def __init__(self, named: dict[str, Any], what: str, home: Path | None = None,
                 safe: frozenset[str] = frozenset()) -> None:
        self.named, self.what, self.home, self.safe = named, what, home, safe
        self._text: str | None = None
        self._payload: Payload | None = None
        self._digest: str | None = None
        self._plain: bytes | None = None
        self._sealer: crypto.Sealer | None | bool = False  # False: not looked up yet
        if is_plain_json(named):
            with contextlib.suppress(ValueError):  # an int too long for JSON
                self._text = plain_json(named)

    def _digested(self) -> bytes:
        """The bytes the digest is taken over."""
        if self._plain is None:
            if self._text is not None:
                self._plain = self._text.encode()
            else:
                try:
                    self._plain = _digest_dumps(_canonical(self.named))
                except Exception:  # not storable: ``payload`` raises the useful error
                    self._plain = preview(self.named).encode()
        return self._plain

    def _plain_digest(self) -> str:
        return CALL_DIGEST_PREFIX + hashlib.sha256(self._digested()).hexdigest()[:32]

    @property
    def digest(self) -> str:
        """The digest recorded with the step: keyed in an encrypted journal, so that a
        guessed argument value cannot be confirmed from it."""
        if self._digest is None:
            sealer = self._sealed_by()
            if sealer is None:
                self._digest = self._plain_digest()
            else:  # over sorted keys: dicts built in another order are the same call
                keyed = (json.dumps(self.named, sort_keys=True, separators=(",", ":")).encode()
                         if self._text is not None else self._digested())
                self._digest = KEYED_DIGEST_PREFIX + sealer.digest(keyed)[:32]
        return self._digest

    @property
    def payload(self) -> Payload:
        if self._payload is None:
            if self._text is not None:  # dumped already (the digest hashes this text)
                plain = json_payload(self._text, self.named, self.home)
            else:
                plain = _encode_plain(self.named, what=self.what, home=self.home,
                                      threshold=None)
            if self._sealed_by() is None:
                self._payload = plain
            else:
                clear = {k: v for k, v in self.named.items() if k in self.safe}
                shown = {k: clear.get(k, _Redacted()) for k in self.named}
                self._payload = seal_payload(
                    plain, self.home, clear_preview=preview(shown),
                    clear_json=json.dumps(clear) if clear and is_plain_json(clear) else None)
        return self._payload

    def _sealed_by(self) -> crypto.Sealer | None:
        if self._sealer is False:
            self._sealer = _sealer(self.home)
        return self._sealer  # type: ignore[return-value]

    def matches(self, recorded: str | None, recorded_json: str | None,
                args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether a step recorded with digest ``recorded`` (and, for plain-JSON
        arguments, the text ``recorded_json``) is this call."""
        if recorded is not None and recorded.startswith(KEYED_DIGEST_PREFIX):
            return recorded == self.digest
        if recorded is None or recorded.startswith(CALL_DIGEST_PREFIX):
            if recorded == self._plain_digest():  # (maybe from before encryption)
                return True
            # The same values with dict keys in another order hash differently.
            return (recorded is not None and recorded_json is not None
                    and self._text is not None
                    and json.loads(recorded_json) == json.loads(self._text))
        return recorded == call_hash(args, kwargs)  # a journal from before CallEncoding


def code_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]
