"""Reading image shards record by record: webdataset tars as a stream, img2dataset Parquet in
batches, and the sidecar files (.json metadata, .txt captions) beside images.

A tar is read member by member, never whole; a tar cut short yields the records before the cut
as usual, then one record for the broken member. A corrupt Parquet page yields one error record
for each row it made unreadable. A ``.json`` that does not parse gives ``meta == {}`` and a
logged warning, not an error (see :mod:`coyo_db.ingest.image_shards` for the shard kinds).
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coyo_db.errors import SourceFileError
from coyo_db.ingest.image_types import ImageRecord

if TYPE_CHECKING:
    from coyo_db.ingest.image_shards import ParquetShard

log = logging.getLogger(__name__)

# Which of a sample's image members is its image, when a tar sample holds more than one.
_IMAGE_PREFERENCE = ("jpg", "jpeg", "png", "webp", "avif", "gif", "bmp", "tif", "tiff")
PARQUET_BATCH_ROWS = 256
_BLOCK = tarfile.BLOCKSIZE


# --- reading tars ---------------------------------------------------------------------------


@dataclass
class _Sample:
    """The members of one webdataset sample, gathered as the tar streams by."""

    key: str
    first: str
    parts: dict[str, bytes] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


def tar_records(path: str) -> Iterator[ImageRecord]:
    sample: _Sample | None = None
    broken: tuple[str, str] | None = None  # (member, reason) of a cut or corrupt header
    with open(path, "rb") as fh, _open_stream(path, fh) as tar:
        members = iter(tar)
        while True:
            try:
                member = next(members, None)
            except (tarfile.TarError, EOFError, OSError):
                # Cut inside the padding after a member: what was read is whole.
                log.warning("%s: cut short after byte %d", path, tar.offset)
                break
            if member is None:
                broken = _tail_problem(fh, tar.offset, path)
                break
            if not member.isfile():
                continue
            key, ext = _split_member(member.name)
            if sample is not None and key != sample.key:
                yield _sample_record(path, sample)
                sample = None
            if sample is None:
                sample = _Sample(key, member.name)
            try:
                extracted = tar.extractfile(member)
                data = extracted.read() if extracted is not None else b""
            except (tarfile.TarError, EOFError, OSError):
                yield _sample_record(path, sample, error=f"truncated tar member {member.name}")
                return
            sample.parts.setdefault(ext, data)
            sample.names.setdefault(ext, member.name)
    if broken is None:
        if sample is not None:
            yield _sample_record(path, sample)
        return
    name, error = broken
    if sample is not None and _split_member(name)[0] == sample.key:
        yield _sample_record(path, sample, error=error)
        return
    if sample is not None:
        yield _sample_record(path, sample)
    yield ImageRecord(path, name, _split_member(name)[0].rsplit("/", 1)[-1], None, error=error)


def _open_stream(path: str, fh: Any) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=fh, mode="r|")
    except tarfile.TarError as exc:
        raise SourceFileError(path, f"is not a readable tar ({exc})") from None


def _tail_problem(fh: Any, offset: int, path: str) -> tuple[str, str] | None:
    """After tarfile stopped at `offset`: None if the archive ended cleanly (or at least
    between two members), else the member whose header is cut or corrupt and why."""
    fh.seek(offset)
    block = fh.read(_BLOCK)
    if block and block.count(0) == len(block):
        return None  # the end-of-archive marker
    if not block:
        # Cut exactly between two members: the samples read are whole, but the end-of-archive
        # marker is missing, so more may have followed.
        log.warning("%s: no end-of-archive marker after byte %d: cut short?", path, offset)
        return None
    raw = block[:100].split(b"\0", 1)[0]
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        name = ""
    if not (name and name.isprintable()):
        name = ""
    if len(block) < _BLOCK:
        what = f"member {name}" if name else f"header at byte {offset}"
        return name or f"@{offset}", f"truncated tar {what}"
    what = f"of member {name}" if name else f"at byte {offset}"
    return name or f"@{offset}", f"corrupt tar header {what}"


def _sample_record(path: str, sample: _Sample, error: str | None = None) -> ImageRecord:
    meta: dict[str, Any] = {}
    if "json" in sample.parts:
        meta = parse_meta(sample.parts["json"], path, sample.names["json"])
    caption = caption_text(sample.parts["txt"]) if "txt" in sample.parts else None
    if caption is None and isinstance(meta.get("caption"), str):
        caption = meta["caption"]
    url = meta.get("url") if isinstance(meta.get("url"), str) else None
    ext = next((e for e in _IMAGE_PREFERENCE if e in sample.parts), None)
    member = sample.names[ext] if ext else sample.first
    data = sample.parts[ext] if ext else None
    if error is None and ext is None:
        error = f"no image in sample {sample.key}"
    elif error is None and not data:
        error = "zero-byte image"
    elif error is not None:
        data = None
    return ImageRecord(
        shard=path,
        member=member,
        key=sample.key.rsplit("/", 1)[-1],
        data=data,
        url=url,
        caption=caption,
        meta=meta,
        error=error,
    )


def _split_member(name: str) -> tuple[str, str]:
    """webdataset's rule: the key runs to the first dot of the last path component."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


# --- reading Parquet ------------------------------------------------------------------------


def parquet_records(shard: ParquetShard) -> Iterator[ImageRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        reader = pq.ParquetFile(shard.path)
        for batch in reader.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            images = batch.column(shard.image_column)
            if shard.image_field is not None:
                images = images.field(shard.image_field)
            others = batch.drop_columns([shard.image_column]).to_pylist()
            for data, meta in zip(images.to_pylist(), others, strict=True):
                yield _parquet_record(shard.path, row, data, meta)
                row += 1
    except (OSError, pa.ArrowException) as exc:
        # A corrupt page: the rows from here on cannot be read; say so for each of them.
        reason = f"unreadable Parquet row: {_one_line(exc)}"
        for missing in range(row, shard.rows):
            yield ImageRecord(shard.path, str(missing), str(missing), None, error=reason)


def _parquet_record(path: str, row: int, data: bytes | None, meta: dict[str, Any]) -> ImageRecord:
    key = meta.get("key")
    caption = meta.get("caption")
    if not isinstance(caption, str):
        caption = meta.get("txt") if isinstance(meta.get("txt"), str) else None
    url = meta.get("url") if isinstance(meta.get("url"), str) else None
    status = meta.get("status")
    error = None
    if (status is not None and status != "success") or data is None:
        message = meta.get("error_message")
        if message:
            error = f"img2dataset: {_one_line(message)}"
        elif status is not None and status != "success":
            error = f"img2dataset: status {status}"
        else:
            error = "no image bytes"
        data = None
    elif not data:
        error = "zero-byte image"
    return ImageRecord(
        shard=path,
        member=str(row),
        key=str(key) if key is not None else str(row),
        data=data,
        url=url,
        caption=caption,
        meta=meta,
        error=error,
    )


# --- sidecars and small helpers ------------------------------------------------------------


def parse_meta(raw: bytes, shard: str, member: str) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("%s: %s is not valid JSON (%s); its metadata is ignored", shard, member, exc)
        return {}
    if not isinstance(meta, dict):
        log.warning("%s: %s holds a JSON %s, not an object; ignored", shard, member, type(meta))
        return {}
    return meta


def caption_text(raw: bytes) -> str:
    # Verbatim, as img2dataset wrote it; only a line end that an editor added is dropped.
    return raw.decode("utf-8", "replace").rstrip("\r\n")


def read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        log.warning("%s: cannot be read (%s)", path, exc.strerror or exc)
        return None


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())
