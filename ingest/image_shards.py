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
A ``.json`` that does not parse gives ``meta == {}`` and a logged warning, not an error; one
that holds no JSON object, text that is not UTF-8 and an unusable metadata `id` are errors
(:func:`coyo_db.ingest.image_records.checked_record`). The readers themselves are in
:mod:`coyo_db.ingest.image_records`.
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
from functools import cached_property, partial
from pathlib import Path
from typing import Any, ClassVar

import xxhash

from coyo_db.catalog.ledger import (
    CHUNK_BYTES,
    Fingerprint,
    file_fingerprint,
    hash_file,
    new_fingerprint,
)
from coyo_db.errors import InputError, SourceFileError
from coyo_db.ingest.image_records import (
    caption_text,
    checked_record,
    failed_downloads,
    parquet_records,
    parse_meta,
    read_file,
    tar_records,
)
from coyo_db.ingest.image_types import ImageRecord
from coyo_db.ingest.parquet_inputs import parquet_metadata, require_utf8_path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "avif"})
IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "img", "bytes")
FOLDER_SHARD_FILES = 10_000

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
    def fingerprint(self) -> Fingerprint:
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
    def fingerprint(self) -> Fingerprint:
        return file_fingerprint(self.path)

    def count(self) -> int | None:
        """From img2dataset's ``<shard>_stats.json`` beside the tar, if any: its ``count``
        when its metadata Parquet lists the failed samples too, else its ``successes``."""
        return _stats_count(str(Path(self.path).with_suffix("")))

    def records(self) -> Iterator[ImageRecord]:
        yield from tar_records(self.path)
        yield from _failed_downloads(self.path, str(Path(self.path).with_suffix("")))


@dataclass(frozen=True)
class ParquetShard(ImageShard):
    """An img2dataset ``parquet`` file holding image bytes."""

    path: str
    image_column: str
    image_field: str | None = None  # the struct field holding the bytes (Hugging Face `image`)
    rows: int = 0
    kind: ClassVar[str] = "parquet"

    @cached_property
    def fingerprint(self) -> Fingerprint:
        return file_fingerprint(self.path)

    def count(self) -> int | None:
        return self.rows

    def records(self) -> Iterator[ImageRecord]:
        return parquet_records(self)


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
    def fingerprint(self) -> Fingerprint:
        """A hash of the names and content of the images and their sidecars (never of where
        the folder lies or when its files were written: a copied folder is the same shard)."""
        return folder_fingerprint(self.folder, self._all_files())

    def count(self) -> int | None:
        if self._reports_failures:
            return _stats_count(self.folder)
        return len(self.names)

    def records(self) -> Iterator[ImageRecord]:
        for name in self.names:
            yield self._record(name)
        if self._reports_failures:
            yield from _failed_downloads(self.path, self.folder)

    @property
    def _reports_failures(self) -> bool:
        """img2dataset's failed samples of a `files` folder come with its first chunk."""
        first = self.path == self.folder or self.path == f"{self.folder}#0"
        return self.files_layout and first and _metadata_parquet(self.folder) is not None

    def _all_files(self) -> list[str]:
        files = list(self.names)
        for name in self.names:
            stem = _stem(name)
            files += [s for s in (f"{stem}.txt", f"{stem}.json") if s in self.sidecars]
        return list(dict.fromkeys(files))

    def _record(self, name: str) -> ImageRecord:
        """The image file `name` with its sidecars, through :func:`checked_record`."""
        stem = _stem(name)
        meta: dict[str, Any] = {}
        caption, problem = None, None
        if f"{stem}.json" in self.sidecars:
            raw = read_file(os.path.join(self.folder, f"{stem}.json"))
            if raw is not None:
                meta, problem = parse_meta(raw, self.path, f"{stem}.json")
        if f"{stem}.txt" in self.sidecars:
            raw = read_file(os.path.join(self.folder, f"{stem}.txt"))
            caption = caption_text(raw) if raw is not None else None
        url = meta.get("url") if isinstance(meta.get("url"), str) else None
        if caption is None and isinstance(meta.get("caption"), str):
            caption = meta["caption"]
        base = {"shard": self.path, "member": name, "key": stem, "url": url, "caption": caption}
        try:
            with open(os.path.join(self.folder, name), "rb") as fh:
                data = fh.read()
        except OSError as exc:
            error = problem or f"unreadable file: {exc.strerror or exc}"
            return checked_record(ImageRecord(**base, data=None, meta=meta, error=error))
        error = problem or ("zero-byte image" if not data else None)
        return checked_record(ImageRecord(**base, data=data, meta=meta, error=error))


