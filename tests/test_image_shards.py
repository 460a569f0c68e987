"""Image shard readers: img2dataset webdataset / parquet / files output and plain folders."""

from __future__ import annotations

import json
import logging
import os
import pickle
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from imagedata import (
    Sample,
    cut_tar_at,
    jpeg_bytes,
    make_images,
    make_samples,
    png_bytes,
    truncate_tar,
    write_files_folder,
    write_img2dataset_parquet,
    write_plain_folder,
    write_webdataset,
)

from coyo_db.catalog.ledger import file_fingerprint
from coyo_db.errors import InputError, SourceFileError
from coyo_db.ingest import image_shards
from coyo_db.ingest.image_shards import FolderShard, ParquetShard, TarShard, find_shards

IDS = [7_000_001, 7_000_002, 7_000_003, 7_000_004, 7_000_005]


@pytest.fixture
def samples() -> list[Sample]:
    return make_samples(5, seed=1, ids=IDS)


def _good(records):
    return [r for r in records if r.error is None]


# --- webdataset -------------------------------------------------------------------------------


def test_webdataset_records_carry_keys_urls_captions_and_ids(tmp_path, samples):
    tar = write_webdataset(tmp_path / "00000.tar", samples)
    [shard] = find_shards([tar])
    assert isinstance(shard, TarShard) and shard.kind == "webdataset"
    assert shard.path == str(tar.resolve())
    assert shard.fingerprint == file_fingerprint(tar)
    assert shard.count() == 5  # img2dataset's _stats.json
    records = list(shard.records())
    assert [r.key for r in records] == [s.key for s in samples]
    assert [r.member for r in records] == [f"{s.key}.jpg" for s in samples]
    assert [r.url for r in records] == [s.url for s in samples]
    assert [r.caption for r in records] == [s.caption for s in samples]
    assert [r.meta["id"] for r in records] == IDS
    assert [r.data for r in records] == [s.data for s in samples]
    assert all(r.error is None and r.shard == shard.path for r in records)


def test_webdataset_without_txt_takes_the_caption_from_json(tmp_path, samples):
    tar = write_webdataset(tmp_path / "a.tar", samples, caption=False, sidecars=False)
    [shard] = find_shards([tar])
    assert shard.count() is None  # no _stats.json: unknown without reading
    assert [r.caption for r in shard.records()] == [s.caption for s in samples]


def test_webdataset_other_image_formats(tmp_path):
    image = make_images(1, seed=4)[0]
    samples = [
        Sample("a", png_bytes(image), ext="png"),
        Sample("b", jpeg_bytes(image), ext="jpeg"),
        Sample("c", b"RIFF0000WEBP", ext="webp"),
    ]
    [shard] = find_shards([write_webdataset(tmp_path / "x.tar", samples)])
    records = list(shard.records())
    assert [r.member for r in records] == ["a.png", "b.jpeg", "c.webp"]
    assert records[0].data == samples[0].data


def test_bad_json_gives_empty_meta_and_a_warning(tmp_path, samples, caplog):
    samples[1].json_text = '{"url": "https://exa'
    [shard] = find_shards([write_webdataset(tmp_path / "00000.tar", samples)])
    with caplog.at_level(logging.WARNING):
        records = list(shard.records())
    assert records[1].meta == {} and records[1].error is None
    assert records[1].caption == samples[1].caption  # from the .txt
    assert records[1].url is None
    assert "000000001.json is not valid JSON" in caplog.text
    assert records[2].meta["id"] == IDS[2]


def test_zero_byte_member_and_sample_without_image(tmp_path, samples):
    samples[2].data = b""
    tar = write_webdataset(tmp_path / "00000.tar", samples)
    with tarfile.open(tar, "a") as archive:
        info = tarfile.TarInfo("lonely.json")
        payload = b'{"key": "lonely"}'
        info.size = len(payload)
        import io

        archive.addfile(info, io.BytesIO(payload))
    records = list(find_shards([tar])[0].records())
    assert records[2].error == "zero-byte image" and records[2].member == "000000002.jpg"
    assert records[-1].error == "no image in sample lonely"
    assert records[-1].member == "lonely.json" and records[-1].data is None
    assert len(_good(records)) == 4


