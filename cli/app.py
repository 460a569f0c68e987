"""The `coyo-db` command: a typer app whose commands each call one library function.

Errors a user can cause (:class:`coyo_db.errors.CoyoDbError`) print one line and exit non-zero;
no traceback for a user's mistake.
"""

from __future__ import annotations

import sys

import typer

from coyo_db.cli import (
    audit_cmds,
    catalog_cmds,
    dedup_cmds,
    export_cmds,
    ingest_cmds,
    label_cmds,
    report_cmds,
    sample_cmds,
    search_cmds,
)

app = typer.Typer(
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
    sample_cmds,
    search_cmds,
):
    module.register(app)


def main() -> None:
    """Entry point of the `coyo-db` script."""
    from coyo_db.errors import CoyoDbError

    try:
        app()
    except CoyoDbError as exc:
        from coyo_db.cli.common import console

        console.print(f"[red]error:[/red] {exc}", markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        from coyo_db.cli.common import console

        console.print("interrupted; committed work is kept, run the command again to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
