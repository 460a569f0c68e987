"""Lance table operations the catalog builds on: create, stage, commit with properties.

Ingest jobs write fragments first (`stage`) and make them visible in one commit that carries
the job's bookkeeping in its transaction properties (`commit`). A job killed between the two
leaves only unreferenced files, never half an input.

A `uri` is a local path or an object-store URI (``s3://bucket/prefix/tables/x.lance``); for the
latter every call passes the storage options :mod:`coyo_db.catalog.object_store` reads from the
environment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from coyo_db.catalog.object_store import as_uri, filesystem, storage_options

if TYPE_CHECKING:
    import lance

# Large fragments keep scans fast; small row groups would slow DuckDB's scans down.
MAX_ROWS_PER_FILE = 4 * 1024 * 1024
MAX_ROWS_PER_GROUP = 64 * 1024

PROPERTY_PREFIX = "coyo_db."


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
        return open_dataset(uri)
    return lance.write_dataset(
        schema.empty_table(),
        str(uri),
        mode="create",
        max_rows_per_group=MAX_ROWS_PER_GROUP,
        storage_options=storage_options(uri),
    )


def stage(
    uri: str | Path,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
) -> Any:
    """Write `batches` as fragments of `uri` without committing them; returns the transaction."""
    from lance.fragment import write_fragments

    reader = pa.RecordBatchReader.from_batches(schema, _cast(batches, schema))
    return write_fragments(
        reader,
        str(uri),
        schema,
        return_transaction=True,
        max_rows_per_file=MAX_ROWS_PER_FILE,
        max_rows_per_group=MAX_ROWS_PER_GROUP,
        storage_options=storage_options(uri),
    )


def commit(uri: str | Path, transaction: Any, properties: dict[str, str]) -> lance.LanceDataset:
    """Commit a staged transaction, recording `properties` (keys get the coyo_db. prefix)."""
    import lance

    tagged = {PROPERTY_PREFIX + key: str(value) for key, value in properties.items()}
    transaction = dataclasses.replace(
        transaction, transaction_properties={**transaction.transaction_properties, **tagged}
    )
    return lance.LanceDataset.commit(str(uri), transaction, storage_options=storage_options(uri))


def append(
    uri: str | Path, table: pa.Table, properties: dict[str, str] | None = None
) -> lance.LanceDataset:
    """Append `table` in one commit (creating the dataset if needed)."""
    create_empty(uri, table.schema)
    transaction = stage(uri, table.to_batches(), table.schema)
    return commit(uri, transaction, properties or {})


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