@pytest.mark.parametrize("member", [0, 1, 2, 6, 9, 13])
def test_truncated_tar_yields_what_came_before_then_one_error(tmp_path, samples, member):
    tar = write_webdataset(tmp_path / "00000.tar", samples, sidecars=False)
    with tarfile.open(tar) as archive:
        name = archive.getmembers()[member].name  # jpg, json, txt per sample
    truncate_tar(tar, member)
    records = list(find_shards([tar])[0].records())
    broken_sample = member // 3
    assert [r.key for r in records] == [s.key for s in samples[: broken_sample + 1]]
    assert all(r.error is None for r in records[:-1])
    assert [r.data for r in records[:-1]] == [s.data for s in samples[:broken_sample]]
    assert records[-1].error == f"truncated tar member {name}"
    assert records[-1].data is None


def test_tar_cut_inside_a_header_names_the_member(tmp_path, samples):
    tar = write_webdataset(tmp_path / "00000.tar", samples, sidecars=False)
    with tarfile.open(tar) as archive:
        third = archive.getmembers()[6]  # 000000002.jpg
    cut_tar_at(tar, third.offset + 200)
    records = list(find_shards([tar])[0].records())
    assert [r.error for r in records[:2]] == [None, None]
    assert records[2].error == "truncated tar member 000000002.jpg"
    assert records[2].key == "000000002" and len(records) == 3


def test_tar_cut_between_samples_keeps_every_whole_sample(tmp_path, samples, caplog):
    tar = write_webdataset(tmp_path / "00000.tar", samples, sidecars=False)
    with tarfile.open(tar) as archive:
        fourth_sample = archive.getmembers()[9]
    cut_tar_at(tar, fourth_sample.offset)
    with caplog.at_level(logging.WARNING):
        records = list(find_shards([tar])[0].records())
    assert [r.key for r in records] == [s.key for s in samples[:3]]
    assert all(r.error is None for r in records)
    assert "no end-of-archive marker" in caplog.text


def test_records_stream_lazily(tmp_path, samples):
    tar = write_webdataset(tmp_path / "00000.tar", samples, sidecars=False)
    # Garbage after the first samples: the first records come out before it is reached.
    with tarfile.open(tar) as archive:
        cut = archive.getmembers()[6].offset
    with tar.open("r+b") as fh:
        fh.seek(cut)
        fh.write(b"\x07" * 512)
    iterator = find_shards([tar])[0].records()
    first = next(iterator)
    assert first.key == samples[0].key and first.error is None
    rest = list(iterator)
    assert rest[0].key == samples[1].key and rest[0].error is None
    assert rest[-1].error == f"corrupt tar header at byte {cut}"
    assert rest[-1].member == f"@{cut}" and len(rest) == 2


# --- img2dataset parquet ----------------------------------------------------------------------


def test_parquet_with_image_bytes(tmp_path, samples):
    samples[3] = Sample(
        samples[3].key, None, url="https://dead.example/x.jpg", error_message="HTTP 404"
    )
    path = write_img2dataset_parquet(tmp_path / "00000.parquet", samples)
    [shard] = find_shards([path])
    assert isinstance(shard, ParquetShard) and shard.kind == "parquet"
    assert shard.count() == 5 and shard.fingerprint == file_fingerprint(path)
    records = list(shard.records())
    assert [r.member for r in records] == ["0", "1", "2", "3", "4"]
    assert [r.key for r in records] == [s.key for s in samples]
    assert [r.url for r in records] == [s.url for s in samples]
    assert records[0].caption == samples[0].caption and records[0].data == samples[0].data
    assert [r.meta.get("id") for r in records] == [*IDS[:3], None, IDS[4]]
    assert "jpg" not in records[0].meta
    assert records[3].error == "img2dataset: HTTP 404" and records[3].data is None
    assert [r.error for r in records if r.member != "3"] == [None] * 4


