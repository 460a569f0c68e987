"""Ingest commands: `coyo-db ingest metadata|labels PATH...`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coyo_db.cli.common import HomeOption, RichProgress, open_catalog, stdout

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
    from coyo_db.ingest.labels import ingest_labels

    catalog = open_catalog(home)
    _report(ingest_labels(catalog, paths, tree=tree, progress=RichProgress("rows")))


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")
