"""Decoded images and stage outputs as Arrow tables, the form they take between Ray workers.

A read task turns decoded images into a table (:func:`decoded_table`): the record's fields, the
decode facts, ``error`` (null when good), ``text`` (the caption models read), optionally the
encoded ``data``, and one ``px<i>`` column of fixed-size binary pixels per spec. A stage actor
reads the pixels back (:func:`pixels`), appends each output as an ``out:<name>`` column over all
rows (:func:`scatter`: nulls or zeros where the image was bad), and the driver turns the table
back into decoded images and output arrays (:func:`unpack`). Nothing here imports Ray.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.ingest.image_job import caption, failure
from coyo_db.ingest.image_types import DecodedImage, ImageRecord

if TYPE_CHECKING:
    from coyo_db.ingest.image_types import Preprocess

OUTPUT_PREFIX = "out:"
_RECORD = ["shard", "member", "key", "url", "caption", "meta", "data_offset"]
_FACTS = ["width", "height", "format", "nbytes", "phash"]


def decoded_table(
    decoded: Sequence[DecodedImage], specs: Sequence[Preprocess], *, keep_bytes: bool = False
) -> pa.Table:
    """Decoded images as Arrow (see the module docstring)."""
    records = [d.record for d in decoded]
    errors = [failure(d) for d in decoded]
    columns: dict[str, pa.Array] = {
        "shard": pa.array([r.shard for r in records], pa.string()),
        "member": pa.array([r.member for r in records], pa.string()),
        "key": pa.array([r.key for r in records], pa.string()),
        "url": pa.array([r.url for r in records], pa.string()),
        "caption": pa.array([r.caption for r in records], pa.string()),
        "meta": pa.array(
            [json.dumps(r.meta, ensure_ascii=False, default=str) for r in records], pa.string()
        ),
        "data_offset": pa.array([r.data_offset for r in records], pa.int64()),
        "text": pa.array([caption(r) for r in records], pa.string()),
        "error": pa.array(errors, pa.string()),
        "width": pa.array([d.width for d in decoded], pa.int32()),
        "height": pa.array([d.height for d in decoded], pa.int32()),
        "format": pa.array([d.format for d in decoded], pa.string()),
        "nbytes": pa.array([d.nbytes for d in decoded], pa.int64()),
        "phash": pa.array([d.phash for d in decoded], pa.string()),
    }
    if keep_bytes:
        columns["data"] = pa.array([r.data for r in records], pa.binary())
    for i, spec in enumerate(specs):
        block = np.zeros((len(decoded), spec.size, spec.size, 3), np.uint8)
        for row, item in enumerate(decoded):
            if errors[row] is None:
                block[row] = item.pixels[spec]
        width = spec.size * spec.size * 3
        columns[f"px{i}"] = pa.Array.from_buffers(
            pa.binary(width), len(decoded), [None, pa.py_buffer(block)]
        )
    return pa.table(columns)


def good_rows(table: pa.Table) -> np.ndarray:
    return pc.is_null(table["error"]).to_numpy(zero_copy_only=False)


def pixels(column: pa.ChunkedArray, spec: Preprocess) -> np.ndarray:
    """A ``px<i>`` column as an (N, size, size, 3) uint8 array (no copy)."""
    array = column.combine_chunks()
    width = spec.size * spec.size * 3
    flat = np.frombuffer(
        array.buffers()[1], np.uint8, count=len(array) * width, offset=array.offset * width
    )
    return flat.reshape(len(array), spec.size, spec.size, 3)


def scatter(values: np.ndarray, good: np.ndarray) -> pa.Array:
    """Values of the good rows spread over all rows (nulls or zeros for the bad ones)."""
    values = np.asarray(values)
    n = len(good)
    if values.ndim == 2:
        full = np.zeros((n, values.shape[1]), values.dtype)
        full[good] = values
        return pa.FixedSizeListArray.from_arrays(pa.array(full.ravel()), values.shape[1])
    if values.dtype.kind in "OUS":
        out = np.full(n, None, object)
        out[good] = values
        return pa.array(out.tolist(), pa.string())
    full = np.zeros(n, values.dtype)
    full[good] = values
    return pa.array(full)


def column_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A column as NumPy: (N, d) for fixed-size lists, (N,) otherwise (objects for strings)."""
    array = column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type):
        return array.flatten().to_numpy(zero_copy_only=False).reshape(len(array), -1)
    return array.to_numpy(zero_copy_only=False)


def unpack(table: pa.Table) -> tuple[list[DecodedImage], list[DecodedImage], dict]:
    """(good images, bad images, the outputs of the good ones) from a stage's table, in row
    order; the images carry their records and decode facts, not their pixels."""
    rows = table.select([*_RECORD, "error", *_FACTS]).to_pylist()
    data = table["data"].to_pylist() if "data" in table.column_names else None
    good, bad = [], []
    for i, row in enumerate(rows):
        record = ImageRecord(
            shard=row["shard"],
            member=row["member"],
            key=row["key"],
            data=data[i] if data is not None else None,
            url=row["url"],
            caption=row["caption"],
            meta=json.loads(row["meta"]) if row["meta"] else {},
            data_offset=row["data_offset"],
        )
        image = DecodedImage(
            record=record,
            error=row["error"],
            width=row["width"],
            height=row["height"],
            format=row["format"],
            nbytes=row["nbytes"] or 0,
            phash=row["phash"],
        )
        (good if row["error"] is None else bad).append(image)
    mask = good_rows(table)
    outputs = {
        name.removeprefix(OUTPUT_PREFIX): column_numpy(table[name])[mask]
        for name in table.column_names
        if name.startswith(OUTPUT_PREFIX)
    }
    return good, bad, outputs
