"""Row checks every ingest shares: splitting a batch by rule masks, duplicate ids, and the
quarantine record of a bad row as JSON text.

Everything is vectorised (pyarrow.compute, NumPy); only rows that are quarantined and hold
values JSON cannot spell are turned into Python objects.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.ingest.parquet_inputs import is_text_type

DUPLICATE_ID = "duplicate id"
_EMPTY_INDEX = pa.array([], pa.int64())
_EMPTY_REASONS = pa.array([], pa.string())
_NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # JSON has no such numbers

Mask = pa.Array | np.ndarray


@dataclass(frozen=True)
class CheckedBatch:
    """One batch split into the rows kept and the rows quarantined."""

    good: pa.RecordBatch
    bad_index: pa.Array  # positions of the quarantined rows within the batch (int64)
    bad_reasons: pa.Array  # string, parallel to bad_index
    bad_ids: pa.Array  # int64, parallel to bad_index
    bad: pa.RecordBatch  # the quarantined rows as read from the file (before casts)


def repeated_ids(ids: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """True at each row whose id occurs at an earlier row; None when no id repeats.

    One sort of a file's id column (5.8M ids in about 0.2 s); the stable argsort that finds
    which copy comes first only runs when some id repeats. Null ids are never repeats.
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    present = pc.indices_nonzero(pc.is_valid(ids)).to_numpy() if ids.null_count else None
    values = pc.drop_null(ids).to_numpy() if ids.null_count else ids.to_numpy()
    ordered = np.sort(values)
    if not (ordered[1:] == ordered[:-1]).any():
        return None
    order = np.argsort(values, kind="stable")  # equal ids stay in file order: the first leads
    ordered = values[order]
    repeat = np.zeros(len(values), dtype=bool)
    repeat[order[1:]] = ordered[1:] == ordered[:-1]
    if present is None:
        return repeat
    full = np.zeros(len(ids), dtype=bool)
    full[present] = repeat
    return full


class SeenIds:
    """The ids met so far in a stream, to flag later repeats without a per-row loop.

    For readers that cannot sort a whole file's ids up front (:func:`repeated_ids` is faster
    when they can). Kept as sorted NumPy runs merged like a binary counter: n ids cost
    O(n log n) in all, and each batch is checked by a binary search per run.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def first_seen(self, ids: np.ndarray) -> np.ndarray:
        """Mask of the `ids` not met before (in earlier calls or earlier in `ids`); adds them."""
        unique, first = np.unique(ids, return_index=True)
        met = np.zeros(len(unique), dtype=bool)
        for run in self._runs:
            at = np.searchsorted(run, unique)
            at[at == len(run)] = 0
            met |= run[at] == unique
        mask = np.zeros(len(ids), dtype=bool)
        mask[first[~met]] = True
        self._push(unique[~met])
        return mask

    def _push(self, run: np.ndarray) -> None:
        if not len(run):
            return
        self._runs.append(run)
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            newer, older = self._runs.pop(), self._runs.pop()
            merged = np.concatenate([older, newer])
            merged.sort(kind="stable")  # two sorted runs: one linear merge
            self._runs.append(merged)


def duplicates(ids: pa.Array, seen: SeenIds) -> pa.Array:
    """Mask of the ids of this batch already met in the stream (nulls are never duplicates)."""
    first = np.ones(len(ids), dtype=bool)
    if ids.null_count:
        present = pc.indices_nonzero(pc.is_valid(ids)).to_numpy()
        first[present] = seen.first_seen(pc.take(ids, present).to_numpy())
    else:
        first = seen.first_seen(ids.to_numpy(zero_copy_only=False))
    return pa.array(~first)


def all_good(batch: pa.RecordBatch, raw: pa.RecordBatch) -> CheckedBatch:
    """`batch` (checked) with no row quarantined; `raw` is the batch as read."""
    return CheckedBatch(batch, _EMPTY_INDEX, _EMPTY_REASONS, _EMPTY_INDEX, raw[:0])


def good_positions(raw: pa.RecordBatch, checked: CheckedBatch) -> np.ndarray:
    """The places in the batch as read (`raw`) of `checked`'s good rows, in order."""
    bad_set = np.zeros(raw.num_rows, dtype=bool)
    bad_set[checked.bad_index.to_numpy()] = True
    return np.flatnonzero(~bad_set)


