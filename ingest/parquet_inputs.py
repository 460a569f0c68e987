"""Parquet input files for ingest jobs: find them, preflight them, read them in batches.

An ingest job checks every file before it writes anything. The usual download mistakes are
recognised and named in one line, with what to do about them:

- a Git LFS pointer saved instead of the file (what `git clone` of a dataset repository gives
  without `git lfs`; pyarrow only says "Parquet magic bytes not found");
- an HTML or XML page saved under the file's name (a login page, an error page, a /blob/ link);
- an empty file, or one cut short (the Parquet footer is missing or unreadable).

Columns are matched by name against the target schema: extra columns are ignored, a missing one
or one whose type cannot be cast (say, a string `width`) is a :class:`SchemaError`. Casts that
only widen or narrow within a kind (int64 -> int32, float64 -> float32, large_string -> string)
are accepted and done batch by batch. One bad value never fails a file: an integer that does not
fit its target is left null, for the row checks to quarantine (``<column> does not fit
<type>``, see :func:`coyo_db.ingest.row_checks.unfit_values`), and binary text that is not UTF-8
is cast unchecked, for their ``invalid UTF-8 in <column>`` rule.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from coyo_db.catalog.ledger import file_fingerprint
from coyo_db.errors import InputError, SchemaError, SourceFileError

log = logging.getLogger(__name__)

PARQUET_MAGIC = b"PAR1"
ENCRYPTED_MAGIC = b"PARE"
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
_HEAD_BYTES = 1024
_READ_BUFFER = 1 << 20
_GLOB_CHARS = re.compile(r"[*?\[]")

REDOWNLOAD = "download it again"
# What pyarrow raises for damaged bytes: its own errors, I/O errors, and UnicodeDecodeError
# (a ValueError) for a column name or metadata key that a flipped byte left not UTF-8.
_CORRUPT = (OSError, pa.ArrowException, ValueError)


@dataclass(frozen=True)
class ColumnPlan:
    """How a file's columns map onto a target schema."""

    read: list[str]
    casts: dict[str, pa.DataType] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParquetInput:
    """A file that passed preflight: readable Parquet whose columns fit the target schema."""

    path: Path
    fingerprint: str
    num_rows: int
    plan: ColumnPlan

    def iter_batches(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """The target's columns as stored in the file, `batch_size` rows at a time.

        Corruption met while reading (a bad page, a short column chunk) raises
        :class:`SourceFileError`. :meth:`cast` turns a batch into the target's types.
        """
        with self._reading():
            # pre_buffer (pyarrow's default) keeps every row group read so far in memory: a
            # 4M-row file grew to 650 MB. Buffered page reads stay near 50 MB at the same speed.
            parquet = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=_READ_BUFFER)
            yield from parquet.iter_batches(batch_size=batch_size, columns=self.plan.read)

    def read_column(self, name: str) -> pa.ChunkedArray:
        """One whole column in the target's type (a small one, such as the ids)."""
        with self._reading():
            column = pq.ParquetFile(self.path).read(columns=[name]).column(0)
        target = self.plan.casts.get(name)
        return column if target is None else self._cast_column(name, column, target)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Turn a read error of this file into one SourceFileError naming it."""
        try:
            yield
        except MemoryError:
            raise
        except _CORRUPT as exc:
            raise SourceFileError(
                self.path, f"is corrupt ({_one_line(exc)}): {REDOWNLOAD}"
            ) from exc

    def cast(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """`batch` in the target's types (see :func:`fitting_cast` for values that do not fit)."""
        if not self.plan.casts:
            return batch
        columns = list(batch.columns)
        for index, name in enumerate(batch.schema.names):
            target = self.plan.casts.get(name)
            if target is not None:
                columns[index] = self._cast_column(name, columns[index], target)
        return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)

    def _cast_column(self, name: str, column: Any, target: pa.DataType) -> Any:
        try:
            return pc.cast(column, target, safe=True)
        except pa.ArrowInvalid as exc:
            fitted = fitting_cast(column, target)
            if fitted is None:
                raise SchemaError(
                    self.path,
                    f"column {name!r} holds values that do not fit {target} ({_one_line(exc)})",
                ) from None
            return fitted


