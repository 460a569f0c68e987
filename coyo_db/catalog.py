"""The catalog: one directory of Lance tables, queried through DuckDB.

Layout of a home directory::

    <home>/tables/<name>.lance   one Lance dataset per table (pairs, labels, quarantine, ...)
    <home>/catalog.duckdb        the user's own views, macros and tables (made with --write)

A DuckDB connection registers every Lance table under its name (DuckDB scans it through the
Arrow dataset interface, with projection and filter push-down) and then creates the views of
`sql/*.sql` as temporary views, so the shipped views always match the installed version.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from coyo_db import lance_tables, sqlfiles
from coyo_db.errors import CatalogError, QueryError
from coyo_db.readonly import check_read_only, split_statements

if TYPE_CHECKING:
    import lance
    import polars

HOME_ENV = "COYO_DB_HOME"
DEFAULT_HOME = "coyo-db-home"
_DUCKDB_FILE = "catalog.duckdb"
_TABLES_DIR = "tables"
_RETURNS_ROWS = {"SELECT", "EXPLAIN", "PRAGMA", "CALL"}


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The catalog directory: the argument, else $COYO_DB_HOME, else ./coyo-db-home."""
    chosen = home if home is not None else os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


class Catalog:
    """A coyo-db catalog rooted at `home`.

    >>> cat = Catalog("my-home")                       # doctest: +SKIP
    >>> cat.sql("SELECT count(*) FROM pairs_filtered")  # doctest: +SKIP
    """

    def __init__(self, home: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        self.home = resolve_home(home)
        if not self.home.exists():
            if not create:
                raise CatalogError(f"no catalog at {self.home}; run 'coyo-db init' or pass --home")
            self.home.mkdir(parents=True)
        elif not self.home.is_dir():
            raise CatalogError(f"{self.home} is a file, not a catalog directory")
        self.tables_dir.mkdir(exist_ok=True)
        if not self.duckdb_path.exists():
            duckdb.connect(str(self.duckdb_path)).close()

    def __repr__(self) -> str:
        return f"Catalog({str(self.home)!r})"

    # ---- tables -----------------------------------------------------------------------------

    @property
    def tables_dir(self) -> Path:
        return self.home / _TABLES_DIR

    @property
    def duckdb_path(self) -> Path:
        return self.home / _DUCKDB_FILE

    def table_uri(self, name: str) -> Path:
        return self.tables_dir / f"{name}.lance"

    def table_names(self) -> list[str]:
        """Names of the committed Lance tables, sorted."""
        return sorted(
            path.name.removesuffix(".lance")
            for path in self.tables_dir.glob("*.lance")
            if lance_tables.exists(path)
        )

    def has_table(self, name: str) -> bool:
        return lance_tables.exists(self.table_uri(name))

    def dataset(self, name: str, version: int | None = None) -> lance.LanceDataset:
        """The Lance dataset behind table `name` (latest version unless one is given)."""
        if not self.has_table(name):
            raise CatalogError(f"the catalog at {self.home} has no table {name!r}")
        return lance_tables.open_dataset(self.table_uri(name), version)

    def ensure_table(self, name: str, schema: pa.Schema) -> lance.LanceDataset:
        """Open table `name`, creating it empty with `schema` when it does not exist yet."""
        return lance_tables.create_empty(self.table_uri(name), schema)

    def append(
        self, name: str, table: pa.Table, properties: dict[str, str] | None = None
    ) -> lance.LanceDataset:
        """Append rows to table `name` in one commit."""
        return lance_tables.append(self.table_uri(name), table, properties)

    def versions(self) -> dict[str, int]:
        """The current Lance version of every table."""
        return {name: self.dataset(name).version for name in self.table_names()}

    # ---- SQL --------------------------------------------------------------------------------

    def connect(
        self, *, write: bool = False, versions: Mapping[str, int] | None = None
    ) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with every table registered and every view created.

        Read-only unless `write`: the catalog's DuckDB file is opened read-only, so user objects
        can be read but not changed. `versions` pins tables to earlier Lance versions (time
        travel: what a query read then, it reads again); other tables are at their latest.
        """
        versions = dict(versions or {})
        unknown = sorted(set(versions) - set(self.table_names()))
        if unknown:
            raise CatalogError(f"the catalog at {self.home} has no table {unknown[0]!r}")
        try:
            con = duckdb.connect(str(self.duckdb_path), read_only=not write)
        except duckdb.IOException as exc:
            raise CatalogError(
                f"cannot open {self.duckdb_path}: {' '.join(str(exc).split())}"
            ) from None
        # DuckDB's own progress bar would write into query output on stdout; spills go to a
        # folder in the home so that large sorts and group-bys work with a read-only file too.
        con.execute("SET enable_progress_bar = false")
        con.execute("SET temp_directory = ?", [str(self.home / ".duckdb-tmp")])
        registered = set()
        from coyo_db.duckdb_scan import scannable

        for name in self.table_names():
            con.register(name, scannable(self._dataset_at(name, versions.get(name))))
            registered.add(name)
        for family in sqlfiles.creatable(registered):
            try:
                con.execute(family.text)
            except duckdb.Error as exc:  # a shipped view that does not bind is a bug
                con.close()
                raise RuntimeError(f"sql/{family.name}.sql failed: {exc}") from exc
        return con

    def _dataset_at(self, name: str, version: int | None) -> lance.LanceDataset:
        try:
            return self.dataset(name, version)
        except (ValueError, OSError) as exc:
            if version is None:
                raise
            raise CatalogError(
                f"table {name!r} has no version {version} (was it cleaned up?): "
                f"{' '.join(str(exc).split())}"
            ) from None

    @contextmanager
    def connection(
        self, *, write: bool = False, versions: Mapping[str, int] | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.connect(write=write, versions=versions)
        try:
            yield con
        finally:
            con.close()

    def sql(
        self, query: str, *, write: bool = False, versions: Mapping[str, int] | None = None
    ) -> pa.Table:
        """Run `query` (one or more statements) and return the last result as Arrow.

        Statements that write, attach, install or copy out are refused unless `write`.
        `versions` pins tables to earlier Lance versions (see :meth:`connect`).
        """
        statements = split_statements(query)
        if not write:
            check_read_only(statements)
        with self.connection(write=write, versions=versions) as con:
            return run_statements(con, statements)

    def pl(self, query: str, *, write: bool = False) -> polars.DataFrame:
        """Like :meth:`sql`, as a Polars DataFrame."""
        import polars

        return polars.from_arrow(self.sql(query, write=write))  # type: ignore[return-value]

    def view_names(self) -> list[str]:
        """Every view a connection offers: the shipped ones and the user's."""
        with self.connection() as con:
            rows = con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name"
            ).fetchall()
        return [name for (name,) in rows if name not in set(self.table_names())]


def run_statements(con: duckdb.DuckDBPyConnection, statements: list[duckdb.Statement]) -> pa.Table:
    """Execute parsed statements in order; the last one's result comes back as Arrow."""
    result = pa.table({})
    for index, statement in enumerate(statements):
        try:
            # con.sql runs commands at once and binds queries lazily: a query before the
            # last is checked but not run, since only the last result is returned.
            relation = con.sql(statement.query)
            last = index == len(statements) - 1
            if last and relation is not None and statement.type.name in _RETURNS_ROWS:
                result = relation.to_arrow_table()
        except duckdb.Error as exc:
            raise QueryError(" ".join(str(exc).split())) from None
    return result