def move_to_bad(
    raw: pa.RecordBatch, checked: CheckedBatch, mask: np.ndarray, reason: str
) -> CheckedBatch:
    """`checked` with the good rows where `mask` is true moved to the bad ones, for `reason`."""
    positions = good_positions(raw, checked)[mask]  # the moved rows' places in the batch
    moved = pa.array(positions, pa.int64())
    bad_index = pa.concat_arrays([checked.bad_index.cast(pa.int64()), moved])
    order = pc.sort_indices(bad_index)
    return CheckedBatch(
        good=checked.good.filter(pa.array(~mask)),
        bad_index=bad_index.take(order),
        bad_reasons=pa.concat_arrays(
            [checked.bad_reasons.cast(pa.string()), pa.array([reason] * len(positions))]
        ).take(order),
        bad_ids=pa.concat_arrays(
            [
                checked.bad_ids.cast(pa.int64()),
                pc.filter(checked.good.column("id"), pa.array(mask)).cast(pa.int64()),
            ]
        ).take(order),
        bad=raw.take(bad_index.take(order)),
    )


def split_by_rules(
    batch: pa.RecordBatch, raw: pa.RecordBatch, rules: Sequence[tuple[str, Mask]]
) -> CheckedBatch:
    """Split `batch` by `rules` ((reason, row mask without nulls) in order).

    `raw` is the same rows as read from the file, kept for the quarantine records.
    """
    masks = [
        (reason, mask if isinstance(mask, pa.Array) else pa.array(mask)) for reason, mask in rules
    ]
    bad_mask = masks[0][1]
    for _, mask in masks[1:]:
        bad_mask = pc.or_(bad_mask, mask)
    if not pc.any(bad_mask).as_py():
        return all_good(batch, raw)
    bad_index = pc.indices_nonzero(bad_mask).cast(pa.int64())
    reasons = join_reasons([(reason, pc.take(mask, bad_index)) for reason, mask in masks])
    return CheckedBatch(
        good=batch.filter(pc.invert(bad_mask)),
        bad_index=bad_index,
        bad_reasons=reasons,
        bad_ids=pc.take(batch.column("id"), bad_index),
        bad=raw.take(bad_index),
    )


