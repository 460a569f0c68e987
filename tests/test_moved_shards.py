"""An image shard is known by its content: moved or copied, it is the same shard, and a later
`--embed` / `--scores` adds exactly the rows it lacks, with the ids `images` gave it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from imagedata import jpeg_bytes, make_images, write_plain_folder

from coyo_db.catalog import Catalog
from coyo_db.catalog.ledger import Fingerprint
from coyo_db.ingest import image_shards
from coyo_db.ingest.image_shards import find_shards, legacy_folder_fingerprint
from coyo_db.ingest.images import ingest_images
from coyo_db.synth.images import write_image_shards


def plain_folder(root: Path) -> Path:
    """Four images (ids from the `hash` origin, which depends on the folder's name)."""
    files = {f"img{i}.jpg": jpeg_bytes(image) for i, image in enumerate(make_images(4, seed=5))}
    files["img0.txt"] = b"a caption"
    return write_plain_folder(root, files)


def ids_of(catalog: Catalog, table: str) -> list[int]:
    return catalog.sql(f"SELECT id FROM {table} ORDER BY id")["id"].to_pylist()


def test_a_moved_folder_gets_its_new_embeddings_under_the_stored_ids(tmp_path):
    catalog = Catalog(tmp_path / "home", create=True)
    folder = plain_folder(tmp_path / "pics")
    ingest_images(catalog, [folder], workers=0)
    images_version = catalog.dataset("images").version
    moved = shutil.move(folder, tmp_path / "elsewhere" / "renamed")

    summary = ingest_images(catalog, [moved], embed=["effnet-lite0"], workers=0)

    assert summary.inputs_done == 1 and summary.tables["embeddings__effnet_lite0"] == 4
    assert catalog.dataset("images").version == images_version
    stored = ids_of(catalog, "images")
    assert len(set(stored)) == 4
    assert ids_of(catalog, "embeddings__effnet_lite0") == stored
    again = ingest_images(catalog, [moved], embed=["effnet-lite0"], workers=0)
    assert again.inputs_skipped == 1 and again.rows_read == 0


def test_moved_tar_shards_get_their_new_scores_once(tmp_path):
    catalog = Catalog(tmp_path / "home", create=True)
    ids = list(range(700, 706))
    shards, _ = write_image_shards(tmp_path / "out", ids, per_shard=3, seed=1)
    ingest_images(catalog, shards, workers=0)
    moved = shutil.move(tmp_path / "out", tmp_path / "archive")

    summary = ingest_images(catalog, [moved], scores=["language"], workers=0)

    assert summary.inputs_done == len(shards)
    scored = catalog.sql("SELECT id FROM scores WHERE score = 'language' ORDER BY id")
    assert scored["id"].to_pylist() == ids_of(catalog, "images") == ids


def test_a_copied_folder_with_new_mtimes_is_recognised(tmp_path):
    catalog = Catalog(tmp_path / "home", create=True)
    folder = plain_folder(tmp_path / "pics")
    ingest_images(catalog, [folder], workers=0)
    copy = Path(shutil.copytree(folder, tmp_path / "copy" / "pics"))
    for name in os.listdir(copy):
        os.utime(copy / name, ns=(1, 10**18))
    assert find_shards([copy])[0].fingerprint == find_shards([folder])[0].fingerprint

    again = ingest_images(catalog, [copy], workers=0)

    assert again.inputs_skipped == 1 and again.rows_read == 0
    assert catalog.dataset("images").count_rows() == 4


def test_a_folder_changed_in_content_is_a_new_shard(tmp_path):
    folder = plain_folder(tmp_path / "pics")
    before = find_shards([folder])[0].fingerprint
    (folder / "img0.txt").write_bytes(b"another caption")
    assert find_shards([folder])[0].fingerprint != before


@pytest.mark.parametrize("embed", [[], ["effnet-lite0"]])
def test_a_folder_an_earlier_version_ingested_is_recognised(tmp_path, monkeypatch, embed):
    catalog = Catalog(tmp_path / "home", create=True)
    folder = plain_folder(tmp_path / "pics")
    with monkeypatch.context() as patch:  # the (name, size, mtime) fingerprint of old
        patch.setattr(
            image_shards,
            "folder_fingerprint",
            lambda where, names: Fingerprint(legacy_folder_fingerprint(where, names)),
        )
        ingest_images(catalog, [folder], workers=0)
    images_version = catalog.dataset("images").version

    again = ingest_images(catalog, [folder], embed=embed, workers=0)

    assert catalog.dataset("images").version == images_version
    if embed:
        assert again.inputs_done == 1
        assert ids_of(catalog, "embeddings__effnet_lite0") == ids_of(catalog, "images")
    else:
        assert again.inputs_skipped == 1
