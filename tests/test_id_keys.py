"""Ids are keys: `pairs` and `images` hold each id once, whatever file or shard brings it again.

The check (:mod:`coyo_db.catalog.id_keys`) is a Bloom filter saved beside the catalog plus an
exact lookup of its candidates; these tests hold it to "exact" through re-saved files,
re-downloaded shards, a killed run whose filter was never saved, and a recreated table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import coyo_table
from imagedata import make_samples, write_webdataset

from coyo_db.catalog import Catalog
from coyo_db.catalog.id_keys import BloomFilter, IdKeys
from coyo_db.ingest.images import ingest_images
from coyo_db.ingest.metadata import ingest_metadata


def test_the_filter_has_no_false_negatives_and_few_false_positives():
    rng = np.random.default_rng(0)
    bloom = BloomFilter(200_000)
    added = rng.integers(-(2**63), 2**63 - 1, 200_000, dtype=np.int64)
    for part in np.array_split(added, 7):  # ids sharing a word within one call all get in
        bloom.add(part)
    assert bloom.maybe(added).all()
    others = rng.integers(-(2**63), 2**63 - 1, 200_000, dtype=np.int64)
    assert bloom.maybe(others).mean() < 0.005


def test_add_absent_adds_exactly_what_maybe_rules_out():
    rng = np.random.default_rng(1)
    first = rng.integers(-(2**63), 2**63 - 1, 50_000, dtype=np.int64)
    one, two = BloomFilter(100_000), BloomFilter(100_000)
    one.add(first)
    two.add(first)
    later = np.unique(np.r_[first[:20_000], rng.integers(0, 2**40, 30_000, dtype=np.int64)])
    expected = one.maybe(later)
    one.add(later[~expected])
    assert (two.add_absent(later) == expected).all()
    assert (one.words == two.words).all() and one.count == two.count
    assert two.maybe(later).all()


def _keyed_table(catalog: Catalog, ids: np.ndarray) -> None:
    catalog.append("keyed", pa.table({"id": pa.array(ids, pa.int64())}))


def test_present_is_exact_and_survives_a_run_that_never_saved(catalog):
    keys = IdKeys(catalog, "keyed")
    first = np.arange(0, 3000, 3, dtype=np.int64)
    assert not keys.present(first).any()
    keys.add(first)
    _keyed_table(catalog, first)
    keys.committed()
    probe = np.arange(0, 3000, dtype=np.int64)
    assert (keys.present(probe) == (probe % 3 == 0)).all()
    # killed here: close() never ran, the filter on disk knows nothing of these ids
    second = np.arange(1, 3000, 3, dtype=np.int64)
    _keyed_table(catalog, second)  # committed by a run whose filter was never saved
    again = IdKeys(catalog, "keyed")
    assert (again.present(probe) == (probe % 3 != 2)).all()
    again.close()
    third = IdKeys(catalog, "keyed")
    assert (third.present(probe) == (probe % 3 != 2)).all()


def test_index_extended_in_the_background_keeps_lookups_exact(catalog, monkeypatch):
    """committed(wait=False): lookups while the index is being extended read the new rows
    without it and stay exact; settle() waits and hands on what the extension raised."""
    import coyo_db.catalog.id_keys as id_keys

    monkeypatch.setattr(id_keys, "MIN_CAPACITY", 100)
    monkeypatch.setattr(id_keys, "INDEX_TAIL_ROWS", 1000)  # indexed once 1000 rows lack it
    keys = IdKeys(catalog, "keyed")
    keys.reserve(3000)
    assert keys.bloom.capacity >= 3000

    def unindexed() -> int | None:
        dataset = catalog.dataset("keyed")
        if not any(i["fields"] == ["id"] for i in dataset.list_indices()):
            return None
        return dataset.stats.index_stats("id_idx")["num_unindexed_rows"]

    tails = []
    for start in range(0, 4000, 1000):
        ids = np.arange(start, start + 1000, 2, dtype=np.int64)
        assert not keys.present(ids).any()
        keys.add(ids)
        keys.settle()
        _keyed_table(catalog, ids)
        keys.committed(wait=False)
        probe = np.arange(0, start + 1000, dtype=np.int64)
        assert (keys.present(probe) == (probe % 2 == 0)).all()
        keys.settle()
        tails.append(unindexed())
    # no index under 1000 rows; then a delta only once 1000 rows lack it; lookups exact
    assert tails == [None, 0, 500, 0]

    def broken(self):
        raise OSError("index write failed")

    monkeypatch.setattr(IdKeys, "_extend_index", broken)
    keys.committed(wait=False)
    with pytest.raises(OSError, match="index write failed"):
        keys.settle()
    keys.settle()  # raised once
    keys.close()


def test_the_filter_grows_past_its_capacity_without_losing_ids(catalog, monkeypatch):
    import coyo_db.catalog.id_keys as id_keys

    monkeypatch.setattr(id_keys, "MIN_CAPACITY", 100)
    keys = IdKeys(catalog, "keyed")
    for start in range(0, 1000, 250):
        ids = np.arange(start, start + 250, dtype=np.int64)
        assert not keys.present(ids).any()
        keys.add(ids)
        _keyed_table(catalog, ids)
        keys.committed()
    assert keys.bloom.capacity >= 1000
    assert keys.present(np.arange(1000, dtype=np.int64)).all()


def test_a_file_of_many_batches_that_outgrows_the_filter_keeps_them_all(
    tmp_path, coyo_rows, monkeypatch
):
    """Ids added for rows not committed yet (the earlier batches of one file) survive the
    filter's rebuild, which reads the table: a second copy of the file writes nothing."""
    import coyo_db.catalog.id_keys as id_keys

    monkeypatch.setattr(id_keys, "MIN_CAPACITY", 64)
    table = coyo_table(coyo_rows)
    many = pa.concat_tables([table] * 60)
    many = many.set_column(0, "id", pa.array(np.arange(len(many), dtype=np.int64)))
    path, copy = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(many, path, row_group_size=50)
    pq.write_table(many, copy, row_group_size=50, compression="zstd")
    catalog = Catalog.init(tmp_path / "home")
    first = ingest_metadata(catalog, [path], batch_size=50)
    assert first.rows_written == len(many)
    again = ingest_metadata(catalog, [copy], batch_size=50)
    assert (again.rows_written, again.quarantine_reasons) == (0, {"duplicate id": len(many)})


