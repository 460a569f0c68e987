"""Catalog commands: init, query, tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coyo_db.cli.common import HomeOption, console, open_catalog, stdout, verbatim

FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="table, csv, json (one object per line) or parquet (default: from the --output "
        "file's extension, else table).",
        show_default=False,
    ),
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
]


def init(home: HomeOption = None) -> None:
    """Create a catalog in a new or empty folder (or check an existing one)."""
    catalog = open_catalog(home, create=True)
    stdout.print(f"catalog ready at {catalog.location}")


def query(
    sql: Annotated[
        str | None, typer.Argument(help="SQL to run (several statements allowed).")
    ] = None,
    sql_file: Annotated[
        Path | None, typer.Option("--sql-file", help="Read the SQL from this file.")
    ] = None,
    fmt: FormatOption = None,
    output: OutputOption = None,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Full DuckDB power: statements that write, attach, install, read or copy "
            "files out, and settings.",
        ),
    ] = False,
    max_rows: Annotated[
        int, typer.Option("--max-rows", help="Rows shown by --format table on a terminal.")
    ] = 40,
    home: HomeOption = None,
) -> None:
    """Run SQL over the catalog's tables and views (read-only unless --write).

    Without --write the SQL reads the catalog only: DuckDB reads and writes no file, loads no
    extension and changes no setting but threads and memory_limit (docs/security.md)."""
    from coyo_db.errors import InputError
    from coyo_db.results.output import write_result

    if (sql is None) == (sql_file is None):
        raise InputError("give the SQL as an argument or with --sql-file, not both")
    if sql_file is not None:
        if not sql_file.is_file():
            raise InputError(f"{sql_file}: no such file")
        sql = sql_file.read_text(encoding="utf-8")
    catalog = open_catalog(home, create=False)
    result = catalog.sql(sql, write=write)
    if result.num_columns == 0:
        console.print("done")
        return
    write_result(result, fmt, output, max_rows=max_rows)


def tables(
    home: HomeOption = None,
    count_views: Annotated[
        bool,
        typer.Option(
            "--count-views/--no-count-views",
            "--view-counts/--no-view-counts",
            help="Count the rows of views too (runs each view once: slow on large tables).",
        ),
    ] = False,
) -> None:
    """List tables and views with their columns and table row counts (views: --count-views).

    Table row counts come from Lance metadata; a view is counted only with --count-views."""
    from coyo_db.catalog.describe import describe_catalog

    catalog = open_catalog(home, create=False)
    for relation in describe_catalog(catalog, count_views=count_views):
        rows = "" if relation.rows is None else f", {relation.rows:,} rows"
        stdout.print(f"[bold]{verbatim(relation.name)}[/bold]  {relation.kind}{rows}", markup=True)
        for name, type_ in relation.columns:
            stdout.print(f"    {verbatim(name)}  [dim]{verbatim(type_)}[/dim]", markup=True)


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(query)
    app.command()(tables)
