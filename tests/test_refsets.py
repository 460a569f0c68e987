"""Reference sets: layouts, ref_path, pHash and descriptors as ingest computes them,
low-information flags, replacing a set."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from coyo_db.audit import refsets
from coyo_db.audit.low_info import low_information
from coyo_db.audit.refset_job import add_refset
from coyo_db.catalog import Catalog
from coyo_db.errors import InputError
from tests.audit_helpers import write_references


@pytest.fixture(scope="module")
def descriptor():
    from coyo_db.ingest.models.copy_descriptors import load_descriptor

    return load_descriptor()


def test_detect_layout() -> None:
    assert refsets.detect_layout(["n01440764/ILSVRC2012_val_00000293.JPEG"]) == "imagenet-val"
    assert refsets.detect_layout(["000000000139.jpg", "000000000285.jpg"]) == "coco-val2017"
    assert refsets.detect_layout(["000000000139.jpg", "cat.jpg"]) == "folder"
    assert refsets.detect_layout([]) == "folder"


def test_low_information() -> None:
    rng = np.random.default_rng(0)
    blank = np.full((64, 64, 3), 200, dtype=np.uint8)
    assert low_information(blank) == "blank"
    mark = np.full((64, 64, 3), 255, dtype=np.uint8)
    mark[28:36, 28:36] = rng.integers(0, 256, (8, 8, 3))  # a small mark on white
    assert low_information(mark) == "one colour over 98% of the image"
    silhouette = np.full((64, 64, 3), 250, dtype=np.uint8)
    silhouette[10:50, 20:44] = rng.integers(20, 26, (40, 24, 3))  # a flat shape, a little noise
    silhouette[10:50, 20:30] += 40
    assert low_information(silhouette) == "a flat shape on one colour (cut-out or mask)"
    figure = np.full((64, 64, 3), 255, dtype=np.uint8)
    figure[8:56, 16:48] = rng.integers(0, 256, (48, 32, 3))  # a detailed figure cut out on white
    assert low_information(figure) is None
    mask = np.zeros((64, 64, 3), dtype=np.uint8)
    mask[:, :20] = (255, 0, 0)
    mask[:, 20:45] = (0, 0, 255)
    mask[:, 45:] = (0, 255, 0)
    assert low_information(mask) == "3 colours"
    import skimage.data

    assert low_information(skimage.data.astronaut()[::4, ::4].copy()) is None
    faint = blank.copy()
    faint[20:44, 20:44] = 180  # a faint square: not blank, near-uniform
    assert low_information(faint) == "near-uniform"
    # an even frame with JPEG-like noise is blank; the same frame with a pale mark on 0.5% of
    # it (grey std < 3 all the same) is a faint logo, not an empty frame
    noisy = np.clip(200 + rng.normal(0, 1.5, (200, 200, 3)), 0, 255).astype(np.uint8)
    assert low_information(noisy) == "blank"
    pale = noisy.copy()
    pale[96:110, 96:110] = 160
    grey = pale.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert grey.std() < 3.0
    assert low_information(pale) == "near-uniform"
    levels = np.linspace(0, 252, 64).astype(np.uint8)
    ramp = np.zeros((64, 64, 3), np.uint8)
    ramp[..., 0], ramp[..., 1], ramp[..., 2] = levels[None, :], levels[:, None], 90
    assert low_information(ramp) == "smooth (little texture)"  # a two-colour gradient
    photo = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert low_information(photo) is None


def test_add_folder(tmp_path: Path, catalog: Catalog, descriptor) -> None:
    photos = write_references(tmp_path / "refs" / "sub")
    summary = add_refset(catalog, "mini", tmp_path / "refs", workers=0)
    assert (summary.images, summary.failed, summary.low_info) == (5, 0, 1)
    assert summary.layout == "folder"
    images, vectors = refsets.load_refset(catalog, "mini", "effnet-lite0")
    paths = images["ref_path"].to_pylist()
    assert sorted(paths) == sorted([f"sub/{n}.jpg" for n in photos] + ["sub/blank.png"])
    flagged = dict(zip(paths, images["low_info"].to_pylist(), strict=True))
    assert flagged["sub/blank.png"] and not flagged["sub/astronaut.jpg"]
    # pHash is imagehash's, as image ingest computes it
    import imagehash

    row = paths.index("sub/coffee.jpg")
    expected = str(imagehash.phash(Image.open(tmp_path / "refs" / "sub" / "coffee.jpg")))
    assert images["image_phash"][row].as_py() == expected
    assert images["phash"][row].as_py() == int(expected, 16)
    # descriptors: one per image, unit length, the image's own (not its mirror image's), and
    # close to its mirror image's: why references are not described mirrored as well
    assert vectors.shape == (5, descriptor.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    spec = descriptor.preprocess
    img = Image.open(tmp_path / "refs" / "sub" / "coffee.jpg").convert("RGB")
    plain = np.asarray(img.resize((spec.size, spec.size), Image.BICUBIC))
    mirrored = np.asarray(ImageOps.mirror(img).resize((spec.size, spec.size), Image.BICUBIC))
    vector, flipped = descriptor.describe(np.stack([plain, mirrored]))
    assert float(vector @ vectors[row]) > 0.98
    assert float(vector @ vectors[row]) > float(flipped @ vectors[row]) > 0.8
    # listing
    listed = refsets.list_refsets(catalog).to_pylist()
    assert listed[0]["refset"] == "mini" and listed[0]["images"] == 5
    assert listed[0]["low_info"] == 1


def test_imagenet_layout_and_replace(tmp_path: Path, catalog: Catalog) -> None:
    root = tmp_path / "val"
    photos = write_references(tmp_path / "plain")
    for i, img in enumerate(photos.values()):
        folder = root / f"n0144076{i}"
        folder.mkdir(parents=True)
        img.save(folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG", "JPEG")
    summary = add_refset(catalog, "imagenet-val", root, workers=0)
    assert summary.layout == "imagenet-val"
    images, _ = refsets.load_refset(catalog, "imagenet-val", "effnet-lite0")
    assert sorted(images["ref_path"].to_pylist()) == [
        f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(4)
    ]
    with pytest.raises(InputError, match="exists"):
        add_refset(catalog, "imagenet-val", root, workers=0)
    add_refset(catalog, "imagenet-val", root, workers=0, replace=True)
    images, vectors = refsets.load_refset(catalog, "imagenet-val", "effnet-lite0")
    assert len(images) == 4 and len(vectors) == 4
    assert len(refsets.list_refsets(catalog)) == 1


def test_webdataset_shard_is_re_readable(tmp_path: Path, catalog: Catalog) -> None:
    from coyo_db.ingest.image_fetch import fetch_images

    photos = write_references(tmp_path / "plain")
    shard = tmp_path / "shards" / "00000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        for i, img in enumerate(photos.values()):
            buffer = io.BytesIO()
            img.save(buffer, "JPEG")
            for suffix, payload in (
                ("jpg", buffer.getvalue()),
                ("json", json.dumps({"key": f"{i:09d}"}).encode()),
            ):
                info = tarfile.TarInfo(f"{i:09d}.{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    summary = add_refset(catalog, "shards", tmp_path / "shards", workers=0)
    assert summary.layout == "shards" and summary.images == 4
    images, _ = refsets.load_refset(catalog, "shards", "effnet-lite0")
    assert images["ref_path"][0].as_py() == "00000.tar/000000000.jpg"
    locations = list(zip(images["shard"].to_pylist(), images["member"].to_pylist(), strict=True))
    fetched = list(fetch_images(locations))
    assert all(f.data for f in fetched)


def test_bad_input(tmp_path: Path, catalog: Catalog) -> None:
    with pytest.raises(InputError, match="refset name"):
        add_refset(catalog, "bad name!", tmp_path)
    with pytest.raises(InputError, match="no such file"):
        add_refset(catalog, "missing", tmp_path / "nowhere")
    with pytest.raises(InputError, match="no refset"):
        refsets.load_refset(catalog, "missing", "effnet-lite0")


def test_a_reference_is_kept_without_its_bytes_and_pixels_until_the_set_is_written() -> None:
    """`refset add` holds every reference until it writes the set: only the row fields, or
    50,000 references would hold over 10 GB of bytes and pixels."""
    from coyo_db.audit.refset_job import slim
    from coyo_db.ingest.image_types import DecodedImage, ImageRecord, Preprocess

    record = ImageRecord("a.tar", "0001.jpg", "0001", b"\xff" * 50_000, meta={"k": "v"})
    pixels = {Preprocess(224): np.zeros((224, 224, 3), np.uint8)}
    decoded = DecodedImage(record, width=640, height=480, phash="8f373714acfcf4d0", pixels=pixels)
    kept = slim(decoded)
    assert kept.record.data is None and kept.record.meta == {} and kept.pixels == {}
    assert (kept.record.shard, kept.record.member, kept.record.key) == ("a.tar", "0001.jpg", "0001")
    assert (kept.width, kept.height, kept.phash) == (640, 480, "8f373714acfcf4d0")
    assert decoded.record.data is not None and decoded.pixels  # the caller's object is untouched
