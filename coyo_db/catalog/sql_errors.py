"""DuckDB's errors said in the catalog's terms, at the boundary where a user's SQL runs.

A new user's first queries meet DuckDB messages that speak of DuckDB, not of the catalog:
``Table with name pairs does not exist! Did you mean "pg_views"?`` (the catalog has no
`pairs` yet), ``pairs is not an table`` (an INSERT into a table that only coyo-db's commands
write), ``Referenced column "text" not found in FROM clause!`` (the source has no such
column). :func:`explained` turns them into one line that says which table is missing and
which command fills it, or which columns the source has; any other error passes through
:func:`coyo_db.catalog.readonly.query_error` unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from coyo_db.catalog import tables
from coyo_db.catalog.readonly import query_error
from coyo_db.errors import QueryError

if TYPE_CHECKING:
    import duckdb

#: the command that fills each table a catalog starts without
FILLED_BY: dict[str, str] = {
    tables.PAIRS.name: "coyo-db ingest metadata",
    tables.LABELS.name: "coyo-db ingest labels or coyo-db label",
    tables.TAXONOMIES.name: "coyo-db ingest labels, coyo-db label or coyo-db taxonomy add",
    tables.TAXONOMY_TREE.name: "coyo-db taxonomy hierarchy",
    tables.IMAGES.name: "coyo-db ingest images",
    tables.SCORES.name: "coyo-db ingest images --scores",
    tables.DUP_GROUPS.name: "coyo-db dedup phash|text|semantic",
    tables.CONTAMINATION.name: "coyo-db audit",
    tables.CONTAMINATION_CANDIDATES.name: "coyo-db audit",
    tables.REFSETS.name: "coyo-db refset add",
    tables.REFSET_IMAGES.name: "coyo-db refset add",
}
_FAMILIES: tuple[tuple[str, str], ...] = (
    (tables.EMBEDDINGS_PREFIX, "coyo-db ingest images --embed MODEL"),
    (tables.REFSET_DESCRIPTORS_PREFIX, "coyo-db refset add"),
    (tables.DESCRIPTORS_PREFIX, "coyo-db audit"),
)
_LISTED = 12  # names or columns shown at most

_MISSING = re.compile(r"Table(?: Function)? with name (\S+?) does not exist!")
_NOT_A_TABLE = re.compile(r"Catalog Error: (\S+) is not an? table")
_BASE_TABLE = re.compile(r"Can only (?:update|delete from) base table")
_NO_COLUMN = re.compile(r'Referenced column "([^"]+)" not found in FROM clause')
_NO_ALIAS_COLUMN = re.compile(
    r'(?:Values list|Table) "([^"]+)" does not have a column named "([^"]+)"'
)


def filled_by(name: str) -> str | None:
    """The command that fills table `name`, if a command does."""
    if name in FILLED_BY:
        return FILLED_BY[name]
    for prefix, command in _FAMILIES:
        if name.startswith(prefix):
            return command
    return None


def missing_relation(name: str, available: Iterable[str]) -> str:
    """Why `name` is not in a catalog holding `available` (tables and views), and what fills
    it: one line."""
    from coyo_db.catalog.sqlfiles import view_families

    have = sorted(set(available))
    command = filled_by(name)
    if command is not None:
        return f"the catalog has no {name} table yet: `{command}` fills it{_listing(have)}"
    for family in view_families():
        if name in family.provides:
            lacking = sorted(family.requires - set(have))
            if lacking:
                needs = ", ".join(_with_command(t) for t in lacking)
                return f"the view {name} needs {needs}, which this catalog does not have yet"
    return f"no table or view named {name} in this catalog{_listing(have)}"


def _with_command(name: str) -> str:
    command = filled_by(name)
    return f"the table {name} (`{command}` fills it)" if command else f"{name}"


def _listing(names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")
    return f" (it has {shown}; `coyo-db tables` lists them)"


def columns_line(source: str, columns: list[str]) -> str:
    """``<source> has columns a, b, c``, shortened past :data:`_LISTED` columns."""
    shown = ", ".join(columns[: _LISTED * 2]) + (", ..." if len(columns) > _LISTED * 2 else "")
    return f"{source} has columns {shown}"


def column_hint(column: str, columns: list[str]) -> str:
    """A pointer for a column a new user expects: an image's `text` is its `caption`."""
    if column == "text" and "caption" in columns:
        return "; an image's text is its caption (`caption`)"
    return ""


