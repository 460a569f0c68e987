"""What every command shares: the --home option, opening the catalog, progress bars, output.

Only typer and rich are imported here; the library (DuckDB, Arrow, Lance) is imported inside
the commands so that `coyo-db --help` stays fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

# Data, paths and messages print verbatim: no markup, emoji codes or highlighting, unless a
# call styles its own text (`markup=True` with every value passed through `verbatim`).
console = Console(stderr=True, highlight=False, markup=False, emoji=False)
stdout = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)

HomeOption = Annotated[
    str | None,
    typer.Option(
        "--home",
        envvar="COYO_DB_HOME",
        help="Catalog directory or s3://bucket/prefix (default: ./coyo-db-home).",
        show_default=False,
    ),
]

EngineOption = Annotated[
    str,
    typer.Option(
        "--engine",
        help="local (decode processes on this machine) or ray (Ray Data: decode on the "
        "cluster's CPUs, models in GPU or CPU actors; needs coyo-db[ray]).",
    ),
]

WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", help="Decode processes (default: one per core; 0: in this process)."),
]

AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="With --engine ray: join this Ray cluster (auto, host:6379, "
        "ray://host:10001); without it a local Ray instance starts.",
    ),
]


def open_catalog(home: str | Path | None, *, create: bool = False) -> Catalog:
    """The catalog at `home`; one that does not exist is an error (nothing is written) unless
    `create`, which only `coyo-db init` passes."""
    from coyo_db.catalog import Catalog

    return Catalog(home, create=create)


def verbatim(value: object) -> str:
    """`value` as text that rich markup prints as it is (brackets escaped)."""
    from rich.markup import escape

    return escape(str(value))


class RichProgress:
    """A progress bar on stderr with rate; silent when stderr is not a terminal."""

    def __init__(self, unit: str = "rows") -> None:
        self.unit = unit
        self._progress = None
        self._task = None
        self._started = 0.0
        self._done = 0
        self._description = ""

    def start(self, description: str, total: int | None = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.finish()
        self._description = description
        self._started = time.perf_counter()
        self._done = 0
        if not console.is_terminal:
            return
        self._progress = Progress(
            TextColumn("{task.description}", markup=False, style="bold"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, rate="")

    def advance(self, n: int) -> None:
        self._done += n
        if self._progress is not None:
            elapsed = max(time.perf_counter() - self._started, 1e-9)
            rate = f"{self._done / elapsed:,.0f} {self.unit}/s"
            self._progress.update(self._task, advance=n, rate=rate)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def print_error(message: object) -> None:
    """One line on stderr: `error: <message>`, the message verbatim."""
    console.print(f"[red]error:[/red] {verbatim(message)}", markup=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)


def write_stdout_bytes(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
