"""Image shards for `ingest images`: img2dataset output and plain folders, read as a stream.

:func:`find_shards` turns files, folders and globs into shards of four kinds:

- ``webdataset``: an img2dataset ``.tar`` of ``<key>.jpg|.png|.webp|...``, ``<key>.txt``
  (caption) and ``<key>.json`` (url, caption, key, status, width, height and any column kept with
  ``--save_additional_columns``, such as COYO's ``id``). Members of one sample are contiguous, as
  webdataset writes them; the tar is read member by member, never whole.
- ``parquet``: img2dataset's ``parquet`` output, one row per image with its bytes in a binary
  column (``jpg``, ``png``, ``webp``, ``jpeg``, ``image``, ``img``, ``bytes``, or a Hugging Face
  ``image`` struct with a ``bytes`` field) next to key, url, caption and extra columns. A Parquet
  file without such a column (COYO's metadata, img2dataset's per-shard metadata) is not a shard.
- ``files``: img2dataset's ``files`` output, numbered folders (``00000/``) of ``<key>.jpg`` with
  ``<key>.txt`` and ``<key>.json`` beside it; each folder is one shard.
- ``folder``: any other folder of images, searched recursively. Each directory that directly
  holds images is one shard (its subdirectories are shards of their own), so adding images to
  one directory leaves the other shards' fingerprints alone. A directory of more than
  :data:`FOLDER_SHARD_FILES` images is cut into shards of that many files in name order, with
  paths ``<dir>#0``, ``<dir>#1``...: a shard is one commit per table, and resume works shard by
  shard. ``.txt`` / ``.json`` files beside an image are read as its caption / metadata.

Hidden files and folders (a leading dot, such as macOS ``._x.jpg``) are skipped, and links to
folders are not followed. Inside folders
and glob matches, files that are not shards are skipped (img2dataset's ``_stats.json`` and
per-shard metadata Parquet silently, other Parquet without image bytes with a warning); a file
named on its own must be a shard.

What cannot be read becomes an :class:`ImageRecord` with ``error`` set (the job quarantines it
and goes on): a zero-byte image, a tar cut short (the records before the cut come out as usual,
then one record for the broken member), img2dataset's failed rows (with its ``error_message``).
A ``.json`` that does not parse gives ``meta == {}`` and a logged warning, not an error.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from coyo_db.catalog.ledger import file_fingerprint
from coyo_db.errors import InputError, SourceFileError
from coyo_db.ingest.image_types import ImageRecord
from coyo_db.ingest.parquet_sources import parquet_metadata

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "avif"})
# Which of a sample's image members is its image, when a tar sample holds more than one.
_IMAGE_PREFERENCE = ("jpg", "jpeg", "png", "webp", "avif", "gif", "bmp", "tif", "tiff")
IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "img", "bytes")
FOLDER_SHARD_FILES = 10_000
PARQUET_BATCH_ROWS = 256

_GLOB_CHARS = re.compile(r"[*?\[]")
_BLOCK = tarfile.BLOCKSIZE
_LFS_PREFIX = b"version https://git-lfs.github.com/spec/v1"


# --- shards ---------------------------------------------------------------------------------


class ImageShard(ABC):
    """One unit of ingest: read as a stream of records, committed and resumed as a whole."""

    path: str
    kind: ClassVar[str]

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A content fingerprint: the same content gives the same value wherever it lies."""

    @abstractmethod
    def count(self) -> int | None:
        """How many records :meth:`records` yields, when known without reading the shard."""

    @abstractmethod
    def records(self) -> Iterator[ImageRecord]:
        """The shard's images in order, one :class:`ImageRecord` each, bad ones included."""


@dataclass(frozen=True)
class TarShard(ImageShard):
    """An img2dataset webdataset ``.tar``."""

    path: str
    kind: ClassVar[str] = "webdataset"

    @cached_property
    def fingerprint(self) -> str:
        return file_fingerprint(self.path)

    def count(self) -> int | None:
        """The ``successes`` of img2dataset's ``<shard>_stats.json`` beside the tar, if any."""
        stats = Path(self.path).with_name(Path(self.path).stem + "_stats.json")
        try:
            value = json.loads(stats.read_text(encoding="utf-8")).get("successes")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, int) and value >= 0 else None

    def records(self) -> Iterator[ImageRecord]:
        return _tar_records(self.path)


@dataclass(frozen=True)
class ParquetShard(ImageShard):
    """An img2dataset ``parquet`` file holding image bytes."""

    path: str
    image_column: str
    image_field: str | None = None  # the struct field holding the bytes (Hugging Face `image`)
    rows: int = 0
    kind: ClassVar[str] = "parquet"

    @cached_property
    def fingerprint(self) -> str:
        return file_fingerprint(self.path)

    def count(self) -> int | None:
        return self.rows

    def records(self) -> Iterator[ImageRecord]:
        return _parquet_records(self)


