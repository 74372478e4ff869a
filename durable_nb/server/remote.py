"""Reaching the journal server from another machine: a TCP endpoint behind the home's keys.

Dask workers on other machines record their steps' heartbeats and completions in the
journal themselves, so they must reach its server. The server of a home listens on its
private ipc socket and, once ``durable-nb remote listen tcp://HOST:PORT`` asked for it, on
that TCP address too; the address is kept in ``remote.json`` in the home, so every later
server of the home listens there as well. Both endpoints are one CURVE socket: a peer
completes the handshake only with the home's client key, and it knows the server by the
home's server key (``auth.py``), so the network sees neither requests nor payloads.

A remote machine holds a *credentials file* (``durable-nb remote credentials FILE``): the
address to dial, the server's public key and the client key pair. Never the server's
secret, so a machine that has it can talk to the journal (it can read and write
everything, as a local kernel can) but cannot pose as its server. A process finds it
through ``DURABLE_NB_JOURNAL=/path/to/credentials``; such a process never starts a server
and keeps no journal of its own, and the large values it records go to the server in
chunks (``JournalClient.put_blob``), not to a blob directory it does not have.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from durable_nb.errors import ConfigurationError, JournalUnavailable
from durable_nb.server.discovery import write_private_json

REMOTE_FILE = "remote.json"  # in the home: {"listen": "tcp://0.0.0.0:7450"}
JOURNAL_ENV = "DURABLE_NB_JOURNAL"  # on a remote machine: the credentials file's path
CREDENTIALS_KIND = "durable_nb journal credentials"
_TCP = re.compile(r"tcp://(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-*]+):(?P<port>\d{1,5})")


@dataclass(frozen=True)
class Credentials:
    """What a remote process needs to reach the journal server of a home."""

    endpoint: str
    server_public: bytes
    client_public: bytes
    client_secret: bytes
    path: Path  # the file they came from, for messages


def check_address(address: str, *, listening: bool) -> str:
    """``address`` if it is ``tcp://HOST:PORT`` (port 0: any free port, when listening)."""
    m = _TCP.fullmatch(address.strip())
    port = int(m["port"]) if m else -1
    if m is None or port > 65535 or (port == 0 and not listening):
        raise ConfigurationError(
            f"{address!r} is not a TCP address of the form tcp://HOST:PORT"
            + (" (tcp://0.0.0.0:7450 listens on every interface, tcp://10.0.0.5:7450 on one; "
               "port 0 takes any free port)" if listening else "") + ".")
    return address.strip()


# -- the server's side -------------------------------------------------------------------------
def listen_address(home: Path) -> str | None:
    """The TCP address the home's server is asked to listen on, if any."""
    try:
        info = json.loads((home / REMOTE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"{home / REMOTE_FILE} cannot be read ({exc}). Run `durable-nb remote listen "
            "tcp://HOST:PORT` again, or `durable-nb remote off`.") from exc
    address = info.get("listen") if isinstance(info, dict) else None
    return check_address(str(address), listening=True) if address else None


def set_listen_address(home: Path, address: str | None) -> None:
    if address is None:
        (home / REMOTE_FILE).unlink(missing_ok=True)
    else:
        write_private_json(home / REMOTE_FILE,
                           {"listen": check_address(address, listening=True)})


def dial_address(bound: str, host: str | None = None) -> str:
    """The address a remote machine dials for a server bound at ``bound``: ``host`` when
    given, else the bound host, or this machine's name when it listens on every interface."""
    m = _TCP.fullmatch(bound)
    if m is None:
        raise ConfigurationError(f"the journal server listens at {bound!r}, not on TCP")
    chosen = host or m["host"]
    if chosen in ("0.0.0.0", "*", "[::]"):
        chosen = socket.getfqdn()
    return f"tcp://{chosen}:{m['port']}"


def write_credentials(path: Path, endpoint: str, keys: Any) -> None:
    """Write a credentials file for ``endpoint`` (mode 0600): no server secret in it."""
    write_private_json(path, {
        "kind": CREDENTIALS_KIND, "endpoint": check_address(endpoint, listening=False),
        "server_public": keys.server_public.decode(),
        "client_public": keys.client_public.decode(),
        "client_secret": keys.client_secret.decode()})


# -- the remote machine's side -----------------------------------------------------------------
def credentials_path() -> Path | None:
    value = os.environ.get(JOURNAL_ENV)
    return Path(value).expanduser() if value else None


def configured() -> bool:
    """True in a process that reaches its journal over TCP (``DURABLE_NB_JOURNAL`` set)."""
    return bool(os.environ.get(JOURNAL_ENV))


def read_credentials(path: Path) -> Credentials:
    """The credentials in ``path``; a clear error when it is not a private, whole file."""
    way_out = (f"Make a new one on the journal's machine with `durable-nb remote credentials "
               f"FILE`, copy it here with mode 0600, and point {JOURNAL_ENV} at it.")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise JournalUnavailable(
            f"cannot open the journal credentials {path} named by {JOURNAL_ENV}: "
            f"{exc.strerror or exc}. {way_out}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() \
                or stat.S_IMODE(st.st_mode) & 0o077:
            raise JournalUnavailable(
                f"refusing the journal credentials {path}: they hold the key to the whole "
                f"journal, so they must be a regular file of yours (uid {os.getuid()}) that "
                f"nobody else can read (mode {stat.S_IMODE(st.st_mode):04o}, owner uid "
                f"{st.st_uid}). `chmod 600 {path}` if you trust it. {way_out}")
        raw = f.read()
    try:
        info = json.loads(raw)
        if info.get("kind") != CREDENTIALS_KIND:
            raise ValueError("it is not a durable_nb credentials file")
        creds = Credentials(check_address(str(info["endpoint"]), listening=False),
                            str(info["server_public"]).encode(),
                            str(info["client_public"]).encode(),
                            str(info["client_secret"]).encode(), path)
        if zmq.curve_public(creds.client_secret) != creds.client_public:
            raise ValueError("its client public key does not match its secret key")
        if len(creds.server_public) != 40:
            raise ValueError("its server key is not a CURVE public key")
    except (ValueError, KeyError, TypeError, AttributeError, ConfigurationError,
            zmq.ZMQError) as exc:
        raise JournalUnavailable(
            f"the journal credentials {path} are damaged ({exc}). {way_out}") from exc
    return creds
