"""Dedup commands: `coyo-db dedup phash` (near-duplicate pHash groups) and `dedup report`."""

from __future__ import annotations

from typing import Annotated

import typer

from coyo_db.cli.common import HomeOption, open_catalog, stdout

dedup_app = typer.Typer(
    help="Find duplicate groups (table dup_groups, view pairs_unique).", no_args_is_help=True
)


@dedup_app.command("phash")
def phash(
    radius: Annotated[
        int,
        typer.Option("--radius", "-r", help="Hamming radius: 0 groups identical pHashes only."),
    ] = 4,
    source: Annotated[
        str,
        typer.Option("--source", help="pairs (image_phash column) or images (computed pHash)."),
    ] = "pairs",
    keep: Annotated[
        str,
        typer.Option(
            "--keep",
            help="Keeper of each group: highest-clip (CLIP ViT-L/14, then B/32, then lowest "
            "id) or lowest-id.",
        ),
    ] = "highest-clip",
    home: HomeOption = None,
) -> None:
    """Group rows whose pHashes lie within --radius bits; replaces this method's groups."""
    from coyo_db.dedup import dedup_phash

    summary = dedup_phash(open_catalog(home, create=False), radius, source=source, keep=keep)
    stdout.print(
        f"{summary.method}: {summary.groups:,} groups holding {summary.rows_in_groups:,} of "
        f"{summary.rows_scanned:,} rows; {summary.removed:,} rows are not keepers "
        f"({summary.seconds:.1f}s)"
    )


@dedup_app.command("report")
def report(home: HomeOption = None) -> None:
    """Groups, rows and group sizes per dedup method."""
    from coyo_db.dedup import dedup_report
    from coyo_db.output import render_table

    summary, sizes = dedup_report(open_catalog(home, create=False))
    stdout.print(render_table(summary), markup=False)
    stdout.print(render_table(sizes.drop_columns(["size_bucket_min"]), max_rows=None), markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(dedup_app, name="dedup")