@dataclass(frozen=True)
class FolderShard(ImageShard):
    """Image files directly inside one directory (or one chunk of a huge one)."""

    path: str
    folder: str
    names: tuple[str, ...]  # image file names, sorted
    sidecars: frozenset[str] = field(default_factory=frozenset)  # .txt / .json names present
    files_layout: bool = False  # img2dataset `files` output rather than a plain folder

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "files" if self.files_layout else "folder"

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the sorted (name, size, mtime_ns) of the images and their sidecars."""
        digest = hashlib.sha256()
        for name in sorted(self._all_files()):
            try:
                st = os.stat(os.path.join(self.folder, name))
            except OSError:
                size, mtime = -1, -1
            else:
                size, mtime = st.st_size, st.st_mtime_ns
            digest.update(f"{name}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()[:32]

    def count(self) -> int | None:
        return len(self.names)

    def records(self) -> Iterator[ImageRecord]:
        for name in self.names:
            yield self._record(name)

    def _all_files(self) -> list[str]:
        files = list(self.names)
        for name in self.names:
            stem = _stem(name)
            files += [s for s in (f"{stem}.txt", f"{stem}.json") if s in self.sidecars]
        return list(dict.fromkeys(files))

    def _record(self, name: str) -> ImageRecord:
        stem = _stem(name)
        meta: dict[str, Any] = {}
        caption = None
        if f"{stem}.json" in self.sidecars:
            raw = _read_file(os.path.join(self.folder, f"{stem}.json"))
            meta = _parse_meta(raw, self.path, f"{stem}.json") if raw is not None else {}
        if f"{stem}.txt" in self.sidecars:
            raw = _read_file(os.path.join(self.folder, f"{stem}.txt"))
            caption = _text(raw) if raw is not None else None
        url = meta.get("url") if isinstance(meta.get("url"), str) else None
        if caption is None and isinstance(meta.get("caption"), str):
            caption = meta["caption"]
        base = {"shard": self.path, "member": name, "key": stem, "url": url, "caption": caption}
        try:
            with open(os.path.join(self.folder, name), "rb") as fh:
                data = fh.read()
        except OSError as exc:
            return ImageRecord(
                **base, data=None, meta=meta, error=f"unreadable file: {exc.strerror or exc}"
            )
        error = "zero-byte image" if not data else None
        return ImageRecord(**base, data=data, meta=meta, error=error)


# --- finding shards -------------------------------------------------------------------------


def find_shards(paths: Sequence[str | Path]) -> list[ImageShard]:
    """The image shards named by `paths`: files, folders (searched recursively) and globs.

    Order is kept (argument by argument, sorted within each); a shard named twice is kept once.
    Raises :class:`InputError` for a path that does not exist or holds no shard, and
    :class:`SourceFileError` for a file named on its own that is not a shard.
    """
    if not paths:
        raise InputError("give at least one .tar, .parquet, folder or glob")
    found: dict[str, ImageShard] = {}
    for raw in paths:
        text = str(raw)
        path = Path(text).expanduser()
        if path.is_file():
            shards = [_file_shard(path.resolve(), strict=True)]
        elif path.is_dir():
            shards = _folder_shards(path.resolve())
            if not shards:
                raise InputError(
                    f"{text}: no image shards in this folder (.tar, Parquet with image bytes,"
                    " or image files)"
                )
        elif _GLOB_CHARS.search(text):
            shards = _glob_shards(text)
        else:
            raise InputError(f"{text}: no such file or folder")
        for shard in shards:
            if shard is not None:
                found.setdefault(shard.path, shard)
    return list(found.values())


def _glob_shards(pattern: str) -> list[ImageShard]:
    hits = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
    if not hits:
        raise InputError(f"{pattern}: no files match this pattern")
    shards: list[ImageShard] = []
    for hit in hits:
        hit_path = Path(hit).resolve()
        if hit_path.is_dir():
            shards += _folder_shards(hit_path)
        elif _is_visible(hit_path.name):
            shard = _file_shard(hit_path, strict=False)
            if shard is not None:
                shards.append(shard)
    if not shards:
        raise InputError(f"{pattern}: the matching files hold no image shards")
    return shards


def _file_shard(path: Path, *, strict: bool) -> ImageShard | None:
    """The shard a file is, or None (strict=False) / SourceFileError (strict) when it is none."""
    suffix = path.suffix.lower()
    if suffix == ".tar":
        _check_tar(path)
        return TarShard(str(path))
    if suffix == ".parquet":
        shard = _parquet_shard(path)
        if shard is not None:
            return shard
        problem = "is a Parquet file without image bytes (no column " + ", ".join(
            repr(c) for c in IMAGE_COLUMNS
        )
        sidecar = _sidecar_of(path)
        if sidecar:
            problem += f"): img2dataset's metadata for {sidecar.name}, give that instead"
        else:
            problem += "): COYO metadata goes in with `coyo-db ingest metadata`"
        if strict:
            raise SourceFileError(path, problem)
        if not sidecar:
            log.warning("%s %s; skipped", path, problem)
        return None
    if strict:
        what = "an image file" if suffix.lstrip(".") in IMAGE_EXTENSIONS else "not an image shard"
        raise SourceFileError(
            path,
            f"is {what}: give a .tar (webdataset), a .parquet with image bytes, or a folder",
        )
    return None


def _folder_shards(root: Path) -> list[ImageShard]:
    shards: list[ImageShard] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if _is_visible(d))
        visible = sorted(f for f in files if _is_visible(f))
        images = [f for f in visible if _extension(f) in IMAGE_EXTENSIONS]
        for name in visible:
            if name.lower().endswith((".tar", ".parquet")):
                shard = _file_shard(Path(folder) / name, strict=False)
                if shard is not None:
                    shards.append(shard)
        if images:
            shards += _directory_shards(Path(folder), images, set(visible))
    return shards


def _directory_shards(folder: Path, images: list[str], files: set[str]) -> list[FolderShard]:
    stems = {_stem(name) for name in images}
    sidecars = frozenset(f for f in files if _extension(f) in ("txt", "json") and _stem(f) in stems)
    files_layout = folder.name.isdigit() and any(_extension(s) == "json" for s in sidecars)
    if len(images) <= FOLDER_SHARD_FILES:
        return [FolderShard(str(folder), str(folder), tuple(images), sidecars, files_layout)]
    shards = []
    for number, start in enumerate(range(0, len(images), FOLDER_SHARD_FILES)):
        names = tuple(images[start : start + FOLDER_SHARD_FILES])
        mine = {_stem(n) for n in names}
        own = frozenset(s for s in sidecars if _stem(s) in mine)
        shards.append(FolderShard(f"{folder}#{number}", str(folder), names, own, files_layout))
    return shards


def _parquet_shard(path: Path) -> ParquetShard | None:
    import pyarrow as pa

    metadata = parquet_metadata(path)
    schema = metadata.schema.to_arrow_schema()
    for name in IMAGE_COLUMNS:
        if name not in schema.names:
            continue
        kind = schema.field(name).type
        if _is_binary(kind):
            return ParquetShard(str(path), name, None, metadata.num_rows)
        if pa.types.is_struct(kind):
            index = kind.get_field_index("bytes")
            if index >= 0 and _is_binary(kind.field(index).type):
                return ParquetShard(str(path), name, "bytes", metadata.num_rows)
    return None


def _check_tar(path: Path) -> None:
    """Refuse files that are not tars at all (empty, an HTML page, an LFS pointer)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_BLOCK)
    except OSError as exc:
        raise SourceFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not head:
        raise SourceFileError(path, "is empty (0 bytes): download it again")
    if len(head) < _BLOCK:
        raise SourceFileError(path, f"is truncated (only {len(head)} bytes): download it again")
    if head.startswith(_LFS_PREFIX):
        raise SourceFileError(path, "is a Git LFS pointer, not a tar: run `git lfs pull`")
    if head.count(0) == len(head):
        return  # an empty archive: end-of-archive blocks only
    try:
        tarfile.TarInfo.frombuf(head, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        text = head.lstrip().lower()
        if text.startswith((b"<!doctype html", b"<html")):
            raise SourceFileError(path, "is an HTML page, not a tar: download it again") from None
        raise SourceFileError(path, f"is not a tar file (it starts with {head[:16]!r})") from None


def _sidecar_of(path: Path) -> Path | None:
    """The img2dataset shard a metadata Parquet describes (same stem: .tar or folder)."""
    for candidate in (path.with_suffix(".tar"), path.with_suffix("")):
        if candidate.exists():
            return candidate
    return None


# --- reading tars ---------------------------------------------------------------------------


@dataclass
class _Sample:
    """The members of one webdataset sample, gathered as the tar streams by."""

    key: str
    first: str
    parts: dict[str, bytes] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


def _tar_records(path: str) -> Iterator[ImageRecord]:
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
        meta = _parse_meta(sample.parts["json"], path, sample.names["json"])
    caption = _text(sample.parts["txt"]) if "txt" in sample.parts else None
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


def _parquet_records(shard: ParquetShard) -> Iterator[ImageRecord]:
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


# --- small helpers --------------------------------------------------------------------------


def _parse_meta(raw: bytes, shard: str, member: str) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("%s: %s is not valid JSON (%s); its metadata is ignored", shard, member, exc)
        return {}
    if not isinstance(meta, dict):
        log.warning("%s: %s holds a JSON %s, not an object; ignored", shard, member, type(meta))
        return {}
    return meta


def _text(raw: bytes) -> str:
    # Verbatim, as img2dataset wrote it; only a line end that an editor added is dropped.
    return raw.decode("utf-8", "replace").rstrip("\r\n")


def _read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        log.warning("%s: cannot be read (%s)", path, exc.strerror or exc)
        return None


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _is_visible(name: str) -> bool:
    return not name.startswith(".")


def _is_binary(kind: Any) -> bool:
    import pyarrow as pa

    return (
        pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
    )


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())
