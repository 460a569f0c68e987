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

A .json (or Parquet row) whose `id` is there but unusable (a float, a bool, text that is not
a number, a number outside int64) is no reason to fall back to another origin: the readers
quarantine that sample (:func:`id_problem`, ``bad id: ...``), so such a sample never gets a
made-up id. A null `id` counts as none.

The url origin is one join per unit (shard) against `pairs`, over one DuckDB connection kept for
the whole run, not one connection per batch.
"""

from __future__ import annotations

import hashlib
import re
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

# Quarantine reasons of a sample whose `id` is there but cannot be an image id.
ID_NOT_INTEGER = "bad id: not an integer"
ID_OUT_OF_RANGE = "bad id: does not fit int64"

_DECIMAL = re.compile(r"-?[0-9]+")  # ASCII only: str.isdigit() takes "²", which int() refuses


def hashed_id(shard: str, member: str) -> int:
    """The ``hash`` origin: 63 bits of blake2b over the shard's file name and the member."""
    # surrogatepass: a name that is not UTF-8 still hashes (the same way every time)
    text = f"{Path(shard).name}/{member}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def as_int64(value: Any) -> int | None:
    """`value` as an int64 id (an int, or a string of ASCII digits), None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif _is_decimal(value):
        number = int(value)
    else:
        return None
    return number if INT64_MIN <= number <= INT64_MAX else None


def id_problem(meta: dict[str, Any]) -> str | None:
    """Why the `id` of img2dataset's .json (or Parquet row) `meta` cannot be an image id; None
    when it can, or when there is none (absent or null)."""
    value = meta.get("id")
    if value is None:
        return None
    integer_text = isinstance(value, str) and _DECIMAL.fullmatch(value) is not None
    if isinstance(value, bool) or not (isinstance(value, int) or integer_text):
        return ID_NOT_INTEGER
    return None if as_int64(value) is not None else ID_OUT_OF_RANGE


def _is_decimal(value: Any) -> bool:
    # 21 characters hold "-" and every int64; a longer string is out of range, not parsed
    return isinstance(value, str) and _DECIMAL.fullmatch(value) is not None and len(value) <= 21


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
            numeric = record.key.isascii() and record.key.isdigit()
            key = as_int64(record.key) if numeric else None
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
