"""The removal list: one row per contaminated id with a reason naming its strongest hit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.catalog import tables

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

REMOVAL_SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("reason", pa.string())])


def contaminated_ids(catalog: Catalog) -> pa.Table:
    """One row per contaminated id with a reason naming its strongest hit."""
    if not catalog.has_table(tables.CONTAMINATION.name):
        return REMOVAL_SCHEMA.empty_table()
    hits = catalog.dataset(tables.CONTAMINATION.name).to_table(
        columns=["id", "refset", "ref_path", "method", "score", "hamming", "cosine", "inliers"]
    )
    if len(hits) == 0:
        return REMOVAL_SCHEMA.empty_table()
    order = pc.sort_indices(hits, [("id", "ascending"), ("score", "descending")])
    hits = hits.take(order)
    ids = hits["id"].to_numpy()
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    best = hits.filter(pa.array(first))
    reasons = [
        f"copy of {r}:{p} ({m}{_evidence(h, c, i)})"
        for r, p, m, h, c, i in zip(
            best["refset"].to_pylist(),
            best["ref_path"].to_pylist(),
            best["method"].to_pylist(),
            best["hamming"].to_pylist(),
            best["cosine"].to_pylist(),
            best["inliers"].to_pylist(),
            strict=True,
        )
    ]
    return pa.table({"id": best["id"], "reason": pa.array(reasons, pa.string())}, REMOVAL_SCHEMA)


def _evidence(hamming: int | None, cosine: float | None, inliers: int | None) -> str:
    parts = []
    if inliers:
        parts.append(f"{inliers} inliers")
    if cosine is not None:
        parts.append(f"cosine {cosine:.3f}")
    if hamming is not None:
        parts.append(f"hamming {hamming}")
    return ": " + ", ".join(parts) if parts else ""


def write_removal_list(catalog: Catalog, path: str | Path) -> int:
    """Write the contaminated ids with their reason as Parquet; returns how many."""
    import pyarrow.parquet as pq

    table = contaminated_ids(catalog)
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target)
    return len(table)
