"""Where the journal lives: ``DURABLE_NB_HOME``, else ``<jupyter data dir>/durable_nb``."""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import stat
import tempfile
from pathlib import Path

from durable_nb.errors import JournalUnavailable

DB_FILE = "journal.duckdb"
SEGMENT_FILE = "journal.segment"
SERVER_FILE = "server.json"

log = logging.getLogger("durable_nb.journal")


def jupyter_data_dir() -> Path:
    """Jupyter's data dir without importing jupyter_core when it is absent."""
    try:
        from jupyter_core.paths import jupyter_data_dir as _dir
    except ImportError:  # pragma: no cover - jupyter_core ships with ipykernel
        return Path.home() / ".local" / "share" / "jupyter"
    return Path(_dir())


def journal_home(home: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """Resolve the journal home and make sure it is a private, writable directory.

    The home is 0700 because the server's ipc socket and ``server.json`` live in it:
    whoever can reach the socket can read every recorded argument and result.
    """
    path = Path(home or os.environ.get("DURABLE_NB_HOME") or jupyter_data_dir() / "durable_nb")
    path = path.expanduser().absolute()
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                path.chmod(0o700)
        except OSError as exc:
            raise JournalUnavailable(
                f"cannot create the journal home {path}: {exc.strerror or exc}. "
                "Set DURABLE_NB_HOME to a writable directory."
            ) from exc
        if not os.access(path, os.W_OK | os.X_OK):
            raise JournalUnavailable(
                f"the journal home {path} is not writable by this user. "
                "Fix its permissions or set DURABLE_NB_HOME to a writable directory."
            )
    return path


SOCKET_PATH_MAX = 100  # bytes; a unix socket path must fit in sun_path (~107 on Linux)


def ipc_endpoint(home: Path) -> str:
    """The server's ipc endpoint, in a directory only this user can enter (made if needed).

    Whoever controls the socket's directory can put their own socket there and read every
    query and payload, or answer with a pickle the kernel unpickles. So the socket lives in
    the home when its path fits; a deep home (a pytest tmp dir) falls back to
    ``$XDG_RUNTIME_DIR`` when that is private, else to a directory of ours in the temp dir,
    whose name others can predict: it is created without ``exist_ok`` and checked, never
    trusted.
    """
    sock = home.resolve() / "server.sock"  # a real path: its directory is checked with lstat
    if _fits(sock):
        check_socket_dir(sock.parent, home)
        return f"ipc://{sock}"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        sock = Path(runtime) / f"durable_nb-{_home_key(home)}.sock"
        problem = private_dir_problem(Path(runtime))
        if problem is None and _fits(sock):
            return f"ipc://{sock}"
        if problem is not None:
            log.warning("XDG_RUNTIME_DIR %s is not private (%s); the journal socket goes to "
                        "the temp dir instead", runtime, problem)
    short = temp_socket_dir(home)
    try:
        os.mkdir(short, 0o700)
    except FileExistsError:
        pass  # ours from an earlier server, or someone else's: the check below tells
    except OSError as exc:
        raise JournalUnavailable(
            f"cannot create the journal socket directory {short}: {exc.strerror or exc}. "
            f"Set DURABLE_NB_HOME to a path shorter than {SOCKET_PATH_MAX - 12} characters "
            "so that the socket lives in the journal home."
        ) from exc
    else:
        os.chmod(short, 0o700)  # exactly 0700 whatever the umask; nobody else can swap it
    check_socket_dir(short, home)
    return f"ipc://{short / 's'}"


def temp_socket_dir(home: Path) -> Path:
    """The fallback directory of ``home``'s socket in the system temp dir (not created)."""
    return Path(tempfile.gettempdir()) / f"durable_nb-{os.getuid()}-{_home_key(home)}"


def private_dir_problem(path: Path) -> str | None:
    """What keeps ``path`` from being a private directory of this user, or None.

    Private means: a real directory (``lstat``: a symlink could point anywhere), owned by
    this uid, mode exactly 0700.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "it does not exist"
    except OSError as exc:
        return f"it cannot be inspected ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return f"it is a symbolic link to {os.readlink(path)}, not a directory"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    problems = []
    if st.st_uid != os.getuid():
        problems.append(f"it is owned by {_user(st.st_uid)}, not by you ({_user(os.getuid())})")
    if stat.S_IMODE(st.st_mode) != 0o700:
        problems.append(f"its mode is {stat.S_IMODE(st.st_mode):04o}, not 0700")
    return " and ".join(problems) or None


def check_socket_dir(path: Path, home: Path) -> None:
    """Refuse to put (or look for) the journal socket in ``path`` unless it is private."""
    problem = private_dir_problem(path)
    if problem is None:
        return
    if path == home.resolve():
        remedy = (f"Make it yours with mode 0700 (chmod 700 {path}) or set DURABLE_NB_HOME "
                  "to a directory of yours.")
    else:
        remedy = (f"Remove it (rm -r {path}) if you did not make it, or set DURABLE_NB_HOME "
                  f"to a path shorter than {SOCKET_PATH_MAX - 12} characters so that the "
                  "socket lives in the journal home.")
    raise JournalUnavailable(
        f"refusing the journal socket directory {path}: {problem}. Another user who controls "
        f"it could intercept the journal server. {remedy}"
    )


def check_ipc_endpoint(endpoint: str, home: Path) -> None:
    """Before connecting to ``endpoint``: refuse an ipc socket in a directory that is not
    private (one that is gone is no danger: nothing listens there)."""
    if endpoint.startswith("ipc://"):
        directory = Path(endpoint[len("ipc://"):]).parent
        if os.path.lexists(directory):
            check_socket_dir(directory, home)


def _home_key(home: Path) -> str:
    return hashlib.sha256(str(home).encode()).hexdigest()[:16]


def _fits(sock: Path) -> bool:
    return len(os.fsencode(sock)) <= SOCKET_PATH_MAX


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
