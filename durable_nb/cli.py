"""``durable-nb``: list and inspect runs, query the journal, act on runs, manage the server.

The actions (cancel, signal, fork, delete) are the sidebar's, through the same journal
server operations; ``resume`` needs the notebook's kernel, so it prints the magic to run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from durable_nb.errors import (
    ConfigurationError,
    DurableError,
    EncryptionKeyError,
    JournalUnavailable,
    RunBusy,
    RunFinished,
)
from durable_nb.journal.blobs import DEFAULT_GRACE
from durable_nb.journal.schema import RUN_STATUSES

NEW_KEY_ENV = "DURABLE_NB_NEW_KEY"  # `durable-nb key rotate`: the key to rotate to


def _print_frame(df: pd.DataFrame, as_json: bool) -> None:
    if as_json:
        print(df.to_json(orient="records", date_format="iso"))
    elif df.empty:
        print("(no rows)")
    else:
        with pd.option_context("display.max_rows", None, "display.max_columns", None,
                               "display.width", 200, "display.max_colwidth", 60):
            print(df.to_string(index=False))


def cmd_runs(args: argparse.Namespace) -> int:
    from durable_nb.api import runs

    _print_frame(runs(workflow=args.workflow, status=args.status, limit=args.limit), args.json)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from durable_nb.api import sql, steps
    from durable_nb.journal.savings import replay_savings
    from durable_nb.server.client import default_client

    step_rows = steps(args.run_id)
    run = sql("SELECT * FROM runs WHERE run_id = ?", [args.run_id])
    savings = replay_savings(default_client(), args.run_id)
    if args.json:
        print(json.dumps({
            "run": {**json.loads(run.to_json(orient="records", date_format="iso"))[0],
                    **savings},
            "steps": json.loads(step_rows.to_json(orient="records", date_format="iso")),
        }))
        return 0
    for key, value in run.iloc[0].items():
        print(f"{key:>16}: {value}")
    if savings["replayed_steps"]:
        print(f"{'replayed':>16}: {savings['replayed_steps']} steps on the last resume — "
              f"saved {savings['saved_s']:.1f} s")
    print()
    _print_frame(_shown_steps(step_rows.drop(columns=["run_id"])), False)
    return 0


def _shown_steps(rows: pd.DataFrame) -> pd.DataFrame:
    """The steps as ``show`` prints them: the latest heartbeat in one column, ``epoch 3/10
    {"epoch":3,"of":10} 4 s ago (3 beats)``, empty for a step that sent none."""
    from durable_nb.journal.heartbeat import stored_heartbeat

    def cell(row: pd.Series) -> str:
        if not row["heartbeats"]:
            return ""
        details, progress = stored_heartbeat(row["heartbeat"])
        age = _age(max(0.0, time.time() - row["heartbeat_at"].timestamp()))
        count = f"{row['heartbeats']} beat{'s' if row['heartbeats'] != 1 else ''}"
        shown = [progress.text if progress else "", details or "", f"{age} ago ({count})"]
        return " ".join(part for part in shown if part)

    shown = rows.drop(columns=["heartbeat_at", "heartbeats"])
    shown["heartbeat"] = rows.apply(cell, axis=1) if len(rows) else []
    return shown


def cmd_sql(args: argparse.Namespace) -> int:
    from durable_nb.api import sql

    _print_frame(sql(args.query), args.json)
    return 0


def _print_reply(reply: dict[str, Any], fields: tuple[str, ...], as_json: bool,
                 text: str) -> None:
    """The server's answer: its ``fields`` as JSON with ``--json``, else ``text``."""
    print(json.dumps({field: reply[field] for field in fields}) if as_json else text)


def cmd_cancel(args: argparse.Namespace) -> int:
    from durable_nb.server.client import default_client

    reply = default_client().cancel_run(args.run_id, args.reason)
    after = (" Its process stops it at the next step boundary."
             if reply["previous_status"] == "running" else "")
    _print_reply(reply, ("run_id", "status", "previous_status"), args.json,
                 f"cancelled run {args.run_id} (it was "
                 f"{reply['previous_status']}).{after}")
    return 0


