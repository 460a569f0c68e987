"""Read ingested images back from the shards ingest recorded them in.

The ``images`` table keeps, for every image, its ``shard`` (a ``.tar``, a ``.parquet`` file, or a
folder, ``<dir>#<n>`` for a chunk of a huge one) and its ``member`` inside it (tar member name,
Parquet row number, file name). :func:`fetch_images` turns such (shard, member) locations back
into encoded bytes, visiting each shard once: a tar's members are read at their offsets (its
headers indexed once per process), a Parquet file reads only the row groups that hold the rows
asked for, a folder opens the files.

This is what labeling, contamination audits and webdataset exports use to get pixels again
without keeping the images in the catalog.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from coyo_db.ingest.tar_index import tar_members

log = logging.getLogger(__name__)

_CHUNK_SUFFIX = re.compile(r"#\d+$")


@dataclass(frozen=True)
class FetchedImage:
    """One image read back: its bytes, or why they could not be read."""

    index: int  # position of the location in the caller's sequence
    shard: str
    member: str
    data: bytes | None
    error: str | None = None


def fetch_images(locations: Iterable[tuple[str, str]]) -> Iterator[FetchedImage]:
    """Yield the bytes of every ``(shard, member)`` location, grouped by shard (shards in order
    of first appearance), one :class:`FetchedImage` per location, missing ones with ``error``."""
    by_shard: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for index, (shard, member) in enumerate(locations):
        by_shard[shard].append((index, member))
    for shard, wanted in by_shard.items():
        yield from _fetch_shard(shard, wanted)


def _fetch_shard(shard: str, wanted: list[tuple[int, str]]) -> Iterator[FetchedImage]:
    if shard.endswith(".tar") and os.path.isfile(shard):
        found = _from_tar(shard, {member for _, member in wanted})
    elif shard.endswith(".parquet") and os.path.isfile(shard):
        found = _from_parquet(shard, {member for _, member in wanted})
    else:
        folder = _CHUNK_SUFFIX.sub("", shard)
        if not os.path.isdir(folder):
            for index, member in wanted:
                yield FetchedImage(index, shard, member, None, "shard no longer exists")
            return
        found = _from_folder(folder, {member for _, member in wanted})
    for index, member in wanted:
        data = found.get(member)
        if isinstance(data, bytes):
            yield FetchedImage(index, shard, member, data)
        else:
            yield FetchedImage(index, shard, member, None, data or "member not found in shard")


def _from_tar(path: str, members: set[str]) -> dict[str, bytes | str]:
    """The members asked for, each one read at its offset (the shard's header index is
    built once per process: :mod:`coyo_db.ingest.tar_index`)."""
    found: dict[str, bytes | str] = {}
    try:
        index = tar_members(path)
        wanted = sorted((index[m], m) for m in members if m in index)  # in file order
        with open(path, "rb") as fh:
            for (offset, size), member in wanted:
                fh.seek(offset)
                data = fh.read(size)
                found[member] = data if len(data) == size else "member cut short in shard"
    except (tarfile.TarError, EOFError, OSError) as exc:
        log.warning("%s: read stopped early (%s)", path, exc)
    return found


def _from_parquet(path: str, members: set[str]) -> dict[str, bytes | str]:
    import pyarrow.parquet as pq

    from coyo_db.ingest.image_shards import parquet_shard as _parquet_shard

    shard = _parquet_shard(Path(path))
    if shard is None:
        return dict.fromkeys(members, "no image column in Parquet shard")
    rows = sorted(int(m) for m in members if m.isdigit())
    found: dict[str, bytes | str] = {}
    reader = pq.ParquetFile(path)
    start = 0
    for group in range(reader.num_row_groups):
        count = reader.metadata.row_group(group).num_rows
        inside = [r - start for r in rows if start <= r < start + count]
        if inside:
            column = reader.read_row_group(group, columns=[shard.image_column]).column(0)
            if shard.image_field is not None:
                column = column.combine_chunks().field(shard.image_field)
            for offset in inside:
                value = column[offset].as_py()
                found[str(start + offset)] = value if value else "no image bytes"
        start += count
    return found


def _from_folder(folder: str, members: set[str]) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for member in members:
        try:
            with open(os.path.join(folder, member), "rb") as fh:
                found[member] = fh.read()
        except OSError as exc:
            found[member] = f"unreadable file: {exc.strerror or exc}"
    return found
