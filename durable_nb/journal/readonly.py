"""User SQL is read-only: exactly one query, checked with DuckDB's own parser before it runs.

Every client of a journal home sends SQL (``durable_nb.sql``, ``durable-nb sql``, the engine,
the sidebar) and the journal server runs it against the one file that holds every run, so a
``DELETE``, a ``COPY ... TO`` or an ``ATTACH`` would break the durability promise or reach
past the journal. DuckDB splits and classifies the statements (``extract_statements``) and
serializes a query's tree (``json_serialize_sql``), where a write hidden in a ``WITH`` clause
shows as its own node. The store backs this check up: client SQL runs in a read-only
transaction on a database opened with file and network access off (``JournalStore.read``).
"""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

import duckdb

from durable_nb.errors import QueryError, QueryRefused

ALLOWED = ("exactly one query: SELECT (with WITH, FROM-first or VALUES), DESCRIBE, SUMMARIZE, "
           "SHOW, or EXPLAIN of a SELECT, over the views runs and steps (and the table events)")

# Every connection to a journal opens with these: no files but the database's own, no network,
# no extensions beyond the built-in ones. ``connect`` then locks the configuration.
DUCKDB_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
}

# The query nodes of a read; every other node in DuckDB's tree (DELETE_QUERY_NODE,
# INSERT_QUERY_NODE, COPY_QUERY_NODE, ...) writes something.
_READ_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})
_DELETE_HINT = " To delete a run, use `durable-nb delete RUN_ID` or the sidebar."

_serializer: duckdb.DuckDBPyConnection | None = None
_serializer_lock = threading.Lock()


def connect(database: str) -> duckdb.DuckDBPyConnection:
    """Open ``database`` with ``DUCKDB_CONFIG`` and its configuration locked, so no SQL can
    ``SET`` any of it back. The connection's own settings are made before the lock (no
    progress bar: a long query would draw one into the server's log); cursors inherit them."""
    con = duckdb.connect(database, config=DUCKDB_CONFIG)
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def check_read_only(sql: object) -> None:
    """Raise ``QueryRefused`` unless ``sql`` is exactly one read-only query.

    A statement DuckDB cannot parse raises ``QueryError`` with DuckDB's message.
    """
    if not isinstance(sql, str):
        raise QueryRefused(f"a journal query is SQL text, got {type(sql).__name__}")
    _check_text(sql)


@functools.lru_cache(maxsize=512)
def _check_text(sql: str) -> None:
    # Clients send the same few texts again and again (with parameters): check each once.
    # A refusal raises, and lru_cache keeps only what passed.
    _check(sql, explained=False)


def refusal(exc: duckdb.Error) -> QueryRefused | None:
    """The sandbox's own refusals, as DuckDB reports them while a checked query runs."""
    text = str(exc)
    if isinstance(exc, duckdb.PermissionException):
        return QueryRefused(f"{text}. Journal SQL has no file or network access; it reads "
                            f"the journal only: {ALLOWED}.")
    if isinstance(exc, duckdb.TransactionException) and "read-only" in text:
        return QueryRefused(f"{text}. Journal SQL is read-only: {ALLOWED}.{_DELETE_HINT}")
    return None


def _check(sql: str, explained: bool) -> None:
    statements = _statements(sql, explained)
    if not statements:
        raise QueryRefused(f"the query is empty; journal SQL is {ALLOWED}")
    if len(statements) > 1:
        words = ", ".join(_word(*s) for s in statements)
        raise QueryRefused(
            f"the query holds {len(statements)} statements ({words}); journal SQL is "
            f"{ALLOWED}. Send one statement (a trailing ';' is fine).")
    text, kind = statements[0]
    word = _word(text, kind)
    if kind == duckdb.StatementType.SELECT:
        _check_tree(sql, explained)
    elif kind == duckdb.StatementType.EXPLAIN and not explained:
        _check(_explained(text), explained=True)
    elif kind == duckdb.StatementType.MULTI:
        hint = (" Name the values to pivot on (PIVOT ... ON column IN ('a', 'b')): that is "
                "one query." if word == "PIVOT" else "")
        raise _refused(f"{word} statements that run as several statements", explained, hint)
    else:
        hint = _DELETE_HINT if word in ("DELETE", "DROP", "TRUNCATE") else ""
        raise _refused(f"{word} statements", explained, hint)


