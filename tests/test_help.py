"""`coyo-db --help` and `--version`: workflow order, one-line descriptions at 100 columns, plain
metavars, for every command group (a command added later is checked the same way)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from coyo_db.cli.app import app
from coyo_db.cli.help_format import WORKFLOW, workflow_order
from coyo_db.version import __version__

runner = CliRunner()
TYPE_NAMES = re.compile(r"<(?:str|int|float|bool|path|file|list\[[^\]]*\])>|\{[a-z_]+\}")


def _walk(command, path):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, [*path, name])


def _paths() -> list[list[str]]:
    return [path for path, _ in _walk(typer.main.get_command(app), [])]


def _help(args: list[str], columns: int = 100) -> str:
    result = runner.invoke(app, [*args, "--help"], terminal_width=columns)
    assert result.exit_code == 0, result.output
    return result.output


def _command_rows(text: str) -> list[str]:
    lines = text.split("Commands:\n", 1)[1].splitlines()
    return [line for line in lines if line.strip()]


def test_version_prints_the_version():
    result = subprocess.run(
        [sys.executable, "-m", "coyo_db.cli.entry", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"coyo-db {__version__}"


def test_a_100_column_terminal_shows_each_command_on_one_line():
    env = {**os.environ, "COLUMNS": "100"}
    result = subprocess.run(
        [sys.executable, "-m", "coyo_db.cli.entry", "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    rows = _command_rows(result.stdout)
    assert len(rows) == len(typer.main.get_command(app).commands)
    assert all(len(row) <= 100 and not row.endswith("...") for row in rows), rows


def test_commands_are_listed_in_workflow_order():
    rows = _command_rows(_help([]))
    names = [row.split()[0] for row in rows]
    listed = [n for n in names if n in WORKFLOW]
    assert listed == [n for n in WORKFLOW if n in names]
    assert names[: len(listed)] == listed  # any other command comes after them
    assert names[:4] == ["init", "ingest", "query", "tables"]
    assert names.index("export") > names.index("audit") > names.index("dedup")


def test_workflow_order_puts_unknown_commands_after_in_their_own_order():
    assert workflow_order(["serve", "demo", "export", "review", "init"]) == [
        "init",
        "export",
        "demo",
        "serve",
        "review",
    ]


@pytest.mark.parametrize("path", [p for p in _paths() if p == [] or len(p) == 1])
def test_each_description_is_one_whole_line_at_100_columns(path):
    group = typer.main.get_command(app)
    for name in path:
        group = group.commands[name]
    if not getattr(group, "commands", None):
        return
    rows = _command_rows(_help(path))
    visible = [n for n, c in group.commands.items() if not c.hidden]
    assert len(rows) == len(visible), f"a description wrapped:\n{chr(10).join(rows)}"
    for row in rows:
        assert len(row) <= 100, row
        name, text = row.split(maxsplit=1)
        assert not text.endswith("..."), f"coyo-db {' '.join([*path, name])}: {text}"
        first = group.commands[name].help.split("\n\n")[0].replace("\n", " ")
        assert first.startswith(text.rstrip(".")), (text, first)


@pytest.mark.parametrize("path", _paths(), ids=lambda p: " ".join(p) or "coyo-db")
def test_no_python_type_names_in_metavars(path):
    text = _help(path)
    found = TYPE_NAMES.findall(text)
    assert not found, f"coyo-db {' '.join(path)} --help shows {found}"


def test_arguments_read_as_click_shows_them():
    images = _help(["ingest", "images"])
    assert re.search(r"Usage: .* ingest images \[OPTIONS\] PATHS\.\.\.\n", images)
    assert "--batch-size INTEGER" in images and "--embed TEXT" in images
    query = _help(["query"])
    assert "[OPTIONS] [SQL]" in query and "--sql-file PATH" in query
