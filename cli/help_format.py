"""How `coyo-db --help` reads: commands in the order of a curator's workflow, one-line
descriptions that fit the terminal, and metavars in the command line's words.

:class:`WorkflowGroup` is the root command group. It lists the commands named in
:data:`WORKFLOW` in that order and every other command after them, in the order they were
registered (so a new command shows up without being named here). It also gives every
parameter of the whole command tree a plain metavar where the command did not choose one:
``--home TEXT``, ``--batch-size INTEGER``, ``--tree PATH``, ``PATHS...`` rather than typer's
Python type names (``<str>``, ``<list[str]>``) and ``{paths}`` in usage lines.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperGroup, TyperOption

#: the commands in the order a curator runs them; others follow in registration order
WORKFLOW: tuple[str, ...] = (
    "init",
    "ingest",
    "query",
    "tables",
    "funnel",
    "stats",
    "dedup",
    "label",
    "taxonomy",
    "refset",
    "audit",
    "export",
    "index",
    "search",
    "synth",
    "demo",
)

#: help is laid out up to this many columns (click's default stops at 80)
HELP_WIDTH = 120

_TYPE_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN"}


def workflow_order(names: list[str]) -> list[str]:
    """`names` with those of :data:`WORKFLOW` first, in its order, then the rest as given."""
    rank = {name: index for index, name in enumerate(WORKFLOW)}
    known = sorted((n for n in names if n in rank), key=rank.__getitem__)
    return known + [n for n in names if n not in rank]


class PlainArgument(TyperArgument):
    """A positional argument shown as click shows one: ``PATHS...``, ``[SQL]``."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        if not self.required:
            name = f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    def _rich_display_name(self) -> str:
        return self.display_name_raw + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def plain_metavar(param: TyperArgument | TyperOption) -> str:
    """The metavar of `param` in words: its name for an argument; for an option, the kind of
    value (TEXT, INTEGER, FLOAT, PATH) or its choices (``a|b``)."""
    if isinstance(param, TyperArgument):
        return (param.name or "value").upper()
    desc = param.type_descriptor
    if desc.is_choice and desc.choices is not None:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    if desc.is_path:
        return "PATH"
    annotation = desc.annotation
    args = getattr(annotation, "__args__", None)
    if desc.is_list and args:
        annotation = args[0]
    name = getattr(annotation, "__name__", str(annotation))
    return _TYPE_WORDS.get(name, name.upper())


def plain_metavars(command: Any) -> None:
    """Give every parameter under `command` (recursively) a plain metavar unless it has one,
    and every command group under it the layout of :class:`WorkflowGroup`."""
    for param in getattr(command, "params", ()):
        if isinstance(param, TyperArgument):
            if type(param) is TyperArgument:
                param.__class__ = PlainArgument
            if param.metavar is None:
                param.metavar = plain_metavar(param)
        elif isinstance(param, TyperOption) and param.metavar is None and not param.is_flag:
            param.metavar = plain_metavar(param)
    for sub in getattr(command, "commands", {}).values():
        if type(sub) is TyperGroup:
            sub.__class__ = WorkflowGroup
        plain_metavars(sub)


class WorkflowGroup(TyperGroup):
    """The root group: workflow order, wide one-line descriptions, plain metavars."""

    def __init__(self, **attrs: Any) -> None:
        settings = dict(attrs.pop("context_settings", None) or {})
        settings.setdefault("max_content_width", HELP_WIDTH)
        super().__init__(context_settings=settings, **attrs)
        plain_metavars(self)

    def list_commands(self, ctx: Any) -> list[str]:
        return workflow_order(super().list_commands(ctx))

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """One line per command: its help's first sentence, shortened only where the terminal
        leaves no room for it (click cuts 4 columns short of that)."""
        rows = []
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        commands = [(name, cmd) for name, cmd in commands if cmd is not None and not cmd.hidden]
        if not commands:
            return
        # write_dl's layout: indent, names column and 2 spaces, then the text up to width - 2
        names = max(len(n) for n, _ in commands) + 2
        room = formatter.width - formatter.current_indent - names - 2
        for name, cmd in commands:
            rows.append((name, cmd.get_short_help_str(max(room, 20))))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
