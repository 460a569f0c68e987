"""Reading ingested images back from their shards by (shard, member)."""

from __future__ import annotations

import random

from imagedata import (
    jpeg_bytes,
    make_images,
    make_samples,
    write_files_folder,
    write_img2dataset_parquet,
    write_plain_folder,
    write_webdataset,
)

from coyo_db.ingest.image_fetch import fetch_images
from coyo_db.ingest.image_shards import find_shards


def test_every_shard_kind_gives_back_the_bytes_it_recorded(tmp_path):
    samples = make_samples(9, seed=3)
    write_webdataset(tmp_path / "wds" / "00000.tar", samples)
    write_img2dataset_parquet(tmp_path / "pq" / "00000.parquet", samples)
    write_files_folder(tmp_path / "files", samples)
    write_plain_folder(
        tmp_path / "plain", {f"sub/{i}.jpg": jpeg_bytes(im) for i, im in enumerate(make_images(4))}
    )
    records = [r for shard in find_shards([tmp_path]) for r in shard.records()]
    assert len(records) == 3 * 9 + 4
    random.Random(0).shuffle(records)  # callers ask in any order; answers keep their index
    fetched = list(fetch_images((r.shard, r.member) for r in records))
    assert sorted(f.index for f in fetched) == list(range(len(records)))
    for image in fetched:
        record = records[image.index]
        assert (image.shard, image.member) == (record.shard, record.member)
        assert image.error is None and image.data == record.data


def test_missing_members_and_shards_come_back_with_a_reason(tmp_path):
    tar = write_webdataset(tmp_path / "00000.tar", make_samples(2))
    fetched = list(
        fetch_images(
            [
                (str(tar), "000000001.jpg"),
                (str(tar), "nope.jpg"),
                (str(tmp_path / "gone"), "a.jpg"),
                (str(tmp_path), "missing.jpg"),
            ]
        )
    )
    by_index = {f.index: f for f in fetched}
    assert by_index[0].data and by_index[0].error is None
    assert by_index[1].data is None and "not found" in by_index[1].error
    assert by_index[2].error == "shard no longer exists"
    assert by_index[3].error.startswith("unreadable file")
