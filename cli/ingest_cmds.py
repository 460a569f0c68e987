"""Ingest commands: `coyo-db ingest metadata|labels PATH...`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coyo_db.cli.common import (
    AddressOption,
    EngineOption,
    HomeOption,
    RichProgress,
    WorkersOption,
    open_catalog,
    stdout,
)

ingest_app = typer.Typer(help="Load COYO-shaped files into the catalog.", no_args_is_help=True)

PathsArgument = Annotated[
    list[str], typer.Argument(help="Parquet files, folders (searched recursively) or globs.")
]


def _report(summary) -> None:  # type: ignore[no-untyped-def]
    stdout.print(summary.line())
    for reason, count in sorted(summary.quarantine_reasons.items()):
        stdout.print(f"  quarantined {count:,}: {reason}")


@ingest_app.command("metadata")
def metadata(paths: PathsArgument, home: HomeOption = None) -> None:
    """COYO-700M-shaped Parquet into the table `pairs` (bad rows go to `quarantine`)."""
    from coyo_db.ingest.metadata import ingest_metadata

    catalog = open_catalog(home)
    _report(ingest_metadata(catalog, paths, progress=RichProgress("rows")))


@ingest_app.command("labels")
def labels(
    paths: PathsArgument,
    tree: Annotated[
        Path | None,
        typer.Option("--tree", help="COYO's imagenet21k_tree.pickle (the synset hierarchy)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """COYO-Labeled-300M Parquet into the table `labels` (taxonomy imagenet-21k)."""
    from coyo_db.labels.coyo_labeled import ingest_labels

    catalog = open_catalog(home)
    _report(ingest_labels(catalog, paths, tree=tree, progress=RichProgress("rows")))


@ingest_app.command("images")
def images(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="img2dataset output (webdataset .tar shards, parquet with images, files "
            "folders) or plain folders of images; files, folders or globs."
        ),
    ],
    embed: Annotated[
        list[str] | None,
        typer.Option(
            "--embed",
            help="Embedding model, repeatable: effnet-lite0, minilm, open_clip:ARCH:TAG|PATH "
            "(e.g. open_clip:ViT-B-32:laion2b_s34b_b79k or a checkpoint path).",
        ),
    ] = None,
    scores: Annotated[
        str | None,
        typer.Option(
            "--scores",
            help="Comma-separated scorers: nsfw, faces, language, profanity, "
            "aesthetic:<checkpoint>, watermark:<checkpoint>, nsfw-clip:<checkpoint>.",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")
    ] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model batch.")] = 64,
    workers: WorkersOption = None,
    phash: Annotated[
        str,
        typer.Option(
            "--phash",
            help="exact (identical to imagehash, COYO's format) or fast (about 5x faster).",
        ),
    ] = "exact",
    engine: EngineOption = "local",
    address: AddressOption = None,
    home: HomeOption = None,
) -> None:
    """Images into `images` (pHash, size, format), embeddings, scores; bad ones quarantined."""
    from coyo_db.ingest.images import ingest_images

    catalog = open_catalog(home)
    score_list = [s.strip() for s in (scores or "").split(",") if s.strip()]
    summary = ingest_images(
        catalog,
        paths,
        embed=embed or [],
        scores=score_list,
        device=device,
        batch_size=batch_size,
        workers=workers,
        phash=phash,
        engine=engine,
        address=address,
        progress=RichProgress("images"),
    )
    _report(summary)
    for table, rows in sorted(summary.tables.items()):
        stdout.print(f"  {table}: {rows:,} rows")


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")
