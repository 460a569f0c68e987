"""Where each file of a tar shard lies: member name -> (data offset, size), from the headers only.

Reading a few members of a webdataset shard by streaming it costs a pass over every header
before them (Python's :mod:`tarfile` parses one in ~70 µs: a 1,000-image shard with its JSON
sidecars, 0.14 s, for each batch that asks for one image of it). :func:`tar_members` reads the
headers once, seeking over the data (~5 µs a header), and keeps the index for the process,
checked against the file's size and modification time; a member is then one read.

The scan understands what webdataset writers produce: ustar/GNU headers, GNU long names
(``L``) and pax extended headers (``x``, for ``path`` and ``size``). Anything else it does not
follow (a bad checksum, a base-256 size, sparse files) hands the shard to :mod:`tarfile`,
which reads every header format; a file that is no tar at all raises :class:`tarfile.TarError`.
"""

from __future__ import annotations

import logging
import os
import tarfile
import threading

from coyo_db.lru import Lru

log = logging.getLogger(__name__)

BLOCK = 512
# indexes kept per process: at most this many shards and members (~200 bytes a member)
CACHED_SHARDS = 256
CACHED_MEMBERS = 1_000_000

_FILE_TYPES = frozenset(b"07\0")

_cache = Lru(CACHED_SHARDS, CACHED_MEMBERS)  # path -> ((mtime, size), index), sized by members
_scanning = threading.Lock()  # one scan of a shard at a time, however many threads ask


class _Unsupported(Exception):
    """A header the fast scan does not follow: tarfile reads the shard instead."""


def tar_members(path: str) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size) of every regular file in tar `path` (the first of
    repeated names), cached per process while the file's size and mtime stay the same.

    Raises OSError when the file cannot be read, :class:`tarfile.TarError` when it is no tar."""
    stat = os.stat(path)
    stamp = (stat.st_mtime_ns, stat.st_size)
    with _scanning:
        cached = _cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            index = _scan(path, stat.st_size)
        except (_Unsupported, ValueError):  # ValueError: a number field that is not one
            index = _scan_with_tarfile(path)
        _cache.put(path, (stamp, index), size=len(index))
        return index


def read_member(path: str, offset: int, size: int) -> bytes:
    """`size` bytes at `offset` of `path`; OSError when the file is shorter."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(size)
    if len(data) != size:
        raise OSError(f"{os.path.basename(path)} ends before byte {offset + size}")
    return data


def _scan(path: str, file_size: int) -> dict[str, tuple[int, int]]:
    index: dict[str, tuple[int, int]] = {}
    long_name: str | None = None
    pax: dict[str, str] = {}
    with open(path, "rb") as fh:
        offset = 0
        while offset + BLOCK <= file_size:
            fh.seek(offset)
            header = fh.read(BLOCK)
            if len(header) < BLOCK:
                raise _Unsupported
            if header.count(0) == BLOCK:
                break  # end-of-archive
            kind, name, size = _parse(header)
            data = offset + BLOCK
            if data + size > file_size:
                log.warning("%s: cut short in member %s", path, name)
                break  # the members before it are whole
            if kind in (ord("L"), ord("x")):
                fh.seek(data)
                payload = fh.read(size)
                if kind == ord("L"):
                    long_name = payload.rstrip(b"\0").decode("utf-8", "surrogateescape")
                else:
                    pax = _pax_records(payload)
            elif kind in _FILE_TYPES:
                name = pax.get("path", long_name or name)
                if "size" in pax:
                    size = int(pax["size"])
                index.setdefault(name, (data, size))
                long_name, pax = None, {}
            elif kind in b"123456g":
                long_name, pax = None, {}
            else:
                raise _Unsupported
            offset = data + (size + BLOCK - 1) // BLOCK * BLOCK
    return index


def _parse(header: bytes) -> tuple[int, str, int]:
    """(type flag, name, size) of one 512-byte header."""
    stored = header[148:156].split(b"\0", 1)[0].strip()
    if not stored or int(stored, 8) != sum(header[:148]) + 256 + sum(header[156:]):
        raise _Unsupported  # checksum (8 spaces stand for the field itself)
    raw_size = header[124:136]
    if raw_size[0] & 0x80:
        raise _Unsupported  # base-256 size (files over 8 GiB)
    size = int(raw_size.split(b"\0", 1)[0].strip() or b"0", 8)
    name = header[:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0":  # POSIX: a prefix may hold the leading directories
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    kind = header[156] or ord("0")
    return kind, name.decode("utf-8", "surrogateescape"), size


def _pax_records(payload: bytes) -> dict[str, str]:
    """The ``path`` and ``size`` records of a pax extended header ("<len> key=value\\n")."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(payload):
        space = payload.find(b" ", pos)
        if space < 0:
            break
        length = int(payload[pos:space])
        if length <= 0:
            raise _Unsupported
        key, _, value = payload[space + 1 : pos + length - 1].partition(b"=")
        if key in (b"path", b"size"):
            records[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _scan_with_tarfile(path: str) -> dict[str, tuple[int, int]]:
    index: dict[str, tuple[int, int]] = {}
    with tarfile.open(path, mode="r:") as tar:
        try:
            for member in tar:
                if member.isfile():
                    index.setdefault(member.name, (member.offset_data, member.size))
        except (tarfile.TarError, EOFError) as exc:  # the members before it are whole
            log.warning("%s: read stopped early (%s)", path, exc)
    return index