def test_a_filter_saved_for_a_bigger_table_is_rebuilt(tmp_path):
    catalog = Catalog.init(tmp_path / "home")
    _keyed_table(catalog, np.arange(10, dtype=np.int64))
    _keyed_table(catalog, np.arange(10, 20, dtype=np.int64))
    IdKeys(catalog, "keyed").close()
    import shutil

    shutil.rmtree(catalog.table_uri("keyed"))  # the table made again from scratch
    _keyed_table(catalog, np.arange(100, 105, dtype=np.int64))
    keys = IdKeys(catalog, "keyed")
    probe = np.arange(120, dtype=np.int64)
    assert (keys.present(probe) == ((probe >= 100) & (probe < 105))).all()


def test_rows_resaved_under_another_name_are_quarantined_not_doubled(tmp_path, coyo_rows):
    catalog = Catalog.init(tmp_path / "home")
    table = coyo_table(coyo_rows)
    pq.write_table(table.slice(0, 7), tmp_path / "a.parquet")
    pq.write_table(table.slice(4), tmp_path / "b.parquet", compression="zstd")  # 3 overlap
    ingest_metadata(catalog, [tmp_path / "a.parquet"])
    second = ingest_metadata(catalog, [tmp_path / "b.parquet"])

    assert (second.rows_written, second.rows_quarantined) == (4, 3)
    assert second.quarantine_reasons == {"duplicate id": 3}
    counts = catalog.sql("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM pairs")
    assert counts.to_pylist() == [{"n": 11, "ids": 11}]
    rows = catalog.sql("SELECT input, id FROM quarantine ORDER BY id").to_pylist()
    overlap = sorted(r["id"] for r in coyo_rows[4:7])
    assert [r["id"] for r in rows] == overlap
    assert {r["input"] for r in rows} == {str(tmp_path / "b.parquet")}


