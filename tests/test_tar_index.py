"""The tar member index behind image reads: same offsets as tarfile, every header format
webdataset writers produce, cut-short and damaged shards, a changed file re-indexed."""

from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

import pytest

from coyo_db.ingest.image_fetch import fetch_images
from coyo_db.ingest.tar_index import read_member, tar_members


def _write(path, members, fmt=tarfile.PAX_FORMAT):
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            if data is None:  # a directory
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def _tarfile_index(path):
    index = {}
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            if m.isfile():
                index.setdefault(m.name, (m.offset_data, m.size))
    return index


MEMBERS = [
    ("dir", None),
    ("dir/000001.jpg", b"\xff\xd8" + bytes(range(256)) * 3),
    ("dir/000001.json", b'{"key": "000001"}'),
    ("d" * 60 + "/" + "n" * 70 + ".jpg", b"long ustar name with a prefix"),
    ("x" * 150 + ".jpg", b"a name too long for any ustar header"),
    ("café/ünïcode-名前.png", b"\x89PNG non-ascii"),
    ("empty.txt", b""),
    ("dir/000001.jpg", b"a second member of the same name"),
]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_the_index_gives_the_offsets_tarfile_gives_in_every_format(tmp_path, fmt):
    members = MEMBERS
    if fmt == tarfile.USTAR_FORMAT:  # ustar holds neither long nor non-ASCII names
        members = [m for m in MEMBERS if len(m[0]) < 150 and m[0].isascii()]
    path = _write(tmp_path / "shard.tar", members, fmt)
    index = tar_members(path)
    assert index == _tarfile_index(path)
    assert read_member(path, *index["dir/000001.jpg"]) == MEMBERS[1][1]  # the first of two
    for name, data in members:
        if data is not None and name != "dir/000001.jpg":
            assert read_member(path, *index[name]) == data


def test_a_changed_shard_is_indexed_again(tmp_path):
    path = _write(tmp_path / "shard.tar", MEMBERS[:3])
    assert set(tar_members(path)) == {"dir/000001.jpg", "dir/000001.json"}
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo("000002.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"new"))
    assert read_member(path, *tar_members(path)["000002.jpg"]) == b"new"


def test_a_shard_cut_short_keeps_its_whole_members(tmp_path):
    path = _write(tmp_path / "shard.tar", [(f"{i:03d}.jpg", os.urandom(3000)) for i in range(5)])
    whole = tar_members(path)
    cut = whole["003.jpg"][0] + 100  # inside the fourth member's data
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    index = tar_members(path)
    assert set(index) == {"000.jpg", "001.jpg", "002.jpg"}
    fetched = list(fetch_images([(path, "001.jpg"), (path, "003.jpg")]))
    assert fetched[0].data is not None and fetched[1].data is None
    assert fetched[1].error


def test_a_file_that_is_no_tar_raises_and_fetches_report_it(tmp_path):
    path = tmp_path / "page.tar"
    path.write_bytes(b"<!doctype html>" + b"x" * 2000)
    with pytest.raises(tarfile.TarError):
        tar_members(str(path))
    (fetched,) = fetch_images([(str(path), "000.jpg")])
    assert fetched.data is None and fetched.error


def test_damaged_headers_never_give_bytes_of_another_member(tmp_path):
    members = [(f"{i:03d}.jpg", bytes([i]) * (700 + i)) for i in range(12)]
    clean = _write(tmp_path / "clean.tar", members)
    original = Path(clean).read_bytes()
    rng = random.Random(7)
    for trial in range(60):
        damaged = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            block = rng.randrange(len(original) // 512)
            damaged[block * 512 + rng.randrange(512)] = rng.randrange(256)
        path = tmp_path / f"damaged-{trial}.tar"
        path.write_bytes(bytes(damaged))
        fetched = list(fetch_images([(str(path), name) for name, _ in members]))
        for (name, data), got in zip(members, fetched, strict=True):
            # a damaged member may read back damaged or not at all, never as another one
            if got.data is not None:
                assert len(got.data) == len(data), name


def test_the_cache_keeps_at_most_its_members(tmp_path, monkeypatch):
    from coyo_db.ingest import tar_index
    from coyo_db.lru import Lru

    monkeypatch.setattr(tar_index, "_cache", Lru(tar_index.CACHED_SHARDS, 5))  # 5 members
    first = _write(tmp_path / "a.tar", [(f"a{i}.jpg", b"a") for i in range(4)])
    second = _write(tmp_path / "b.tar", [(f"b{i}.jpg", b"b") for i in range(4)])
    tar_members(first)
    tar_members(second)
    assert tar_index._cache.keys() == [second]  # 8 members > 5: the older shard dropped
    assert read_member(first, *tar_members(first)["a3.jpg"]) == b"a"