def fitting_cast(column: Any, target: pa.DataType) -> Any:
    """`column` (an Array or ChunkedArray) cast to `target` when a safe cast refused some of its
    values, None when it cannot be: integers out of `target`'s range become null (in lists too),
    integers too precise for a float target are rounded, binary text is cast without a UTF-8
    check (the row checks find the bad values; one of them must not fail the whole file)."""
    if isinstance(column, pa.ChunkedArray):
        chunks = [fitting_cast(chunk, target) for chunk in column.chunks]
        if any(chunk is None for chunk in chunks):
            return None
        return pa.chunked_array(chunks, type=target)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    stored = column.type
    if is_text_type(target) and is_text_type(stored):
        return _unchecked_text(column, target)
    if pa.types.is_integer(target) and pa.types.is_integer(stored):
        return _ints_that_fit(column, target)
    if pa.types.is_floating(target) and pa.types.is_integer(stored):
        return pc.cast(column, target, safe=False)
    if _is_list(target) and _is_list(stored):
        return _fitting_list(column, target)
    return None


def _unchecked_text(column: pa.Array, target: pa.DataType) -> pa.Array:
    """Binary or string `column` as `target` text, its bytes kept as they are (checked later)."""
    kind = column.type
    if pa.types.is_binary_view(kind) or pa.types.is_string_view(kind):
        column = pc.cast(column, pa.large_binary())
        kind = column.type
    if pa.types.is_binary(kind):
        column = column.view(pa.string())
    elif pa.types.is_large_binary(kind):
        column = column.view(pa.large_string())
    return pc.cast(column, target)  # between string layouts Arrow checks no UTF-8


def _ints_that_fit(column: pa.Array, target: pa.DataType) -> pa.Array:
    """Integer `column` as `target`, the values outside its range null."""
    want, have = np.iinfo(target.to_pandas_dtype()), np.iinfo(column.type.to_pandas_dtype())
    low = pa.scalar(max(int(want.min), int(have.min)), column.type)
    high = pa.scalar(min(int(want.max), int(have.max)), column.type)
    fits = pc.and_(pc.greater_equal(column, low), pc.less_equal(column, high))
    return pc.cast(pc.if_else(fits, column, pa.scalar(None, column.type)), target)


def _fitting_list(column: pa.Array, target: pa.DataType) -> pa.Array | None:
    """A list `column` as the list type `target`, its values fitted by :func:`fitting_cast`."""
    values = fitting_cast(pc.list_flatten(column), target.value_type)
    if values is None:
        return None
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    rebuilt = pa.LargeListArray.from_arrays(
        pa.array(offsets), values, mask=column.is_null() if column.null_count else None
    )
    return pc.cast(rebuilt, target)


def resolve_paths(paths: Sequence[str | Path], suffix: str = ".parquet") -> list[Path]:
    """Files named by `paths`: files as given, folders searched recursively, globs expanded.

    Order is kept (argument by argument, sorted within each); a file named twice is kept once.
    A path that matches nothing raises :class:`InputError`, a file whose name is not UTF-8
    :class:`SourceFileError`.
    """
    if not paths:
        raise InputError("give at least one file, folder or glob")
    found: dict[Path, None] = {}
    for raw in paths:
        text = str(raw)
        path = Path(text).expanduser()
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = _files_under(path, suffix)
            if not matches:
                raise InputError(f"{text}: no *{suffix} files in this folder")
        elif _GLOB_CHARS.search(text):
            matches = []
            for hit in sorted(glob.glob(str(path), recursive=True)):
                hit_path = Path(hit)
                matches.extend(_files_under(hit_path, suffix) if hit_path.is_dir() else [hit_path])
            if not matches:
                raise InputError(f"{text}: no files match this pattern")
        else:
            raise InputError(f"{text}: no such file or folder")
        for match in matches:
            found.setdefault(require_utf8_path(match.resolve()), None)
    return list(found)


def require_utf8_path(path: Path) -> Path:
    """`path`, or a :class:`SourceFileError` if its name is not valid UTF-8 (the catalog keeps
    paths as text, and such a name cannot be written there)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise SourceFileError(shown, "has a name that is not valid UTF-8: rename it") from None
    return path


def _files_under(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.rglob(f"*{suffix}") if p.is_file())


def preflight(path: Path, target: pa.Schema) -> ParquetInput:
    """Check that `path` is readable Parquet with the columns of `target`; read nothing else.

    Raises :class:`SourceFileError` (what is wrong and what to do) or :class:`SchemaError`.
    """
    metadata = parquet_metadata(path)
    schema = metadata.schema.to_arrow_schema()
    plan = plan_columns(path, schema, target)
    return ParquetInput(path, file_fingerprint(path), metadata.num_rows, plan)


def parquet_metadata(path: Path) -> pq.FileMetaData:
    """The footer of a Parquet file, or a SourceFileError saying what the file really is
    (an HTML page, a Git-LFS pointer, a truncated download...)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
            fh.seek(max(0, size - 4))
            tail = fh.read(4)
    except OSError as exc:
        raise SourceFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    problem = describe_non_parquet(head, tail, size)
    if problem:
        raise SourceFileError(path, problem)
    try:
        metadata = pq.ParquetFile(path).metadata
        metadata.schema.to_arrow_schema()  # a corrupt footer may only show here
    except _CORRUPT as exc:
        raise SourceFileError(
            path, f"has a corrupt Parquet footer ({_one_line(exc)}): {REDOWNLOAD}"
        ) from None
    return metadata