def test_parquet_failed_row_without_message_and_other_image_columns(tmp_path, samples):
    samples[0].data = None
    path = write_img2dataset_parquet(tmp_path / "p.parquet", samples, image_column="image")
    records = list(find_shards([path])[0].records())
    assert records[0].error == "img2dataset: status failed_to_download"
    assert records[1].data == samples[1].data


def test_parquet_with_a_hugging_face_image_struct(tmp_path, samples):
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": s.data, "path": f"{s.key}.jpg"} for s in samples],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "caption": [s.caption for s in samples],
        }
    )
    pq.write_table(table, tmp_path / "hf.parquet")
    records = list(find_shards([tmp_path / "hf.parquet"])[0].records())
    assert [r.data for r in records] == [s.data for s in samples]
    assert [r.key for r in records] == ["0", "1", "2", "3", "4"]  # no key column: row number
    assert records[2].caption == samples[2].caption


def test_coyo_metadata_parquet_is_not_an_image_shard(coyo_parquet):
    with pytest.raises(SourceFileError, match=r"without image bytes.*coyo-db ingest metadata"):
        find_shards([coyo_parquet])


def test_img2dataset_metadata_parquet_points_to_its_tar(tmp_path, samples):
    write_webdataset(tmp_path / "00000.tar", samples)
    with pytest.raises(SourceFileError, match=r"img2dataset's metadata for 00000.tar"):
        find_shards([tmp_path / "00000.parquet"])


# --- files and plain folders ------------------------------------------------------------------


def test_files_folders_are_one_shard_each_and_sidecars_are_skipped(tmp_path):
    write_files_folder(tmp_path, make_samples(3, seed=2, ids=IDS[:3]), shard=0)
    write_files_folder(tmp_path, make_samples(2, seed=3, ids=IDS[3:], start=3), shard=1)
    shards = find_shards([tmp_path])
    assert [Path(s.path).name for s in shards] == ["00000", "00001"]
    assert {s.kind for s in shards} == {"files"}
    assert [s.count() for s in shards] == [3, 2]
    records = [r for s in shards for r in s.records()]
    assert [r.meta["id"] for r in records] == IDS
    assert [r.member for r in records[:2]] == ["000000000.jpg", "000000001.jpg"]
    assert records[3].key == "000000003" and records[3].caption == "picture number 3"
    assert records[3].url == "https://example.com/images/3.jpg"


def test_plain_folder_recursive_one_shard_per_directory(tmp_path):
    images = make_images(4, seed=5)
    root = write_plain_folder(
        tmp_path / "pics",
        {
            "b.jpg": jpeg_bytes(images[0]),
            "a.png": png_bytes(images[1]),
            "a.txt": b"a caption\n",
            "notes.md": b"not an image",
            ".hidden.jpg": b"junk",
            "._b.jpg": b"AppleDouble",
            "cats/c.webp": jpeg_bytes(images[2]),
            "cats/empty.jpg": b"",
            ".cache/d.jpg": jpeg_bytes(images[3]),
        },
    )
    shards = find_shards([root])
    assert [(Path(s.path).name, s.kind) for s in shards] == [("pics", "folder"), ("cats", "folder")]
    top, cats = ([*s.records()] for s in shards)
    assert [(r.member, r.key) for r in top] == [("a.png", "a"), ("b.jpg", "b")]
    assert top[0].caption == "a caption" and top[1].caption is None
    assert [r.member for r in cats] == ["c.webp", "empty.jpg"]
    assert cats[1].error == "zero-byte image" and cats[0].error is None


def test_huge_folder_is_cut_into_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(image_shards, "FOLDER_SHARD_FILES", 3)
    data = jpeg_bytes(make_images(1)[0])
    root = write_plain_folder(tmp_path / "big", {f"{i:03d}.jpg": data for i in range(7)})
    shards = find_shards([root])
    assert [s.path for s in shards] == [f"{root.resolve()}#{i}" for i in range(3)]
    assert [s.count() for s in shards] == [3, 3, 1]
    members = [r.member for s in shards for r in s.records()]
    assert members == [f"{i:03d}.jpg" for i in range(7)]
    assert len({s.fingerprint for s in shards[:2]}) == 2


