"""`coyo-db serve`: the local web app over the catalog (pages in coyo_db.serve)."""

from __future__ import annotations

from typing import Annotated

import typer

from coyo_db.cli.common import HomeOption, open_catalog


def serve(
    host: Annotated[
        str,
        typer.Option("--host", help="Address to listen on; another than 127.0.0.1 exposes it."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: a free one).")] = 8765,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the app in the default browser.")
    ] = False,
    reviewer: Annotated[
        str | None,
        typer.Option("--reviewer", help="Name recorded with review decisions (default: login)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Look at the data, search it and review dedup and audit decisions in a browser."""
    from coyo_db.serve.server import serve as run

    def emit(line: str) -> None:
        print(line, flush=True)

    run(
        open_catalog(home, create=False),
        host=host,
        port=port,
        open_browser=open_browser,
        reviewer=reviewer,
        emit=emit,
    )


def register(app: typer.Typer) -> None:
    app.command()(serve)
