"""The journal home's secret, and how a socket proves it holds it (ZeroMQ CURVE with ZAP).

``journal.keys`` in the home (0600, this user's) holds a server key pair and a client key
pair. The server's socket completes a handshake only with the home's client key, and a
client completes one only with a server holding the home's server secret. So a socket at
the right path is not enough on either side: a process without the file can neither pose as
the journal server (and feed a kernel pickles) nor ask it anything. Nothing here depends on
the transport: a TCP endpoint for remote workers is secured the same way.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import stat
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from durable_nb.errors import JournalCorrupted, JournalUnavailable
from durable_nb.journal.home import check_ipc_endpoint
from durable_nb.server.discovery import WaitNotice, file_lock, poll_noting

log = logging.getLogger("durable_nb.server")

KEYS_FILE = "journal.keys"
KEYS_LOCK = "keys.lock"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks each context's ZAP handler
# A peer that drops our handshake this many times in a row is not the server of the home
# (one drop may be a server dying mid-handshake; libzmq retries every ~0.1 s).
DROPS_BEFORE_REFUSING = 3

_HANDSHAKE_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED
                     | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class ClientKeys(Protocol):
    """What a client needs to complete the handshake: the server's public key and a
    client key pair (``HomeKeys``, or a remote machine's ``remote.Credentials``)."""

    @property
    def server_public(self) -> bytes: ...
    @property
    def client_public(self) -> bytes: ...
    @property
    def client_secret(self) -> bytes: ...


@dataclass(frozen=True)
class HomeKeys:
    """The CURVE key pairs of one journal home, z85-encoded as zmq takes them."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def of(cls, home: Path) -> HomeKeys:
        """The home's keys, made by whoever needs them first.

        Made under a lock and published with one rename, so clients and servers racing to
        start the home agree on one file, and nobody ever reads half of it.
        """
        if not zmq.has("curve"):
            raise JournalUnavailable(
                f"this pyzmq (libzmq {zmq.zmq_version()}) has no CURVE support, which the "
                "journal server needs to authenticate its clients. Install pyzmq from its "
                "wheels (they bundle libzmq with CURVE).")
        path = home / KEYS_FILE
        keys = _read(path)
        if keys is None:
            with file_lock(home / KEYS_LOCK):
                keys = _read(path) or _create(path)
        return keys


def bind(sock: zmq.Socket[bytes], home: Path, endpoint: str) -> None:
    """Bind ``sock`` as the server of ``home``: only clients holding its keys get through."""
    keys = HomeKeys.of(home)
    _admit(sock.context, keys)
    sock.curve_server = True
    sock.curve_secretkey = keys.server_secret
    sock.curve_publickey = keys.server_public
    sock.zap_domain = keys.server_public  # the domain names the key set the handler checks
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP answer, no handshake: fail closed
    sock.bind(endpoint)


def connect(sock: zmq.Socket[bytes], home: Path, endpoint: str, timeout: float,
            keys: ClientKeys | None = None) -> bool:
    """Connect ``sock`` to the server of ``home`` at ``endpoint`` and wait for the handshake.

    ``keys``: the client side of the home's keys from a credentials file (a remote
    machine, see ``remote.py``), instead of the home's key file.

    True once the peer proved it holds the home's server secret. False when nothing
    completes a handshake within ``timeout`` (nothing listens there, or it is stuck).
    JournalUnavailable when what listens there fails the handshake: it is not the server of
    this home, and no request has been sent to it. On False or an error ``sock`` is closed
    (it would keep knocking).
    """
    remote = keys is not None
    try:
        if keys is None:
            check_ipc_endpoint(endpoint, home)
            keys = HomeKeys.of(home)
    except BaseException:
        sock.close(linger=0)
        raise
    sock.curve_serverkey = keys.server_public
    sock.curve_publickey = keys.client_public
    sock.curve_secretkey = keys.client_secret
    monitor = sock.get_monitor_socket(_HANDSHAKE_EVENTS)
    ok = False
    try:
        sock.connect(endpoint)
        notice = WaitNotice(f"the journal server at {endpoint} to complete the handshake",
                            timeout)
        deadline = time.monotonic() + timeout
        connected, drops = False, 0
        while poll_noting(monitor, deadline - time.monotonic(), notice):
            event = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                ok = True
                return True
            if event == zmq.EVENT_CONNECTED:
                connected = True
            elif event == zmq.EVENT_CONNECT_RETRIED and not connected:
                return False  # the first connect failed: nothing listens there
            elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                drops += 1
                if drops >= DROPS_BEFORE_REFUSING:
                    raise _impostor(home, endpoint, "it keeps dropping the handshake", remote)
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise _impostor(home, endpoint, "it refused this home's client key", remote)
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                raise _impostor(home, endpoint, "it does not speak CURVE with this home's key",
                                remote)
        return False
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        if not ok:
            sock.close(linger=0)


def _impostor(home: Path, endpoint: str, what: str, remote: bool = False) -> JournalUnavailable:
    if remote:
        return JournalUnavailable(
            f"refusing the process listening at {endpoint}: {what}, so it is not the journal "
            "server these credentials are for (or the credentials are out of date: the "
            "home's keys were made anew). Nothing was sent to it. Make new credentials on the "
            "journal's machine (`durable-nb remote credentials FILE`) and check the address.")
    return JournalUnavailable(
        f"refusing the process listening at {endpoint}: {what}, so it is not the journal "
        f"server of {home} (or it is one of a durable_nb without keys, or one started before "
        f"{home / KEYS_FILE} was replaced). Nothing was sent to it. Stop that process (the "
        f"pid in {home / 'server.json'}) and try again; if you did not start it, someone may "
        "be trying to intercept the journal."
    )


# -- the key file ---------------------------------------------------------------------------
def _read(path: Path) -> HomeKeys | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symlink
        raise _refuse_key_file(path, f"it cannot be opened as a file ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        problems = []
        if not stat.S_ISREG(st.st_mode):
            problems.append("it is not a regular file")
        if st.st_uid != os.getuid():
            problems.append(f"it is owned by uid {st.st_uid}, not by you (uid {os.getuid()})")
        if stat.S_IMODE(st.st_mode) != 0o600:
            problems.append(f"its mode is {stat.S_IMODE(st.st_mode):04o}, not 0600")
        if problems:
            raise _refuse_key_file(path, " and ".join(problems))
        raw = f.read()
    try:
        fields = json.loads(raw)
        keys = HomeKeys(**{name: str(fields[name]).encode() for name in (
            "server_public", "server_secret", "client_public", "client_secret")})
        for public, secret in ((keys.server_public, keys.server_secret),
                               (keys.client_public, keys.client_secret)):
            if zmq.curve_public(secret) != public:
                raise ValueError("a public key does not match its secret key")
    except (ValueError, KeyError, TypeError, zmq.ZMQError) as exc:
        raise JournalCorrupted(
            f"the journal key file {path} is damaged ({exc}). Delete it and stop the journal "
            f"server of this home if one runs (the pid in {path.parent / 'server.json'}); the "
            "next start makes new keys.") from exc
    return keys


def _create(path: Path) -> HomeKeys:
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    keys = HomeKeys(server_public, server_secret, client_public, client_secret)
    text = json.dumps({name: value.decode() for name, value in vars(keys).items()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # exactly, whatever the umask
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # a server started with these keys must find them after a crash
    finally:
        os.close(dir_fd)
    return keys


def _refuse_key_file(path: Path, problem: str) -> JournalUnavailable:
    return JournalUnavailable(
        f"refusing the journal key file {path}: {problem}. It holds the secret that lets a "
        "process act as the journal server or talk to it, so it must be a file of yours with "
        f"mode 0600. If you trust its content, `chmod 600 {path}`; otherwise delete it and "
        "stop the journal server of this home if one runs (the pid in "
        f"{path.parent / 'server.json'}): the next start makes new keys."
    )


# -- the ZAP handler ------------------------------------------------------------------------
# Per context: server public key (the ZAP domain) -> the one client key it admits.
_admitted: weakref.WeakKeyDictionary[zmq.Context[zmq.Socket[bytes]], dict[bytes, bytes]] = (
    weakref.WeakKeyDictionary())
_admitted_lock = threading.Lock()


def _admit(ctx: zmq.Context[zmq.Socket[bytes]], keys: HomeKeys) -> None:
    """Start the context's ZAP handler once, and have it admit the home's client key.

    The handler is bound before any server socket binds, and it ends by itself when the
    context is terminated.
    """
    with _admitted_lock:
        domains = _admitted.get(ctx)
        if domains is None:
            zap = ctx.socket(zmq.REP)
            zap.linger = 0
            zap.bind(ZAP_ENDPOINT)
            domains = _admitted[ctx] = {}
            threading.Thread(target=_answer_zap, args=(zap, domains),
                             name="durable_nb-zap", daemon=True).start()
        domains[keys.server_public] = z85.decode(keys.client_public)


def _answer_zap(zap: zmq.Socket[bytes], domains: dict[bytes, bytes]) -> None:
    """Answer libzmq's ZAP requests (ZeroMQ RFC 27) until the context is terminated."""
    try:
        while True:
            request = zap.recv_multipart()
            request_id = request[1] if len(request) > 1 else b""
            expected = domains.get(request[2]) if len(request) > 2 else None
            admitted = (len(request) == 7 and request[5] == b"CURVE" and expected is not None
                        and hmac.compare_digest(request[6], expected))
            if not admitted:
                log.info("refused a connection without this journal home's client key")
            zap.send_multipart([b"1.0", request_id, b"200" if admitted else b"400",
                                b"OK" if admitted else b"not this journal's client key",
                                b"", b""])
    except zmq.ContextTerminated:
        pass
    finally:
        zap.close(linger=0)