def unfit_values(raw: pa.RecordBatch, cast: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Per column, the rows whose value was read but did not fit the column's type (the cast
    left it null: :func:`coyo_db.ingest.parquet_inputs.fitting_cast`); only columns that have
    such rows. Rule reasons name them with :func:`unfit_reason`."""
    found: dict[str, np.ndarray] = {}
    for name in cast.schema.names:
        before, after = raw.column(name), cast.column(name)
        if after.null_count == before.null_count:
            continue  # a cast only ever adds nulls
        if pa.types.is_dictionary(before.type):  # its nulls may hide in the dictionary
            before = before.dictionary_decode()
        mask = pc.and_(pc.is_valid(before), pc.is_null(after))
        if pc.any(mask).as_py():
            found[name] = mask.to_numpy(zero_copy_only=False)
    return found


def unfit_reason(batch: pa.RecordBatch, name: str) -> str:
    """The quarantine reason of a value that does not fit the column `name` of `batch`."""
    return f"{name} does not fit {batch.schema.field(name).type}"


def null_not_unfit(column: pa.Array, unfit: np.ndarray | None) -> pa.Array:
    """The null rows of `column`, less those that were not null before a cast (`unfit`)."""
    nulls = pc.is_null(column)
    return nulls if unfit is None else pc.and_(nulls, pa.array(~unfit))


def false_if_null(mask: pa.Array) -> pa.Array:
    return pc.fill_null(mask, False) if mask.null_count else mask


def join_reasons(rules: list[tuple[str, pa.Array]]) -> pa.Array:
    """The labels of the rules each row breaks, joined by "; " in rule order."""
    # Built without nulls: binary_join_element_wise(null_handling="skip") mishandles rows
    # where every input is null.
    joined: pa.Array | None = None
    for label, mask in rules:
        if not pc.any(mask).as_py():
            continue
        if joined is None:
            joined = pc.if_else(mask, label, "")
            continue
        appended = pc.if_else(
            pc.equal(joined, ""), label, pc.binary_join_element_wise(joined, label, "; ")
        )
        joined = pc.if_else(mask, appended, joined)
    assert joined is not None
    return joined


def records_json(rows: pa.RecordBatch) -> pa.Array:
    """Each row as JSON text, its values as read, built column by column with pyarrow.compute.

    The text reads back (``json.loads``) as the row did in Python, except that NaN and the
    infinities are the strings "NaN", "Infinity", "-Infinity" (strict JSON has no such
    numbers). Floats are written as their shortest decimal in their own width (a float32 0.1
    is 0.1, not 0.10000000149011612; 2.0 is 2).
    """
    if not rows.num_rows:
        return pa.array([], pa.string())
    parts: list[pa.Array | str] = []
    for index, (name, column) in enumerate(zip(rows.schema.names, rows.columns, strict=True)):
        parts.append(("{" if index == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": ")
        parts.append(_json_values(column))
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")


def _json_values(column: pa.Array) -> pa.Array:
    """JSON text of each value of `column` ("null" for nulls)."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = column.type
    if pa.types.is_integer(kind):
        text = pc.cast(column, pa.string())
    elif pa.types.is_floating(kind):
        if pa.types.is_float16(kind):
            column = pc.cast(column, pa.float32())
        text = pc.cast(column, pa.string())
        if not pc.all(pc.is_finite(column)).as_py():
            for value, spelling in _NONFINITE.items():
                hit = pc.is_nan(column) if value == "nan" else pc.equal(column, float(value))
                text = pc.if_else(hit, f'"{spelling}"', text)
    elif is_text_type(kind):
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            column = utf8_repaired(column)
        try:
            text = _json_strings(pc.cast(column, pa.string()))
        except pa.ArrowInvalid:  # binary that is not UTF-8
            text = _json_one_by_one(column)
    else:  # types COYO's columns never have
        text = _json_one_by_one(column)
    return pc.fill_null(text, "null")


def invalid_utf8(column: pa.Array) -> pa.Array:
    """The rows of a string column whose bytes are not valid UTF-8 (one whole-column check,
    then row by row only for a column that fails it)."""
    try:
        column.validate(full=True)
        return pa.array(np.zeros(len(column), dtype=bool))
    except pa.ArrowInvalid:
        pass
    data = pc.cast(column, pa.binary()).to_pylist()
    return pa.array([value is not None and not _is_utf8(value) for value in data], pa.bool_())


def utf8_repaired(column: pa.Array) -> pa.Array:
    """`column` with invalid UTF-8 replaced by U+FFFD (quarantine records must be readable)."""
    try:
        column.validate(full=True)
        return column
    except pa.ArrowInvalid:
        data = pc.cast(column, pa.binary()).to_pylist()
        text = [None if v is None else v.decode("utf-8", errors="replace") for v in data]
        return pa.array(text, pa.string())


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _json_one_by_one(column: pa.Array) -> pa.Array:
    return pa.array(
        [json.dumps(v, ensure_ascii=False, default=str) for v in column.to_pylist()], pa.string()
    )


def _json_strings(column: pa.Array) -> pa.Array:
    escaped = pc.replace_substring(column, "\\", "\\\\")
    escaped = pc.replace_substring(escaped, '"', '\\"')
    if pc.any(pc.match_substring_regex(escaped, r"[\x00-\x1f]")).as_py():
        for code in range(0x20):
            escaped = pc.replace_substring(escaped, chr(code), json.dumps(chr(code))[1:-1])
    return pc.binary_join_element_wise('"', escaped, '"', "")


def reason_counts(reasons: pa.Array) -> Counter[str]:
    """How many rows have each (joined) reason."""
    counts = pc.value_counts(reasons)
    return Counter(
        dict(
            zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
        )
    )
