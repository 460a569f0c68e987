"""Values that would poison a table are quarantined with the column named, and the run goes on:
invalid UTF-8 in a string column, infinite scores and scores too large for float32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from coyo_db.catalog import Catalog
from coyo_db.ingest.metadata import ingest_metadata
from tests.conftest import coyo_table


def _with_bad_text(table: pa.Table, row: int) -> pa.Table:
    """`table` whose `text` at `row` holds bytes that are not UTF-8, as a broken writer leaves."""
    data = [v.encode() if v is not None else None for v in table["text"].to_pylist()]
    data[row] = b"caption \xff\xfe broken"
    binary = pa.array(data, pa.binary())
    text = pa.Array.from_buffers(
        pa.string(), len(binary), binary.buffers(), null_count=binary.null_count
    )
    return table.set_column(table.schema.get_field_index("text"), "text", text)


def test_invalid_utf8_and_non_finite_scores_are_quarantined(tmp_path: Path, coyo_rows):
    table = coyo_table(coyo_rows)
    table = table.set_column(0, "id", pa.array(np.arange(1, len(table) + 1, dtype=np.int64)))
    table = _with_bad_text(table, 2)
    # A float64 file: one score infinite, one beyond float32's range (inf once cast).
    scores = table["watermark_score"].to_numpy(zero_copy_only=False).astype(np.float64)
    scores[4], scores[6] = np.inf, 1e300
    index = table.schema.get_field_index("watermark_score")
    table = table.set_column(index, "watermark_score", pa.array(scores, pa.float64()))
    path = tmp_path / "bad-values.parquet"
    pq.write_table(table, path)

    catalog = Catalog(tmp_path / "home", create=True)
    summary = ingest_metadata(catalog, [path])

    assert (summary.rows_read, summary.rows_written, summary.rows_quarantined) == (11, 8, 3)
    bad = catalog.sql("SELECT id, reason, record FROM quarantine ORDER BY id").to_pylist()
    assert [(r["id"], r["reason"]) for r in bad] == [
        (3, "invalid UTF-8 in text"),
        (5, "infinite watermark_score"),
        (7, "infinite watermark_score"),
    ]
    assert "broken" in json.loads(bad[0]["record"])["text"], "the record stays readable"
    texts = catalog.sql("SELECT text FROM pairs")["text"].to_pylist()  # reads every text
    assert len(texts) == 8
