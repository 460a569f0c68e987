"""Reading image shards record by record: webdataset tars as a stream, img2dataset Parquet in
batches, and the sidecar files (.json metadata, .txt captions) beside images.

A tar is read member by member, never whole; a tar cut short yields the records before the cut
as usual, then one record for the broken member. A corrupt Parquet page yields one error record
for each row it made unreadable. A ``.json`` that does not parse gives ``meta == {}`` and a
logged warning, not an error (see :mod:`coyo_db.ingest.image_shards` for the shard kinds).

Every record passes :func:`checked_record` on its way out, so that nothing a reader yields can
fail a table write later. A sample is refused (its ``error`` set, so the job quarantines it)
when

- its ``.json`` holds valid JSON that is not an object (``json is not an object``);
- a text is not valid UTF-8 (or, from a JSON ``\\u`` escape, a lone surrogate):
  ``invalid UTF-8 in member name`` (a tar member's or a file's name), ``... in key``,
  ``... in url``, ``... in caption``, or ``... in <field>`` for any other field of its
  metadata. Text is read with ``surrogateescape`` so that such bytes are found, then replaced
  by U+FFFD in the record, which stays readable in `quarantine`;
- its metadata has an `id` that cannot be an image id (``bad id: not an integer``, ``bad id:
  does not fit int64``; see :func:`coyo_db.ingest.image_ids.id_problem`).
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from coyo_db.errors import SourceFileError
from coyo_db.ingest.image_ids import id_problem
from coyo_db.ingest.image_types import ImageRecord

if TYPE_CHECKING:
    from coyo_db.ingest.image_shards import ParquetShard

log = logging.getLogger(__name__)

# Which of a sample's image members is its image, when a tar sample holds more than one.
_IMAGE_PREFERENCE = ("jpg", "jpeg", "png", "webp", "avif", "gif", "bmp", "tif", "tiff")
PARQUET_BATCH_ROWS = 256
_BLOCK = tarfile.BLOCKSIZE
NOT_AN_OBJECT = "json is not an object"
# Put for a nested Parquet value whose text is not UTF-8: the lone surrogate that
# ``surrogateescape`` makes of a bad byte, so :func:`checked_record` refuses the row.
_UNREADABLE_TEXT = "\udcff"
# (field of ImageRecord, how a reason names it), in the order reasons list them
_TEXT_FIELDS = (("member", "member name"), ("key", "key"), ("url", "url"), ("caption", "caption"))


# --- reading tars ---------------------------------------------------------------------------


@dataclass
class _Sample:
    """The members of one webdataset sample, gathered as the tar streams by."""

    key: str
    first: str
    parts: dict[str, bytes] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)  # where each part's data starts


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
            sample.offsets.setdefault(ext, member.offset_data)
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
    key = _split_member(name)[0].rsplit("/", 1)[-1]
    yield checked_record(ImageRecord(path, name, key, None, error=error))


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
        meta, problem = parse_meta(sample.parts["json"], path, sample.names["json"])
        error = error or problem
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
    record = ImageRecord(
        shard=path,
        member=member,
        key=sample.key.rsplit("/", 1)[-1],
        data=data,
        url=url,
        caption=caption,
        meta=meta,
        error=error,
        data_offset=sample.offsets.get(ext) if ext and data else None,
    )
    return checked_record(record)


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
            others = _rows(batch.drop_columns([shard.image_column]))
            for data, meta in zip(_values(images), others, strict=True):
                yield checked_record(_parquet_record(shard.path, row, data, meta))
                row += 1
    except (OSError, pa.ArrowException, ValueError) as exc:
        # A corrupt page: the rows from here on cannot be read; say so for each of them.
        # (pyarrow raises UnicodeDecodeError, a ValueError, for some damaged metadata.)
        reason = f"unreadable Parquet row: {_one_line(exc)}"
        for missing in range(row, shard.rows):
            yield checked_record(
                ImageRecord(shard.path, str(missing), str(missing), None, error=reason)
            )


def failed_downloads(shard: str, metadata: str) -> Iterator[ImageRecord]:
    """The samples img2dataset failed to download for a webdataset or files `shard`: the rows
    of its per-shard `metadata` Parquet whose ``status`` is not ``success``, one error record
    each with img2dataset's reason (as in its `parquet` output, :func:`parquet_records`).
    Those samples are not in the shard itself. Metadata that cannot be read is skipped with a
    warning: it is a report, not the shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    name = metadata.rsplit("/", 1)[-1]
    try:
        reader = pq.ParquetFile(metadata)
        if "status" not in reader.schema_arrow.names:
            return
        for batch in reader.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for meta in _rows(batch):
                if meta.get("status") not in (None, "success"):
                    record = _parquet_record(shard, row, None, meta)
                    yield checked_record(replace(record, member=f"{name}#{row}"))
                row += 1
    except (OSError, pa.ArrowException, ValueError) as exc:
        log.warning(
            "%s: cannot be read after row %d (%s); img2dataset's failed downloads from there "
            "on are not listed",
            metadata,
            row,
            _one_line(exc),
        )


