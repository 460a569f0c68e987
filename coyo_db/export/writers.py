"""The three export formats, each fed Arrow record batches in export order.

- :class:`ParquetFiles`: ``part-00000.parquet``, ``part-00001.parquet``, ... of at most
  `rows_per_file` rows each (img2dataset reads the folder with ``--input_format parquet``);
- :func:`write_lance`: one Lance dataset in the target folder;
- :class:`WebDatasetTars`: ``00000.tar``, ``00001.tar``, ... of at most `samples_per_file`
  samples, each ``<key>.<ext>`` (the image bytes as ingested), ``<key>.txt`` (the caption) and
  ``<key>.json`` (id, url, caption and every other exported column), as img2dataset writes
  them; webdataset and open_clip's training loader read them as they are.

Every writer counts rows per file and tallies the ids it wrote (:class:`IdTally`), which is what
the manifest records and what a replay compares.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import tarfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from coyo_db.id_lookup import mix64
from coyo_db.progress import NullProgress, Progress

PARQUET_PATTERN = "part-{:05d}.parquet"
TAR_PATTERN = "{:05d}.tar"
# Image formats as the `images` table names them -> the extension webdataset keys on.
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
ROW_GROUP_ROWS = 1 << 17  # rows per Parquet row group
IN_FLIGHT = 2  # row groups queued per encoding lane
PARQUET_LANES = 2  # files encoded at once


@dataclass
class WrittenFile:
    """One output file: its name inside the export folder, rows and bytes."""

    path: str
    rows: int
    bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "bytes": self.bytes}


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of each int64 (SplitMix64: the golden-ratio step, then its
    finaliser), vectorised."""
    z = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
    return mix64(z)


@dataclass
class IdTally:
    """Count and fingerprints of the ids written, fed one batch at a time.

    ``set_hash``: the sum mod 2^64 of SplitMix64(id) over every row, as 16 hex digits. It does
    not depend on row order, so two exports of the same ids in another order agree.
    ``sha256``: SHA-256 of the ids as little-endian int64 in the order written.
    """

    count: int = 0
    _sum: int = 0
    _sha: Any = field(default_factory=hashlib.sha256)

    def update(self, ids: pa.Array | pa.ChunkedArray | np.ndarray) -> None:
        if not isinstance(ids, np.ndarray):
            ids = ids.to_numpy()
        values = np.ascontiguousarray(ids, dtype="<i8")
        self.count += len(values)
        if len(values):
            with np.errstate(over="ignore"):
                self._sum = (self._sum + int(_splitmix64(values).sum(dtype=np.uint64))) % 2**64
            self._sha.update(values.tobytes())

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "set_hash": f"{self._sum:016x}",
            "sha256": self._sha.hexdigest(),
        }


