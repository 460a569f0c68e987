"""Report commands: `coyo-db funnel` (COYO's filter rules, in order) and `coyo-db stats`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from coyo_db.cli.common import HomeOption, console, open_catalog, stdout, verbatim

if TYPE_CHECKING:
    from coyo_db.stats.card import Stats

FunnelFormatOption = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="table, csv or json (one object per line) (default: from the --output file's "
        "extension, else table).",
        show_default=False,
    ),
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
]


def funnel(
    fmt: FunnelFormatOption = None,
    output: OutputOption = None,
    show_sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL (views and query) instead of running it.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Rows removed by each COYO filter rule, in order, and what remains."""
    from coyo_db.catalog import sqlfiles
    from coyo_db.errors import InputError
    from coyo_db.results.output import output_format, write_result
    from coyo_db.stats.funnel import funnel as run_funnel
    from coyo_db.stats.funnel import funnel_sql, funnel_table

    fmt = output_format(fmt, output)
    if fmt not in ("table", "csv", "json"):
        raise InputError(f"unknown format {fmt!r}; choose one of table, csv, json")
    if show_sql:
        typer.echo(sqlfiles.load("filters"))
        typer.echo(funnel_sql() + ";")
        return
    steps = run_funnel(open_catalog(home, create=False))
    write_result(funnel_table(steps), fmt, output, max_rows=len(steps) or 1)
    if fmt == "table" and steps:
        last = steps[-1]
        console.print(
            f"input {last.input_rows:,} rows; {last.remaining:,} pass every rule "
            f"({last.remaining_pct:.2f}%)"
        )


def stats(
    plots: Annotated[
        Path | None,
        typer.Option("--plots", help="Write one histogram PNG per score column to this folder."),
    ] = None,
    bins: Annotated[int, typer.Option("--bins", min=1, help="Histogram bins (with --plots).")] = 50,
    approx: Annotated[
        bool,
        typer.Option("--approx", help="Approximate distinct counts (HyperLogLog): much faster."),
    ] = False,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, or json (one object).")
    ] = "table",
    show_sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of running it.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Dataset card statistics of pairs (and labels), with optional histograms.

    Rows; distinct urls, image pHashes and texts with their share of the rows; count, NULLs,
    NaNs, mean, min, p50 (approximate) and max of every numeric column.
    """
    from coyo_db.errors import InputError
    from coyo_db.stats.card import histograms, stats_sql
    from coyo_db.stats.card import stats as run_stats

    if fmt not in ("table", "json"):
        raise InputError(f"unknown format {fmt!r}; choose table or json")
    catalog = open_catalog(home, create=False)
    if show_sql:
        for statements in stats_sql(catalog, approx=approx).values():
            for statement in statements:
                typer.echo(statement + ";\n")
        return
    if plots is not None:
        from coyo_db.stats.plots import require_matplotlib

        require_matplotlib()  # a missing matplotlib fails before the long computation
    result = run_stats(catalog, approx=approx)
    if fmt == "json":
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_stats(result)
    if plots is None:
        return
    if "pairs" not in result:
        console.print("no table 'pairs': no histograms written")
        return
    from coyo_db.stats.plots import write_histograms

    written = write_histograms(histograms(catalog, bins=bins).values(), plots)
    console.print(f"wrote {len(written)} histogram(s) to {plots}")


def _print_stats(result: Stats) -> None:
    from coyo_db.results.output import render_table

    for table in result.tables:
        stdout.print(f"[bold]{verbatim(table.table)}[/bold]: {table.rows:,} rows", markup=True)
        for count in table.distinct:
            approx = "~" if count.approximate else ""
            stdout.print(
                f"  distinct {count.column}: {approx}{count.distinct:,} ({count.ratio:.1%})"
            )
        typer.echo(render_table(table.columns_table(), max_rows=None), nl=False)


def register(app: typer.Typer) -> None:
    app.command()(funnel)
    app.command()(stats)
