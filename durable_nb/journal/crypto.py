"""Encryption at rest (opt-in): payloads, blobs, error texts and tracebacks sealed with AES-GCM.

Keys. Your key comes from ``DURABLE_NB_KEY`` (32 random bytes, base64, as ``durable-nb key
new`` prints it) or from the file ``DURABLE_NB_KEY_FILE`` names; it never enters the journal.
The journal home holds ``encryption.json``: a random *data key* wrapped (AES-GCM) by your
key, and the ids of both. Everything is sealed with the data key, so rotating your key
(``durable-nb key rotate``) re-wraps one small file and rewrites nothing else; whoever held
the old key and a copy of the old ``encryption.json`` can still open what was recorded, so
delete such copies.

What is sealed, by the process that encodes it (kernel or worker), before it leaves:
argument, result, heartbeat and workflow-input payloads (the event's ``data_pickle`` holds
``MAGIC | data key id | nonce | ciphertext``, and ``data_json`` only the arguments marked
safe), blob files, and a failed step's exception, error text and traceback (the ``error``
column keeps the exception's type). Previews show ``‹encrypted›`` unless the activity marks
the value safe (``@activity(safe=("lr", "return"))``: those arguments, or the result, stay
in clear, queryable in SQL). Call digests are keyed (HMAC with a key derived from the data
key), so equal arguments cannot be told by guessing. What stays in clear: run and activity
names, step numbers, timings, statuses, the types and sizes of blobs, activity code hashes,
the workflow cell's source, and signal values sent through the server.

Blobs are sealed with a nonce derived from their content (an HMAC), so one value gives one
file: the store still deduplicates and checks each file by its sha256, and the nonce is
never reused with different bytes.

A journal with ``encryption.json`` refuses new payloads without the key, so nothing is
recorded in clear by mistake; payloads recorded before encryption was turned on stay as
they were. A missing key or the wrong one is an ``EncryptionKeyError`` naming which.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from durable_nb.errors import EncryptionKeyError
from durable_nb.journal import settings

KEY_ENV = "DURABLE_NB_KEY"
KEY_FILE_ENV = "DURABLE_NB_KEY_FILE"
CONFIG_FILE = "encryption.json"
MAGIC = b"DNBE\x01"  # a sealed value (a pickle starts with 0x80, JSON with a printable byte)
REDACTED = "‹encrypted›"
_ID_LEN = 8
_NONCE = 12
_WRAP_AAD = b"durable_nb data key"


def new_key() -> str:
    """A fresh key, as ``DURABLE_NB_KEY`` takes it."""
    return base64.b64encode(os.urandom(32)).decode()


def key_id(key: bytes) -> str:
    return hmac.new(key, b"durable_nb key id", hashlib.sha256).hexdigest()[:16]


def user_key() -> tuple[bytes, str] | None:
    """Your key and where it came from, or None when encryption is not asked for."""
    text, source = os.environ.get(KEY_ENV), KEY_ENV
    path = os.environ.get(KEY_FILE_ENV)
    if not text and path:
        source = f"{KEY_FILE_ENV} ({path})"
        try:
            text = _key_file_text(Path(path).expanduser())
        except OSError as exc:
            raise EncryptionKeyError(
                f"cannot read the key file {path} named by {KEY_FILE_ENV}: "
                f"{exc.strerror or exc}. Point it at the file holding the journal's key, or "
                "unset it.") from exc
    if not text:
        return None
    return parse_key(text, source), source


_key_files: dict[tuple[str, int], str] = {}


def _key_file_text(path: Path) -> str:
    """The key file's text, read again only when the file changes."""
    stamp = (str(path), path.stat().st_mtime_ns)
    if stamp not in _key_files:
        _key_files[stamp] = path.read_text().strip()
    return _key_files[stamp]


def parse_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise EncryptionKeyError(
            f"the key in {source} is not 32 bytes in base64 (as `durable-nb key new` prints "
            "one). Set it to the journal's key.")
    return key


