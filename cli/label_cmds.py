"""Labeling commands: `coyo-db label` and `coyo-db taxonomy list|add|hierarchy`.

Nothing heavy is imported here: the library (and torch, through the models) is imported inside
the commands.
"""

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

taxonomy_app = typer.Typer(
    help="Class lists that labels point into, and the synset hierarchy.", no_args_is_help=True
)


def label(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="effnet-lite0 (offline, ImageNet-1k head), timm:ARCH:/checkpoint (a timm "
            "classifier) or open_clip:ARCH:TAG|PATH (zero-shot over the class names).",
        ),
    ],
    taxonomy: Annotated[
        str,
        typer.Option(
            "--taxonomy",
            "-t",
            help="imagenet-21k (COYO-Labeled's index space), imagenet-1k, a taxonomy added "
            "with 'coyo-db taxonomy add', or a class-list file (one class a line).",
        ),
    ] = "imagenet-21k",
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", help="Labels kept per image (COYO-Labeled: 50).")
    ] = 50,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model call.")] = 64,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:1...")
    ] = "auto",
    workers: WorkersOption = None,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            help="For timm classifiers: a file naming each output's class (wnid or name), "
            "in output order; not needed for timm's ImageNet heads.",
        ),
    ] = None,
    templates: Annotated[
        str | None,
        typer.Option(
            "--templates",
            help="For zero-shot: simple (7 prompts, default), openai (80), a file of "
            "templates, or one template such as 'a photo of a {}.'.",
        ),
    ] = None,
    activation: Annotated[
        str,
        typer.Option(
            "--activation", help="Classifier outputs to probabilities: softmax or sigmoid."
        ),
    ] = "softmax",
    engine: EngineOption = "local",
    address: AddressOption = None,
    home: HomeOption = None,
) -> None:
    """Top-k labels for every ingested image into the table `labels` (COYO-Labeled format)."""
    from coyo_db.labels.labeling import label_images

    catalog = open_catalog(home, create=False)
    summary = label_images(
        catalog,
        model,
        taxonomy,
        top_k=top_k,
        batch_size=batch_size,
        device=device,
        workers=workers,
        classes=classes,
        templates=templates,
        activation=activation,
        engine=engine,
        address=address,
        progress=RichProgress("images"),
    )
    stdout.print(summary.line())
    for reason, count in sorted(summary.quarantine_reasons.items()):
        stdout.print(f"  quarantined {count:,}: {reason}")


@taxonomy_app.command("list")
def list_(home: HomeOption = None) -> None:
    """Shipped taxonomies and the catalog's own, with their class counts."""
    from coyo_db.labels.taxonomy import list_taxonomies
    from coyo_db.results.output import render_table

    stdout.print(render_table(list_taxonomies(open_catalog(home))), markup=False)


@taxonomy_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The taxonomy's name (labels.taxonomy).")],
    file: Annotated[
        Path,
        typer.Argument(help="One class name a line, or 'wnid<TAB>name' lines; # comments."),
    ],
    home: HomeOption = None,
) -> None:
    """Register a class list as a taxonomy (zero-shot labels or a classifier's classes)."""
    from coyo_db.labels.taxonomy import add_taxonomy

    written = add_taxonomy(open_catalog(home), name, file)
    stdout.print(
        f"taxonomy {name}: {written:,} classes written"
        if written
        else f"taxonomy {name}: already in the catalog"
    )


@taxonomy_app.command("hierarchy")
def hierarchy(home: HomeOption = None) -> None:
    """Write the shipped WordNet synset hierarchy into `taxonomy_tree` (if none is there)."""
    from coyo_db.labels.hierarchy import ensure_hierarchy

    written = ensure_hierarchy(open_catalog(home))
    stdout.print(
        f"taxonomy_tree: {written:,} WordNet edges written"
        if written
        else "taxonomy_tree: imagenet-21k has a tree already (kept)"
    )


def register(app: typer.Typer) -> None:
    app.command("label")(label)
    app.add_typer(taxonomy_app, name="taxonomy")
