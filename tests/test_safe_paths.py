"""Safe paths: only `init` makes a catalog, a typo'd --home writes nothing, and an export never
lands in, on or above a catalog, nor replaces anything but a previous export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import coyo_table
from typer.testing import CliRunner

from coyo_db.catalog import Catalog
from coyo_db.cli.app import app
from coyo_db.errors import CatalogError, InputError
from coyo_db.export.subset import export

runner = CliRunner()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`coyo-db ARGS` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "coyo_db.cli.entry", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---- opening never creates ------------------------------------------------------------------


def test_opening_a_missing_home_creates_nothing(tmp_path):
    with pytest.raises(CatalogError, match=r"no catalog at .*coyo-db init"):
        Catalog(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_a_plain_folder_is_not_turned_into_a_catalog(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x")
    before = listing(folder)
    with pytest.raises(CatalogError, match="no catalog"):
        Catalog(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatalogError, match="no catalog"):
        Catalog(empty)
    assert listing(folder) == before and listing(empty) == []
    with pytest.raises(CatalogError, match="not empty and holds no catalog"):
        Catalog.init(folder)
    assert listing(folder) == before


def test_an_empty_home_is_refused():
    for home in ("", "  "):
        with pytest.raises(CatalogError, match="--home is empty"):
            Catalog(home)
        with pytest.raises(CatalogError, match="--home is empty"):
            Catalog.init(home)


def test_init_makes_a_marked_catalog_with_an_empty_quarantine(tmp_path):
    home = tmp_path / "new" / "home"
    catalog = Catalog.init(home)
    assert (home / "coyo-db.json").is_file()
    assert (home / "catalog.duckdb").is_file() and (home / "tables").is_dir()
    assert catalog.table_names() == ["quarantine"]
    quarantined = catalog.sql("SELECT * FROM quarantine")
    assert quarantined.num_rows == 0 and "reason" in quarantined.column_names
    assert Catalog(home).location == catalog.location  # opens, does not create again
    assert Catalog.init(home).table_names() == ["quarantine"]  # init again: the same catalog
    with pytest.raises(CatalogError, match="inside the catalog"):
        Catalog.init(home / "nested")


def test_a_catalog_made_before_the_marker_still_opens(tmp_path, coyo_rows):
    home = tmp_path / "old"
    (home / "tables").mkdir(parents=True)
    duckdb.connect(str(home / "catalog.duckdb")).close()
    catalog = Catalog(home)
    catalog.append("pairs", coyo_table(coyo_rows))
    assert catalog.sql("SELECT count(*) AS n FROM pairs")["n"][0].as_py() == len(coyo_rows)
    assert not (home / "coyo-db.json").exists()  # opening writes nothing


def test_commands_other_than_init_refuse_a_home_without_a_catalog(tmp_path, coyo_parquet):
    typo = tmp_path / "hoem"
    for args in (
        ["tables"],
        ["query", "SELECT 1"],
        ["ingest", "metadata", str(coyo_parquet)],
        ["stats"],
    ):
        one_error_line(cli(*args, "--home", str(typo)), f"no catalog at {typo}", "coyo-db init")
    assert not typo.exists()
    folder = tmp_path / "data"
    folder.mkdir()
    one_error_line(cli("tables", "--home", str(folder)), "no catalog")
    assert listing(folder) == []
    one_error_line(cli("query", "SELECT 1", "--home", ""), "--home is empty")
    assert cli("init", "--home", str(typo)).returncode == 0
    result = cli("ingest", "metadata", str(coyo_parquet), "--home", str(typo))
    assert result.returncode == 0, result.stderr


def test_the_cli_refusal_through_the_runner(tmp_path):
    result = runner.invoke(app, ["tables", "--home", str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and isinstance(result.exception, CatalogError)
    assert not (tmp_path / "nowhere").exists()
    result = runner.invoke(app, ["init", "--home", str(tmp_path / "somewhere")])
    assert result.exit_code == 0 and "catalog ready" in result.stdout


# ---- export targets ---------------------------------------------------------------------------


@pytest.fixture
def filled(catalog, coyo_rows) -> Catalog:
    catalog.append("pairs", coyo_table(coyo_rows))
    return catalog


def test_an_export_into_on_or_above_the_catalog_is_refused(filled, tmp_path):
    home = filled.home
    before = listing(home)
    for target, message in (
        (home, "is the catalog's home"),
        (home / "tables", "inside the catalog"),
        (home / "exports" / "subset", "inside the catalog"),
        (home.parent, "holds the catalog"),
    ):
        for overwrite in (False, True):
            with pytest.raises(InputError, match=message):
                export(filled, target, where="true", overwrite=overwrite)
    assert listing(home) == before
    assert filled.sql("SELECT count(*) AS n FROM pairs")["n"][0].as_py() == 11


def test_cli_export_to_the_home_with_overwrite_keeps_the_catalog(filled, tmp_path):
    home = str(filled.home)
    for target, message in (
        (home, "is the catalog's home"),
        (str(filled.home / "sub"), "inside the catalog"),
        (str(tmp_path), "holds the catalog"),
    ):
        line = one_error_line(
            cli("export", "--where", "true", "--to", target, "--overwrite", "--home", home),
            message,
        )
        assert "choose another --to" in line
    assert Catalog(home).sql("SELECT count(*) AS n FROM pairs")["n"][0].as_py() == 11


def test_overwrite_replaces_only_a_previous_export(filled, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    home = str(filled.home)
    one_error_line(
        cli("export", "--where", "true", "--to", str(mine), "--overwrite", "--home", home),
        "holds no export",
        "--overwrite only replaces a previous export",
    )
    assert (mine / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file.parquet"
    a_file.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        export(filled, a_file, where="true", overwrite=True)
    out = tmp_path / "out"
    first = export(filled, out, where="true")
    again = export(filled, out, where="id % 2 = 0", overwrite=True)
    assert again.rows < first.rows and (out / "_manifest.json").is_file()
