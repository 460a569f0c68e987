"""`coyo-db ingest labels`: COYO-Labeled-300M Parquet into the table `labels`.

Each input row holds an image id and two parallel lists, best first: `labels` (ImageNet-21k
class indices) and `label_probs` (their probabilities, descending). Rows become
(id, taxonomy, model, labels, label_probs) in `labels`; the taxonomy they index is written to
`taxonomies` first (and the synset tree to `taxonomy_tree` when one is given).

Files are found and preflighted like every Parquet ingest (:mod:`coyo_db.ingest.parquet_inputs`)
and committed one per Lance commit through the :class:`~coyo_db.catalog.ledger.Ledger`, so a
killed run resumes and a second run adds nothing. A row is quarantined, with every reason
that applies (joined by "; ", as for `pairs`), when its id is null or does not fit int64 (a
uint64 id), a list is null, the lists differ in length, an index lies outside the taxonomy (or
outside int32: the cast leaves it null), a probability is null, NaN, infinite or outside
[0, 1] (a float64 beyond float32's range is infinite once cast), the probabilities ever
increase (ties are fine), or its id was met earlier in the same file. The checks run on the
lists' flattened values and offsets, never row by row. Lists of any length and layout (large,
fixed-size) are accepted; COYO's hold 50. Lists of another shape (nested lists, text) refuse
the file before anything is written. The input's text columns (url, imagehash) repeat `pairs`
and are not read, so their bytes cannot reach `labels`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.catalog import schemas, tables
from coyo_db.catalog.summary import IngestSummary
from coyo_db.ingest.parquet_inputs import ParquetInput
from coyo_db.ingest.parquet_job import (
    DEFAULT_BATCH_SIZE,
    Checker,
    ParquetTarget,
    ingest_parquet,
)
from coyo_db.ingest.row_checks import (
    DUPLICATE_ID,
    CheckedBatch,
    SeenIds,
    duplicates,
    null_not_unfit,
    split_by_rules,
    unfit_reason,
    unfit_values,
)
from coyo_db.labels.taxonomy import IMAGENET21K, ensure_taxonomy, num_classes, read_tree, store_tree
from coyo_db.progress import Progress

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

# The `model` of ingested COYO-Labeled-300M rows.
COYO_LABELED_MODEL = "coyo-labeled-300m"

# The input columns the table needs; url, imagehash, width and height repeat `pairs`.
INPUT_COLUMNS = pa.schema([schemas.COYO_LABELED.field(n) for n in ("id", "labels", "label_probs")])

# Quarantine reasons (a row gets every one that applies, joined by "; ", as in `pairs`).
NULL_ID = "null id"
NULL_LABELS = "null labels"
NULL_PROBS = "null label_probs"
LENGTHS_DIFFER = "labels and label_probs differ in length"
BAD_INDEX = "bad label index (null or outside 0..{max_index})"
BAD_PROB = "bad label_probs value (null, NaN, infinite or outside [0, 1])"
NOT_DESCENDING = "label_probs not descending"


def ingest_labels(
    catalog: Catalog,
    paths: Sequence[str | Path],
    *,
    tree: Path | None = None,
    progress: Progress | None = None,
    taxonomy: str = IMAGENET21K,
    model: str = COYO_LABELED_MODEL,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> IngestSummary:
    """Ingest COYO-Labeled-300M-shaped Parquet `paths` (files, folders, globs) into `labels`.

    Rows are tagged with `taxonomy` (whose class list is written to `taxonomies` if the catalog
    lacks it) and `model`. `tree` is a synset-tree pickle (COYO's `imagenet21k_tree.pickle`),
    read without running anything it carries, into `taxonomy_tree`.

    Every file and the tree are checked before anything is written: :class:`InputError` for a
    path that matches nothing, :class:`SourceFileError` or :class:`SchemaError` for a file that
    cannot be ingested. Files already ingested (same content) are skipped.
    """
    n_classes = num_classes(taxonomy)

    def prepare() -> None:  # within the run, after every file passed preflight
        edges = read_tree(tree, taxonomy) if tree is not None else None
        ensure_taxonomy(catalog, taxonomy)
        if edges is not None:
            store_tree(catalog, edges, tree)

    target = ParquetTarget(
        table=tables.LABELS,
        input_schema=INPUT_COLUMNS,
        command="ingest labels",
        new_checker=partial(_labels_checker, n_classes),
        to_table=partial(to_labels_batch, taxonomy=taxonomy, model=model),
        known_unused=frozenset(schemas.COYO_LABELED.names) - set(INPUT_COLUMNS.names),
    )
    return ingest_parquet(
        catalog,
        paths,
        target,
        arguments={"tree": tree, "taxonomy": taxonomy, "model": model},
        prepare=prepare,
        progress=progress,
        batch_size=batch_size,
    )


def _labels_checker(n_classes: int, parquet: ParquetInput) -> Checker:
    seen = SeenIds()

    def check(raw: pa.RecordBatch, cast: pa.RecordBatch, first_row: int) -> CheckedBatch:
        return check_labels(cast, n_classes, seen, raw=raw)

    return check


def check_labels(
    batch: pa.RecordBatch,
    n_classes: int,
    seen: SeenIds,
    *,
    raw: pa.RecordBatch | None = None,
) -> CheckedBatch:
    """Split `batch` (columns id, labels, label_probs) into good rows and quarantined ones.

    `n_classes` is the taxonomy's size; `seen` holds the ids met earlier in the same file;
    `raw` is the rows as read (kept for quarantine records; default `batch`).
    """
    raw = batch if raw is None else raw
    rules = label_rules(batch, n_classes, seen, unfit_values(raw, batch))
    return split_by_rules(batch, raw, rules)


def label_rules(
    batch: pa.RecordBatch,
    n_classes: int,
    seen: SeenIds,
    unfit: dict[str, np.ndarray] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """(reason, row mask) for every rule, in order; masks are NumPy booleans without nulls.

    `unfit` holds the values that did not fit their column (:func:`unfit_values`): a row whose
    id did not fit int64 is quarantined for that, not as ``null id``. The element checks run
    on the lists' flattened values and are folded into one flag per row with
    `np.logical_or.reduceat` over the rows' start positions: no Python runs per row.
    """
    unfit = unfit or {}
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
        *((unfit_reason(batch, name), mask) for name, mask in unfit.items()),
        (NULL_ID, _flags(null_not_unfit(ids, unfit.get("id")))),
        (NULL_LABELS, null_labels),
        (NULL_PROBS, null_probs),
        (LENGTHS_DIFFER, ~same_lengths & ~null_labels & ~null_probs),
        (BAD_INDEX.format(max_index=n_classes - 1), _any_per_row(bad_label, label_lengths)),
        (BAD_PROB, _any_per_row(bad_prob, prob_lengths, prob_starts)),
        (NOT_DESCENDING, _any_per_row(rises, prob_lengths, prob_starts)),
        (DUPLICATE_ID, _flags(duplicates(ids, seen))),
    ]


def to_labels_batch(batch: pa.RecordBatch, taxonomy: str, model: str) -> pa.RecordBatch:
    """Good input rows as rows of :data:`schemas.LABELS`."""
    n = batch.num_rows
    return pa.RecordBatch.from_arrays(
        [
            batch.column("id"),
            pa.repeat(pa.scalar(taxonomy, pa.string()), n),
            pa.repeat(pa.scalar(model, pa.string()), n),
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
