"""Where the journal lives: ``DURABLE_NB_HOME``, else ``<jupyter data dir>/durable_nb``."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from durable_nb.errors import JournalUnavailable

DB_FILE = "journal.duckdb"
SEGMENT_FILE = "journal.segment"
SERVER_FILE = "server.json"


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


def ipc_endpoint(home: Path) -> str:
    """The server's ipc endpoint: a socket in the home unless the path is too long.

    Unix socket paths are limited to ~107 bytes; deep homes (pytest tmp dirs) fall back
    to a private 0700 directory in the system temp dir, keyed by the home's path.
    """
    sock = home / "server.sock"
    if len(str(sock)) <= 100:
        return f"ipc://{sock}"
    import hashlib

    key = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"durable_nb-{os.getuid()}-{key}"
    short.mkdir(mode=0o700, exist_ok=True)
    return f"ipc://{short / 's'}"
