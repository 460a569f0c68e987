"""`coyo-db init` and `coyo-db tables`: what a catalog holds, with columns and row counts."""

from __future__ import annotations

from conftest import coyo_table
from typer.testing import CliRunner

from coyo_db.catalog.describe import describe_catalog
from coyo_db.cli.app import app

runner = CliRunner()


def test_init_creates_a_catalog(tmp_path):
    home = tmp_path / "fresh"
    result = runner.invoke(app, ["init", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert (home / "catalog.duckdb").is_file() and (home / "tables").is_dir()


def test_describe_lists_tables_then_views_with_counts(catalog, coyo_rows):
    catalog.append("pairs", coyo_table(coyo_rows))
    relations = {r.name: r for r in describe_catalog(catalog)}
    pairs = relations["pairs"]
    assert pairs.kind == "table" and pairs.rows == len(coyo_rows)
    assert [name for name, _ in pairs.columns][:3] == ["id", "url", "text"]
    filtered = relations["pairs_filtered"]
    assert filtered.kind == "view"
    expected = catalog.sql("SELECT count(*) AS n FROM pairs_filtered")["n"][0].as_py()
    assert filtered.rows == expected
    assert describe_catalog(catalog, count_views=False)[-1].rows is None


def test_tables_command(catalog, coyo_rows):
    catalog.append("pairs", coyo_table(coyo_rows))
    result = runner.invoke(app, ["tables", "--home", str(catalog.home)])
    assert result.exit_code == 0, result.output
    assert "pairs  table, 11 rows" in result.stdout
    assert "image_phash" in result.stdout and "pairs_filtered  view" in result.stdout