def cmd_signal(args: argparse.Namespace) -> int:
    from durable_nb.server.client import default_client

    reply = default_client().signal(args.run_id, args.name, args.value)
    _print_reply({**reply, "value": args.value}, ("run_id", "name", "value"), args.json,
                 f"sent signal {args.name!r} = {json.dumps(args.value)} to run {args.run_id}")
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    from durable_nb.server.client import default_client

    reply = default_client().fork_run(args.run_id, args.at, uuid.uuid4().hex)
    _print_reply(reply, ("run_id", "parent_run_id", "at", "steps_copied"), args.json,
                 f"forked run {args.run_id} at step {args.at} as {reply['run_id']} "
                 f"({reply['steps_copied']} steps copied). To run the rest, resume it in its "
                 f"notebook: %workflow resume {reply['run_id']}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from durable_nb.server.client import default_client

    try:
        reply = default_client().delete_run(args.run_id)
    except RunBusy as exc:
        raise RunBusy(f"{exc} (`durable-nb cancel {args.run_id}`), then delete it") from None
    _print_reply(reply, ("run_id", "events_deleted"), args.json,
                 f"deleted run {args.run_id} ({reply['events_deleted']} journal events)")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from durable_nb.journal import blobs
    from durable_nb.server.client import default_client

    client = default_client()
    listed = blobs.old_blobs(client.home, args.grace)  # listed before the query
    referenced = {row["digest"] for row in client.query(blobs.REFERENCED_SQL).to_pylist()}
    garbage = blobs.unreferenced(listed, referenced)
    deleted = [b for b in garbage if blobs.remove(b, args.grace)] if args.delete else []
    chosen = deleted if args.delete else garbage
    freed = sum(b.size for b in chosen)
    if args.json:
        print(json.dumps({"deleted": args.delete, "count": len(chosen), "bytes": freed,
                          "grace_s": args.grace,
                          "blobs": [{"path": str(b.path), "digest": b.digest, "size": b.size,
                                     "age_s": round(b.age, 1)} for b in chosen]}))
        return 0
    for b in chosen:
        what = b.digest or f"{b.path.name} (left by an interrupted write)"
        print(f"{_size(b.size):>10}  {_age(b.age):>8} old  {what}")
    count = f"{len(chosen)} blob{'s' if len(chosen) != 1 else ''} ({_size(freed)})"
    grace = f"older than {args.grace:g} s"
    kept = len(garbage) - len(deleted)
    if not garbage:
        print(f"no blob to free in {blobs.blob_dir(client.home)}: every blob {grace} is "
              "referenced by a run")
    elif args.delete:
        print(f"deleted {count} that no run references, {grace}"
              + (f"; kept {kept} reused meanwhile" if kept else ""))
    else:
        print(f"{count} no run references, {grace}, would be freed. Delete them with "
              f"`durable-nb gc --delete`.")
    return 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def cmd_resume(args: argparse.Namespace) -> int:
    from durable_nb.engine.identity import find_run, recorded_cell
    from durable_nb.server.client import default_client

    client = default_client()
    run = find_run(client, args.run_id, "run_id, workflow, status, notebook")
    if run["status"] == "cancelled":
        raise RunFinished(
            f"run {args.run_id} was cancelled and cannot be resumed. Reuse its steps in a new "
            f"run with `durable-nb fork {args.run_id} --at N`, then resume the fork.")
    if recorded_cell(client, args.run_id) is None:
        raise DurableError(
            f"run {args.run_id} was not started by a %%workflow cell, so there is no cell to "
            f"resume; call its @durable_nb.workflow function ({run['workflow']}) again with "
            "the same arguments")
    magic = f"%workflow resume {args.run_id}"
    if args.json:
        print(json.dumps({**run, "magic": magic}))
        return 0
    where = (f"the notebook {run['notebook']}" if run["notebook"]
             else "its notebook (the journal does not record which one)")
    note = (" It is completed: resuming replays its record and nothing executes."
            if run["status"] == "completed" else "")
    print(f"run {args.run_id} (workflow {run['workflow']}) is {run['status']}.{note}\n"
          f"To resume it, run this in a cell of {where}, with durable_nb loaded "
          f"(%load_ext durable_nb):\n\n    {magic}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from durable_nb.runner import parse_value, report_json, run_notebook

    parameters = {name: parse_value(value) for name, value in args.parameters or []}
    report = run_notebook(Path(args.notebook), Path(args.output) if args.output else None,
                          parameters, args.kernel, out=None if args.json else sys.stdout)
    if args.json:
        print(report_json(report))
    elif report.exit_code == 0:
        print(f"executed {report.cells_executed} cells in {report.seconds:.1f} s; "
              f"saved {report.output}")
    return report.exit_code


def cmd_server(args: argparse.Namespace) -> int:
    from durable_nb.journal.home import journal_home
    from durable_nb.server.client import JournalClient
    from durable_nb.server.discovery import (
        is_journal_server,
        pid_alive,
        read_server_info,
        wait_until,
    )

    home = journal_home()
    info = read_server_info(home)
    running = bool(info and is_journal_server(int(info["pid"])))
    if args.action == "status":
        if not running:
            print(f"no journal server running for {home}")
            return 0
        status = JournalClient(home).status()
        for key in ("pid", "home", "db", "clients", "active_runs", "runs", "pending",
                    "idle_timeout"):
            print(f"{key:>12}: {status[key]}")
        print(f"{'uptime':>12}: {time.time() - status['started_at']:.0f} s")
        return 0
    if not running:
        print(f"no journal server running for {home}")
        return 0
    assert info is not None
    pid = int(info["pid"])
    client = JournalClient(home)
    try:
        client.shutdown()
    except JournalUnavailable as exc:
        # A server that cannot prove the home's keys: one of an older durable_nb (before
        # the keys) still running. It runs as this user (kill would be refused otherwise)
        # with this home on its command line, so stopping it is ours to do.
        if not _serves_home(pid, home):
            raise
        os.kill(pid, signal.SIGTERM)
        print(f"the journal server (pid {pid}) did not prove the home's keys ({exc}); "
              "sent it SIGTERM", file=sys.stderr)
    finally:
        client.close()
    wait_until(lambda: not pid_alive(pid), 10, interval=0.05)
    print(f"stopped the journal server (pid {pid}) of {home}")
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    from durable_nb import workers
    from durable_nb.journal.home import journal_home

    home = journal_home()
    if args.action == "start":
        info = workers.start(home, n_workers=args.n_workers)
        print(f"Dask workers of {home}: scheduler {info['scheduler']}, "
              f"{info['workers']} workers (pid {info['pid']})")
    elif args.action == "status":
        found = workers.read_info(home)
        if found is None:
            print(f"no Dask workers running for {home} (`--executor dask` starts them, "
                  "or `durable-nb workers start`)")
        else:
            print(f"Dask workers of {home}: scheduler {found['scheduler']}, "
                  f"{found['workers']} workers (pid {found['pid']}), up "
                  f"{time.time() - found['started']:.0f} s")
    else:
        pid = workers.stop(home)
        print(f"stopped the Dask workers (pid {pid}) of {home}" if pid is not None
              else f"no Dask workers running for {home}")
    return 0


def cmd_remote(args: argparse.Namespace) -> int:
    from durable_nb.journal.home import journal_home
    from durable_nb.server import auth, remote
    from durable_nb.server.client import JournalClient
    from durable_nb.server.discovery import read_server_info

    home = journal_home()
    if args.action == "listen":
        if not args.address:
            raise ConfigurationError("`durable-nb remote listen` needs the address to listen "
                                     "on, e.g. tcp://0.0.0.0:7450")
        remote.set_listen_address(home, args.address)
    elif args.action == "off":
        remote.set_listen_address(home, None)
    elif args.action == "credentials" and not args.address:
        raise ConfigurationError("`durable-nb remote credentials FILE` needs the file to "
                                 "write (then copy it to the worker machines)")
    if args.action in ("listen", "off", "credentials"):
        client = JournalClient(home)  # starts the server if none runs, which listens then
        try:
            endpoint = client.call("listen")["endpoint"]
        finally:
            client.close()
    else:
        info = read_server_info(home) or {}
        endpoint = info.get("remote_endpoint")
        if info.get("remote_error"):
            print(f"the journal server of {home} cannot listen: {info['remote_error']}")
            return 1
    if args.action == "credentials":
        if endpoint is None:
            raise ConfigurationError(
                f"the journal server of {home} does not listen for remote workers; run "
                "`durable-nb remote listen tcp://HOST:PORT` first")
        path = Path(args.address)
        remote.write_credentials(path, remote.dial_address(endpoint, args.host),
                                 auth.HomeKeys.of(home))
        print(f"wrote {path} (mode 0600; it opens the whole journal: copy it only to machines "
              f"you trust). On each worker machine: export {remote.JOURNAL_ENV}=/path/to/"
              f"{path.name}")
    elif endpoint is None:
        print(f"the journal server of {home} listens for local clients only "
              "(`durable-nb remote listen tcp://HOST:PORT` opens it to remote workers)")
    else:
        print(f"the journal server of {home} listens for remote workers on {endpoint}; "
              "they need a credentials file: `durable-nb remote credentials FILE`")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    from durable_nb.journal import crypto
    from durable_nb.journal.home import journal_home

    home = journal_home()
    if args.action == "new":
        print(crypto.new_key())
        return 0
    if args.action == "rotate":
        text = os.environ.get(NEW_KEY_ENV)
        if not text:
            raise EncryptionKeyError(
                f"set {NEW_KEY_ENV} to the new key (`durable-nb key new` makes one) and "
                f"{crypto.KEY_ENV} to the current one")
        rotated = crypto.rotate(home, crypto.parse_key(text, NEW_KEY_ENV))
        print(f"the journal in {home} now opens with the key of id {rotated['key_id']}; "
              f"set {crypto.KEY_ENV} to it everywhere (kernels, workers), and delete old "
              f"copies of {home / crypto.CONFIG_FILE} (with the old key they open the journal)")
        return 0
    config = crypto.read_config(home)
    if config is None:
        print(f"the journal in {home} is not encrypted (set {crypto.KEY_ENV} to a key from "
              "`durable-nb key new` before recording, and it will be)")
        return 0
    print(f"the journal in {home} is encrypted; its key has id {config.get('key_id')}")
    crypto.sealer(home)  # raises, naming the problem, when the key set here is not it
    print(f"the key set here ({crypto.KEY_ENV}) opens it")
    return 0


def _serves_home(pid: int, home: Path) -> bool:
    """The process ``pid`` is a journal server started for ``home`` (its command line)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return ("--home", str(home)) in itertools.pairwise(argv) and "durable_nb.server" in argv


def _count(text: str) -> int:
    """A whole number >= 1 (``--limit``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def _step_number(text: str) -> int:
    """A step number: a whole number >= 0 (``--at``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a step number (a whole number >= 0), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be a step number (a whole number >= 0), got {value}")
    return value


def _seconds(text: str) -> float:
    """A duration in seconds >= 0 (``--grace``)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds >= 0 (e.g. 3600), got {text!r}")
    return value


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be JSON, e.g. 42, true, '\"text\"' or '{{\"k\": 1}}'; got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durable-nb",
        description="Inspect durable_nb runs and act on them. The journal home is "
                    "DURABLE_NB_HOME, else <jupyter data dir>/durable_nb.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn: Any, summary: str,
                run_id: bool = True) -> argparse.ArgumentParser:
        """A subcommand: its RUN_ID argument (most act on one run) and --json output."""
        p = sub.add_parser(name, help=summary)
        if run_id:
            p.add_argument("run_id")
        p.add_argument("--json", action="store_true")
        p.set_defaults(fn=fn)
        return p

    p = command("runs", cmd_runs, "list runs, newest first", run_id=False)
    p.add_argument("--workflow")
    p.add_argument("--status", choices=sorted(RUN_STATUSES))
    p.add_argument("--limit", type=_count, default=50, metavar="N",
                   help="at most N runs (default 50)")
    command("show", cmd_show, "one run and its steps")
    p = command("sql", cmd_sql, "run one read-only query over the views runs and steps",
                run_id=False)
    p.add_argument("query")
    p = command("cancel", cmd_cancel, "cancel a run; its process stops at the next step")
    p.add_argument("--reason", help="recorded as the run's error")
    p = command("signal", cmd_signal, "send a run a signal: a name and a JSON value")
    p.add_argument("name")
    p.add_argument("value", nargs="?", type=_json_value, default=None,
                   help="a JSON value (default null)")
    p = command("fork", cmd_fork, "a new run with the steps before N; resume it to run the rest")
    p.add_argument("--at", type=_step_number, required=True, metavar="N",
                   help="keep the steps before step N")
    command("delete", cmd_delete, "delete a run and its journal (not while it runs)")
    command("resume", cmd_resume, "how to resume a run: the magic to run in its notebook")
    p = command("gc", cmd_gc, "list (or --delete) the payload blobs no run references",
                run_id=False)
    p.description = (
        "Large arguments and results are stored as blobs in <home>/blobs; deleting or "
        "deleting runs leaves some that no journal event references any more. Without "
        "--delete, list them and the bytes they hold; with --delete, remove them. Blobs "
        "younger than the grace period are kept: one may be written just before the event "
        "that references it is appended.")
    p.add_argument("--delete", action="store_true", help="remove them (default: only list)")
    p.add_argument("--grace", type=_seconds, default=DEFAULT_GRACE, metavar="SECONDS",
                   help=f"keep blobs younger than this (default {DEFAULT_GRACE:g})")
    p = command("run", cmd_run, "execute a notebook in a fresh kernel; run it again to resume",
                run_id=False)
    p.description = (
        "Execute NOTEBOOK top to bottom in a fresh kernel (in the notebook's directory) and "
        "save the executed copy, cell by cell, to OUTPUT (default: beside NOTEBOOK, "
        "sweep.ipynb -> sweep.out.ipynb). If the process or the kernel dies, run the same "
        "command again: the cells before the first %%workflow cell run again, and the "
        "workflow cells replay the steps the journal recorded and run only the rest. Exit "
        "status: 0 success, 1 a cell failed, 3 the kernel died, 130 interrupted.")
    p.add_argument("notebook", metavar="NOTEBOOK", help="the .ipynb file to execute")
    p.add_argument("-p", "--parameter", dest="parameters", nargs=2, action="append",
                   metavar=("NAME", "VALUE"),
                   help="set a parameter the cell tagged `parameters` assigns; VALUE is a "
                        "Python literal (0.3, True, None, [1, 2]) or else a string")
    p.add_argument("-o", "--output", metavar="OUTPUT",
                   help="where to save the executed notebook (default: NAME.out.ipynb beside "
                        "NAME.ipynb)")
    p.add_argument("-k", "--kernel", metavar="NAME",
                   help="kernel to use (default: the notebook's kernelspec, else python3)")
    p = sub.add_parser("server", help="the journal server of the home")
    p.add_argument("action", choices=["status", "stop"])
    p.set_defaults(fn=cmd_server)
    p = sub.add_parser("remote", help="let Dask workers on other machines reach the journal")
    p.description = (
        "listen ADDRESS: have the journal server also listen on a TCP address (kept for "
        "later servers of the home; it then stays up until `durable-nb server stop`), "
        "authenticated and encrypted with the home's keys. credentials FILE: write the "
        "file a remote machine needs (point DURABLE_NB_JOURNAL at it there). status: where "
        "the server listens. off: local clients only.")
    p.add_argument("action", choices=["listen", "credentials", "status", "off"])
    p.add_argument("address", nargs="?", metavar="ADDRESS|FILE",
                   help="listen: tcp://HOST:PORT; credentials: the file to write")
    p.add_argument("--host", help="credentials: the host name or address remote machines "
                                  "dial (default: the one listened on, or this machine's name)")
    p.set_defaults(fn=cmd_remote)
    p = sub.add_parser("key", help="encryption at rest: make a key, check it, rotate it")
    p.description = (
        "new: print a fresh key (set DURABLE_NB_KEY to it before recording: the journal "
        "is then encrypted). status: whether the journal is encrypted and the key set here "
        f"opens it. rotate: wrap the journal's data key with {NEW_KEY_ENV} (the current "
        "key in DURABLE_NB_KEY); nothing else is rewritten.")
    p.add_argument("action", choices=["new", "status", "rotate"])
    p.set_defaults(fn=cmd_key)
    p = sub.add_parser("workers", help="the Dask workers of the home (--executor dask)")
    p.add_argument("action", choices=["start", "status", "stop"])
    p.add_argument("--workers", dest="n_workers", type=_count, default=None, metavar="N",
                   help="how many worker processes `start` starts (default: one a core)")
    p.set_defaults(fn=cmd_workers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except DurableError as exc:
        print(f"durable-nb: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
