"""The `coyo-db` command: a typer app whose commands each call one library function.

Errors a user can cause (:class:`coyo_db.errors.CoyoDbError`) print one line and exit non-zero;
no traceback for a user's mistake.
"""

from __future__ import annotations

import sys
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


# commands that commit as they go and, run again, finish the rest
_RESUMABLE = ("ingest", "label")
_interrupted: list[bool] = []


def _on_interrupt(signum: int, frame: object) -> None:
    _interrupted.append(True)
    raise KeyboardInterrupt  # typer turns it into exit code 130, silently


def main() -> None:
    """Entry point of the `coyo-db` script."""
    import signal

    from coyo_db.cli.common import console, print_error
    from coyo_db.cli.fast_path import run_fast
    from coyo_db.errors import CoyoDbError

    signal.signal(signal.SIGINT, _on_interrupt)
    try:
        if not run_fast(sys.argv[1:]):
            app()
    except CoyoDbError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # raised outside the command (typer handles the rest)
        _interrupted.append(True)
        sys.exit(130)
    finally:
        if _interrupted:
            console.print(interrupted_line(sys.argv[1:]))


def interrupted_line(args: list[str]) -> str:
    """The one line Ctrl-C prints: how to resume, for commands that can."""
    command = next((arg for arg in args if not arg.startswith("-")), "")
    if command in _RESUMABLE:
        return "interrupted; run the same command again to resume"
    return "interrupted"


if __name__ == "__main__":
    main()
