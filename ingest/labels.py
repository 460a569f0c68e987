"""`coyo-db ingest labels`: COYO-Labeled-300M Parquet into the table `labels`.

Each source row holds an image id and two parallel lists, best first: `labels` (ImageNet-21k
class indices) and `label_probs` (their probabilities, descending). Rows become
(id, taxonomy, source, labels, label_probs) in `labels`; the taxonomy they index is written to
`taxonomies` first (and the synset tree to `taxonomy_tree` when one is given).

Files are found and preflighted like every Parquet ingest (:mod:`coyo_db.ingest.parquet_sources`)
and committed one per Lance commit through the :class:`~coyo_db.ledger.SourceLedger`, so a
killed run resumes and a second run adds nothing. A row is quarantined, with every reason
that applies (joined by "; ", as for `pairs`), when its id is null, a list is null, the lists
differ in length, an index lies outside the taxonomy, a probability is null, NaN or outside
[0, 1], the probabilities ever increase (ties are fine), or its id was met earlier in the same
file. The checks run on the lists' flattened values and offsets, never row by row. Lists of any
length are accepted; COYO's hold 50.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db import lance_tables, schemas
from coyo_db.ingest.pair_checks import (
    DUPLICATE_ID,
    CheckedBatch,
    SeenIds,
    _duplicates,
    _join_reasons,
    reason_counts,
    records_json,
)
from coyo_db.ingest.parquet_sources import ParquetSource, preflight, resolve_paths
from coyo_db.ingest.summary import IngestSummary
from coyo_db.ledger import SourceLedger, SourceRecord, quarantine_rows
from coyo_db.progress import NullProgress, Progress
from coyo_db.runs import Run
from coyo_db.taxonomy import IMAGENET21K, ensure_taxonomy, num_classes, read_tree, store_tree

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

TABLE = "labels"
COMMAND = "ingest labels"
COYO_LABELED_SOURCE = "coyo-labeled-300m"
DEFAULT_BATCH_SIZE = 64 * 1024

# The source columns the table needs; url, imagehash, width and height repeat `pairs`.
SOURCE_COLUMNS = pa.schema(
    [schemas.LABELED_SOURCE.field(n) for n in ("id", "labels", "label_probs")]
)

# Quarantine reasons (a row gets every one that applies, joined by "; ", as in `pairs`).
NULL_ID = "null id"
NULL_LABELS = "null labels"
NULL_PROBS = "null label_probs"
LENGTHS_DIFFER = "labels and label_probs differ in length"
BAD_INDEX = "bad label index (null or outside 0..{max_index})"
BAD_PROB = "bad label_prob (null, NaN or outside [0, 1])"
NOT_DESCENDING = "label_probs not descending"


def ingest_labels(
    catalog: Catalog,
    paths: Sequence[str | Path],
    *,
    tree: Path | None = None,
    progress: Progress | None = None,
    taxonomy: str = IMAGENET21K,
    source: str = COYO_LABELED_SOURCE,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> IngestSummary:
    """Ingest COYO-Labeled-300M-shaped Parquet `paths` (files, folders, globs) into `labels`.

    Rows are tagged with `taxonomy` (whose class list is written to `taxonomies` if the catalog
    lacks it) and `source`. `tree` is a synset-tree pickle (COYO's `imagenet21k_tree.pickle`),
    read without running anything it carries, into `taxonomy_tree`.

    Every file and the tree are checked before anything is written: :class:`InputError` for a
    path that matches nothing, :class:`SourceFileError` or :class:`SchemaError` for a file that
    cannot be ingested. Files already ingested (same content) are skipped.
    """
    started = time.perf_counter()
    progress = progress or NullProgress()
    n_classes = num_classes(taxonomy)
    files = resolve_paths(paths)
    sources = [preflight(path, SOURCE_COLUMNS) for path in files]
    edges = read_tree(tree, taxonomy) if tree is not None else None

    catalog.ensure_table(TABLE, schemas.LABELS)
    ledger = SourceLedger(catalog, TABLE)
    run = Run(
        catalog,
        COMMAND,
        {"paths": [str(p) for p in paths], "tree": tree, "taxonomy": taxonomy, "source": source},
    )
    summary = IngestSummary(table=TABLE, run_id=run.run_id, sources_seen=len(sources))
    todo: list[ParquetSource] = []
    queued: set[str] = set()
    for parquet in sources:
        if ledger.done(parquet.fingerprint) or parquet.fingerprint in queued:
            log.info("%s: already ingested, skipped", parquet.path)
            summary.sources_skipped += 1
        else:
            todo.append(parquet)
            queued.add(parquet.fingerprint)

    progress.start(f"ingest {TABLE}", total=sum(parquet.num_rows for parquet in todo))
    try:
        ensure_taxonomy(catalog, taxonomy)
        if edges is not None:
            store_tree(catalog, edges, tree)
        for parquet in todo:
            job = _LabelsJob(parquet, run.run_id, taxonomy, source, n_classes, progress)
            job.ingest(catalog, ledger, batch_size)
            summary.sources_ingested += 1
            summary.rows_read += job.rows_read
            summary.rows_written += job.rows_read - job.quarantined
            summary.rows_quarantined += job.quarantined
            for reason, count in job.reasons.items():
                summary.quarantine_reasons[reason] = (
                    summary.quarantine_reasons.get(reason, 0) + count
                )
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        _finish(run, summary, started, status)
        raise
    finally:
        progress.finish()
    _finish(run, summary, started, "ok")
    log.info("%s", summary.line())
    return summary


class _LabelsJob:
    """One file: good rows staged as Lance fragments, bad rows spilled to a scratch file."""

    def __init__(
        self,
        parquet: ParquetSource,
        run_id: str,
        taxonomy: str,
        source: str,
        n_classes: int,
        progress: Progress,
    ) -> None:
        self.parquet = parquet
        self.run_id = run_id
        self.taxonomy = taxonomy
        self.source = source
        self.n_classes = n_classes
        self.progress = progress
        self.rows_read = 0
        self.quarantined = 0
        self.reasons: Counter[str] = Counter()
        self.failure: BaseException | None = None
        self._spill: pa.ipc.RecordBatchFileWriter | None = None
        self._spill_path = Path()

    def ingest(self, catalog: Catalog, ledger: SourceLedger, batch_size: int) -> None:
        """Stage, quarantine and commit the file; nothing of it is visible unless all of it is."""
        fingerprint = self.parquet.fingerprint
        ledger.discard_partial(fingerprint)
        with tempfile.TemporaryDirectory(prefix="coyo-db-labels-") as scratch:
            self._spill_path = Path(scratch) / "quarantine.arrow"
            try:
                transaction = lance_tables.stage(
                    catalog.table_uri(TABLE), self._good_batches(batch_size), schemas.LABELS
                )
            except Exception:
                # Lance reports an error raised while it pulls batches as its own OSError.
                if self.failure is not None:
                    raise self.failure from None
                raise
            record = SourceRecord(
                str(self.parquet.path),
                fingerprint,
                self.rows_read,
                self.rows_read - self.quarantined,
                self.quarantined,
            )
            ledger.quarantine(self._spilled(), fingerprint, self.run_id)
            ledger.commit_source(transaction, record, self.run_id)
        log.info(
            "%s: %d rows read, %d written, %d quarantined",
            self.parquet.path,
            record.rows_read,
            record.rows_written,
            record.rows_quarantined,
        )

    def _good_batches(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        seen = SeenIds()
        try:
            for raw in self.parquet.iter_batches(batch_size):
                checked = check_labels(self.parquet.cast(raw), self.n_classes, seen)
                if len(checked.bad_index):
                    self._quarantine(raw, checked)
                self.rows_read += raw.num_rows
                self.progress.advance(raw.num_rows)
                if checked.good.num_rows:
                    yield to_labels_batch(checked.good, self.taxonomy, self.source)
        except BaseException as exc:
            self.failure = exc
            raise

    def _quarantine(self, raw: pa.RecordBatch, checked: CheckedBatch) -> None:
        rows = quarantine_rows(
            table_name=TABLE,
            source=str(self.parquet.path),
            fingerprint=self.parquet.fingerprint,
            run_id=self.run_id,
            row_index=pc.add(checked.bad_index, self.rows_read),
            ids=checked.bad_ids,
            reasons=checked.bad_reasons,
            records=records_json(raw.take(checked.bad_index)),  # the values as read
        )
        if self._spill is None:
            self._spill = pa.ipc.new_file(str(self._spill_path), schemas.QUARANTINE)
        self._spill.write_table(rows)
        self.quarantined += rows.num_rows
        self.reasons.update(reason_counts(checked.bad_reasons))

    def _spilled(self) -> pa.Table:
        """The spilled bad rows, memory-mapped rather than read into memory."""
        if self._spill is None:
            return schemas.QUARANTINE.empty_table()
        self._spill.close()
        return pa.ipc.open_file(pa.memory_map(str(self._spill_path))).read_all()


def check_labels(batch: pa.RecordBatch, n_classes: int, seen: SeenIds) -> CheckedBatch:
    """Split `batch` (columns id, labels, label_probs) into good rows and quarantined ones.

    `n_classes` is the taxonomy's size; `seen` holds the ids met earlier in the same file.
    """
    rules = label_rules(batch, n_classes, seen)
    bad_mask = np.logical_or.reduce([mask for _, mask in rules])
    if not bad_mask.any():
        empty = pa.array([], pa.int64())
        return CheckedBatch(batch, empty, pa.array([], pa.string()), empty, batch[:0])
    bad_index = pa.array(np.flatnonzero(bad_mask), pa.int64())
    reasons = _join_reasons([(reason, pa.array(mask[bad_mask])) for reason, mask in rules])
    return CheckedBatch(
        good=batch.filter(pa.array(~bad_mask)),
        bad_index=bad_index,
        bad_reasons=reasons,
        bad_ids=batch.column("id").take(bad_index),
        bad=batch.take(bad_index),
    )


def label_rules(
    batch: pa.RecordBatch, n_classes: int, seen: SeenIds
) -> list[tuple[str, np.ndarray]]:
    """(reason, row mask) for every rule, in order; masks are NumPy booleans without nulls.

    The element checks run on the lists' flattened values and are folded into one flag per row
    with `np.logical_or.reduceat` over the rows' start positions: no Python runs per row.
    """
    ids, labels, probs = (batch.column(name) for name in ("id", "labels", "label_probs"))
    null_labels, null_probs = _flags(labels.is_null()), _flags(probs.is_null())
    label_lengths, prob_lengths = _lengths(labels), _lengths(probs)
    same_lengths = label_lengths == prob_lengths

    label_values = pc.list_flatten(labels)
    index = label_values.to_numpy(zero_copy_only=False)
    bad_label = (index < 0) | (index >= n_classes)
    if label_values.null_count:  # a null index is bad as well
        bad_label |= _flags(label_values.is_null())

    # Null probabilities become NaN, which fails both bounds.
    prob = pc.list_flatten(probs).to_numpy(zero_copy_only=False)
    prob_starts = _starts(prob_lengths)
    with np.errstate(invalid="ignore"):
        bad_prob = ~((prob >= 0.0) & (prob <= 1.0))
        rises = np.empty(len(prob), dtype=bool)
        np.greater(prob[1:], prob[:-1], out=rises[1:])
    rises[prob_starts[prob_starts < len(prob)]] = False  # no comparison across rows

    return [
        (NULL_ID, _flags(ids.is_null())),
        (NULL_LABELS, null_labels),
        (NULL_PROBS, null_probs),
        (LENGTHS_DIFFER, ~same_lengths & ~null_labels & ~null_probs),
        (BAD_INDEX.format(max_index=n_classes - 1), _any_per_row(bad_label, label_lengths)),
        (BAD_PROB, _any_per_row(bad_prob, prob_lengths, prob_starts)),
        (NOT_DESCENDING, _any_per_row(rises, prob_lengths, prob_starts)),
        (DUPLICATE_ID, _flags(_duplicates(ids, seen))),
    ]


def to_labels_batch(batch: pa.RecordBatch, taxonomy: str, source: str) -> pa.RecordBatch:
    """Good source rows as rows of :data:`schemas.LABELS`."""
    n = batch.num_rows
    return pa.RecordBatch.from_arrays(
        [
            batch.column("id"),
            pa.repeat(pa.scalar(taxonomy, pa.string()), n),
            pa.repeat(pa.scalar(source, pa.string()), n),
            batch.column("labels"),
            batch.column("label_probs"),
        ],
        schema=schemas.LABELS,
    )


def _flags(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow mask as numpy, nulls as False."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def _lengths(lists: pa.Array) -> np.ndarray:
    """How many values `pc.list_flatten` yields for each row (0 for a null list).

    Row boundaries in the flattened values follow from these, not from the lists' offsets
    (`pc.list_parent_indices` also counts values a null list may hide in its offsets).
    """
    return pc.fill_null(pc.list_value_length(lists), 0).to_numpy()


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Where each row's values begin in the flattened values."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def _any_per_row(
    flags: np.ndarray, lengths: np.ndarray, starts: np.ndarray | None = None
) -> np.ndarray:
    """Per row: whether any of its flattened values is flagged."""
    starts = _starts(lengths) if starts is None else starts
    rows = np.zeros(len(lengths), dtype=bool)
    filled = lengths > 0
    if filled.any():
        # reduceat over the starts of non-empty rows: each segment ends where the next begins.
        rows[filled] = np.logical_or.reduceat(flags, starts[filled])
    return rows


def _finish(run: Run, summary: IngestSummary, started: float, status: str) -> None:
    summary.seconds = time.perf_counter() - started
    try:
        run.finish(
            status,
            rows_read=summary.rows_read,
            rows_written=summary.rows_written,
            rows_quarantined=summary.rows_quarantined,
        )
    except Exception:  # the job's own outcome matters more than its log row
        if status == "ok":
            raise
        log.exception("could not record the run %s in `runs`", run.run_id)