def _aes(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise EncryptionKeyError(
            "encryption at rest needs the `cryptography` package: pip install "
            "'durable_nb[crypto]'") from exc
    return AESGCM(key)


@dataclass(frozen=True)
class Sealer:
    """Seals and opens values with one journal's data key."""

    data_key: bytes
    data_key_id: bytes  # _ID_LEN bytes, written before each sealed value

    def seal(self, plain: bytes | memoryview, nonce: bytes | None = None) -> bytes:
        nonce = nonce or os.urandom(_NONCE)
        header = MAGIC + self.data_key_id
        return header + nonce + _aes(self.data_key).encrypt(nonce, bytes(plain), header)

    def seal_blob(self, plain: bytes | memoryview) -> bytes:
        """Sealed with a nonce derived from the content: the same value, the same bytes."""
        nonce = hmac.new(self._sub_key(b"blob nonce"), plain, hashlib.sha256).digest()[:_NONCE]
        return self.seal(plain, nonce)

    def open(self, sealed: bytes | memoryview, what: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        sealed = bytes(sealed)
        header, rest = sealed[:len(MAGIC) + _ID_LEN], sealed[len(MAGIC) + _ID_LEN:]
        if header[len(MAGIC):] != self.data_key_id:
            raise EncryptionKeyError(
                f"{what} was sealed with another journal's data key (id "
                f"{header[len(MAGIC):].hex()}, this journal's is {self.data_key_id.hex()}): "
                "it was copied from another journal home. Open it in that home.")
        try:
            return bytes(_aes(self.data_key).decrypt(rest[:_NONCE], rest[_NONCE:], header))
        except InvalidTag:
            raise EncryptionKeyError(
                f"{what} does not open with this journal's data key: its bytes were altered. "
                "Restore the journal from a backup, or run that step again in a new run "
                "(`--fork-at N`).") from None

    def digest(self, data: bytes) -> str:
        """A keyed digest of a call's encoding (so a guessed argument cannot be confirmed)."""
        return hmac.new(self._sub_key(b"call digest"), data, hashlib.sha256).hexdigest()

    def _sub_key(self, purpose: bytes) -> bytes:
        return hmac.new(self.data_key, purpose, hashlib.sha256).digest()


def opener(home: Path, what: str) -> Sealer:
    """The sealer that opens ``what`` (a sealed value of ``home``'s journal)."""
    found = sealer(home)
    if found is None:
        raise EncryptionKeyError(
            f"{what} is encrypted, but the journal in {home} has no {CONFIG_FILE}: restore "
            "that file from a backup; without it nothing sealed can be opened.")
    return found


def is_sealed(raw: bytes | memoryview | None) -> bool:
    return raw is not None and bytes(raw[:len(MAGIC)]) == MAGIC


# -- the journal's encryption.json ---------------------------------------------------------------
def read_config(home: Path) -> dict[str, Any] | None:
    """The home's encryption config (through the server for a remote process)."""
    from durable_nb.server import remote

    if remote.configured():
        from durable_nb.server.client import default_client

        found = default_client().call("encryption").get("config")
        return found if isinstance(found, dict) else None
    from durable_nb.server.discovery import read_json_file

    found = read_json_file(home / CONFIG_FILE, lambda exc: EncryptionKeyError(
        f"{home / CONFIG_FILE} cannot be read ({exc}); restore it from a backup: without "
        "it nothing this journal sealed can be opened."))
    return found if isinstance(found, dict) else None


def _unwrap(config: dict[str, Any], key: bytes, source: str, home: Path) -> Sealer:
    from cryptography.exceptions import InvalidTag

    if config.get("key_id") != key_id(key):
        raise EncryptionKeyError(
            f"the key in {source} (id {key_id(key)}) is not the key of the journal in {home} "
            f"(id {config.get('key_id')}): set {KEY_ENV} to that journal's key. If the key "
            "was rotated, use the new one.")
    try:
        wrapped = base64.b64decode(config["wrapped_data_key"])
        data_key = _aes(key).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _WRAP_AAD)
        return Sealer(data_key, bytes.fromhex(config["data_key_id"]))
    except (InvalidTag, KeyError, ValueError, TypeError) as exc:
        raise EncryptionKeyError(
            f"{home / CONFIG_FILE} does not open with the key in {source} although the ids "
            "match: the file was altered. Restore it from a backup.") from exc


def wrap_config(data_key: bytes, data_key_id: bytes, key: bytes) -> dict[str, Any]:
    nonce = os.urandom(_NONCE)
    return {"version": 1, "key_id": key_id(key), "data_key_id": data_key_id.hex(),
            "wrapped_data_key": base64.b64encode(
                nonce + _aes(key).encrypt(nonce, data_key, _WRAP_AAD)).decode(),
            "wrapped_at": time.time()}


def write_config(home: Path, config: dict[str, Any]) -> None:
    from durable_nb.server.discovery import write_private_json

    write_private_json(home / CONFIG_FILE, config)
    fd = os.open(home, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_cache: dict[tuple[str, bytes | None], Sealer | None] = {}
_unencrypted: dict[str, float] = {}  # home -> until when it is taken as not encrypted
RECHECK_S = 1.0
_lock = threading.Lock()


def sealer(home: Path) -> Sealer | None:
    """The sealer of ``home``'s journal, or None when it is not encrypted and no key is
    set. A journal is made encrypted by the first payload recorded with a key set. A run
    finds it once (``settings.per_run``)."""
    return settings.once(_find_sealer, home)


def _find_sealer(home: Path) -> Sealer | None:
    from durable_nb.server import remote

    found = user_key()
    cache_key = (str(home), found[0] if found else None)
    if found is None and _unencrypted.get(str(home), 0.0) > time.monotonic():
        return None  # (the common case, once per step and more: no file read)
    with _lock:
        if cache_key in _cache:
            return _cache[cache_key]
        config = read_config(home)
        if found is None:
            if config is not None:
                raise EncryptionKeyError(
                    f"the journal in {home} is encrypted (key id {config.get('key_id')}) and "
                    f"no key is set: set {KEY_ENV} (or {KEY_FILE_ENV}) to its key.")
            if remote.configured():  # asked through the server: once per process
                _cache[cache_key] = None
            else:  # looked at again a second later: the journal may become encrypted
                _unencrypted[str(home)] = time.monotonic() + RECHECK_S
            return None
        key, source = found
        if config is None:
            if remote.configured():
                raise EncryptionKeyError(
                    f"{KEY_ENV} is set on this machine but the journal it reaches is not "
                    "encrypted; turn encryption on where the journal lives (record a step "
                    "with the key set there), or unset the key here.")
            from durable_nb.server.auth import KEYS_LOCK
            from durable_nb.server.discovery import file_lock

            with file_lock(home / KEYS_LOCK):
                config = read_config(home)
                if config is None:
                    config = wrap_config(os.urandom(32), os.urandom(_ID_LEN), key)
                    write_config(home, config)
        made = _cache[cache_key] = _unwrap(config, key, source, home)
        return made


def rotate(home: Path, new: bytes) -> dict[str, Any]:
    """Wrap the journal's data key with ``new`` (the current key must open it)."""
    found = user_key()
    config = read_config(home)
    if config is None:
        raise EncryptionKeyError(f"the journal in {home} is not encrypted: nothing to rotate")
    if found is None:
        raise EncryptionKeyError(f"set {KEY_ENV} to the journal's current key to rotate it")
    current = _unwrap(config, found[0], found[1], home)
    rotated = wrap_config(current.data_key, current.data_key_id, new)
    write_config(home, rotated)
    reset()
    return rotated


def reset() -> None:
    with _lock:
        _cache.clear()
        _unencrypted.clear()
