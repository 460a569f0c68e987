"""Parquet files of an export: row groups, file splits, order across encoding lanes,
encodings chosen per column, errors from the writing threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coyo_db.export import writers


def _batches(rows: int, size: int) -> list[pa.RecordBatch]:
    ids = np.arange(rows, dtype=np.int64)
    table = pa.table(
        {
            "id": ids,
            "url": [f"https://example.com/{i}.jpg" for i in ids],
            "width": (ids % 3 * 100).astype(np.int32),
        }
    )
    return table.to_batches(max_chunksize=size)


@pytest.mark.parametrize("lanes", [0, 1, 2, 3])
def test_small_batches_make_full_row_groups_in_order_across_files(tmp_path, monkeypatch, lanes):
    monkeypatch.setattr(writers, "ROW_GROUP_ROWS", 1000)
    batches = _batches(10_500, 37)  # a query's stream: many small batches
    pools = [ThreadPoolExecutor(1) for _ in range(lanes)]
    try:
        files = writers.ParquetFiles(tmp_path, 4000, pools)
        for batch in batches:
            files.write(batch)
        written = files.finish(batches[0].schema)
    finally:
        for pool in pools:
            pool.shutdown()
    assert [(f.path, f.rows) for f in written] == [
        ("part-00000.parquet", 4000),
        ("part-00001.parquet", 4000),
        ("part-00002.parquet", 2500),
    ]
    ids = []
    for f in written:
        meta = pq.ParquetFile(tmp_path / f.path).metadata
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert all(g >= 1000 for g in groups[:-1]) and sum(groups) == f.rows
        assert f.bytes == (tmp_path / f.path).stat().st_size
        ids += pq.read_table(tmp_path / f.path)["id"].to_pylist()
    assert ids == list(range(10_500))


def test_dictionaries_only_for_columns_whose_values_repeat():
    table = pa.Table.from_batches(_batches(5000, 5000))
    assert writers.dictionary_columns(table) == ["width"]
    with_nulls = pa.table({"caption": pa.array([None] * 7 + ["a"] * 3, pa.string())})
    assert writers.dictionary_columns(with_nulls) == ["caption"]


def test_an_empty_export_gets_one_file_with_the_schema(tmp_path):
    schema = _batches(1, 1)[0].schema
    with ThreadPoolExecutor(1) as pool:
        written = writers.ParquetFiles(tmp_path, 10, [pool]).finish(schema)
    assert [(f.path, f.rows) for f in written] == [("part-00000.parquet", 0)]
    assert pq.read_schema(tmp_path / "part-00000.parquet").names == schema.names


def test_an_error_on_a_writing_thread_reaches_the_caller(tmp_path):
    batches = _batches(3000, 100)
    with ThreadPoolExecutor(1) as pool:
        files = writers.ParquetFiles(tmp_path / "gone", 1000, [pool])  # no such folder
        with pytest.raises(OSError):
            for batch in batches:
                files.write(batch)
            files.finish(batches[0].schema)
