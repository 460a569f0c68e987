"""SQL that cannot write: the read-only guard, the locked-down connection, and the checks of a
user's ``--where`` condition and single-SELECT files.

Two layers stand between a user's SQL and the machine (see docs/security.md):

1. The statement-type guard (:func:`check_read_only`) refuses, before anything runs and with
   one clear message, the statements a read-only query may not run: COPY, ATTACH, INSTALL/LOAD,
   EXPORT, CREATE/INSERT/... (also inside EXPLAIN).
2. DuckDB itself refuses the rest (:func:`restrict`): a restricted connection has external
   access off (no file is read or written by SQL, no extension installed or loaded), extension
   autoloading off, and its configuration locked, so neither SET/PRAGMA/CALL nor a function can
   turn on profiling or logging to a file, move the temp folder, or undo the lock.

The catalog's tables reach DuckDB as registered Arrow datasets and spills go to the temp folder
set before the lock, so queries over the catalog (large sorts and group-bys included) still run.
"""

from __future__ import annotations

import re

import duckdb

from coyo_db.errors import InputError, QueryError, ReadOnlyError

_ALLOWED = {"SELECT", "EXPLAIN", "PRAGMA", "CALL", "SET", "VARIABLE_SET"}

_WHAT = {
    "COPY": "copies data in or out",
    "ATTACH": "attaches a database",
    "DETACH": "detaches a database",
    "LOAD": "installs or loads an extension",
    "EXPORT": "exports the database",
    "UNKNOWN": "is not a query",
}

#: DuckDB's own switches of a restricted connection, in the order they are set (the lock last).
RESTRICTED_SETTINGS: tuple[tuple[str, object], ...] = (
    ("enable_external_access", False),  # no COPY TO/FROM, ATTACH, EXPORT, read_*(), INSTALL
    ("autoinstall_known_extensions", False),
    ("autoload_known_extensions", False),
    ("allow_community_extensions", False),
    ("allow_unsigned_extensions", False),
    ("allow_persistent_secrets", False),
)
#: Settings a restricted connection still lets a query change: resources only, no paths.
ALLOWED_SETTINGS: tuple[str, ...] = ("threads", "memory_limit")

_HINT = "user SQL cannot read or write files, load extensions or change settings"
_REFUSALS = ("disabled by configuration", "configuration has been locked", "Permission Error")
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)


def split_statements(
    sql: str, con: duckdb.DuckDBPyConnection | None = None
) -> list[duckdb.Statement]:
    """Parse `sql` into statements, turning a syntax error into a :class:`QueryError`.

    `con`: parse with this connection (DuckDB's module-level parser first creates a default
    in-memory database, ~15 ms of every `coyo-db query`)."""
    try:
        statements = (con or duckdb).extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from None
    if not statements:
        raise QueryError("no SQL statement given")
    return statements


def statement_kind(statement: duckdb.Statement) -> str:
    """The statement's type name (``SELECT``, ``COPY``...), ``UNKNOWN`` for one DuckDB's Python
    API cannot name (``UPDATE EXTENSIONS``); ``EXPLAIN`` of another statement names both."""
    try:
        kind = statement.type.name
    except ValueError:
        return "UNKNOWN"
    if kind == "EXPLAIN":
        inner = _EXPLAIN.sub("", statement.query, count=1)
        try:
            explained = duckdb.extract_statements(inner)
        except duckdb.Error:
            return kind
        if len(explained) == 1:
            inner_kind = statement_kind(explained[0])
            if inner_kind not in ("SELECT", "EXPLAIN"):
                return f"EXPLAIN {inner_kind}"
    return kind


def check_read_only(statements: list[duckdb.Statement]) -> None:
    """Raise :class:`ReadOnlyError` for the first statement a read-only query may not run."""
    for number, statement in enumerate(statements, start=1):
        kind = statement_kind(statement)
        if kind in _ALLOWED:
            continue
        what = _WHAT.get(kind.removeprefix("EXPLAIN "), "writes to the catalog")
        where = f"statement {number} " if len(statements) > 1 else "this statement "
        raise ReadOnlyError(
            f"{where}({kind}) {what}; queries are read-only unless you pass --write"
        )


def one_select(sql: str, what: str) -> str:
    """`sql` checked by DuckDB's parser to be exactly one SELECT; returned without its final
    semicolon. `what` names the SQL in the message (``an export's --sql-file``)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise InputError(f"{what} does not parse: {_one_line(exc)}") from None
    kinds = [statement_kind(s) for s in statements]
    if kinds != ["SELECT"]:
        found = ", ".join(kinds) or "nothing"
        raise InputError(f"{what} must be exactly one SELECT statement, not {found}")
    return sql.strip().rstrip(";").strip()


def where_select(select: str, where: str, option: str = "--where") -> str:
    """``<select> WHERE (<where>)``, once `where` is checked to be one SQL expression and the
    whole to be exactly one SELECT statement (so that no text of `where` can close the
    parenthesis and start another statement)."""
    if not where.strip():
        raise InputError(f"{option} is empty; use {option} 'true' to keep every row")
    try:
        duckdb.SQLExpression(where)
    except (duckdb.Error, ValueError) as exc:
        raise InputError(f"{option} must be one SQL condition: {_one_line(exc)}") from None
    statement = f"{select}\nWHERE ({where}\n)"
    try:
        statements = duckdb.extract_statements(statement)
    except duckdb.Error as exc:
        raise InputError(f"{option} must be one SQL condition: {_one_line(exc)}") from None
    if [statement_kind(s) for s in statements] != ["SELECT"]:
        raise InputError(f"{option} must be one SQL condition, not several statements")
    return statement


def restrict(con: duckdb.DuckDBPyConnection) -> None:
    """Lock `con` down for a user's SQL (see the module docstring); set after the tables are
    registered, the views created and the temp folder chosen. Does nothing to a connection
    that is already restricted."""
    if is_restricted(con):
        return
    for name, value in RESTRICTED_SETTINGS:
        con.execute(f"SET {name} = {str(value).lower()}")
    allowed = ", ".join(f"'{name}'" for name in ALLOWED_SETTINGS)
    con.execute(f"SET allowed_configs = [{allowed}]")
    con.execute("SET lock_configuration = true")


def is_restricted(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether `con` runs with external access off and its configuration locked."""
    [(locked, external)] = con.execute(
        "SELECT current_setting('lock_configuration'), current_setting('enable_external_access')"
    ).fetchall()
    if locked and external:
        raise RuntimeError("a connection locked with external access on cannot be restricted")
    return bool(locked) and not external


def query_error(exc: BaseException) -> QueryError:
    """A DuckDB error as a one-line :class:`QueryError`, saying why when the restriction
    refused it."""
    message = _one_line(exc)
    if any(part in message for part in _REFUSALS):
        message = f"{message} ({_HINT}; see docs/security.md)"
    return QueryError(message)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
