"""`coyo-db init` and `coyo-db tables`: what a catalog holds, with columns and row counts."""

from __future__ import annotations

from conftest import coyo_table
from typer.testing import CliRunner

from coyo_db.catalog.describe import describe_catalog
from coyo_db.cli.app import app
from coyo_db.errors import QueryError

runner = CliRunner()


def test_init_creates_a_catalog(tmp_path):
    home = tmp_path / "fresh"
    result = runner.invoke(app, ["init", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert (home / "catalog.duckdb").is_file() and (home / "tables").is_dir()


def test_describe_lists_tables_then_views_with_counts(catalog, coyo_rows):
    catalog.append("pairs", coyo_table(coyo_rows))
    relations = {r.name: r for r in describe_catalog(catalog, count_views=True)}
    pairs = relations["pairs"]
    assert pairs.kind == "table" and pairs.rows == len(coyo_rows)
    assert [name for name, _ in pairs.columns][:3] == ["id", "url", "text"]
    filtered = relations["pairs_filtered"]
    assert filtered.kind == "view"
    expected = catalog.sql("SELECT count(*) AS n FROM pairs_filtered")["n"][0].as_py()
    assert filtered.rows == expected
    assert describe_catalog(catalog, count_views=False)[-1].rows is None


def test_tables_counts_no_view_unless_asked(catalog, coyo_rows):
    """A view that fails when run (but binds) shows that plain `tables` never runs a view:
    table counts come from Lance metadata, view counts only with --count-views."""
    catalog.append("pairs", coyo_table(coyo_rows))
    explode = "CREATE VIEW exploding AS SELECT id FROM pairs WHERE error('ran the view') IS NULL"
    catalog.sql(explode, write=True)
    by_name = {r.name: r for r in describe_catalog(catalog)}
    assert by_name["pairs"].rows == len(coyo_rows)
    assert by_name["exploding"].rows is None and by_name["pairs_filtered"].rows is None
    result = runner.invoke(app, ["tables", "--home", str(catalog.home)])
    assert result.exit_code == 0, result.output
    assert "exploding  view\n" in result.stdout
    counted = runner.invoke(app, ["tables", "--count-views", "--home", str(catalog.home)])
    assert isinstance(counted.exception, QueryError)
    assert "view 'exploding'" in str(counted.exception) and "ran the view" in str(counted.exception)


def test_tables_command(catalog, coyo_rows):
    catalog.append("pairs", coyo_table(coyo_rows))
    result = runner.invoke(app, ["tables", "--home", str(catalog.home)])
    assert result.exit_code == 0, result.output
    assert "pairs  table, 11 rows" in result.stdout
    assert "image_phash" in result.stdout and "pairs_filtered  view\n" in result.stdout
    counted = runner.invoke(app, ["tables", "--count-views", "--home", str(catalog.home)])
    assert counted.exit_code == 0, counted.output
    assert "pairs_filtered  view, " in counted.stdout and " rows" in counted.stdout