class ParquetFiles:
    """Parquet files of at most `rows_per_file` rows each, named ``part-NNNNN.parquet``, in
    row groups of :data:`ROW_GROUP_ROWS` (the last of a file may be smaller).

    With `lanes` (single-thread executors), file k is encoded and written on lane k mod
    len(lanes), row group after row group, while the caller gathers the next rows (pyarrow
    releases the GIL while it encodes): when encoding is slower than the query, the next file
    is encoded beside the one still being finished. At most :data:`IN_FLIGHT` row groups wait
    per lane, so memory stays bounded."""

    def __init__(
        self, folder: Path, rows_per_file: int, lanes: Sequence[ThreadPoolExecutor] = ()
    ) -> None:
        self.folder = folder
        self.rows_per_file = rows_per_file
        self.files: list[WrittenFile] = []
        self._lanes = list(lanes)
        self._queued: list[deque[Future[None]]] = [deque() for _ in self._lanes]
        self._file: _ParquetFile | None = None  # the file being filled
        self._rows_in_file = 0
        # batches held for the next row group: a query's stream comes in batches of a few
        # thousand rows, and one row group each would make files slow to write and to read
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            if self._file is None:
                self._start()
            room = self.rows_per_file - self._rows_in_file - self._pending_rows
            part, batch = batch.slice(0, room), batch.slice(room)
            self._pending.append(part)
            self._pending_rows += part.num_rows
            if self._pending_rows >= min(ROW_GROUP_ROWS, self.rows_per_file - self._rows_in_file):
                self._flush()
            if self._rows_in_file >= self.rows_per_file:
                self._close()

    def _start(self) -> None:
        name = PARQUET_PATTERN.format(len(self.files))
        self.files.append(WrittenFile(name, 0))
        self._file = _ParquetFile(self.folder / name, self.files[-1])
        self._rows_in_file = 0

    def _run(self, task: Callable[[], None]) -> None:
        """`task` of the current file, on its lane (in order), or here without lanes."""
        if not self._lanes:
            task()
            return
        lane = (len(self.files) - 1) % len(self._lanes)
        queued = self._queued[lane]
        while len(queued) >= IN_FLIGHT:
            queued.popleft().result()
        queued.append(self._lanes[lane].submit(task))

    def _flush(self) -> None:
        if not self._pending or self._file is None:
            return
        group, file = pa.Table.from_batches(self._pending), self._file
        self._run(lambda: file.write(group))
        self._rows_in_file += group.num_rows
        self._pending, self._pending_rows = [], 0

    def _close(self, schema: pa.Schema | None = None) -> None:
        self._flush()
        file = self._file
        if file is not None:
            self._run(lambda: file.close(schema))
        self._file = None

    def finish(self, schema: pa.Schema) -> list[WrittenFile]:
        """Close the last file and wait for every lane (raising what writing raised); an empty
        export still gets one empty file with the schema."""
        if not self.files:
            self._start()
        self._close(schema)
        for queued in self._queued:
            while queued:
                queued.popleft().result()
        return self.files


class _ParquetFile:
    """One Parquet file, opened at its first row group (whose columns decide the encoding)."""

    def __init__(self, path: Path, record: WrittenFile) -> None:
        self.path, self.record = path, record
        self._writer: Any = None

    def write(self, group: pa.Table) -> None:
        if self._writer is None:
            self._open(group.schema, dictionary_columns(group))
        self._writer.write_table(group, row_group_size=max(1, group.num_rows))
        self.record.rows += group.num_rows

    def close(self, schema: pa.Schema | None) -> None:
        if self._writer is None:  # no rows: the schema alone
            self._open(schema, True)
        self._writer.close()
        self.record.bytes = self.path.stat().st_size

    def _open(self, schema: pa.Schema | None, dictionary: bool | list[str]) -> None:
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(self.path, schema, use_dictionary=dictionary)


def dictionary_columns(group: pa.Table) -> list[str]:
    """The columns of `group` to dictionary-encode: those whose values repeat (at most half of
    them distinct). For mostly distinct values (ids, urls, captions, scores) a dictionary only
    costs time, a third of the writing, and makes the file larger: the writer drops it once it
    outgrows its page."""
    import pyarrow.compute as pc

    chosen = []
    for name, column in zip(group.column_names, group.columns, strict=True):
        values = len(column) - column.null_count
        try:
            distinct = pc.count_distinct(column).as_py()
        except pa.ArrowNotImplementedError:  # nested types: the writer's default
            distinct = 0
        if distinct <= values // 2:
            chosen.append(name)
    return chosen


def write_parquet(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, folder: Path, rows_per_file: int
) -> list[WrittenFile]:
    """`batches` as Parquet files in `folder`, encoded on :data:`PARQUET_LANES` threads."""
    with contextlib.ExitStack() as stack:
        lanes = [
            stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix=f"parquet-{lane}"))
            for lane in range(PARQUET_LANES)
        ]
        files = ParquetFiles(folder, rows_per_file, lanes)
        for batch in batches:
            files.write(batch)
        return files.finish(schema)


def write_lance(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, folder: Path
) -> list[WrittenFile]:
    """One Lance dataset at `folder` (which may exist, empty)."""
    import lance

    rows = 0

    def counted() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for batch in batches:
            rows += batch.num_rows
            yield batch

    reader = pa.RecordBatchReader.from_batches(schema, counted())
    lance.write_dataset(reader, str(folder), mode="create")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return [WrittenFile(".", rows, size)]


