"""Images by id for the web app: ingest records each tar member's byte range, one read gets the
image back (bytes equal to a scan of the tar), a catalog from before the column falls back to
the tar's member index, content types come from the bytes, thumbnails are cached JPEGs."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from coyo_db.catalog import Catalog, tables
from coyo_db.ingest.image_fetch import fetch_images
from coyo_db.ingest.images import ingest_images
from coyo_db.ingest.tar_index import tar_members as tar_index
from coyo_db.serve.images import ImageStore, ImageUnavailable, content_type
from tests.imagedata import bomb_png, jpeg_bytes, png_bytes, write_tar


def _members(count: int, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    members: dict[str, bytes] = {}
    for i in range(count):
        pixels = rng.integers(0, 255, (40 + i, 60, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        data = png_bytes(image) if i % 3 == 0 else jpeg_bytes(image)
        members[f"{i:05d}.{'png' if i % 3 == 0 else 'jpg'}"] = data
        members[f"{i:05d}.json"] = json.dumps({"id": 1000 + i, "caption": f"c{i}"}).encode()
        members[f"{i:05d}.txt"] = f"caption {i}".encode()
    return members


@pytest.fixture
def ingested(catalog, tmp_path):
    shard = write_tar(tmp_path / "shard.tar", _members(12))
    ingest_images(catalog, [shard], workers=0)
    return catalog, shard


def _scanned(catalog: Catalog) -> dict[int, bytes]:
    rows = catalog.sql("SELECT id, shard, member FROM images ORDER BY id").to_pylist()
    fetched = fetch_images((r["shard"], r["member"]) for r in rows)
    return {rows[f.index]["id"]: f.data for f in fetched}


def test_ingest_records_byte_ranges_that_read_back_the_same_bytes(ingested):
    catalog, _ = ingested
    rows = catalog.sql("SELECT id, data_offset, bytes FROM images ORDER BY id").to_pylist()
    assert len(rows) == 12 and all(r["data_offset"] is not None for r in rows)
    store = ImageStore(catalog)
    for id_, data in _scanned(catalog).items():
        assert store.locate([id_])[id_].offset is not None
        got, kind = store.image(id_)
        assert got == data
        assert kind == ("image/png" if data.startswith(b"\x89PNG") else "image/jpeg")


def test_a_catalog_without_byte_ranges_falls_back_to_the_tars_member_index(ingested, tmp_path):
    catalog, shard = ingested
    old = Catalog(tmp_path / "old", create=True)
    rows = catalog.dataset("images").to_table().drop_columns(["data_offset"])
    old_schema = pa.schema([f for f in tables.IMAGES.schema if f.name != "data_offset"])
    old.ensure_table("images", old_schema)
    old.append("images", rows.cast(old_schema))
    assert "data_offset" not in old.dataset("images").schema.names
    store = ImageStore(old)
    scanned = _scanned(catalog)
    for id_, data in scanned.items():
        assert store.locate([id_])[id_].offset is None
        assert store.image(id_)[0] == data
    index = tar_index(str(shard))
    assert {name for name in index if name.endswith((".jpg", ".png"))} == set(
        old.sql("SELECT member FROM images")["member"].to_pylist()
    )
    # a later ingest into the old catalog adds the column (empty for the old rows)
    more = write_tar(tmp_path / "more.tar", dict(list(_members(14, seed=1).items())[36:]))
    ingest_images(old, [more], workers=0)
    offsets = old.sql("SELECT shard, data_offset FROM images").to_pylist()
    assert {r["data_offset"] is None for r in offsets if r["shard"] == str(shard)} == {True}
    assert all(r["data_offset"] is not None for r in offsets if r["shard"] == str(more))


def test_unknown_ids_and_vanished_shards_are_unavailable(ingested):
    catalog, shard = ingested
    store = ImageStore(catalog)
    with pytest.raises(ImageUnavailable, match="no image with id"):
        store.image(5)
    first = min(_scanned(catalog))
    shard.unlink()
    with pytest.raises(ImageUnavailable):
        store.image(first)


def test_thumbnails_are_small_cached_jpegs(ingested):
    catalog, _ = ingested
    store = ImageStore(catalog)
    first = min(_scanned(catalog))
    thumb = store.thumbnail(first, 32)
    assert content_type(thumb) == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb)).size) <= 32
    assert store.thumbnail(first, 32) is thumb


def test_content_types_come_from_the_bytes_and_only_raster_images_pass():
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    assert content_type(jpeg_bytes(image)) == "image/jpeg"
    assert content_type(png_bytes(image)) == "image/png"
    out = io.BytesIO()
    image.save(out, "WEBP")
    assert content_type(out.getvalue()) == "image/webp"
    for other in (b"<svg onload=alert(1)>", b"<html><script>", b"RIFF....WAVE", b""):
        assert content_type(other) is None


def test_a_decompression_bomb_is_refused_not_decoded():
    from coyo_db.serve.images import make_thumbnail

    with pytest.raises(ImageUnavailable, match="cannot decode"):
        make_thumbnail(bomb_png())
