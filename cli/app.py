"""The `coyo-db` command: a typer app whose commands each call one library function.

Errors a user can cause (:class:`coyo_db.errors.CoyoDbError`) print one line and exit non-zero;
no traceback for a user's mistake.
"""

from __future__ import annotations

from typing import Annotated

import typer

from coyo_db.cli import (
    audit_cmds,
    catalog_cmds,
    dedup_cmds,
    export_cmds,
    ingest_cmds,
    label_cmds,
    report_cmds,
    review_cmds,
    sample_cmds,
    search_cmds,
    serve_cmds,
)
from coyo_db.cli.help_format import WorkflowGroup
from coyo_db.version import __version__

app = typer.Typer(
    cls=WorkflowGroup,
    name="coyo-db",
    help="Columnar analytics and curation for COYO-700M-shaped image-text datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

for module in (
    audit_cmds,
    catalog_cmds,
    dedup_cmds,
    export_cmds,
    ingest_cmds,
    label_cmds,
    report_cmds,
    review_cmds,
    sample_cmds,
    search_cmds,
    serve_cmds,
):
    module.register(app)


def _print_version(value: bool) -> None:
    if value:
        print(f"coyo-db {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Columnar analytics and curation for COYO-700M-shaped image-text datasets."""
