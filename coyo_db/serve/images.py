"""Images by catalog id, read straight from the ingested shards, and their thumbnails.

A request names an image by its id (or a reference by refset and ref_id), never by a path: the
`images` (or `refset_images`) table says where it lies, as ingest recorded it. Where ingest also
recorded the member's byte range in its tar (``data_offset``, with ``bytes`` its length), the
image is one seek and one read; a catalog ingested before those columns existed falls back to an
index of the tar's member headers, built once per tar (its data blocks are skipped, not read)
and kept while the tar is unchanged. Parquet and folder shards are read through
:func:`coyo_db.ingest.image_fetch.fetch_images`.

Locations and thumbnails are cached in memory (least recently used first out); the content type
comes from the bytes themselves, and only raster formats a browser shows are served.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.catalog import tables
from coyo_db.errors import CoyoDbError
from coyo_db.ingest.tar_index import read_member, tar_members
from coyo_db.lru import Lru

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

THUMB_SIZE = 256
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"BM", 0, "image/bmp"),
)


class ImageUnavailable(CoyoDbError):
    """No image for this id: not in the catalog, or its shard cannot be read."""


@dataclass(frozen=True)
class Location:
    """Where an image lies: its shard and member, and its byte range when ingest recorded it."""

    shard: str
    member: str
    offset: int | None = None
    size: int | None = None


def content_type(data: bytes) -> str | None:
    """The MIME type of encoded image `data` by its magic bytes; None for other content."""
    for magic, at, kind in _MAGIC:
        if data[at : at + len(magic)] == magic:
            if kind == "image/webp" and data[:4] != b"RIFF":
                continue
            return kind
    return None


def read_range(path: str, offset: int, size: int) -> bytes:
    try:
        return read_member(path, offset, size)
    except OSError:
        raise ImageUnavailable(
            f"{os.path.basename(path)} is shorter than the catalog recorded"
        ) from None


class ImageStore:
    """Encoded images and JPEG thumbnails by catalog id (and references by refset, ref_id)."""

    def __init__(
        self, catalog: Catalog, *, max_locations: int = 200_000, cache_bytes: int = 128 << 20
    ) -> None:
        self.catalog = catalog
        self._locations = Lru(max_locations)
        self._thumbs = Lru(100_000, cache_bytes)

    # ---- where images are -----------------------------------------------------------------

    def locate(self, ids: Iterable[int]) -> dict[int, Location]:
        """The locations of those of `ids` the `images` table holds (one read for the misses)."""
        wanted = {int(i) for i in ids}
        found = {i: loc for i in wanted if (loc := self._locations.get(i)) is not None}
        missing = sorted(wanted - set(found))
        if missing and self.catalog.has_table(tables.IMAGES.name):
            dataset = self.catalog.dataset(tables.IMAGES.name)
            columns = ["id", "shard", "member"]
            ranged = {"data_offset", "bytes"} <= set(dataset.schema.names)
            if ranged:
                columns += ["data_offset", "bytes"]
            rows = dataset.to_table(
                columns=columns, filter=pc.field("id").isin(pa.array(missing, pa.int64()))
            )
            rows = rows.sort_by([("shard", "ascending"), ("member", "ascending")])
            for row in rows.to_pylist():
                if row["id"] in found:  # an image ingested twice: the first location
                    continue
                offset = row.get("data_offset") if ranged else None
                loc = Location(row["shard"], row["member"], offset, row.get("bytes"))
                found[row["id"]] = loc
                self._locations.put(row["id"], loc)
        return found

    def has_images(self, ids: Iterable[int]) -> set[int]:
        """Those of `ids` that have an image in the catalog."""
        return set(self.locate(ids))

    def _reference_location(self, refset: str, ref_id: int) -> Location:
        key = ("ref", refset, int(ref_id))
        loc = self._locations.get(key)
        if loc is not None:
            return loc
        if not self.catalog.has_table(tables.REFSET_IMAGES.name):
            raise ImageUnavailable("the catalog has no reference sets")
        rows = (
            self.catalog.dataset(tables.REFSET_IMAGES.name)
            .to_table(
                columns=["shard", "member"],
                filter=(pc.field("refset") == refset) & (pc.field("ref_id") == int(ref_id)),
            )
            .to_pylist()
        )
        if not rows:
            raise ImageUnavailable(f"no reference {int(ref_id)} in refset {refset!r}")
        loc = Location(rows[0]["shard"], rows[0]["member"])
        self._locations.put(key, loc)
        return loc

    # ---- bytes ----------------------------------------------------------------------------

    def read(self, loc: Location) -> bytes:
        """The encoded bytes at `loc`."""
        if loc.offset is not None and loc.size is not None and os.path.isfile(loc.shard):
            return read_range(loc.shard, loc.offset, loc.size)
        if loc.shard.endswith(".tar") and os.path.isfile(loc.shard):
            entry = self._tar_entries(loc.shard).get(loc.member)
            if entry is None:
                raise ImageUnavailable(f"member {loc.member} is not in its shard")
            return read_range(loc.shard, *entry)
        from coyo_db.ingest.image_fetch import fetch_images

        fetched = next(fetch_images([(loc.shard, loc.member)]))
        if fetched.data is None:
            raise ImageUnavailable(fetched.error or "unreadable image")
        return fetched.data

    def _tar_entries(self, path: str) -> dict[str, tuple[int, int]]:
        try:
            return tar_members(path)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ImageUnavailable(f"unreadable shard: {exc}") from None

    def image(self, id_: int) -> tuple[bytes, str]:
        """The encoded image of `id_` and its content type."""
        loc = self.locate([id_]).get(int(id_))
        if loc is None:
            raise ImageUnavailable(f"no image with id {int(id_)} in the catalog")
        return _typed(self.read(loc))

    def reference(self, refset: str, ref_id: int) -> tuple[bytes, str]:
        """The encoded reference image and its content type."""
        return _typed(self.read(self._reference_location(refset, ref_id)))

    def thumbnail(self, id_: int, size: int = THUMB_SIZE) -> bytes:
        """A JPEG of `id_` at most `size` pixels on its longer side (cached)."""
        key = ("id", int(id_), size)
        cached = self._thumbs.get(key)
        if cached is None:
            cached = make_thumbnail(self.image(id_)[0], size)
            self._thumbs.put(key, cached, len(cached))
        return cached

    def reference_thumbnail(self, refset: str, ref_id: int, size: int = THUMB_SIZE) -> bytes:
        key = ("ref", refset, int(ref_id), size)
        cached = self._thumbs.get(key)
        if cached is None:
            cached = make_thumbnail(self.reference(refset, ref_id)[0], size)
            self._thumbs.put(key, cached, len(cached))
        return cached


def _typed(data: bytes) -> tuple[bytes, str]:
    kind = content_type(data)
    if kind is None:
        raise ImageUnavailable("the stored bytes are not an image format a browser shows")
    return data, kind


def make_thumbnail(data: bytes, size: int = THUMB_SIZE) -> bytes:
    """`data` decoded (JPEG at a reduced DCT scale where that suffices), shrunk to fit
    `size` x `size` and encoded as JPEG."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            image.thumbnail((size, size))
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=82)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageUnavailable(f"cannot decode the image: {exc}") from None
    return out.getvalue()