def test_held_back_duplicates_keep_their_file_rows_and_the_rest_is_written(tmp_path, coyo_rows):
    """Rows the filter cannot rule out are held back and settled together (several times in
    a file, as held rows pass a batch): each duplicate is quarantined at its own row of the
    file with its own record, every other row is written once, bad rows keep their rows."""
    import json

    catalog = Catalog.init(tmp_path / "home")
    template = coyo_table(coyo_rows)
    many = pa.concat_tables([template] * (3000 // template.num_rows + 1)).slice(0, 3000)
    many = many.set_column(0, "id", pa.array(np.arange(3000) * 7 + 11, pa.int64()))
    pq.write_table(many.slice(0, 1500), tmp_path / "a.parquet")
    second = many.slice(1000)  # rows 0-499 of b repeat a's last 500
    order = np.random.default_rng(3).permutation(second.num_rows)  # duplicates spread out
    second = second.take(order)
    width = second.column("width").to_pylist()
    width[5] = -1  # one row bad for another reason
    second = second.set_column(second.schema.get_field_index("width"), "width", pa.array(width))
    pq.write_table(second, tmp_path / "b.parquet", row_group_size=256)
    ingest_metadata(catalog, [tmp_path / "a.parquet"])
    summary = ingest_metadata(catalog, [tmp_path / "b.parquet"], batch_size=128)

    ids_b = second.column("id").to_numpy()
    duplicate_rows = np.flatnonzero(ids_b < 1500 * 7 + 11)
    assert summary.quarantine_reasons["duplicate id"] == len(duplicate_rows) == 500
    rows = catalog.sql(
        "SELECT row_index, id, reason, record FROM quarantine ORDER BY row_index"
    ).to_pylist()
    dup = [r for r in rows if r["reason"] == "duplicate id"]
    assert [r["row_index"] for r in dup] == duplicate_rows.tolist()
    assert all(r["id"] == ids_b[r["row_index"]] for r in dup)
    assert all(json.loads(r["record"])["id"] == r["id"] for r in dup)
    assert any(r["row_index"] == 5 and r["reason"] != "duplicate id" for r in rows)
    counts = catalog.sql("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM pairs")
    assert 5 not in duplicate_rows
    assert counts.to_pylist() == [{"n": 2999, "ids": 2999}]


def test_a_killed_ingest_then_a_copy_of_its_file_still_holds_each_id_once(tmp_path, coyo_rows):
    home = tmp_path / "home"
    Catalog.init(home)
    table = coyo_table(coyo_rows)
    pq.write_table(table, tmp_path / "a.parquet")
    pq.write_table(table, tmp_path / "copy.parquet", compression="zstd")
    script = textwrap.dedent(
        f"""
        from coyo_db.catalog import Catalog
        from coyo_db.ingest.metadata import ingest_metadata
        ingest_metadata(Catalog({str(home)!r}), [{str(tmp_path / "a.parquet")!r}])
        """
    )
    env = {**os.environ, "COYO_DB_CRASH_AT": "ledger.after_table_commit"}
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert killed.returncode == 137, killed.stderr.decode()

    catalog = Catalog(home)
    summary = ingest_metadata(catalog, [tmp_path / "copy.parquet"])
    assert summary.rows_written == 0 and summary.rows_quarantined == len(coyo_rows)
    assert catalog.sql("SELECT count(*) AS n FROM pairs").to_pylist() == [{"n": len(coyo_rows)}]


@pytest.fixture
def shard(tmp_path):
    return write_webdataset(
        tmp_path / "shards" / "00000.tar", make_samples(6, seed=4, ids=range(70, 76))
    )


def test_a_redownloaded_shard_is_skipped_and_counted(tmp_path, shard):
    catalog = Catalog.init(tmp_path / "home")
    ingest_images(catalog, [shard], embed=["effnet-lite0"], workers=0)
    # the same images fetched again: other JPEG bytes, same ids, another file
    again = write_webdataset(
        tmp_path / "again" / "00000.tar", make_samples(6, seed=5, ids=range(70, 76))
    )
    summary = ingest_images(catalog, [again], embed=["effnet-lite0"], workers=0)

    assert summary.rows_written == 0
    assert summary.quarantine_reasons == {"duplicate id": 6}
    for table in ("images", "embeddings__effnet_lite0"):
        counts = catalog.sql(f"SELECT count(*) AS n, count(DISTINCT id) AS ids FROM {table}")
        assert counts.to_pylist() == [{"n": 6, "ids": 6}], table
    reasons = catalog.sql("SELECT DISTINCT reason FROM quarantine").column(0).to_pylist()
    assert reasons == ["duplicate id"]


def test_the_same_id_twice_in_one_shard_is_written_once(tmp_path):
    samples = make_samples(4, seed=6, ids=[81, 82, 81, 83])
    path = write_webdataset(tmp_path / "00000.tar", samples)
    catalog = Catalog.init(tmp_path / "home")
    summary = ingest_images(catalog, [path], scores=["language"], workers=0)
    assert summary.rows_written == 3
    ids = catalog.sql("SELECT id FROM images ORDER BY id").column(0).to_pylist()
    assert ids == [81, 82, 83]
    scored = catalog.sql(
        "SELECT count(*) AS n, count(DISTINCT (id, score)) AS keys, count(DISTINCT id) AS ids "
        "FROM scores"
    ).to_pylist()[0]
    assert scored["n"] == scored["keys"] and scored["ids"] == 3
