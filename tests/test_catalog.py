"""The catalog: home resolution, Lance tables registered in DuckDB, views from sql/."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from conftest import coyo_table

from coyo_db.catalog import Catalog, lance_tables, resolve_home, sqlfiles
from coyo_db.errors import CatalogError, CoyoDbError


def test_home_resolution_prefers_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("COYO_DB_HOME", str(tmp_path / "from-env"))
    assert resolve_home(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert resolve_home() == (tmp_path / "from-env").resolve()
    monkeypatch.delenv("COYO_DB_HOME")
    monkeypatch.chdir(tmp_path)
    assert resolve_home() == (tmp_path / "coyo-db-home").resolve()


def test_missing_home_is_a_clear_error_when_not_creating(tmp_path):
    with pytest.raises(CatalogError, match="coyo-db init"):
        Catalog(tmp_path / "nowhere", create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CatalogError, match="not a catalog directory"):
        Catalog(tmp_path / "file")


def test_tables_are_registered_by_name_and_returned_as_arrow_and_polars(catalog, coyo_rows):
    catalog.append("pairs", coyo_table(coyo_rows))
    assert catalog.table_names() == ["pairs", "quarantine"]
    result = catalog.sql("SELECT id, text FROM pairs ORDER BY id")
    assert isinstance(result, pa.Table)
    assert result.column("id").to_pylist() == sorted(r["id"] for r in coyo_rows)
    frame = catalog.pl("SELECT count(*) AS n FROM pairs")
    assert isinstance(frame, pl.DataFrame)
    assert frame["n"][0] == len(coyo_rows)


def test_columns_keep_coyo_types(catalog, coyo_rows):
    catalog.append("pairs", coyo_table(coyo_rows))
    described = catalog.sql("DESCRIBE pairs").to_pylist()
    types = {row["column_name"]: row["column_type"] for row in described}
    assert types["id"] == "BIGINT"
    assert types["width"] == "INTEGER"
    assert types["clip_similarity_vitb32"] == "FLOAT"
    assert types["image_phash"] == "VARCHAR"


def test_each_connection_sees_the_latest_committed_version(catalog, coyo_rows):
    catalog.append("pairs", coyo_table(coyo_rows[:3]))
    assert catalog.sql("SELECT count(*) AS n FROM pairs")["n"][0].as_py() == 3
    catalog.append("pairs", coyo_table(coyo_rows[3:]))
    assert catalog.sql("SELECT count(*) AS n FROM pairs")["n"][0].as_py() == len(coyo_rows)
    assert catalog.versions()["pairs"] >= 2


def test_commit_properties_are_kept_in_the_table_history(catalog, coyo_rows):
    catalog.append("pairs", coyo_table(coyo_rows[:2]), {"fingerprint": "abc"})
    catalog.append("pairs", coyo_table(coyo_rows[2:4]), {"fingerprint": "def"})
    history = list(lance_tables.committed_properties(catalog.table_uri("pairs")))
    fingerprints = [props.get("fingerprint") for _, props in history]
    assert fingerprints[:2] == ["def", "abc"]


def test_user_objects_persist_only_with_write(catalog):
    with pytest.raises(CoyoDbError, match="read-only"):
        catalog.sql("CREATE VIEW answer AS SELECT 42 AS a")
    catalog.sql("CREATE VIEW answer AS SELECT 42 AS a", write=True)
    assert catalog.sql("SELECT a FROM answer")["a"][0].as_py() == 42
    assert "answer" in Catalog(catalog.home).view_names()


def test_view_families_are_created_only_when_their_tables_exist():
    families = sqlfiles.view_families()
    assert families, "the package ships view files"
    for family in families:
        assert family.provides, f"sql/{family.name}.sql defines no view"
        assert "TEMP" in family.text.upper(), f"sql/{family.name}.sql must create TEMP views"
    assert sqlfiles.creatable(set()) == [f for f in families if not f.requires]


def test_every_shipped_view_binds_on_a_catalog_with_its_tables(catalog, coyo_rows):
    catalog.append("pairs", coyo_table(coyo_rows))
    with catalog.connection() as con:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        macros = {
            r[0]
            for r in con.execute(
                "SELECT function_name FROM duckdb_functions() WHERE function_type LIKE '%macro'"
            ).fetchall()
        }
    for family in sqlfiles.creatable({"pairs"}):
        assert set(family.provides) <= views | macros


def test_sql_file_loader_names_unknown_files():
    with pytest.raises(CoyoDbError, match="no SQL file"):
        sqlfiles.load("no_such_family")


def test_catalog_home_layout(catalog: Catalog, coyo_rows):
    catalog.append("pairs", coyo_table(coyo_rows))
    assert (catalog.home / "catalog.duckdb").is_file()
    assert Path(catalog.table_uri("pairs")).is_dir()


def test_float16_vectors_are_queryable_as_float32(catalog):
    import numpy as np

    from coyo_db.catalog.schemas import embeddings_schema

    vectors = np.arange(12, dtype=np.float16).reshape(4, 3) / 8
    table = pa.table(
        {
            "id": pa.array([10, 11, 12, 13], pa.int64()),
            "image_embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 3),
        },
        schema=embeddings_schema(3, None),
    )
    catalog.append("embeddings__toy", table)
    result = catalog.sql(
        "SELECT id, image_embedding AS v, list_sum(image_embedding::FLOAT[]) AS s "
        "FROM embeddings__toy WHERE id >= 12 ORDER BY id"
    )
    assert result["id"].to_pylist() == [12, 13]
    assert result["v"].to_pylist() == vectors[2:].astype(np.float32).tolist()
    assert result["s"].to_pylist() == pytest.approx(vectors[2:].astype(np.float32).sum(1))
    stored = catalog.dataset("embeddings__toy").schema.field("image_embedding").type
    assert stored.value_type == pa.float16(), "storage keeps float16"


def test_queries_can_read_tables_at_an_earlier_version(catalog):
    first = catalog.append("numbers", pa.table({"n": [1, 2]})).version
    catalog.append("numbers", pa.table({"n": [3]}))
    assert catalog.sql("SELECT sum(n) AS s FROM numbers")["s"][0].as_py() == 6
    pinned = catalog.sql("SELECT sum(n) AS s FROM numbers", versions={"numbers": first})
    assert pinned["s"][0].as_py() == 3
    with pytest.raises(CatalogError, match="no version 99"):
        catalog.sql("SELECT 1", versions={"numbers": 99})
    with pytest.raises(CatalogError, match="no table 'nope'"):
        catalog.sql("SELECT 1", versions={"nope": 1})


def test_new_tables_get_the_chosen_lance_format_and_keep_their_own(tmp_path, monkeypatch):
    import lance

    from coyo_db.errors import InputError

    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    rows = pa.table({"id": [1, 2], "text": ["a", "b"]}, schema=schema)

    def staged_version(uri: Path) -> str:
        transaction = lance_tables.stage(uri, rows.to_batches(), schema)
        lance_tables.commit(uri, transaction, {})
        dataset = lance.dataset(str(uri))
        files = {
            (f.file_major_version, f.file_minor_version)
            for fragment in dataset.get_fragments()
            for f in fragment.metadata.data_files()
        }
        assert files == {tuple(int(n) for n in dataset.data_storage_version.split("."))}
        return dataset.data_storage_version

    monkeypatch.delenv(lance_tables.FILE_VERSION_ENV, raising=False)
    assert staged_version(tmp_path / "default.lance") == "2.0"
    monkeypatch.setenv(lance_tables.FILE_VERSION_ENV, "2.1")
    assert staged_version(tmp_path / "small.lance") == "2.1"
    assert staged_version(tmp_path / "default.lance") == "2.0"  # an existing table keeps its own
    assert lance_tables.create_empty(tmp_path / "empty.lance", schema).data_storage_version == "2.1"
    monkeypatch.setenv(lance_tables.FILE_VERSION_ENV, "3.7")
    with pytest.raises(InputError, match="COYO_DB_LANCE_FILE_VERSION"):
        lance_tables.stage(tmp_path / "new.lance", rows.to_batches(), schema)