def describe_non_parquet(head: bytes, tail: bytes, size: int) -> str | None:
    """Why a file that starts with `head` and ends with `tail` is not Parquet (None if it is)."""
    if size == 0:
        return f"is empty (0 bytes): {REDOWNLOAD}"
    if head.startswith(LFS_POINTER_PREFIX):
        real = re.search(rb"^size (\d+)", head, re.MULTILINE)
        detail = f" ({int(real.group(1)):,} bytes)" if real else ""
        return (
            "is a Git LFS pointer, not Parquet: run `git lfs pull` or download the file"
            f" itself{detail}"
        )
    if not head.startswith(PARQUET_MAGIC):
        return _what_it_is(head)
    if tail == ENCRYPTED_MAGIC:
        return "is encrypted Parquet, which cannot be read without its keys"
    if size < 12 or tail != PARQUET_MAGIC:
        return (
            f"is truncated (the Parquet footer is missing; only {size:,} bytes):"
            f" the download did not finish, {REDOWNLOAD}"
        )
    return None


def _what_it_is(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:512]:
        return (
            "is an HTML page, not Parquet (a web page was saved instead of the file; on the"
            f" Hugging Face hub use the /resolve/ link, not /blob/): {REDOWNLOAD}"
        )
    if text.startswith(b"<?xml") or text.startswith(b"<error"):
        return f"is an XML document (likely a server's error reply), not Parquet: {REDOWNLOAD}"
    if text.startswith((b"{", b"[")):
        return f"is JSON text (likely a server's error reply), not Parquet: {REDOWNLOAD}"
    return f"is not a Parquet file (it starts with {head[:16]!r}, not b'PAR1')"


def plan_columns(path: Path, schema: pa.Schema, target: pa.Schema) -> ColumnPlan:
    """Match a file's `schema` to `target` by column name; raise :class:`SchemaError` if unfit."""
    names = set(schema.names)
    missing = [name for name in target.names if name not in names]
    if missing:
        listed = ", ".join(repr(name) for name in missing)
        noun = "column" if len(missing) == 1 else "columns"
        raise SchemaError(path, f"lacks the {noun} {listed} of the expected schema")
    casts: dict[str, pa.DataType] = {}
    for wanted in target:
        if len(schema.get_all_field_indices(wanted.name)) > 1:
            raise SchemaError(path, f"has the column {wanted.name!r} more than once")
        have = schema.field(wanted.name).type
        if have == wanted.type:
            continue
        if not castable(have, wanted.type):
            raise SchemaError(
                path, f"column {wanted.name!r} is {have}, which cannot be cast to {wanted.type}"
            )
        casts[wanted.name] = wanted.type
    extra = [name for name in schema.names if name not in set(target.names)]
    return ColumnPlan(read=list(target.names), casts=casts, extra=extra)


def castable(stored: pa.DataType, target: pa.DataType) -> bool:
    """Whether values of `stored` may be cast to `target` without changing their kind."""
    if stored == target or pa.types.is_null(stored):
        return True
    if pa.types.is_dictionary(stored):
        return castable(stored.value_type, target)
    if pa.types.is_integer(target):
        return pa.types.is_integer(stored)
    if pa.types.is_floating(target):
        return pa.types.is_floating(stored) or pa.types.is_integer(stored)
    if _is_list(target):
        # Element types may differ (list<int64> labels, non-nullable items, large lists).
        return _is_list(stored) and castable(stored.value_type, target.value_type)
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        # Binary too: some writers store text without the UTF-8 annotation; the cast checks it.
        return is_text_type(stored)
    return False


def _is_list(kind: pa.DataType) -> bool:
    return any(
        check(kind)
        for check in (
            pa.types.is_list,
            pa.types.is_large_list,
            pa.types.is_list_view,
            pa.types.is_large_list_view,
            pa.types.is_fixed_size_list,
        )
    )


def is_text_type(kind: pa.DataType) -> bool:
    """String or binary in any of Arrow's layouts (binary: text without the UTF-8 annotation)."""
    return any(
        check(kind)
        for check in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_string_view,
            pa.types.is_binary,
            pa.types.is_large_binary,
        )
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
