"""`coyo-db export`: a SQL-selected subset as Parquet, webdataset or Lance, with a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coyo_db.cli.common import HomeOption, RichProgress, console, open_catalog, stdout


def export(
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="Export folder, outside the catalog (created; refused if non-empty without "
            "--overwrite).",
        ),
    ] = None,
    where: Annotated[
        str | None,
        typer.Option("--where", "-w", help="SQL condition over --from (default pairs)."),
    ] = None,
    sql_file: Annotated[
        Path | None,
        typer.Option("--sql-file", help="A file holding one SELECT with an id column."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="parquet (img2dataset-ready; the default), webdataset or lance. A replay keeps "
            "the recorded format unless given.",
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns", "-c", help="Columns to add to url, text, id (comma-separated; * for all)."
        ),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Table or view --where reads (pairs_filtered, images, ...; default: pairs, or "
            "images in a catalog without pairs, its caption as the text).",
            show_default=False,
        ),
    ] = None,
    keep_duplicates: Annotated[
        bool,
        typer.Option("--keep-duplicates", help="Keep rows dedup marked as non-keepers."),
    ] = False,
    keep_contaminated: Annotated[
        bool,
        typer.Option("--keep-contaminated", help="Keep rows of the contamination table."),
    ] = False,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="Re-run the export of this manifest (or export folder) at its table versions; "
            "without --to, only check that the same ids come back.",
        ),
    ] = None,
    rows_per_file: Annotated[
        int, typer.Option("--rows-per-file", help="Rows per Parquet file.")
    ] = 1_000_000,
    samples_per_file: Annotated[
        int, typer.Option("--samples-per-file", help="Samples per webdataset tar.")
    ] = 10_000,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace a previous export at --to (with its manifest)."),
    ] = False,
    allow_empty: Annotated[
        bool,
        typer.Option("--allow-empty", help="Write the export even when it has no rows."),
    ] = False,
    home: HomeOption = None,
    # the options' earlier names, still accepted
    shard_rows: Annotated[int | None, typer.Option("--shard-rows", hidden=True)] = None,
    samples_per_shard: Annotated[
        int | None, typer.Option("--samples-per-shard", hidden=True)
    ] = None,
) -> None:
    """Export the rows of --where or --sql-file (minus duplicates and contaminated ids)."""
    from coyo_db.errors import InputError

    rows_per_file = shard_rows if shard_rows is not None else rows_per_file
    samples_per_file = samples_per_shard if samples_per_shard is not None else samples_per_file
    catalog = open_catalog(home, create=False)
    if manifest is not None:
        from coyo_db.export.replay import replay_export

        if where is not None or sql_file is not None or columns is not None:
            raise InputError("--manifest replays a recorded export; drop --where/--sql-file")
        replay = replay_export(
            catalog,
            manifest,
            to,
            fmt=fmt,
            overwrite=overwrite,
            progress=RichProgress("rows"),
        )
        stdout.print(replay.line(), markup=False)
        if not replay.same_ids:
            raise typer.Exit(1)
        return
    from coyo_db.export.subset import export as run

    if to is None:
        raise InputError("give the export folder with --to")
    sql = None
    if sql_file is not None:
        if not sql_file.is_file():
            raise InputError(f"{sql_file}: no such file")
        sql = sql_file.read_text(encoding="utf-8")
    result = run(
        catalog,
        to,
        where=where,
        sql=sql,
        fmt=fmt or "parquet",
        columns=columns.split(",") if columns else (),
        table=table,
        keep_duplicates=keep_duplicates,
        keep_contaminated=keep_contaminated,
        rows_per_file=rows_per_file,
        samples_per_file=samples_per_file,
        overwrite=overwrite,
        allow_empty=allow_empty,
        progress=RichProgress("rows"),
    )
    stdout.print(result.line(), markup=False)
    console.print(f"manifest: {result.manifest_path}", markup=False)
    if result.open_hint():
        console.print(f"open it with {result.open_hint()}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(export)