@dataclass
class WebDatasetStats:
    files: list[WrittenFile]
    written: int
    missing: int
    missing_reasons: dict[str, int]


class WebDatasetTars:
    """Tar files of ``<key>.<ext>``, ``<key>.txt``, ``<key>.json`` samples.

    Members get a fixed mtime and owner so that the same export gives the same bytes.
    """

    def __init__(self, folder: Path, samples_per_file: int) -> None:
        self.folder = folder
        self.samples_per_file = samples_per_file
        self.files: list[WrittenFile] = []
        self._tar: tarfile.TarFile | None = None
        self._in_file = 0

    def add(self, key: str, image: bytes, ext: str, text: str, meta: dict[str, Any]) -> None:
        if self._tar is None:
            name = TAR_PATTERN.format(len(self.files))
            # closed by _close when the tar is full, or by finish
            self._tar = tarfile.open(self.folder / name, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
            self.files.append(WrittenFile(name, 0))
            self._in_file = 0
        payload = json.dumps(meta, ensure_ascii=False, default=_json_default).encode("utf-8")
        for suffix, data in ((ext, image), ("txt", text.encode("utf-8")), ("json", payload)):
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._in_file += 1
        if self._in_file >= self.samples_per_file:
            self._close()

    def _close(self) -> None:
        assert self._tar is not None
        self._tar.close()
        self._tar = None
        last = self.files[-1]
        last.rows = self._in_file
        last.bytes = (self.folder / last.path).stat().st_size

    def finish(self) -> list[WrittenFile]:
        if self._tar is not None:
            self._close()
        return self.files


def write_webdataset(
    table: pa.Table,
    locations: pa.Table,
    folder: Path,
    samples_per_file: int,
    tally: IdTally,
    progress: Progress | None = None,
) -> WebDatasetStats:
    """Tar files of the images of `table`'s rows (the export's output files).

    `locations` is aligned with `table` (one row each): ``shard``, ``member``, ``format`` from
    the `images` table (and its ``caption``, the ``.txt`` when the export has no ``text``), null
    where the row has no image. Images are read one pass per shard
    (:func:`coyo_db.ingest.image_fetch.fetch_images`), so samples come in shard order; each
    sample's key is its row's position in the export, zero-padded to 9 digits.
    """
    from coyo_db.ingest.image_fetch import fetch_images

    progress = progress or NullProgress()
    has_location = np.asarray(
        locations["shard"].is_valid().to_numpy(zero_copy_only=False), dtype=bool
    )
    rows = np.flatnonzero(has_location)
    reasons: dict[str, int] = {}
    if (absent := len(table) - len(rows)) > 0:
        reasons["no row in the images table"] = absent
    shards_col = locations["shard"].to_pylist()
    members_col = locations["member"].to_pylist()
    formats_col = locations["format"].to_pylist()
    captions_col = locations["caption"].to_pylist()
    text_name = "text" if "text" in table.column_names else None
    records = table.to_pylist()  # per-sample work is tar I/O; one dict per row is small beside it
    digits = max(9, len(str(len(table))))
    writer = WebDatasetTars(folder, samples_per_file)
    written_ids: list[int] = []
    progress.start("export webdataset", total=len(rows))
    fetched = fetch_images((shards_col[r], members_col[r]) for r in rows.tolist())
    for image in fetched:
        row = int(rows[image.index])
        if image.data is None:
            reason = image.error or "no image bytes"
            reasons[reason] = reasons.get(reason, 0) + 1
            progress.advance(1)
            continue
        meta = records[row]
        text = meta.get(text_name) if text_name else None
        if text is None:
            text = captions_col[row]
        key = f"{row:0{digits}d}"
        meta = {"key": key, **meta}
        ext = EXTENSIONS.get(str(formats_col[row] or "").upper(), "jpg")
        writer.add(key, image.data, ext, "" if text is None else str(text), meta)
        written_ids.append(int(meta["id"]))
        progress.advance(1)
    progress.finish()
    tally.update(np.asarray(written_ids, dtype=np.int64))
    return WebDatasetStats(
        writer.finish(), len(written_ids), len(table) - len(written_ids), reasons
    )


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
