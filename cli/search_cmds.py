"""Vector search commands: `coyo-db index build` and `coyo-db search`.

faiss and the models are imported inside the commands, never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coyo_db.cli.common import HomeOption, console, open_catalog, stdout

index_app = typer.Typer(
    help="Vector indexes over embeddings tables (for coyo-db search).", no_args_is_help=True
)


@index_app.command("build")
def build(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Embedding model spec, as given to ingest --embed.")
    ],
    kind: Annotated[
        str,
        typer.Option(
            "--kind", help="auto (by size), flat (exact), ivf-flat or ivf-pq (compressed)."
        ),
    ] = "auto",
    nlist: Annotated[
        int | None, typer.Option("--nlist", help="IVF lists (default: sqrt of the count).")
    ] = None,
    pq_m: Annotated[
        int | None, typer.Option("--pq-m", help="PQ bytes per vector (default: dim / 8).")
    ] = None,
    nprobe: Annotated[
        int | None,
        typer.Option("--nprobe", help="IVF lists searched per query (default: nlist / 16)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Rows read and added per batch (IVF kinds).")
    ] = 65_536,
    home: HomeOption = None,
) -> None:
    """Build (or rebuild) the FAISS index of a model's image vectors."""
    from coyo_db.search.vector_index import build_index

    meta = build_index(
        open_catalog(home, create=False),
        model,
        kind=kind,
        nlist=nlist,
        pq_m=pq_m,
        nprobe=nprobe,
        batch_size=batch_size,
    )
    stdout.print(meta.line(), markup=False)


def search(
    text: Annotated[
        str | None, typer.Option("--text", "-t", help="Search by this text (CLIP models).")
    ] = None,
    image: Annotated[
        Path | None, typer.Option("--image", "-i", help="Search by this image file.")
    ] = None,
    id_: Annotated[
        int | None, typer.Option("--id", help="Search by the stored vector of this id.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Neighbours to return.")] = 10,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Whose index to search (needed when several)."),
    ] = None,
    where: Annotated[
        str | None,
        typer.Option("--where", "-w", help="SQL condition over pairs (or images) the hits meet."),
    ] = None,
    nprobe: Annotated[
        int | None, typer.Option("--nprobe", help="IVF lists searched (more: better recall).")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="table, csv, json or parquet (default: from the --output file's extension, "
            "else table).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Nearest neighbours of --text, --image or --id: ids, cosine scores and metadata."""
    from coyo_db.results.output import write_result
    from coyo_db.search.nearest import search as run

    result = run(
        open_catalog(home, create=False),
        text=text,
        image=image,
        id=id_,
        k=k,
        model=model,
        where=where,
        nprobe=nprobe,
    )
    if result.stale:
        console.print(
            f"note: the index was built at table version {result.index_version}; the table is "
            f"at {result.table_version} (rebuild with coyo-db index build --model {result.model})",
            markup=False,
        )
    write_result(result.table, fmt, output, max_rows=k)


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
    app.command()(search)
