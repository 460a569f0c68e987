"""The row rules of `pairs`: which COYO-700M rows are kept and why the others are quarantined.

A row is quarantined, with every reason that applies joined by "; ", when it has

- ``null id``;
- ``null image_phash`` or ``bad image_phash``: COYO's pHash is 16 lowercase hex digits
  (`imagehash.phash` as a string). Upper-case hex digits are lower-cased, not quarantined: the
  hash is the same and exact-pHash joins need one spelling. Anything else (wrong length,
  non-hex characters, spaces) is bad;
- ``null width`` / ``non-positive width``, and the same for height;
- ``NaN <score column>`` and ``infinite <score column>`` for each of the six scores, infinite
  taking in values too large for float32 (a null score is kept: it is unknown);
- ``invalid UTF-8 in <column>`` for url, text and image_phash: one such value would make every
  later query that reads the column fail (binary columns are cast unchecked for this rule);
- ``<column> does not fit <type>``: an integer outside its column's range (a uint64 id above
  int64's, an int64 width above int32's), left null by the cast; not ``null <column>`` too;
- ``duplicate id``: an id met at an earlier row of the same file; the first row with that id
  is kept, or quarantined for its own problems.

All rules are vectorised (pyarrow.compute, NumPy); only quarantined rows are turned into Python
objects, to keep them as JSON text.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.catalog import schemas
from coyo_db.ingest.row_checks import (
    DUPLICATE_ID,
    CheckedBatch,
    false_if_null,
    invalid_utf8,
    null_not_unfit,
    split_by_rules,
    unfit_reason,
    unfit_values,
)

PHASH_PATTERN = "^[0-9a-f]{16}$"


def normalise_phash(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.Array]:
    """`batch` with upper-case pHashes lower-cased, and the mask of rows whose pHash is bad."""
    index = batch.schema.get_field_index("image_phash")
    phash = batch.column(index)
    fine = false_if_null(pc.match_substring_regex(phash, PHASH_PATTERN))
    if pc.all(fine).as_py():
        return batch, pc.invert(fine)
    lowered = pc.ascii_lower(phash)
    batch = batch.set_column(index, batch.schema.field(index), lowered)
    fine = false_if_null(pc.match_substring_regex(lowered, PHASH_PATTERN))
    return batch, pc.and_(pc.invert(fine), pc.is_valid(phash))


def check_pairs(
    raw: pa.RecordBatch, batch: pa.RecordBatch, repeated: np.ndarray | None = None
) -> CheckedBatch:
    """Apply the rules to `batch` (cast to :data:`schemas.PAIRS`).

    `raw` is the same rows as read from the file (kept for the quarantine records);
    `repeated` is this batch's slice of :func:`repeated_ids` for its file.
    """
    unfit = unfit_values(raw, batch)
    batch, bad_phash = normalise_phash(batch)
    return split_by_rules(batch, raw, _rule_masks(batch, bad_phash, repeated, unfit))


def _rule_masks(
    batch: pa.RecordBatch,
    bad_phash: pa.Array,
    repeated: np.ndarray | None,
    unfit: dict[str, np.ndarray] | None = None,
) -> list[tuple[str, pa.Array]]:
    """(reason, mask) for every rule that can fire; masks have no nulls. `unfit` holds the
    values that did not fit their column (:func:`unfit_values`)."""
    unfit = unfit or {}
    phash = batch.column("image_phash")
    rules: list[tuple[str, pa.Array]] = [
        (unfit_reason(batch, name), pa.array(mask)) for name, mask in unfit.items()
    ]
    rules += [
        ("null id", null_not_unfit(batch.column("id"), unfit.get("id"))),
        ("null image_phash", pc.is_null(phash)),
        ("bad image_phash", bad_phash),
    ]
    for name in ("url", "text", "image_phash"):
        rules.append((f"invalid UTF-8 in {name}", invalid_utf8(batch.column(name))))
    for name in ("width", "height"):
        column = batch.column(name)
        rules.append((f"null {name}", null_not_unfit(column, unfit.get(name))))
        rules.append((f"non-positive {name}", false_if_null(pc.less_equal(column, 0))))
    for name in schemas.SCORE_COLUMNS:
        column = batch.column(name)
        rules.append((f"NaN {name}", false_if_null(pc.is_nan(column))))
        rules.append((f"infinite {name}", false_if_null(pc.is_inf(column))))
    if repeated is not None:
        rules.append((DUPLICATE_ID, pa.array(repeated)))
    return rules
