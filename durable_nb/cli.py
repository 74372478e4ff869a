"""``durable-nb``: list and inspect runs, query the journal, manage the journal server."""

from __future__ import annotations

import argparse
import json
import sys
import time

import pandas as pd

from durable_nb.errors import DurableError


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

    step_rows = steps(args.run_id)
    run = sql("SELECT * FROM runs WHERE run_id = ?", [args.run_id])
    if args.json:
        print(json.dumps({
            "run": json.loads(run.to_json(orient="records", date_format="iso"))[0],
            "steps": json.loads(step_rows.to_json(orient="records", date_format="iso")),
        }))
        return 0
    for key, value in run.iloc[0].items():
        print(f"{key:>16}: {value}")
    print()
    _print_frame(step_rows.drop(columns=["run_id"]), False)
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from durable_nb.api import sql

    _print_frame(sql(args.query), args.json)
    return 0


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
    client.shutdown()
    client.close()
    wait_until(lambda: not pid_alive(pid), 10, interval=0.05)
    print(f"stopped the journal server (pid {pid}) of {home}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durable-nb",
        description="Inspect durable_nb runs. The journal home is DURABLE_NB_HOME, else "
                    "<jupyter data dir>/durable_nb.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("runs", help="list runs, newest first")
    p.add_argument("--workflow")
    p.add_argument("--status")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)
    p = sub.add_parser("show", help="one run and its steps")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_show)
    p = sub.add_parser("sql", help="run a SQL query over the views runs and steps")
    p.add_argument("query")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_sql)
    p = sub.add_parser("server", help="the journal server of the home")
    p.add_argument("action", choices=["status", "stop"])
    p.set_defaults(fn=cmd_server)
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
