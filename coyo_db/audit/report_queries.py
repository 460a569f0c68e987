"""The audit report's queries: short parameterised statements over the audit's tables, run on
one DuckDB connection of the catalog, and the captions of the images shown."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import duckdb

    from coyo_db.catalog import Catalog

PARAM = re.compile(r"\$([a-z_]+)")


def run_query(con: duckdb.DuckDBPyConnection, sql: str, **params: object) -> list[dict[str, Any]]:
    used = set(PARAM.findall(sql))
    table = con.sql(sql, params={k: v for k, v in params.items() if k in used}).to_arrow_table()
    return table.to_pylist()


def in_sets(column: str = "refset") -> str:
    return f"($all OR list_contains($refsets::VARCHAR[], {column}))"


HITS = f"""
SELECT id, refset, ref_id, ref_path, method, score, hamming, cosine, inliers, coverage,
       flipped, shard, member, coalesce(ref_group, ref_id) AS ref_group
FROM contamination WHERE {in_sets()}
ORDER BY refset, score DESC, id, ref_id
"""
REFS = f"""
SELECT refset, ref_id, ref_path, shard, member, low_info_reason,
       coalesce(ref_group, ref_id) AS ref_group
FROM refset_images WHERE {in_sets()}
"""
BY_METHOD = f"""
SELECT refset, method, hits, images, references_hit, groups_hit, median_score
FROM contamination_summary WHERE {in_sets()}
ORDER BY refset, hits DESC, method
"""
BLANK_REFS = "SELECT refset, ref_id FROM refset_images WHERE low_info_reason = $blank"
CANDIDATE_COUNTS = f"""
SELECT c.refset, count(*) AS candidates,
       count(*) FILTER (WHERE c.hit IS NOT TRUE AND b.ref_id IS NULL) AS misses,
       count(*) FILTER (WHERE c.hit IS NOT TRUE AND b.ref_id IS NOT NULL) AS blank_misses
FROM contamination_candidates c LEFT JOIN ({BLANK_REFS}) b USING (refset, ref_id)
WHERE {in_sets("c.refset")}
GROUP BY c.refset
"""
MISSES = f"""
FROM contamination_candidates c ANTI JOIN ({BLANK_REFS}) b USING (refset, ref_id)
WHERE c.hit IS NOT TRUE AND c.score IS NOT NULL AND NOT isnan(c.score)
  AND {in_sets("c.refset")}
"""
NEAR_MISSES_SQL = f"""
SELECT c.id, c.refset, c.ref_id, c.ref_path, c.score, c.hamming, c.cosine, c.inliers,
       c.coverage, c.layout, c.flipped, c.low_info, c.found_by, c.shard, c.member,
       coalesce(c.ref_group, c.ref_id) AS ref_group
{MISSES}
ORDER BY c.score DESC, c.id, c.refset, c.ref_id
LIMIT $limit
"""
MISS_BINS = f"""
SELECT least(greatest(CAST(floor(c.score * $bins) AS INTEGER), 0), $bins - 1) AS bin,
       count(*) AS n
{MISSES}
GROUP BY ALL
"""


def captions_of(catalog: Catalog, ids: set[int]) -> dict[int, str]:
    from coyo_db.catalog import tables

    if not ids or not catalog.has_table(tables.IMAGES.name):
        return {}
    found = catalog.dataset(tables.IMAGES.name).to_table(
        columns=["id", "caption"],
        filter=pc.field("id").isin(pa.array(sorted(ids), pa.int64())),
    )
    return {
        i: c
        for i, c in zip(found["id"].to_pylist(), found["caption"].to_pylist(), strict=True)
        if c
    }
