"""Lance table operations the catalog builds on: create, stage, commit with properties.

Ingest jobs write fragments first (`stage`) and make them visible in one commit that carries
the job's bookkeeping in its transaction properties (`commit`). A job killed between the two
leaves only unreferenced files, never half an input.

A rerun that rewrites some rows of a table (a dedup method's groups, an audit's hits for a
refset, a taxonomy's classes) uses `replace`: the new rows are staged, the old rows' deletion
vectors written beside them, and both made visible in one commit, so a crash leaves the old rows
or the new ones, never neither.

A `uri` is a local path or an object-store URI (``s3://bucket/prefix/tables/x.lance``); for the
latter every call passes the storage options :mod:`coyo_db.catalog.object_store` reads from the
environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from coyo_db import faults
from coyo_db.catalog.object_store import as_uri, filesystem, storage_options
from coyo_db.errors import CatalogError, InputError

if TYPE_CHECKING:
    import lance

# Large fragments keep scans fast; small row groups would slow DuckDB's scans down.
MAX_ROWS_PER_FILE = 4 * 1024 * 1024
MAX_ROWS_PER_GROUP = 64 * 1024

# The Lance file format of the tables a catalog creates (a table keeps its format: appends to
# it write the same). 2.0 writes ~6x and scans 2-3x faster than 2.1, in ~1.7x the space
# (docs/scaling.md); COYO_DB_LANCE_FILE_VERSION=2.1 chooses the smaller one.
FILE_VERSIONS = ("2.0", "2.1")
FILE_VERSION_ENV = "COYO_DB_LANCE_FILE_VERSION"

PROPERTY_PREFIX = "coyo_db."


def file_version() -> str:
    """The Lance file format new tables get: :data:`FILE_VERSION_ENV`, else 2.0."""
    chosen = os.environ.get(FILE_VERSION_ENV, "").strip() or FILE_VERSIONS[0]
    if chosen not in FILE_VERSIONS:
        raise InputError(
            f"{FILE_VERSION_ENV}={chosen!r} is not a Lance file format coyo-db writes "
            f"(one of {', '.join(FILE_VERSIONS)})"
        )
    return chosen


def exists(uri: str | Path) -> bool:
    """Whether a Lance dataset has been committed at `uri`."""
    remote = as_uri(uri)
    if remote is None:
        return (Path(uri) / "_versions").is_dir()
    import pyarrow.fs as pafs

    fs, path = filesystem(remote)
    return fs.get_file_info(f"{path}/_versions").type == pafs.FileType.Directory


def open_dataset(uri: str | Path, version: int | None = None) -> lance.LanceDataset:
    import lance

    return lance.dataset(str(uri), version=version, storage_options=storage_options(uri))


def create_empty(uri: str | Path, schema: pa.Schema) -> lance.LanceDataset:
    """Create an empty table with `schema` unless one exists already."""
    import lance

    if exists(uri):
        return with_new_columns(open_dataset(uri), schema)
    return lance.write_dataset(
        schema.empty_table(),
        str(uri),
        mode="create",
        max_rows_per_group=MAX_ROWS_PER_GROUP,
        data_storage_version=file_version(),
        storage_options=storage_options(uri),
    )


def with_new_columns(dataset: lance.LanceDataset, schema: pa.Schema) -> lance.LanceDataset:
    """`dataset` with the columns `schema` has past its own added (all null, one commit).

    A table written by an earlier version of coyo-db lacks the columns added since, always at
    the end of its schema; any other difference is left for the write to refuse.
    """
    have = dataset.schema
    if len(schema) <= len(have) or schema.names[: len(have)] != have.names:
        return dataset
    dataset.add_columns([schema.field(i) for i in range(len(have), len(schema))])
    return open_dataset(dataset.uri)


def stage(
    uri: str | Path,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
) -> Any:
    """Write `batches` as fragments of `uri` without committing them; returns the transaction."""
    from lance.fragment import write_fragments

    reader = pa.RecordBatchReader.from_batches(schema, _cast(batches, schema))
    # a new table gets file_version(); fragments of an existing one are written in its own
    version = {} if exists(uri) else {"data_storage_version": file_version()}
    return write_fragments(
        reader,
        str(uri),
        schema,
        return_transaction=True,
        max_rows_per_file=MAX_ROWS_PER_FILE,
        max_rows_per_group=MAX_ROWS_PER_GROUP,
        storage_options=storage_options(uri),
        **version,
    )


def commit(uri: str | Path, transaction: Any, properties: dict[str, str]) -> lance.LanceDataset:
    """Commit a staged transaction, recording `properties` (keys get the coyo_db. prefix)."""
    import lance

    transaction = dataclasses.replace(
        transaction,
        transaction_properties={**transaction.transaction_properties, **_tagged(properties)},
    )
    return lance.LanceDataset.commit(str(uri), transaction, storage_options=storage_options(uri))


def _tagged(properties: dict[str, str]) -> dict[str, str]:
    return {PROPERTY_PREFIX + key: str(value) for key, value in properties.items()}


def append(
    uri: str | Path, table: pa.Table, properties: dict[str, str] | None = None
) -> lance.LanceDataset:
    """Append `table` in one commit (creating the dataset if needed)."""
    create_empty(uri, table.schema)
    transaction = stage(uri, table.to_batches(), table.schema)
    return commit(uri, transaction, properties or {})


def sql_string(value: str) -> str:
    """A SQL string literal of `value`, for Lance filters (``it's`` -> ``'it''s'``)."""
    return "'" + value.replace("'", "''") + "'"


def replace(
    uri: str | Path,
    where: str,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    properties: dict[str, str] | None = None,
) -> lance.LanceDataset:
    """Replace the rows that match `where` with `batches` in ONE commit (creating the table if
    needed): readers, and a crash at any point, see the old rows or the new ones.

    The commit is based on the version the deletions were computed on, so a concurrent commit
    that changed the same fragments makes this one fail with :class:`CatalogError` (nothing
    written) rather than be lost; a concurrent append is kept. With no new rows and nothing
    matching, nothing is committed.
    """
    create_empty(uri, schema)
    new_fragments = list(stage(uri, batches, schema).operation.fragments)
    dataset = open_dataset(uri)
    removed, updated = deletions(dataset, where)
    if not (new_fragments or removed or updated):
        return dataset
    faults.point("rewrite.after_stage")
    committed = _commit_update(
        uri, dataset.version, where, (removed, updated, new_fragments), properties or {}
    )
    faults.point("rewrite.after_commit")
    return committed


def replace_all(
    uri: str | Path,
    dataset: lance.LanceDataset,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
) -> lance.LanceDataset:
    """Replace every row `dataset` (a version of `uri`) holds with `batches`, in one commit
    based on that version: :class:`CatalogError` when another commit came first."""
    new_fragments = list(stage(uri, batches, schema).operation.fragments)
    removed = [fragment.fragment_id for fragment in dataset.get_fragments()]
    return _commit_update(uri, dataset.version, "every row", (removed, [], new_fragments), {})


def _commit_update(
    uri: str | Path,
    read_version: int,
    where: str,
    fragments: tuple[list[int], list[Any], list[Any]],
    properties: dict[str, str],
) -> lance.LanceDataset:
    """Commit (removed fragment ids, updated fragments, new fragments) as one Update."""
    import lance
    from lance.commit import CommitConflictError

    removed, updated, new = fragments
    operation = lance.LanceOperation.Update(
        removed_fragment_ids=removed, updated_fragments=updated, new_fragments=new
    )
    transaction = lance.Transaction(
        read_version=read_version, operation=operation, transaction_properties=_tagged(properties)
    )
    try:
        return lance.LanceDataset.commit(
            str(uri), transaction, storage_options=storage_options(uri)
        )
    except CommitConflictError as exc:
        raise CatalogError(
            f"{uri}: another writer changed the rows this rewrite replaces ({where}); "
            "nothing was written, run it again"
        ) from exc


def deletions(dataset: lance.LanceDataset, where: str) -> tuple[list[int], list[Any]]:
    """(ids of fragments `where` empties, fragments with new deletion vectors), uncommitted.

    The deletion files are written now; only a commit that names them makes them count.
    """
    removed: list[int] = []
    updated: list[Any] = []
    for fragment in dataset.get_fragments():
        metadata = fragment.delete(where)
        if metadata is None:
            removed.append(fragment.fragment_id)
        elif metadata != fragment.metadata:  # unchanged when no row matched
            updated.append(metadata)
    return removed, updated


def committed_properties(
    uri: str | Path, after_version: int = 0
) -> Iterator[tuple[int, dict[str, str]]]:
    """(version, coyo_db properties) of the commits after `after_version` still in the table's
    history, newest first."""
    if not exists(uri):
        return
    dataset = open_dataset(uri)
    version = dataset.version
    if version <= after_version:
        return
    # get_transactions reads only the 10 newest unless told how many.
    for transaction in dataset.get_transactions(version - after_version):
        if transaction is None:
            version -= 1
            continue
        props = {
            key.removeprefix(PROPERTY_PREFIX): value
            for key, value in (transaction.transaction_properties or {}).items()
            if key.startswith(PROPERTY_PREFIX)
        }
        yield version, props
        version -= 1


def _cast(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if batch.schema != schema:
            batch = batch.select(schema.names).cast(schema)
        yield batch