def _refused(what: str, explained: bool, hint: str = "") -> QueryRefused:
    verdict = f"EXPLAIN of {what} is refused" if explained else f"{what} are refused"
    return QueryRefused(f"{verdict}: journal SQL is read-only, {ALLOWED}.{hint}")


def _statements(sql: str, explained: bool) -> list[tuple[str, duckdb.StatementType]]:
    """Each statement's text and type, as DuckDB's parser splits ``sql``."""
    try:
        return [(s.query, s.type) for s in duckdb.extract_statements(sql)]
    except duckdb.ParserException as exc:
        raise QueryError(str(exc)) from None
    except ValueError:  # a statement type this duckdb module has no name for
        raise _refused(f"{_word(sql, None)} statements", explained) from None


def _check_tree(sql: str, explained: bool) -> None:
    """Refuse a SELECT whose tree holds a write (``WITH d AS (DELETE ... RETURNING *)``)."""
    global _serializer
    with _serializer_lock:
        if _serializer is None:
            _serializer = connect(":memory:")
        row = _serializer.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        raise _refused(f"queries DuckDB cannot check ({tree.get('error_message')})", explained)
    writes = sorted(_query_nodes(tree) - _READ_NODES)
    if writes:
        names = " or ".join(w.removesuffix("_NODE").removesuffix("_QUERY") for w in writes)
        raise _refused(f"queries that contain {names} (in a WITH clause or a subquery)",
                       explained, _DELETE_HINT)


def _query_nodes(tree: Any) -> set[str]:
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and kind.endswith("_NODE"):
                found.add(kind)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _tokens(sql: str) -> list[tuple[int, str, duckdb.token_type]]:
    """DuckDB's tokens of ``sql``: byte offset, text, kind; comments left out."""
    raw = sql.encode()
    spans = duckdb.tokenize(sql)
    ends = [start for start, _ in spans[1:]] + [len(raw)]
    return [(start, raw[start:end].decode(errors="replace").strip(), kind)
            for (start, kind), end in zip(spans, ends, strict=True)
            if kind != duckdb.token_type.comment]


def _word(text: str, kind: duckdb.StatementType | None) -> str:
    """What the user would call the statement: its first keyword (``CHECKPOINT``, ``INSTALL``,
    ``FORCE CHECKPOINT``), or its type when that keyword is ``WITH``."""
    words = [t.upper() for _, t, k in _tokens(text)[:2] if k == duckdb.token_type.keyword]
    if not words or words[0] == "WITH":
        return kind.name.replace("_", " ") if kind is not None else "unknown"
    return " ".join(words) if words[0] == "FORCE" else words[0]


def _explained(sql: str) -> str:
    """The statement after ``EXPLAIN`` and its options (``ANALYZE``, ``(FORMAT json)``)."""
    tokens = _tokens(sql)
    i = 1  # past EXPLAIN
    if i < len(tokens) and tokens[i][1] == "(":
        depth = 0
        while i < len(tokens):
            depth += tokens[i][1].count("(") - tokens[i][1].count(")")
            i += 1
            if depth <= 0:
                break
    elif i < len(tokens) and tokens[i][1].upper() in ("ANALYZE", "ANALYSE"):
        i += 1
    if i >= len(tokens):
        raise QueryRefused(f"EXPLAIN needs a query to explain; journal SQL is {ALLOWED}")
    return sql.encode()[tokens[i][0]:].decode()