def explained(
    exc: BaseException, con: duckdb.DuckDBPyConnection | None = None, sql: str | None = None
) -> QueryError:
    """`exc` from running `sql` on `con` as a one-line :class:`QueryError` in the catalog's
    terms (see the module docstring); `con` answers what the catalog holds."""
    raw = str(exc)
    try:
        message = _catalog_terms(raw, con, sql)
    except Exception:  # the explanation is a courtesy: never hide the original error
        message = None
    if message is None:
        return query_error(exc)
    return QueryError(message)


def _catalog_terms(raw: str, con: duckdb.DuckDBPyConnection | None, sql: str | None) -> str | None:
    found = _MISSING.search(raw)
    if found and con is not None:
        return missing_relation(found.group(1), _relations(con))
    found = _NOT_A_TABLE.search(raw)
    if found or _BASE_TABLE.search(raw):
        name = found.group(1) if found else "the table"
        return (
            f"{name} is a catalog table, which SQL only reads: coyo-db's commands write it; "
            "keep changed rows in a table or view of your own (CREATE TABLE mine AS SELECT ...)"
        )
    if con is None:
        return None
    found = _NO_COLUMN.search(raw)
    if found:
        column = found.group(1)
        sources = _sources(con, sql)
        tables_read = {n: c for n, c in sources.items() if n in set(_relations(con))}
        if not tables_read:
            return None
        parts = [columns_line(name, cols) for name, cols in tables_read.items()]
        hint = "".join(dict.fromkeys(column_hint(column, c) for c in tables_read.values()))
        return f"no column {column}: " + "; ".join(parts) + hint
    found = _NO_ALIAS_COLUMN.search(raw)
    if found:
        alias, column = found.groups()
        sources = _sources(con, sql)
        names = {alias: name for name, alias in _base_tables(con, sql or "") if alias}
        name = names.get(alias, alias)
        cols = sources.get(name)
        if cols is None:
            return None
        what = name if name == alias else f"{alias} ({name})"
        return (
            f"{what} has no column {column}; "
            + columns_line(name, cols)
            + column_hint(column, cols)
        )
    return None


def _relations(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT internal "
        "UNION SELECT view_name FROM duckdb_views() WHERE NOT internal"
    ).fetchall()
    return [name for (name,) in rows]


def _sources(con: duckdb.DuckDBPyConnection, sql: str | None) -> dict[str, list[str]]:
    """The catalog relations `sql` reads, by name and by alias, with their columns."""
    if not sql:
        return {}
    have = set(_relations(con))
    sources: dict[str, list[str]] = {}
    for name, alias in _base_tables(con, sql):
        if name in have:
            columns = sources.get(name) or relation_columns(con, name)
            sources[name] = columns
            if alias and alias != name:
                sources[alias] = columns
    return sources


def _base_tables(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[str, str]]:
    """(table name, alias) of every table `sql` names, from DuckDB's parse tree (the query
    is parsed, not bound: it may not bind)."""
    import json

    (tree,) = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    found: list[tuple[str, str]] = []
    stack = [json.loads(tree)]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str):
                found.append((node["table_name"], str(node.get("alias") or "")))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(set(found))


def relation_columns(con: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    """The column names of table or view `name` on `con`."""
    quoted = '"' + name.replace('"', '""') + '"'
    return list(con.sql(f"SELECT * FROM {quoted} LIMIT 0").columns)
