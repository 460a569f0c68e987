"""The image part of `coyo-db demo`: seeded images with planted near-copies, ingested with the
offline models, and a check that pHash and embeddings find the copies again."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

MODEL = "effnet-lite0"
SCORES = ("faces", "language", "profanity")


@dataclass
class ImagesDemoResult:
    images: int = 0
    quarantined: int = 0
    copies: int = 0
    found_by_phash: int = 0  # within Hamming distance 10 of their original
    found_by_embedding: int = 0  # nearest neighbour by embedding is their original


def run_images_demo(
    catalog: Catalog, data: Path, *, count: int = 160, seed: int = 0, emit: Callable[[str], None]
) -> ImagesDemoResult:
    from coyo_db.ingest.images import ingest_images
    from coyo_db.synth.images import write_image_shards

    pairs = catalog.sql(f"SELECT id, url, text FROM pairs ORDER BY id LIMIT {int(count)}")
    shards, planted = write_image_shards(
        data / "images",
        pairs["id"].to_pylist(),
        captions=pairs["text"].to_pylist(),
        urls=pairs["url"].to_pylist(),
        per_shard=max(1, count // 2),
        seed=seed,
    )
    _append_broken_image(shards[-1])
    emit(
        f"wrote {count} images in {len(shards)} webdataset shards ({len(planted)} planted "
        "near-copies: resized, cropped, JPEG-crushed or flipped) and one corrupt JPEG"
    )
    summary = ingest_images(catalog, shards, embed=[MODEL], scores=list(SCORES), workers=0)
    emit(summary.line())
    for reason, n in sorted(summary.quarantine_reasons.items()):
        emit(f"  quarantined {n}: {reason}")

    result = ImagesDemoResult(summary.rows_written, summary.rows_quarantined, len(planted))
    if planted:
        result.found_by_phash, result.found_by_embedding = _copies_found(catalog, planted)
    emit(
        f"planted near-copies found: {result.found_by_phash}/{len(planted)} by pHash "
        f"(Hamming <= 10), {result.found_by_embedding}/{len(planted)} by {MODEL} "
        "nearest neighbour"
    )
    return result


def _copies_found(catalog: Catalog, planted: list) -> tuple[int, int]:
    table = catalog.sql(
        "SELECT i.key, i.phash, e.image_embedding FROM images i "
        "JOIN embeddings__effnet_lite0 e USING (id) ORDER BY i.key"
    )
    keys = table["key"].to_pylist()
    where = {key: i for i, key in enumerate(keys)}
    hashes = table["phash"].to_numpy()
    vectors = np.stack(table["image_embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    by_phash = by_embedding = 0
    for copy in planted:
        a, b = where.get(copy.copy_key), where.get(copy.original_key)
        if a is None or b is None:
            continue
        by_phash += int(bin(int(hashes[a]) ^ int(hashes[b])).count("1") <= 10)
        by_embedding += int(int(np.argmax(similarity[a])) == b)
    return by_phash, by_embedding


def _append_broken_image(shard: Path) -> None:
    payload = b"\xff\xd8\xff\xe0 this JPEG stops here"
    with tarfile.open(shard, "a") as tar:
        info = tarfile.TarInfo("broken-00001.jpg")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
