"""The catalog: one directory of Lance tables, queried through DuckDB.

Layout of a home directory::

    <home>/coyo-db.json          the marker `init` writes: a folder holding it is a catalog
    <home>/tables/<name>.lance   one Lance dataset per table (pairs, labels, quarantine, ...)
    <home>/catalog.duckdb        the user's own views, macros and tables (made with --write)

Only :meth:`Catalog.init` (``coyo-db init``) creates a catalog, in a new or empty folder; opening
a folder without one is an error that writes nothing. A folder with ``tables/`` and
``catalog.duckdb`` but no marker is a catalog made before the marker existed, and opens as one.

A home may also be an object-store URI (``s3://bucket/prefix``): the Lance tables live there
(credentials and endpoint from the AWS environment variables, see
:mod:`coyo_db.catalog.object_store`)
and the DuckDB file, spills and caches in a local folder, ``Catalog.home``
(``$COYO_DB_CACHE/<hash>``, default ``~/.cache/coyo-db/<hash>``).

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

from coyo_db.catalog import lance_tables, object_store, sqlfiles
from coyo_db.catalog.readonly import check_read_only, restrict, split_statements
from coyo_db.catalog.sql_errors import explained
from coyo_db.errors import CatalogError

if TYPE_CHECKING:
    import lance
    import polars

    from coyo_db.catalog.tables import TableSpec

HOME_ENV = "COYO_DB_HOME"
DEFAULT_HOME = "coyo-db-home"
_DUCKDB_FILE = "catalog.duckdb"
_TABLES_DIR = "tables"
_MARKER = "coyo-db.json"  # what `init` leaves in a home: a folder holding it is a catalog
_MARKER_TEXT = '{"coyo_db": 1}\n'
_RETURNS_ROWS = {"SELECT", "EXPLAIN", "PRAGMA", "CALL"}


def resolve_home(home: str | os.PathLike[str] | None = None) -> str | Path:
    """The catalog's location: the argument, else $COYO_DB_HOME, else ./coyo-db-home; an
    object-store URI stays a string, a directory becomes an absolute Path. An empty location
    is refused: it would name the current folder."""
    chosen = home if home is not None else os.environ.get(HOME_ENV) or DEFAULT_HOME
    if not str(chosen).strip():
        raise CatalogError("--home is empty; give the catalog's folder (or s3://bucket/prefix)")
    uri = object_store.as_uri(chosen)
    if uri is not None:
        return uri
    return Path(chosen).expanduser().resolve()


def is_catalog_dir(path: Path) -> bool:
    """Whether the local folder `path` holds a catalog: the marker `init` writes, or the
    `tables/` folder and DuckDB file of a catalog made before the marker existed."""
    if (path / _MARKER).is_file():
        return True
    return (path / _TABLES_DIR).is_dir() and (path / _DUCKDB_FILE).is_file()


def catalog_above(path: Path) -> Path | None:
    """The catalog home that holds `path` (or is `path`), if any."""
    for folder in (path, *path.parents):
        if is_catalog_dir(folder):
            return folder
    return None


class Catalog:
    """A coyo-db catalog rooted at `home` (a folder or ``s3://bucket/prefix``; default
    ``$COYO_DB_HOME`` or ``./coyo-db-home``).

    Opening never creates: a `home` that holds no catalog raises :class:`CatalogError` and
    nothing is written. :meth:`init` (``coyo-db init``) creates one, as does
    ``Catalog(home, create=True)``; both open an existing catalog as it is.

    >>> cat = Catalog.init("my-home")                  # doctest: +SKIP
    >>> cat = Catalog("my-home")                       # doctest: +SKIP
    >>> cat.sql("SELECT count(*) FROM pairs_filtered")  # doctest: +SKIP
    """

    def __init__(self, home: str | os.PathLike[str] | None = None, *, create: bool = False) -> None:
        location = resolve_home(home)
        #: where the catalog is: its directory, or its object-store URI
        self.location = str(location)
        #: a local directory: the home itself, or a remote home's cache folder
        self.home = location if isinstance(location, Path) else object_store.cache_dir(location)
        self.remote = not isinstance(location, Path)
        if self.remote:
            self._open_remote(create)
            return
        if self.home.exists() and not self.home.is_dir():
            raise CatalogError(f"{self.home} is a file, not a catalog directory")
        if is_catalog_dir(self.home):
            (self.home / _TABLES_DIR).mkdir(exist_ok=True)
            if not self.duckdb_path.exists():
                duckdb.connect(str(self.duckdb_path)).close()
            return
        if not create:
            raise CatalogError(f"no catalog at {self.home}; run 'coyo-db init' or pass --home")
        self._create_local()

    @classmethod
    def init(cls, home: str | os.PathLike[str] | None = None) -> Catalog:
        """Create a catalog at `home` (a new or empty folder, or an object-store prefix), or
        open the one there: what ``coyo-db init`` does."""
        return cls(home, create=True)

    def _create_local(self) -> None:
        if self.home.exists() and any(self.home.iterdir()):
            raise CatalogError(
                f"{self.home} is not empty and holds no catalog; "
                "give 'coyo-db init' a new or empty folder"
            )
        above = catalog_above(self.home.parent)
        if above is not None:
            raise CatalogError(
                f"{self.home} is inside the catalog at {above}; choose another folder"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / _TABLES_DIR).mkdir()
        duckdb.connect(str(self.duckdb_path)).close()
        self._create_tables()
        # the marker last: a folder holding it is a whole catalog
        (self.home / _MARKER).write_text(_MARKER_TEXT, encoding="utf-8")

    def _create_tables(self) -> None:
        from coyo_db.catalog import tables

        self.ensure(tables.QUARANTINE)  # empty from the start, so queries of it always work

    def _open_remote(self, create: bool) -> None:
        import pyarrow.fs as pafs

        fs, path = object_store.filesystem(self.location)
        marker = f"{path}/{_MARKER}"
        try:
            found = fs.get_file_info(marker).type == pafs.FileType.File
            if not found and not create:
                raise CatalogError(
                    f"no catalog at {self.location}; run 'coyo-db init' or pass --home"
                )
            self.home.mkdir(parents=True, exist_ok=True)
            if not found:
                self._create_tables()
                with fs.open_output_stream(marker) as out:
                    out.write(_MARKER_TEXT.encode())
        except OSError as exc:
            raise CatalogError(
                f"cannot reach {self.location}: {' '.join(str(exc).split())}"
            ) from None
        if not self.duckdb_path.exists():
            duckdb.connect(str(self.duckdb_path)).close()

    def __repr__(self) -> str:
        return f"Catalog({self.location!r})"

    # ---- tables -----------------------------------------------------------------------------

    @property
    def tables_dir(self) -> str | Path:
        """Where the Lance tables are: a directory, or a URI for a remote home."""
        if self.remote:
            return f"{self.location}/{_TABLES_DIR}"
        return self.home / _TABLES_DIR

    @property
    def duckdb_path(self) -> Path:
        return self.home / _DUCKDB_FILE

    def table_uri(self, name: str) -> str | Path:
        if self.remote:
            return f"{self.tables_dir}/{name}.lance"
        return self.home / _TABLES_DIR / f"{name}.lance"

    def table_names(self) -> list[str]:
        """Names of the committed Lance tables, sorted."""
        if self.remote:
            return self._remote_table_names()
        return sorted(
            path.name.removesuffix(".lance")
            for path in (self.home / _TABLES_DIR).glob("*.lance")
            if lance_tables.exists(path)
        )

    def _remote_table_names(self) -> list[str]:
        import pyarrow.fs as pafs

        fs, path = object_store.filesystem(str(self.tables_dir))
        selector = pafs.FileSelector(path, allow_not_found=True)
        names = [
            info.base_name.removesuffix(".lance")
            for info in fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory and info.base_name.endswith(".lance")
        ]
        return sorted(name for name in names if self.has_table(name))

    def has_table(self, name: str) -> bool:
        return lance_tables.exists(self.table_uri(name))

    def dataset(self, name: str, version: int | None = None) -> lance.LanceDataset:
        """The Lance dataset behind table `name` (latest version unless one is given)."""
        if not self.has_table(name):
            raise CatalogError(f"the catalog at {self.location} has no table {name!r}")
        return lance_tables.open_dataset(self.table_uri(name), version)

    def ensure_table(self, name: str, schema: pa.Schema) -> lance.LanceDataset:
        """Open table `name`, creating it empty with `schema` when it does not exist yet."""
        return lance_tables.create_empty(self.table_uri(name), schema)

    def ensure(self, spec: TableSpec) -> lance.LanceDataset:
        """Open the table `spec` names, creating it empty with its schema when it does not
        exist yet."""
        return self.ensure_table(spec.name, spec.schema)

    def append(
        self, name: str, table: pa.Table, properties: dict[str, str] | None = None
    ) -> lance.LanceDataset:
        """Append rows to table `name` in one commit."""
        return lance_tables.append(self.table_uri(name), table, properties)

    def replace(
        self, name: str, where: str, table: pa.Table, properties: dict[str, str] | None = None
    ) -> lance.LanceDataset:
        """Replace the rows of table `name` that match `where` with `table`, in one commit
        (see :func:`lance_tables.replace`); creates the table when missing."""
        uri = self.table_uri(name)
        return lance_tables.replace(uri, where, table.to_batches(), table.schema, properties)

    def versions(self) -> dict[str, int]:
        """The current Lance version of every table."""
        return {name: self.dataset(name).version for name in self.table_names()}

    # ---- SQL --------------------------------------------------------------------------------

    def connect(
        self,
        *,
        write: bool = False,
        versions: Mapping[str, int] | None = None,
        restricted: bool = False,
    ) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with every table registered and every view created.

        Read-only unless `write`: the catalog's DuckDB file is opened read-only, so user objects
        can be read but not changed. `versions` pins tables to earlier Lance versions (time
        travel: what a query read then, it reads again); other tables are at their latest.
        `restricted` locks the connection down for a user's SQL: DuckDB then reads and writes
        no file, loads no extension and changes no setting (see docs/security.md).
        """
        versions = dict(versions or {})
        unknown = sorted(set(versions) - set(self.table_names()))
        if unknown:
            raise CatalogError(f"the catalog at {self.location} has no table {unknown[0]!r}")
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
        from coyo_db.catalog.duckdb_scan import scannable

        for name in self.table_names():
            con.register(name, scannable(self._dataset_at(name, versions.get(name))))
            registered.add(name)
        for family in sqlfiles.creatable(registered):
            try:
                con.execute(family.text)
            except duckdb.Error as exc:  # a shipped view that does not bind is a bug
                con.close()
                raise RuntimeError(f"sql/{family.name}.sql failed: {exc}") from exc
        if restricted:
            restrict(con)
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
        self,
        *,
        write: bool = False,
        versions: Mapping[str, int] | None = None,
        restricted: bool = False,
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.connect(write=write, versions=versions, restricted=restricted)
        try:
            yield con
        finally:
            con.close()

    def sql(
        self, query: str, *, write: bool = False, versions: Mapping[str, int] | None = None
    ) -> pa.Table:
        """Run `query` (one or more statements) and return the last result as Arrow.

        Unless `write`, statements that write, attach, install or copy out are refused, and
        the rest run on a restricted connection (no file read or written, no extension, no
        setting changed but threads and memory_limit). `versions` pins tables to earlier
        Lance versions (see :meth:`connect`).
        """
        with self.connection(write=write, versions=versions, restricted=not write) as con:
            statements = split_statements(query, con)
            if not write:
                check_read_only(statements)
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
            raise explained(exc, con, statement.query) from None
    return result