def _rows(batch: Any) -> list[dict[str, Any]]:
    """The rows of `batch` as dicts, text that is not UTF-8 kept (see :func:`_values`)."""
    columns = {name: _values(batch.column(name)) for name in batch.schema.names}
    return [
        {name: values[row] for name, values in columns.items()} for row in range(batch.num_rows)
    ]


def _values(column: Any) -> list[Any]:
    """`column` as Python values. Text that is not UTF-8 (Arrow does not check it on reading)
    comes out with ``surrogateescape``; nested in lists or structs, as :data:`_UNREADABLE_TEXT`.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        pass
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        data = pc.cast(column, pa.large_binary()).to_pylist()
        return [None if v is None else v.decode("utf-8", "surrogateescape") for v in data]
    values = []
    for index in range(len(column)):
        try:
            values.append(column[index].as_py())
        except UnicodeDecodeError:
            values.append(_UNREADABLE_TEXT)
    return values


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


def parse_meta(raw: bytes, shard: str, member: str) -> tuple[dict[str, Any], str | None]:
    """img2dataset's .json as a dict, and why its sample must be refused (None: it need not).

    JSON that does not parse is ignored with a warning ({}, None). Valid JSON that is not an
    object refuses the sample; it is kept as ``{"json": value}`` for the quarantine record.
    Bytes that are not UTF-8 are read with ``surrogateescape`` (:func:`checked_record` finds
    them).
    """
    try:
        meta = _json_value(raw)
    except (ValueError, RecursionError) as exc:
        log.warning("%s: %s is not valid JSON (%s); its metadata is ignored", shard, member, exc)
        return {}, None
    if not isinstance(meta, dict):
        return {"json": meta}, f"{NOT_AN_OBJECT} (a JSON {_json_kind(meta)})"
    return meta, None


def _json_value(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        return json.loads(raw.decode("utf-8", "surrogateescape"))


def _json_kind(value: Any) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def caption_text(raw: bytes) -> str:
    """A .txt caption verbatim, as img2dataset wrote it; only a line end that an editor added
    is dropped. Bytes that are not UTF-8 stay findable (``surrogateescape``)."""
    return raw.decode("utf-8", "surrogateescape").rstrip("\r\n")


def checked_record(record: ImageRecord) -> ImageRecord:
    """`record` with its texts made valid UTF-8 and, for every text that was not and for an
    unusable metadata `id`, a reason added to its ``error`` (see the module's docstring)."""
    problems: list[str] = []
    fixed: dict[str, Any] = {}
    for name, label in _TEXT_FIELDS:
        value = getattr(record, name)
        if value is not None and not _is_text(value):
            fixed[name] = _repaired(value)
            if name != "key" or "member" not in fixed:  # a key is cut from its member name
                problems.append(f"invalid UTF-8 in {label}")
    meta, fields = _repaired_meta(record.meta)
    if fields:
        fixed["meta"] = meta
        problems += [f"invalid UTF-8 in {field}" for field in fields]
    bad_id = id_problem(meta)
    if bad_id is not None:
        problems.append(bad_id)
    # a reader's own reason may quote a member name that is not UTF-8
    known = [] if record.error is None else [_repaired(record.error)]
    if not problems:
        return record if known == [record.error] or not known else replace(record, error=known[0])
    error = "; ".join(dict.fromkeys(known + problems))
    return replace(record, **fixed, data=None, error=error)


def _repaired_meta(meta: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`meta` with every text in it (keys too, at any depth) valid UTF-8, and the top-level
    fields that held text that was not."""
    fields: list[str] = []
    repaired: dict[str, Any] = {}
    for key, value in meta.items():
        good_key = _repaired(key) if isinstance(key, str) and not _is_text(key) else key
        fixed, changed = _repaired_value(value)
        if changed or good_key is not key:
            fields.append(str(good_key))
        repaired[good_key] = fixed
    return (repaired, fields) if fields else (meta, fields)


def _repaired_value(value: Any) -> tuple[Any, bool]:
    """`value` (JSON-like, any depth) with its texts valid UTF-8, and whether any was not.
    Walked with a stack: JSON nests as deep as the parser allows."""
    if isinstance(value, str):
        return (value, False) if _is_text(value) else (_repaired(value), True)
    if not isinstance(value, (dict, list)):
        return value, False
    root: list[Any] = [value]
    changed = False
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]  # (container, slot, value)
    while stack:
        container, slot, item = stack.pop()
        if isinstance(item, str):
            if not _is_text(item):
                container[slot] = _repaired(item)
                changed = True
        elif isinstance(item, list):
            copy = list(item)
            container[slot] = copy
            stack.extend((copy, index, child) for index, child in enumerate(copy))
        elif isinstance(item, dict):
            copy = {}
            for key, child in item.items():
                if isinstance(key, str) and not _is_text(key):
                    key, changed = _repaired(key), True
                copy[key] = child
            container[slot] = copy
            stack.extend((copy, key, child) for key, child in copy.items())
    return root[0], changed


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _repaired(value: str) -> str:
    """`value` with what was not UTF-8 (surrogates) replaced by U+FFFD."""
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate from a JSON \\u escape
        data = value.encode("utf-8", "surrogatepass")
    return data.decode("utf-8", "replace")


def read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        log.warning("%s: cannot be read (%s)", path, exc.strerror or exc)
        return None


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())
