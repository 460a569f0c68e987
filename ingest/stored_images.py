"""Ingested images as units of work again: the `images` table's rows grouped by shard.

Labeling and audits do not read input folders: they read back the images ingest recorded, by
(shard, member), one pass per shard (:func:`coyo_db.ingest.image_fetch.fetch_images`). A
:class:`StoredShard` is such a unit for the image-job runner: its records come in the order of
its members, and each record's key is its position in the unit (so a job maps a record back to
its id without trusting the reader's order).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.ingest.image_types import ImageRecord


@dataclass
class StoredShard:
    """The images of one shard of `images` a job still has to do."""

    path: str
    ids: np.ndarray  # int64, in member order
    members: list[str]
    total: int  # images of the shard in `images` (done before or not)

    @property
    def name(self) -> str:
        return self.path

    def count(self) -> int:
        return len(self.ids)

    def records(self) -> Iterator[ImageRecord]:
        from coyo_db.ingest.image_fetch import fetch_images

        for image in fetch_images((self.path, member) for member in self.members):
            yield ImageRecord(
                image.shard, image.member, str(image.index), image.data, error=image.error
            )

    def ids_of(self, records: list[ImageRecord]) -> np.ndarray:
        """The ids of records this unit yielded (by their key, the position in the unit)."""
        positions = np.array([int(r.key) for r in records], dtype=np.int64)
        return self.ids[positions]


def shards_of(images: pa.Table) -> Iterator[tuple[str, pa.Table, np.ndarray]]:
    """(shard, its rows, first) per shard of an `images` selection (columns id, shard, member
    and any others), rows in (shard, member) order; `first` marks each id's first appearance
    overall, so a job that does each id once can skip the repeats."""
    images = images.filter(pc.is_valid(images["id"])).sort_by(
        [("shard", "ascending"), ("member", "ascending")]
    )
    ids = images["id"].to_numpy()
    _, first_positions = np.unique(ids, return_index=True)
    first = np.zeros(len(ids), dtype=bool)
    first[first_positions] = True
    shard_names = images["shard"].to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(shard_names[1:] != shard_names[:-1]) + 1
    for start, stop in zip(
        np.r_[0, bounds].astype(int), np.r_[bounds, len(ids)].astype(int), strict=True
    ):
        if start < stop:
            yield str(shard_names[start]), images.slice(start, stop - start), first[start:stop]
