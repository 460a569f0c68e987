"""The `coyo-db` script's entry point.

`query` and `tables` run straight from their own declarations (:mod:`coyo_db.cli.fast_path`)
before the typer app, with every command module, is imported: their start-up is felt on every
call. Errors a user can cause (:class:`coyo_db.errors.CoyoDbError`) print one line and exit
non-zero; Ctrl-C prints one line saying whether a rerun resumes.
"""

from __future__ import annotations

import sys

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
            from coyo_db.cli.app import app

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
