"""The one way an image's id is found, wherever images are read (ingest, `audit --path`).

Its origins, in order of preference:

1. ``json``: the COYO `id` in img2dataset's .json (keep it with
   ``--save_additional_columns '["id"]'``), when it is an integer that fits int64;
2. ``url``: the id of the `pairs` row with the same url (the smallest, if several);
3. ``key``: img2dataset's key when it is a number (that fits int64);
4. ``hash``: a stable 63-bit hash of the shard's file name and the member, so the same shard
   gives the same ids wherever it is stored.

`images.id_origin` records where each row's id came from. So a removal list written by an
audit of raw shards names the ids the same shards get when they are ingested.

The url origin is one join per unit (shard) against `pairs`, over one DuckDB connection kept for
the whole run, not one connection per batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from coyo_db.catalog import tables

if TYPE_CHECKING:
    import duckdb

    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_types import ImageRecord

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


def hashed_id(shard: str, member: str) -> int:
    """The ``hash`` origin: 63 bits of blake2b over the shard's file name and the member."""
    digest = hashlib.blake2b(f"{Path(shard).name}/{member}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def as_int64(value: Any) -> int | None:
    """`value` as an int64 id (an int, or a string of digits), None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.lstrip("-").isdigit() and len(value) <= 20:
        number = int(value)
    else:
        return None
    return number if INT64_MIN <= number <= INT64_MAX else None


class IdResolver:
    """Resolves ids for records; one per run (it holds its `pairs` connection)."""

    def __init__(self, catalog: Catalog | None) -> None:
        self.catalog = catalog
        self._con: duckdb.DuckDBPyConnection | None = None
        self._has_pairs = catalog is not None and catalog.has_table(tables.PAIRS.name)

    def resolve(self, records: Sequence[ImageRecord]) -> tuple[np.ndarray, list[str]]:
        """(ids as int64, the origin of each) for `records`, in order."""
        ids = np.zeros(len(records), np.int64)
        origins = [""] * len(records)
        by_url: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            found = as_int64(record.meta.get("id")) if isinstance(record.meta, dict) else None
            if found is not None:
                ids[i], origins[i] = found, "json"
            elif record.url:
                by_url.setdefault(record.url, []).append(i)
        for url, found in self._ids_by_url(list(by_url)).items():
            for i in by_url[url]:
                ids[i], origins[i] = found, "url"
        for i, record in enumerate(records):
            if origins[i]:
                continue
            key = as_int64(record.key) if record.key.isdigit() else None
            if key is not None:
                ids[i], origins[i] = key, "key"
            else:
                ids[i], origins[i] = hashed_id(record.shard, record.member), "hash"
        return ids, origins

    def _ids_by_url(self, urls: list[str]) -> dict[str, int]:
        if not urls or not self._has_pairs:
            return {}
        if self._con is None:
            assert self.catalog is not None
            self._con = self.catalog.connect()
        self._con.register("wanted_urls", pa.table({"url": pa.array(urls, pa.string())}))
        try:
            rows = self._con.execute(
                "SELECT w.url, min(p.id) FROM wanted_urls w JOIN pairs p ON p.url = w.url "
                "GROUP BY w.url"
            ).fetchall()
        finally:
            self._con.unregister("wanted_urls")
        return dict(rows)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
