"""The Parquet ingest every table shares: preflight, skip what is done, stream, quarantine,
commit each file atomically.

The job, file by file:

1. every file is preflighted before anything is written (Parquet, not an LFS pointer or an
   HTML page, not truncated; the columns the target needs present and castable);
2. a file already in the ledger (same content fingerprint, whatever its name) is skipped;
3. the file is streamed in batches (never whole in memory), a reading thread staying one batch
   ahead of the writer; each batch is cast, checked by the target's rules, its good rows
   staged as Lance fragments and its bad rows spilled to a temporary Arrow file (rows whose id
   the table may hold already are held back and settled together: see ``_FileJob``);
4. the bad rows are committed to `quarantine`, then the staged rows to the table in one atomic
   commit, then the file is marked done (:class:`coyo_db.catalog.ledger.Ledger`).

A file is therefore wholly in the table or not at all: corruption found mid-read raises
:class:`SourceFileError` before that file's fragments are committed, and files committed before
it stay. A killed job, run again, skips the finished files and redoes the others.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db import faults
from coyo_db.catalog import lance_tables, tables
from coyo_db.catalog.id_keys import IdKeys
from coyo_db.catalog.ledger import Ledger, LedgerEntry, quarantine_rows
from coyo_db.catalog.runs import Run
from coyo_db.catalog.summary import IngestSummary
from coyo_db.catalog.tables import TableSpec
from coyo_db.errors import SourceFileError
from coyo_db.ingest.parquet_inputs import ParquetInput, preflight, resolve_paths
from coyo_db.ingest.prefetch import prefetch
from coyo_db.ingest.row_checks import (
    DUPLICATE_ID,
    CheckedBatch,
    all_good,
    good_positions,
    move_to_bad,
    reason_counts,
    records_json,
)
from coyo_db.progress import NullProgress, Progress

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64 * 1024

# (batch as read, batch cast to the input columns, its first row's index in the file)
Checker = Callable[[pa.RecordBatch, pa.RecordBatch, int], CheckedBatch]


@dataclass(frozen=True)
class ParquetTarget:
    """What feeding one table from Parquet files needs to know."""

    table: TableSpec
    input_schema: pa.Schema  # the columns read from each file, cast to these types
    command: str
    new_checker: Callable[[ParquetInput], Checker]  # one per file: checks may keep state
    to_table: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None  # good rows -> table
    known_unused: frozenset[str] = frozenset()  # input columns deliberately not stored


def ingest_parquet(
    catalog: Catalog,
    paths: Sequence[str | Path],
    target: ParquetTarget,
    *,
    arguments: dict[str, Any] | None = None,
    prepare: Callable[[], None] | None = None,
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    check_ids: bool = True,
) -> IngestSummary:
    """Ingest Parquet `paths` (files, folders, globs) into `target.table`.

    A table keyed by `id` alone holds each id once: a row whose id the table holds already is
    quarantined as ``duplicate id``. `check_ids=False` skips that check (a first bulk load of
    files known to hold distinct ids; repeats within a file are still caught).

    `prepare` runs after every file passed preflight and before the first one is written.
    Raises :class:`InputError` for a path that matches nothing, :class:`SourceFileError` or
    :class:`SchemaError` for a file that cannot be ingested. Every call is logged in `runs`,
    a failed one too.
    """
    started = time.perf_counter()
    progress = progress or NullProgress()
    run_arguments = {"paths": [str(p) for p in paths], "batch_size": batch_size}
    run = Run(catalog, target.command, {**run_arguments, **(arguments or {})})
    summary = IngestSummary(table=target.table.name, run_id=run.run_id)
    with run.recorded(summary, progress, started):
        inputs = preflight_all(resolve_paths(paths), target)
        summary.inputs_seen = len(inputs)
        if prepare is not None:
            prepare()
        catalog.ensure(target.table)
        ledger = Ledger(catalog, target.table.name)
        todo = _not_yet_ingested(inputs, ledger, summary)
        progress.start(
            f"ingest {target.table.name}", total=sum(input_file.num_rows for input_file in todo)
        )
        keyed = check_ids and target.table.key == ("id",)
        keys = IdKeys(catalog, target.table.name) if keyed else None
        if keys is not None:
            keys.reserve(sum(input_file.num_rows for input_file in todo))
        try:
            for input_file in todo:
                _ingest_file(
                    catalog,
                    ledger,
                    target,
                    input_file,
                    run.run_id,
                    summary,
                    progress,
                    batch_size,
                    keys,
                )
        finally:
            if keys is not None:
                keys.close()
    log.info("%s", summary.line())
    return summary


def preflight_all(files: Sequence[Path], target: ParquetTarget) -> list[ParquetInput]:
    """Preflight every file; raise for the first bad one (the others are logged)."""
    inputs: list[ParquetInput] = []
    problems: list[SourceFileError] = []
    for path in files:
        try:
            input_file = preflight(path, target.input_schema)
        except SourceFileError as exc:
            problems.append(exc)
            continue
        unexpected = [name for name in input_file.plan.extra if name not in target.known_unused]
        if unexpected:
            log.warning(
                "%s: ignoring columns that `%s` does not take: %s",
                path,
                target.table.name,
                ", ".join(unexpected),
            )
        inputs.append(input_file)
    if problems:
        for problem in problems[1:]:
            log.error("%s", problem)
        first = problems[0]
        if len(problems) > 1:
            more = len(problems) - 1
            raise type(first)(first.path, f"{first.problem} (and {more} more bad files, logged)")
        raise first
    return inputs


def _not_yet_ingested(
    inputs: list[ParquetInput], ledger: Ledger, summary: IngestSummary
) -> list[ParquetInput]:
    todo: list[ParquetInput] = []
    queued: set[str] = set()
    for input_file in inputs:
        done = ledger.done(input_file.fingerprint)
        if done is None and input_file.fingerprint not in queued:
            todo.append(input_file)
            queued.add(input_file.fingerprint)
            continue
        same = done.input if done is not None else "another file of this run"
        log.info("%s: skipped, already ingested (same content as %s)", input_file.path, same)
        summary.inputs_skipped += 1
    return todo


def _ingest_file(
    catalog: Catalog,
    ledger: Ledger,
    target: ParquetTarget,
    input_file: ParquetInput,
    run_id: str,
    summary: IngestSummary,
    progress: Progress,
    batch_size: int,
    keys: IdKeys | None = None,
) -> None:
    """Stage, quarantine and commit one file; nothing of it is visible unless all of it is.

    With `keys`, rows whose id the table holds already are quarantined as duplicates."""
    ledger.discard_partial(input_file.fingerprint)
    with tempfile.TemporaryDirectory(prefix="coyo-db-ingest-") as scratch:
        spill = Path(scratch) / "quarantine.arrow"
        job = _FileJob(target, input_file, run_id, spill, progress, keys)
        batches = prefetch(job.good_batches(batch_size))
        try:
            transaction = lance_tables.stage(
                catalog.table_uri(target.table.name), batches, target.table.schema
            )
        except Exception:
            # Lance reports an error raised while it pulls batches as its own OSError.
            if job.failure is not None:
                raise job.failure from None
            raise
        finally:
            batches.close()  # stops the reading thread if the writer gave up early
            job.close()
        record = LedgerEntry(
            str(input_file.path),
            input_file.fingerprint,
            job.rows_read,
            job.rows_written,
            job.quarantined,
        )
        if keys is not None:
            keys.settle()  # the last file's index extension, before this file's commit
        ledger.quarantine(job.quarantine_table(), input_file.fingerprint, run_id)
        faults.point("ledger.after_quarantine")
        ledger.commit_input(transaction, record, run_id)
        if keys is not None:
            keys.committed(wait=False)  # extended while the next file streams
    log.info(
        "%s: %d rows read, %d written, %d quarantined",
        input_file.path,
        job.rows_read,
        job.rows_written,
        job.quarantined,
    )
    summary.inputs_done += 1
    summary.rows_read += job.rows_read
    summary.rows_written += job.rows_written
    summary.rows_quarantined += job.quarantined
    for reason, count in job.reasons.items():
        summary.quarantine_reasons[reason] = summary.quarantine_reasons.get(reason, 0) + count


@dataclass(frozen=True)
class _Held:
    """Good rows held back until their ids are settled: as read, as checked, file rows."""

    raw: pa.RecordBatch
    good: pa.RecordBatch
    row_index: np.ndarray


class _FileJob:
    """One file's batches: good rows out to Lance, bad rows to a spill file, counts kept."""

    def __init__(
        self,
        target: ParquetTarget,
        input_file: ParquetInput,
        run_id: str,
        spill_path: Path,
        progress: Progress,
        keys: IdKeys | None = None,
    ) -> None:
        self.target = target
        self.keys = keys
        self.input_file = input_file
        self.run_id = run_id
        self.spill_path = spill_path
        self.progress = progress
        self.rows_read = 0
        self.rows_written = 0
        self.quarantined = 0
        self.reasons: Counter[str] = Counter()
        self.failure: Exception | None = None
        self._held: list[_Held] = []  # rows whose id may be present, not yet settled
        self._held_rows = 0
        self._spill: pa.ipc.RecordBatchFileWriter | None = None
        self._closed = False

    def good_batches(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """The file's good rows in the table's schema; bad rows are spilled on the way.

        With the id check, rows whose id the Bloom filter cannot rule out (true duplicates
        and ~1e-3 false positives) are held back and settled together, one exact lookup per
        `batch_size` held rows (in a file of new ids: about one per file, not one per batch),
        and written after the rows read since."""
        try:
            check = self.target.new_checker(self.input_file)
            for raw in self.input_file.iter_batches(batch_size):
                checked = check(raw, self.input_file.cast(raw), self.rows_read)
                good = checked.good
                if self.keys is not None and good.num_rows:
                    good = self._hold_maybe_present(raw, checked)
                if checked.bad.num_rows:
                    self._quarantine(checked, self.rows_read)
                self.rows_read += raw.num_rows
                self.progress.advance(raw.num_rows)
                yield from self._good(good)
                if self._held_rows >= batch_size:
                    yield from self._settle_held()
            yield from self._settle_held()
        except Exception as exc:  # kept: the writer only passes on its own wrapper
            self.failure = exc
            raise

    def _good(self, good: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        self.rows_written += good.num_rows
        if good.num_rows:
            yield good if self.target.to_table is None else self.target.to_table(good)

    def _hold_maybe_present(self, raw: pa.RecordBatch, checked: CheckedBatch) -> pa.RecordBatch:
        """Record the good rows whose id is certainly new as present (before their commit:
        see :mod:`coyo_db.catalog.id_keys`) and return them; hold the others back. (A
        filtered copy: zero-copy slices around the held rows measured slower, as Lance
        writes many small batches less well.)"""
        assert self.keys is not None
        good = checked.good
        ids = good.column("id").to_numpy(zero_copy_only=False)
        maybe = self.keys.add_absent(ids)
        if not maybe.any():
            return good
        positions = good_positions(raw, checked)[maybe]  # the held rows' places in the batch
        self._held.append(
            _Held(
                raw=raw.take(pa.array(positions)),
                good=good.filter(pa.array(maybe)),
                row_index=positions + self.rows_read,
            )
        )
        self._held_rows += len(positions)
        return good.filter(pa.array(~maybe))

    def _settle_held(self) -> Iterator[pa.RecordBatch]:
        """Look the held ids up exactly: duplicates to quarantine, the rest out."""
        if not self._held:
            return
        assert self.keys is not None
        held, self._held, self._held_rows = self._held, [], 0
        raw = pa.Table.from_batches([h.raw for h in held]).combine_chunks().to_batches()[0]
        good = pa.Table.from_batches([h.good for h in held]).combine_chunks().to_batches()[0]
        row_index = np.concatenate([h.row_index for h in held])
        ids = good.column("id").to_numpy(zero_copy_only=False)
        present = self.keys.present(ids)
        self.keys.add(ids[~present])
        if present.any():
            duplicates = move_to_bad(raw, all_good(good, raw), present, DUPLICATE_ID)
            # the rows' places in the file, not in the held batch
            bad_index = pa.array(row_index[duplicates.bad_index.to_numpy()])
            self._quarantine(replace(duplicates, bad_index=bad_index), 0)
            good = duplicates.good
        yield from self._good(good)

    def _quarantine(self, checked: CheckedBatch, first_row: int) -> None:
        """Spill `checked`'s bad rows; their `bad_index` counts from file row `first_row`."""
        rows = quarantine_rows(
            table_name=self.target.table.name,
            input=str(self.input_file.path),
            fingerprint=self.input_file.fingerprint,
            run_id=self.run_id,
            row_index=pc.add(checked.bad_index, first_row),
            ids=checked.bad_ids,
            reasons=checked.bad_reasons,
            records=records_json(checked.bad),
        )
        if self._spill is None:
            self._spill = pa.ipc.new_file(str(self.spill_path), tables.QUARANTINE.schema)
        self._spill.write_table(rows)
        self.quarantined += rows.num_rows
        self.reasons.update(reason_counts(checked.bad_reasons))

    def quarantine_table(self) -> pa.Table:
        """The spilled bad rows (after :meth:`close`), memory-mapped, not read into memory."""
        if self._spill is None:
            return tables.QUARANTINE.empty()
        self.close()
        return pa.ipc.open_file(pa.memory_map(str(self.spill_path))).read_all()

    def close(self) -> None:
        if self._spill is not None and not self._closed:
            self._spill.close()
            self._closed = True
