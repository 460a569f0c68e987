"""The read-only guard of `coyo-db query`: which statements may run without `--write`.

The catalog's DuckDB file is also opened read-only, so writes to it fail inside DuckDB; this
guard additionally stops what a read-only database still allows (COPY ... TO a file, ATTACH,
INSTALL/LOAD, EXPORT) and gives one clear message before anything runs.
"""

from __future__ import annotations

import duckdb

from coyo_db.errors import QueryError, ReadOnlyError

_ALLOWED = {"SELECT", "EXPLAIN", "PRAGMA", "CALL", "SET", "VARIABLE_SET"}

_WHAT = {
    "COPY": "copies data in or out",
    "ATTACH": "attaches a database",
    "DETACH": "detaches a database",
    "LOAD": "installs or loads an extension",
    "EXPORT": "exports the database",
}


def split_statements(sql: str) -> list[duckdb.Statement]:
    """Parse `sql` into statements, turning a syntax error into a :class:`QueryError`."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from None
    if not statements:
        raise QueryError("no SQL statement given")
    return statements


def check_read_only(statements: list[duckdb.Statement]) -> None:
    """Raise :class:`ReadOnlyError` for the first statement a read-only query may not run."""
    for number, statement in enumerate(statements, start=1):
        kind = statement.type.name
        if kind in _ALLOWED:
            continue
        what = _WHAT.get(kind, "writes to the catalog")
        where = f"statement {number} " if len(statements) > 1 else "this statement "
        raise ReadOnlyError(
            f"{where}({kind}) {what}; queries are read-only unless you pass --write"
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
