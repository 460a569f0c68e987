"""Sample-data commands: `coyo-db synth` (seeded COYO-shaped metadata)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from coyo_db.cli.common import RichProgress, stdout


def synth(
    rows: Annotated[int, typer.Option("--rows", help="Number of rows to generate.", min=0)],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="A .parquet file, or a directory that receives COYO-style part files.",
        ),
    ],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same rows.")] = 0,
    files: Annotated[
        int, typer.Option("--files", help="Number of part files (needs a directory).", min=1)
    ] = 1,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing file or part files.")
    ] = False,
) -> None:
    """Write seeded, COYO-700M-shaped synthetic metadata as Parquet (planted duplicates)."""
    from coyo_db.synth.metadata import write_synth

    started = time.perf_counter()
    paths = write_synth(
        out, rows, seed=seed, files=files, overwrite=overwrite, progress=RichProgress("rows")
    )
    elapsed = time.perf_counter() - started
    where = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files in {out}"
    stdout.print(f"wrote {rows:,} rows (seed {seed}) to {where} in {elapsed:.1f}s", markup=False)


def demo(
    rows: Annotated[
        int, typer.Option("--rows", help="Synthetic rows to run the pipeline on.", min=100)
    ] = 20_000,
    images: Annotated[
        int, typer.Option("--images", help="Synthetic images to ingest (0 skips).", min=0)
    ] = 160,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the sample.")] = 0,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Catalog to build, a new or empty folder; its data and exports go beside it "
            "in <home>-data (default: in a new temporary directory).",
        ),
    ] = None,
) -> None:
    """Run the whole pipeline on a built-in synthetic sample and narrate what it does."""
    import tempfile

    from coyo_db.synth.demo import run_demo

    target = home if home is not None else Path(tempfile.mkdtemp(prefix="coyo-db-demo-")) / "home"
    stdout.print(f"coyo-db demo: a catalog at {target}", markup=False)
    run_demo(
        target,
        rows=rows,
        images=images,
        seed=seed,
        emit=lambda line: stdout.print(line, markup=False),
    )


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
    app.command("demo")(demo)