def test_folder_fingerprint_follows_content_not_place(tmp_path):
    data = jpeg_bytes(make_images(1)[0])
    first = write_plain_folder(tmp_path / "one", {"x.jpg": data, "y.jpg": data})
    before = find_shards([first])[0].fingerprint
    assert find_shards([first])[0].fingerprint == before  # stable
    stamp = os.stat(first / "x.jpg").st_mtime_ns
    os.utime(first / "x.jpg", ns=(stamp, stamp + 10**9))
    assert find_shards([first])[0].fingerprint == before  # a new mtime is the same content
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    (first / "y.jpg").write_bytes(bytes(flipped))
    assert find_shards([first])[0].fingerprint != before  # one bit, same size


def test_img2dataset_output_folder_mixing_tars_and_parquet(tmp_path, samples):
    write_webdataset(tmp_path / "out" / "00000.tar", samples[:3])
    write_img2dataset_parquet(tmp_path / "out" / "00001.parquet", samples[3:])
    shards = find_shards([tmp_path / "out"])
    assert [(Path(s.path).name, s.kind) for s in shards] == [
        ("00000.tar", "webdataset"),
        ("00001.parquet", "parquet"),
    ]
    assert sum(len(list(s.records())) for s in shards) == 5


# --- paths ------------------------------------------------------------------------------------


def test_globs_and_duplicates(tmp_path, samples):
    for i in range(3):
        write_webdataset(tmp_path / f"{i:05d}.tar", samples)
    shards = find_shards([str(tmp_path / "*"), tmp_path / "00001.tar"])
    assert [Path(s.path).name for s in shards] == ["00000.tar", "00001.tar", "00002.tar"]


def test_path_errors(tmp_path, samples):
    with pytest.raises(InputError, match=r"nowhere\.tar: no such file or folder"):
        find_shards([tmp_path / "nowhere.tar"])
    with pytest.raises(InputError, match="no files match"):
        find_shards([str(tmp_path / "*.tar")])
    with pytest.raises(InputError, match="at least one"):
        find_shards([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image shards in this folder"):
        find_shards([tmp_path / "empty"])
    (tmp_path / "zero.tar").write_bytes(b"")
    with pytest.raises(SourceFileError, match=r"zero\.tar: is empty"):
        find_shards([tmp_path / "zero.tar"])
    (tmp_path / "page.tar").write_text("<!DOCTYPE html><html>login</html>" + " " * 600)
    with pytest.raises(SourceFileError, match="HTML page"):
        find_shards([tmp_path / "page.tar"])
    (tmp_path / "photo.jpg").write_bytes(samples[0].data)
    with pytest.raises(SourceFileError, match=r"is an image file: give .*a folder"):
        find_shards([tmp_path / "photo.jpg"])


def test_shards_and_records_pickle(tmp_path, samples):
    tar = write_webdataset(tmp_path / "00000.tar", samples)
    root = write_plain_folder(tmp_path / "pics", {"a.jpg": samples[0].data})
    for shard in find_shards([tar, root]):
        shard.fingerprint  # noqa: B018 - cached before pickling
        clone = pickle.loads(pickle.dumps(shard))
        assert clone == shard and clone.fingerprint == shard.fingerprint
        assert list(clone.records()) == list(shard.records())
    record = next(find_shards([tar])[0].records())
    assert pickle.loads(pickle.dumps(record)) == record
    assert isinstance(FolderShard, type)


def test_meta_keeps_every_json_field(tmp_path):
    sample = Sample("k1", jpeg_bytes(make_images(1)[0]), extra={"id": 5, "clip_sim": 0.31})
    records = list(find_shards([write_webdataset(tmp_path / "a.tar", [sample])])[0].records())
    assert records[0].meta == json.loads(json.dumps(sample.meta()))
