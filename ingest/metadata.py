"""`coyo-db ingest metadata`: COYO-700M-shaped Parquet files into the table `pairs`.

Files are preflighted, streamed, checked and committed one atomic Lance commit each by the
shared Parquet job (:mod:`coyo_db.ingest.parquet_job`); the row rules of `pairs` are in
:mod:`coyo_db.ingest.pair_checks`.

`pairs` holds each id once. A repeat within a file is found by one sort of the file's id
column; an id `pairs` holds already (the same rows re-saved under another name or compression,
an overlapping export) by :class:`coyo_db.catalog.id_keys.IdKeys`, without a scan of the table.
Either way the row goes to `quarantine` as ``duplicate id``, with the file it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from coyo_db.catalog import tables
from coyo_db.catalog.summary import IngestSummary
from coyo_db.ingest.pair_checks import check_pairs
from coyo_db.ingest.parquet_inputs import ParquetInput
from coyo_db.ingest.parquet_job import (
    DEFAULT_BATCH_SIZE,
    Checker,
    ParquetTarget,
    ingest_parquet,
)
from coyo_db.ingest.row_checks import repeated_ids
from coyo_db.progress import Progress

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog


def _pairs_checker(parquet: ParquetInput) -> Checker:
    repeated = repeated_ids(parquet.read_column("id"))

    def check(raw: pa.RecordBatch, cast: pa.RecordBatch, first_row: int):  # type: ignore[no-untyped-def]
        part = None if repeated is None else repeated[first_row : first_row + raw.num_rows]
        return check_pairs(raw, cast, part)

    return check


PAIRS_TARGET = ParquetTarget(
    table=tables.PAIRS,
    input_schema=tables.PAIRS.schema,
    command="ingest metadata",
    new_checker=_pairs_checker,
)


def ingest_metadata(
    catalog: Catalog,
    paths: Sequence[str | Path],
    *,
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    check_ids: bool = True,
) -> IngestSummary:
    """Ingest COYO-700M-shaped Parquet `paths` (files, folders, globs) into `pairs`.

    Raises :class:`InputError` for a path that matches nothing, :class:`SourceFileError` or
    :class:`SchemaError` for a file that cannot be ingested (before anything is written, unless
    the problem only shows mid-read). A row whose id `pairs` holds already is quarantined as
    ``duplicate id``; `check_ids=False` skips that check (see
    :func:`coyo_db.ingest.parquet_job.ingest_parquet`).
    """
    return ingest_parquet(
        catalog, paths, PAIRS_TARGET, progress=progress, batch_size=batch_size, check_ids=check_ids
    )