def _metadata_parquet(stem: str, *, warn: bool = False) -> str | None:
    """img2dataset's per-shard metadata Parquet of the shard `stem` (``<stem>.parquet``, with
    a ``status`` column and no image bytes), if there is one; one that cannot be read is
    none (with a warning if `warn`)."""
    path = Path(stem + ".parquet")
    try:
        if not path.is_file() or parquet_shard(path) is not None:
            return None
        return str(path) if "status" in parquet_metadata(path).schema.names else None
    except (OSError, SourceFileError) as exc:
        if warn:
            log.warning("%s; img2dataset's failed downloads of this shard are not listed", exc)
        return None


def _failed_downloads(shard: str, stem: str) -> Iterator[ImageRecord]:
    metadata = _metadata_parquet(stem, warn=True)
    if metadata is not None:
        yield from failed_downloads(shard, metadata)


def _stats_count(stem: str) -> int | None:
    """How many records a webdataset or files shard gives, from img2dataset's
    ``<stem>_stats.json``: ``count`` (every sample) when ``<stem>.parquet`` lists the failed
    ones, else ``successes``."""
    key = "count" if _metadata_parquet(stem) is not None else "successes"
    try:
        value = json.loads(Path(stem + "_stats.json").read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value >= 0 else None


def folder_fingerprint(folder: str, names: Sequence[str]) -> Fingerprint:
    """An xxh3-128 hash of each file's name, size and content hash, in name order."""
    digest = xxhash.xxh3_128()
    buffer = bytearray(CHUNK_BYTES)
    for name in sorted(names):
        content = xxhash.xxh3_128()
        try:
            size = hash_file(content, os.path.join(folder, name), buffer)
        except OSError:
            size = -1  # the reader quarantines it; the fingerprint just has to differ
        # names hold no NUL and the content hash has a fixed length: entries cannot run together
        digest.update(f"{name}\0{size}\0".encode("utf-8", "surrogateescape") + content.digest())
    return new_fingerprint(digest, partial(legacy_folder_fingerprint, folder, tuple(names)))


def legacy_folder_fingerprint(folder: str, names: Sequence[str]) -> str:
    """The fingerprint versions before :func:`folder_fingerprint` recorded: a hash of the
    sorted (name, size, mtime_ns) of the files (kept to recognise catalogs they wrote)."""
    digest = hashlib.sha256()
    for name in sorted(names):
        try:
            st = os.stat(os.path.join(folder, name))
        except OSError:
            size, mtime = -1, -1
        else:
            size, mtime = st.st_size, st.st_mtime_ns
        digest.update(f"{name}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


# --- finding shards -------------------------------------------------------------------------


def find_shards(paths: Sequence[str | Path]) -> list[ImageShard]:
    """The image shards named by `paths`: files, folders (searched recursively) and globs.

    Order is kept (argument by argument, sorted within each); a shard named twice is kept once.
    Raises :class:`InputError` for a path that does not exist or holds no shard, and
    :class:`SourceFileError` for a file named on its own that is not a shard or for a shard
    whose path is not valid UTF-8 (an image file's own name may not be: that image is
    quarantined).
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
                require_utf8_path(Path(shard.path))  # the catalog keeps it as text
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
        shard = parquet_shard(path)
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


def parquet_shard(path: Path) -> ParquetShard | None:
    """The shard a Parquet file is when it holds image bytes (see :data:`IMAGE_COLUMNS`), else
    None."""
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


# --- small helpers --------------------------------------------------------------------------


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
