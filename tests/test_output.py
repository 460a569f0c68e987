"""Faithful output: data and messages print verbatim (brackets are not markup), and `-o FILE`
writes the format its extension names."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from coyo_db.cli.app import app
from coyo_db.errors import InputError
from coyo_db.results.output import output_format, render_table, write_result

runner = CliRunner()

CAPTIONS = [
    "Nike Air [b]lue edition",
    "size [/]",
    "[red]not red[/red] and [link=https://x.example]a link[/link]",
    ":thumbs_up: emoji codes stay text",
    "[bold",
]


def captions_sql() -> str:
    values = ", ".join("('" + c.replace("'", "''") + "')" for c in CAPTIONS)
    return f"SELECT * FROM (VALUES {values}) AS t(text)"


def test_table_rendering_is_verbatim():
    text = render_table(pa.table({"[b]name[/b]": CAPTIONS}))
    for caption in CAPTIONS:
        assert caption in text
    assert "[b]name[/b]" in text


def test_query_prints_markup_looking_captions_verbatim(catalog):
    home = str(catalog.home)
    result = subprocess.run(
        [sys.executable, "-m", "coyo_db.cli.entry", "query", captions_sql(), "--home", home],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for caption in CAPTIONS:
        assert caption in result.stdout, result.stdout
    assert "5 rows" in result.stdout


def test_error_messages_quote_paths_verbatim(catalog, tmp_path):
    missing = tmp_path / "q [b]v2[/b] [/].sql"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "coyo_db.cli.entry",
            "query",
            "--sql-file",
            str(missing),
            "--home",
            str(catalog.home),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {missing}: no such file"


def test_tables_command_prints_names_verbatim(catalog):
    catalog.sql('CREATE VIEW "[b]odd[/b] [/]" AS SELECT 1 AS "[dim]x"', write=True)
    result = runner.invoke(app, ["tables", "--home", str(catalog.home)])
    assert result.exit_code == 0, result.output
    assert "[b]odd[/b] [/]  view" in result.stdout and "[dim]x" in result.stdout


def test_output_file_takes_its_format_from_the_extension(catalog, tmp_path):
    home = str(catalog.home)
    sql = "SELECT 1 AS a, 'x [b]' AS b"
    out = tmp_path / "x.parquet"
    result = runner.invoke(app, ["query", sql, "-o", str(out), "--home", home])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).to_pylist() == [{"a": 1, "b": "x [b]"}]
    for name, check in (
        ("x.csv", lambda text: text.splitlines() == ['"a","b"', '1,"x [b]"']),
        (
            "x.jsonl",
            lambda text: (
                [json.loads(line) for line in text.splitlines()] == [{"a": 1, "b": "x [b]"}]
            ),
        ),
        ("x.txt", lambda text: "x [b]" in text and "1 row" in text),
        ("x.out", lambda text: "x [b]" in text and "1 row" in text),  # other: the text table
    ):
        result = runner.invoke(app, ["query", sql, "-o", str(tmp_path / name), "--home", home])
        assert result.exit_code == 0, result.output
        assert check((tmp_path / name).read_text()), name


def test_a_format_that_contradicts_the_extension_is_refused(catalog, tmp_path):
    home = str(catalog.home)
    out = tmp_path / "x.csv"
    result = runner.invoke(
        app, ["query", "SELECT 1", "-o", str(out), "--format", "json", "--home", home]
    )
    assert isinstance(result.exception, InputError) and "names a csv file" in str(result.exception)
    assert not out.exists()
    result = runner.invoke(
        app, ["query", "SELECT 1", "-o", str(out), "--format", "csv", "--home", home]
    )
    assert result.exit_code == 0 and out.read_text().splitlines()[1] == "1"
    with pytest.raises(InputError, match="names a parquet file"):
        write_result(pa.table({"a": [1]}), "table", tmp_path / "y.parquet")
    assert output_format(None, None) == "table" and output_format("csv", "-") == "csv"
    assert output_format(None, tmp_path / "z.PARQUET") == "parquet"
    with pytest.raises(InputError, match="unknown format"):
        output_format("xml", None)


def test_library_query_follows_the_extension(catalog, tmp_path):
    import coyo_db

    result = coyo_db.query(catalog, "SELECT 7 AS n", output=tmp_path / "n.csv")
    assert result.num_rows == 1 and (tmp_path / "n.csv").read_text().splitlines() == ['"n"', "7"]
    coyo_db.query(catalog, "SELECT 7 AS n", output=tmp_path / "n.data")
    assert pq.read_table(tmp_path / "n.data").to_pylist() == [{"n": 7}]  # library default
