"""`coyo-db query`: the read-only guard, output formats, one-line errors, light imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import coyo_table
from typer.testing import CliRunner

from coyo_db.catalog.readonly import check_read_only, split_statements
from coyo_db.cli.app import app
from coyo_db.errors import QueryError, ReadOnlyError

runner = CliRunner()


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO 'out.csv'",
        "COPY pairs FROM 'in.csv'",
        "ATTACH 'other.duckdb' AS other",
        "DETACH other",
        "INSTALL httpfs",
        "LOAD json",
        "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT 1",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "DROP VIEW v",
        "ALTER TABLE t RENAME TO u",
        "EXPORT DATABASE 'dir'",
        "SELECT 1; COPY (SELECT 1) TO 'x.parquet'",
    ],
)
def test_statements_that_change_anything_are_refused(sql):
    with pytest.raises(ReadOnlyError, match="--write"):
        check_read_only(split_statements(sql))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
        "EXPLAIN SELECT 1",
        "DESCRIBE SELECT 1 AS x",
        "SUMMARIZE SELECT 1 AS x",
        "SHOW TABLES",
        "PRAGMA version",
        "SET threads = 1; SELECT 1",
    ],
)
def test_reading_statements_pass_the_guard(sql):
    check_read_only(split_statements(sql))


def test_guard_runs_before_anything(catalog, tmp_path):
    target = tmp_path / "leak.csv"
    with pytest.raises(ReadOnlyError):
        catalog.sql(f"SELECT 1; COPY (SELECT 42) TO '{target}'")
    assert not target.exists()
    catalog.sql(f"COPY (SELECT 42 AS a) TO '{target}'", write=True)
    assert target.read_text().splitlines() == ["a", "42"]


def test_syntax_errors_are_query_errors(catalog):
    with pytest.raises(QueryError, match="syntax error"):
        catalog.sql("SELEC 1")
    with pytest.raises(QueryError, match="no SQL statement"):
        catalog.sql("  ;  ")


@pytest.fixture
def home(catalog, coyo_rows):
    catalog.append("pairs", coyo_table(coyo_rows))
    return str(catalog.home)


def test_query_formats(home, tmp_path):
    sql = "SELECT id, text FROM pairs ORDER BY id LIMIT 3"
    csv = runner.invoke(app, ["query", sql, "--format", "csv", "--home", home])
    assert csv.exit_code == 0, csv.output
    lines = csv.stdout.splitlines()
    assert lines[0] == '"id","text"' and len(lines) == 4

    js = runner.invoke(app, ["query", sql, "-f", "json", "--home", home])
    rows = [json.loads(line) for line in js.stdout.splitlines()]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows) and len(rows) == 3

    out = tmp_path / "q.parquet"
    pq_run = runner.invoke(app, ["query", sql, "-f", "parquet", "-o", str(out), "--home", home])
    assert pq_run.exit_code == 0, pq_run.output
    assert pq.read_table(out).column_names == ["id", "text"]

    table = runner.invoke(app, ["query", "SELECT count(*) AS n FROM pairs", "--home", home])
    assert "11" in table.stdout and "1 row" in table.stdout


def test_table_format_caps_rows_on_screen(home):
    result = runner.invoke(
        app, ["query", "SELECT * FROM range(100)", "--max-rows", "5", "--home", home]
    )
    assert "100 rows (first 5 shown" in result.stdout


def test_sql_file_option(home, tmp_path):
    sql_file = tmp_path / "q.sql"
    sql_file.write_text("-- how many\nSELECT count(*) AS n FROM pairs;\n")
    result = runner.invoke(app, ["query", "--sql-file", str(sql_file), "-f", "csv", "--home", home])
    assert result.stdout.splitlines() == ['"n"', "11"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "COPY (SELECT 1) TO 'x.csv'"], "read-only"),
        (["query", "SELECT * FROM no_such_table"], "no_such_table"),
        (["query", "SELEC 1"], "syntax error"),
        (["query"], "--sql-file"),
        (["query", "SELECT 1", "--format", "xml"], "unknown format"),
    ],
)
def test_user_errors_print_one_line_and_exit_non_zero(home, args, message):
    result = subprocess.run(
        [sys.executable, "-m", "coyo_db.cli.entry", *args, "--home", home],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_query_on_a_missing_catalog_says_how_to_make_one(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "coyo_db.cli.entry",
            "query",
            "SELECT 1",
            "--home",
            str(tmp_path / "none"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "coyo-db init" in result.stderr


HEAVY = ("torch", "open_clip", "faiss", "matplotlib", "torchvision")


@pytest.mark.parametrize("args", [["--help"], ["query", "SELECT count(*) FROM pairs"]])
def test_help_and_query_never_import_model_libraries(home, args):
    probe = (
        "import sys\n"
        "from coyo_db.cli.entry import main\n"
        f"sys.argv = ['coyo-db', *{args!r}, '--home', {home!r}] if {args!r} != ['--help']"
        " else ['coyo-db', '--help']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_command_has_help_text():
    import typer.main

    group = typer.main.get_command(app)

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, command

    for path, command in walk(group, []):
        assert command.help, f"coyo-db {' '.join(path)} has no help text"
