"""`coyo-db query` without the typer app: the same arguments as typer's parse, typer's messages
for every mistake, and a start-up that imports neither pydantic nor the other commands' parsers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from coyo_db.cli import catalog_cmds
from coyo_db.cli.app import app
from coyo_db.cli.fast_path import _NotFast, parse, run_fast

runner = CliRunner()


def typer_kwargs(args: list[str], name: str = "query") -> dict:
    """What typer itself passes to command `name` for `args`."""
    seen: dict = {}
    command = typer.main.get_command(app).commands[name]
    original = command.callback

    def capture(**kwargs):
        seen.update(kwargs)

    command.callback = capture
    try:
        ctx = command.make_context(name, list(args))
        command.invoke(ctx)
    finally:
        command.callback = original
    return seen


@pytest.mark.parametrize(
    "args",
    [
        ["SELECT 1"],
        ["SELECT 1", "--format", "csv", "-o", "out.csv", "--home", "h"],
        ["--write", "--max-rows", "7", "SELECT 2", "-f", "json"],
        ["--sql-file", "q.sql", "--format=parquet"],
        ["--home", "h", "--", "-1"],
        [],
    ],
)
def test_parses_as_typer_does(args, monkeypatch):
    monkeypatch.delenv("COYO_DB_HOME", raising=False)
    assert parse(catalog_cmds.query, args) == typer_kwargs(args)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--count-views"],
        ["--view-counts", "--home", "h"],
        ["--count-views", "--no-count-views"],
        ["--no-view-counts"],
    ],
)
def test_tables_parses_as_typer_does(args, monkeypatch):
    monkeypatch.delenv("COYO_DB_HOME", raising=False)
    assert parse(catalog_cmds.tables, args) == typer_kwargs(args, "tables")


def test_environment_home_as_typer_reads_it(monkeypatch):
    monkeypatch.setenv("COYO_DB_HOME", "/from/env")
    assert parse(catalog_cmds.query, ["SELECT 1"])["home"] == "/from/env"
    assert typer_kwargs(["SELECT 1"])["home"] == "/from/env"
    assert parse(catalog_cmds.query, ["SELECT 1", "--home", "x"])["home"] == "x"


@pytest.mark.parametrize(
    "args",
    [
        ["SELECT 1", "--hom", "h"],  # misspelt (no abbreviations, as click)
        ["SELECT 1", "--max-rows", "many"],
        ["SELECT 1", "--no-write"],  # typer has no --no- form for a plain flag
        ["SELECT 1", "SELECT 2"],
        ["SELECT 1", "--format"],
    ],
)
def test_mistakes_are_left_to_typer(args):
    with pytest.raises(_NotFast):
        parse(catalog_cmds.query, args)
    assert runner.invoke(app, ["query", *args]).exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ["query", "--help"],
        ["query", "-- a comment\nSELECT 1"],  # click reads this as an unknown option
        ["tables", "--help"],
        ["init"],
        [],
    ],
)
def test_run_fast_declines_what_typer_must_answer(args):
    assert run_fast(args) is False


def test_query_start_up_imports_no_pydantic_and_answers(tmp_path):
    from coyo_db.catalog import Catalog

    home = str(tmp_path / "home")
    Catalog.init(home)
    probe = (
        "import sys\n"
        "from coyo_db.cli.entry import main\n"
        f"sys.argv = ['coyo-db', 'query', 'SELECT 40 + 2 AS x', '-f', 'csv', '--home', {home!r}]\n"
        "main()\n"
        "assert 'pydantic' not in sys.modules, 'typer app built'\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['"x"', "42"]
