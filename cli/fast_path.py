"""`coyo-db query` and `coyo-db tables` parsed without building the whole typer app.

Their start-up is felt on every call. Building the typer app's parser makes a parser for
every command, and typer (0.29) imports pydantic to coerce each option's value: together about
a third of `coyo-db query "SELECT 1"` (see bench/bench_startup.py). For the commands in
:data:`FAST`, the command function's own signature (its ``typer.Option`` / ``typer.Argument``
metadata: the same declarations, defaults and environment variables) is parsed with argparse
and the function is called directly.

Anything this parser does not handle exactly as typer would (``--help``, an unknown or
misspelt option, a value that does not convert, an annotation it does not know) is left to the
typer app, so every message a user sees for a mistake is still typer's.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import inspect
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from typer.models import ArgumentInfo, OptionInfo

#: command name -> (module, function) run without the typer app
FAST: dict[str, tuple[str, str]] = {
    "query": ("coyo_db.cli.catalog_cmds", "query"),
    "tables": ("coyo_db.cli.catalog_cmds", "tables"),
}

_SCALARS: dict[type, Callable[[str], Any]] = {str: str, int: int, float: float, Path: Path}
_HELP = {"--help", "-h"}


class _NotFast(Exception):
    """The arguments need the typer app (help, a mistake, or something not handled here)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise _NotFast(message)


def run_fast(args: list[str]) -> bool:
    """Run `args` (without the program name) if it is a :data:`FAST` command this parser
    handles; False (nothing run) means the typer app must take it."""
    if not args or args[0] not in FAST or _HELP & set(args):
        return False
    if any(arg.startswith("-") and any(c.isspace() for c in arg) for arg in args):
        return False  # argparse would take it as a value, click as an unknown option
    module, name = FAST[args[0]]
    command = getattr(importlib.import_module(module), name)
    try:
        kwargs = parse(command, args[1:])
    except _NotFast:
        return False
    try:
        command(**kwargs)
    except OSError as exc:  # as click does: a closed pipe (`| head`) ends quietly
        if exc.errno != errno.EPIPE:
            raise
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (flushes at exit go nowhere)
        sys.exit(1)
    return True


def parse(command: Callable[..., Any], args: list[str]) -> dict[str, Any]:
    """The keyword arguments typer would call `command` with for `args`; raises
    :class:`_NotFast` for anything not parsed exactly as typer does."""
    hints = typing.get_type_hints(command, include_extras=True)
    parser = _Parser(add_help=False, allow_abbrev=False, prog="coyo-db")
    envvars: dict[str, str] = {}
    for name, param in inspect.signature(command).parameters.items():
        kind, info = _annotation(hints.get(name))
        default = None if param.default is inspect.Parameter.empty else param.default
        if isinstance(info, ArgumentInfo):
            if param.default is inspect.Parameter.empty or kind is bool:
                raise _NotFast(f"argument {name}")
            parser.add_argument(name, nargs="?", default=default, type=_SCALARS[kind])
            continue
        decls = [d for d in (info.default, *info.param_decls) if isinstance(d, str)]
        if not decls or any(not d.startswith("-") for d in decls):
            raise _NotFast(f"option {name}")
        if kind is bool:
            _add_flag(parser, name, decls, default)
        elif any("/" in d for d in decls):
            raise _NotFast(f"option {name}")
        else:
            parser.add_argument(*decls, dest=name, default=default, type=_SCALARS[kind])
        if isinstance(info.envvar, str):
            envvars[name] = info.envvar
        elif info.envvar is not None:
            raise _NotFast(f"envvar of {name}")
    values = vars(parser.parse_args(args))
    for name, envvar in envvars.items():
        if values[name] is None and os.environ.get(envvar):
            values[name] = os.environ[envvar]
    return values


def _add_flag(parser: argparse.ArgumentParser, name: str, decls: list[str], default: Any) -> None:
    """A typer bool option: "--x" (no --no- form unless declared) or "--x/--no-x" pairs."""
    on = [d.split("/")[0] for d in decls]
    off = [d.split("/")[1] for d in decls if "/" in d]
    if not isinstance(default, bool) or (not off and default):
        raise _NotFast(f"flag {name}")
    parser.add_argument(*on, dest=name, action="store_true", default=default)
    if off:
        parser.add_argument(*off, dest=name, action="store_false")


def _annotation(hint: object) -> tuple[type, OptionInfo | ArgumentInfo]:
    """(scalar type, typer metadata) of an ``Annotated[T | None, typer.Option(...)]``."""
    if get_origin(hint) is not Annotated:
        raise _NotFast("no typer metadata")
    base, *extras = get_args(hint)
    info = next((e for e in extras if isinstance(e, (OptionInfo, ArgumentInfo))), None)
    members = [m for m in get_args(base) if m is not type(None)] or [base]
    if info is None or len(members) != 1 or not isinstance(members[0], type):
        raise _NotFast("annotation")
    kind = members[0]
    if kind is not bool and kind not in _SCALARS:
        raise _NotFast(f"type {kind}")
    custom = (info.parser, info.callback, getattr(info, "click_type", None))
    if any(c is not None for c in custom):
        raise _NotFast("custom parsing")
    return kind, info
