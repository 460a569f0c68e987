"""Dedup commands: `coyo-db dedup phash` (near-duplicate pHash groups) and `dedup report`."""

from __future__ import annotations

from typing import Annotated

import typer

from coyo_db.cli.common import AddressOption, HomeOption, open_catalog, stdout

dedup_app = typer.Typer(
    help="Find duplicate groups (table dup_groups, view pairs_unique).", no_args_is_help=True
)


@dedup_app.command("phash")
def phash(
    radius: Annotated[
        int,
        typer.Option("--radius", "-r", help="Hamming radius: 0 groups identical pHashes only."),
    ] = 4,
    table: Annotated[
        str,
        typer.Option("--table", help="pairs (image_phash column) or images (computed pHash)."),
    ] = "pairs",
    keep: Annotated[
        str,
        typer.Option(
            "--keep",
            help="Keeper of each group: highest-clip (CLIP ViT-L/14, then B/32, then lowest "
            "id) or lowest-id.",
        ),
    ] = "highest-clip",
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="local (this process) or ray (each block combination of the search a Ray "
            "task; needs coyo-db[ray]).",
        ),
    ] = "local",
    address: AddressOption = None,
    home: HomeOption = None,
    source: Annotated[str | None, typer.Option("--source", hidden=True)] = None,  # old --table
) -> None:
    """Group rows whose pHashes lie within --radius bits; replaces this method's groups."""
    from coyo_db.dedup.groups import dedup_phash

    table = source if source is not None else table
    catalog = open_catalog(home, create=False)
    summary = dedup_phash(catalog, radius, table=table, keep=keep, engine=engine, address=address)
    stdout.print(summary.line())


@dedup_app.command("text")
def text_rule(
    rule: Annotated[
        str,
        typer.Option(
            "--rule",
            help="COYO's rule: phash_text (same image_phash and text), url (same url) or text "
            "(a text seen more than --min-count times).",
        ),
    ],
    min_count: Annotated[
        int, typer.Option("--min-count", help="The text rule's threshold (COYO: 10).")
    ] = 10,
    keep: Annotated[
        str, typer.Option("--keep", help="Keeper of each group: highest-clip or lowest-id.")
    ] = "highest-clip",
    home: HomeOption = None,
) -> None:
    """COYO's exact dedup rules over pairs; replaces this method's groups."""
    from coyo_db.dedup.rules import dedup_rule

    catalog = open_catalog(home, create=False)
    summary = dedup_rule(catalog, rule, min_count=min_count, keep=keep)
    stdout.print(summary.line())


@dedup_app.command("semantic")
def semantic(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Embedding model spec, as given to ingest --embed.")
    ],
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            "-t",
            help="Cosine similarity at or above which two images are duplicates.",
        ),
    ] = 0.95,
    clusters: Annotated[
        int | None,
        typer.Option("--clusters", help="k-means clusters (default: from the data size)."),
    ] = None,
    keep: Annotated[
        str, typer.Option("--keep", help="Keeper of each group: highest-clip or lowest-id.")
    ] = "highest-clip",
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Rows per batch streamed from the table.")
    ] = 65_536,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="local (this process) or ray (each unit of clusters a Ray task reading its "
            "own vectors; needs coyo-db[ray]).",
        ),
    ] = "local",
    address: AddressOption = None,
    home: HomeOption = None,
) -> None:
    """SemDeDup: k-means, then cosine >= --threshold in each vector's two nearest clusters."""
    from coyo_db.dedup.semantic import dedup_semantic

    catalog = open_catalog(home, create=False)
    summary = dedup_semantic(
        catalog,
        model,
        threshold,
        clusters=clusters,
        keep=keep,
        batch_size=batch_size,
        engine=engine,
        address=address,
    )
    stdout.print(summary.line())


@dedup_app.command("report")
def report(home: HomeOption = None) -> None:
    """Groups, rows and group sizes per dedup method."""
    from coyo_db.dedup.groups import dedup_report
    from coyo_db.results.output import render_table

    catalog = open_catalog(home, create=False)
    if not catalog.has_table("dup_groups"):
        stdout.print(
            "no duplicate groups: no dedup has run on this catalog yet "
            "(coyo-db dedup phash|text|semantic)"
        )
        return
    summary, sizes = dedup_report(catalog)
    if summary.num_rows == 0:
        stdout.print("no duplicate groups: the dedup runs so far found none")
        return
    stdout.print(render_table(summary), markup=False)
    stdout.print(render_table(sizes.drop_columns(["size_bucket_min"]), max_rows=None), markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(dedup_app, name="dedup")
