"""img2dataset's failed downloads: for webdataset and files output, the per-shard metadata
Parquet lists every sample with its status; the failed ones land in `quarantine` with
img2dataset's reason, as they do for its parquet output, and the summary counts them."""

from __future__ import annotations

import logging

import pytest
from imagedata import (
    Sample,
    make_samples,
    write_files_folder,
    write_img2dataset_parquet,
    write_webdataset,
)

from coyo_db.catalog import Catalog
from coyo_db.ingest.image_shards import find_shards
from coyo_db.ingest.images import ingest_images

IDS = [8_000_001, 8_000_002, 8_000_003, 8_000_004, 8_000_005, 8_000_006]


@pytest.fixture
def samples() -> list[Sample]:
    samples = make_samples(6, seed=5, ids=IDS)
    samples[1].data = None
    samples[1].error_message = "HTTP Error 404: Not Found"
    samples[4].data = None  # failed without a message
    samples[4].extra["status"] = "failed_to_resize"
    return samples


def _failed(records):
    return [r for r in records if r.error is not None]


def test_a_tar_shard_yields_its_failed_samples_after_its_images(tmp_path, samples):
    [shard] = find_shards([write_webdataset(tmp_path / "00000.tar", samples)])
    assert shard.count() == 6  # _stats.json's count: successes and failures
    records = list(shard.records())
    assert [r.key for r in records] == [s.key for s in samples if s.data] + [
        "000000001",
        "000000004",
    ]
    good, failed = records[:4], _failed(records)
    assert all(r.error is None and r.data for r in good)
    assert [r.error for r in failed] == [
        "img2dataset: HTTP Error 404: Not Found",
        "img2dataset: status failed_to_resize",
    ]
    assert [r.meta["id"] for r in failed] == [IDS[1], IDS[4]]
    assert [r.member for r in failed] == ["00000.parquet#1", "00000.parquet#4"]
    assert all(r.shard == shard.path and r.data is None for r in failed)
    assert [r.url for r in failed] == [samples[1].url, samples[4].url]


def test_the_reasons_are_those_of_the_parquet_format(tmp_path, samples):
    [tar] = find_shards([write_webdataset(tmp_path / "00000.tar", samples)])
    [parquet] = find_shards([write_img2dataset_parquet(tmp_path / "p" / "x.parquet", samples)])
    from_tar = {r.key: r.error for r in _failed(tar.records())}
    from_parquet = {r.key: r.error for r in _failed(parquet.records())}
    assert from_tar == from_parquet and len(from_tar) == 2


def test_a_files_folder_yields_its_failed_samples(tmp_path, samples):
    folder = write_files_folder(tmp_path / "files", samples)
    [shard] = find_shards([tmp_path / "files"])
    assert shard.kind == "files" and shard.path == str(folder.resolve())
    assert shard.count() == 6
    failed = _failed(shard.records())
    assert [r.error for r in failed] == [
        "img2dataset: HTTP Error 404: Not Found",
        "img2dataset: status failed_to_resize",
    ]


def test_without_metadata_parquet_nothing_is_added(tmp_path, samples):
    [shard] = find_shards([write_webdataset(tmp_path / "00000.tar", samples, sidecars=False)])
    records = list(shard.records())
    assert len(records) == 4 and not _failed(records)
    assert shard.count() is None


@pytest.mark.parametrize("damage", ["footer", "pages"])
def test_unreadable_metadata_is_skipped_with_a_warning(tmp_path, samples, caplog, damage):
    tar = write_webdataset(tmp_path / "00000.tar", samples)
    metadata = tmp_path / "00000.parquet"
    data = metadata.read_bytes()
    if damage == "footer":
        metadata.write_bytes(data[:-12] + b"\xff" * 4 + data[-8:])
    else:  # the first data page's bytes, footer intact
        metadata.write_bytes(data[:4] + b"\xff" * 200 + data[204:])
    [shard] = find_shards([tar])
    with caplog.at_level(logging.WARNING):
        records = list(shard.records())
    assert len(records) == 4 and not _failed(records)  # the shard itself is fine
    assert "00000.parquet" in caplog.text and "failed downloads" in caplog.text


def test_ingest_quarantines_failed_downloads_and_counts_them(tmp_path, samples):
    write_webdataset(tmp_path / "shards" / "00000.tar", samples)
    more = make_samples(3, seed=6, ids=[8_100_001, 8_100_002, 8_100_003], start=10)
    more[2].data = None
    more[2].error_message = "timed out"
    write_files_folder(tmp_path / "files", more)
    catalog = Catalog(tmp_path / "home", create=True)
    summary = ingest_images(catalog, [tmp_path / "shards", tmp_path / "files"], workers=0)
    assert (summary.rows_read, summary.rows_written, summary.rows_quarantined) == (9, 6, 3)
    assert "3 quarantined" in summary.line()
    rows = catalog.sql("SELECT id, reason, input FROM quarantine ORDER BY id").to_pylist()
    assert [(r["id"], r["reason"]) for r in rows] == [
        (IDS[1], "img2dataset: HTTP Error 404: Not Found"),
        (IDS[4], "img2dataset: status failed_to_resize"),
        (8_100_003, "img2dataset: timed out"),
    ]
    assert rows[0]["input"].endswith("00000.tar") and rows[2]["input"].endswith("00000")
    # a second run skips both shards and quarantines nothing twice
    again = ingest_images(catalog, [tmp_path / "shards", tmp_path / "files"], workers=0)
    assert again.rows_read == 0
    assert catalog.sql("SELECT count(*) AS n FROM quarantine")["n"][0].as_py() == 3
