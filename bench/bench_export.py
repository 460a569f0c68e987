"""`coyo-db export` rows/s against DuckDB's own COPY of the same query to Parquet.

N synthetic COYO rows in a catalog (the `pairs` table of bench_query's catalog, linked into a
home of this benchmark's own), plus a `dup_groups` table marking 5% of the rows as
non-keepers. Contenders, each writing Parquet of the same rows:

- coyo-db: :func:`coyo_db.export.subset.export` (the call behind `coyo-db export --format parquet`):
  the exclusion pass, the selection streamed as Arrow, duplicates dropped, Parquet files of
  1,000,000 rows, id fingerprints and the manifest, written to a temporary folder and renamed;
- DuckDB COPY: the export's SQL as run (the selection with ``id NOT IN`` the duplicates),
  ``COPY (...) TO 'file.parquet' (FORMAT parquet)`` over the same registered Lance table.

Ratio = coyo-db time / DuckDB COPY time (target <= 1.2). Both outputs are checked to hold the
same ids.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, median_times, save

QUERIES = {
    "thresholded subset (27%)": (
        "clip_similarity_vitb32 >= 0.3 AND aesthetic_score_laion_v2 >= 4.5",
        ["url", "text", "id"],
    ),
    "every row, 6 columns": (
        "true",
        ["url", "text", "id", "width", "height", "clip_similarity_vitb32"],
    ),
}
DUPLICATE_SHARE = 0.05


def build_home(rows: int) -> Path:
    """A home whose `pairs` is bench_query's table (linked) and whose dup_groups is its own."""
    import numpy as np
    import pyarrow as pa
    from bench_query import build_catalog

    from coyo_db.catalog import Catalog
    from coyo_db.catalog.tables import DUP_GROUPS

    _, query_home = build_catalog(rows)
    home = OUT / f"home-export-{rows}"
    if (home / ".complete").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    home.parent.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(home, create=True)
    (home / "tables" / "pairs.lance").symlink_to(query_home / "tables" / "pairs.lance")
    ids = catalog.dataset("pairs").to_table(columns=["id"])["id"].to_numpy()
    rng = np.random.default_rng(0)
    dup = np.sort(rng.choice(ids, int(len(ids) * DUPLICATE_SHARE), replace=False))
    keepers = rng.choice(ids, len(dup), replace=False)
    n = len(dup)
    table = pa.table(
        {
            "method": pa.array(["bench"] * (2 * n)),
            "group_id": np.concatenate([keepers, keepers]),
            "id": np.concatenate([keepers, dup]),
            "keeper": np.r_[np.ones(n, bool), np.zeros(n, bool)],
            "distance": np.zeros(2 * n, np.int32),
            "group_size": np.full(2 * n, 2, np.int32),
            "keep_rule": pa.array(["lowest-id"] * (2 * n)),
        },
        schema=DUP_GROUPS.schema,
    )
    catalog.ensure(DUP_GROUPS)
    catalog.append("dup_groups", table)
    (home / ".complete").write_text("ok")
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import pyarrow.parquet as pq

    from coyo_db.catalog import Catalog
    from coyo_db.export.plan import plan_export, selection_sql
    from coyo_db.export.subset import export

    home = build_home(args.rows)
    catalog = Catalog(home)
    work = OUT / "export-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results = {}
    for name, (where, columns) in QUERIES.items():
        extra = [c for c in columns if c not in ("url", "text", "id")]
        plan = plan_export(catalog, selection_sql(where=where, columns=extra))
        target = work / "coyo-db"
        copy_file = work / "duckdb.parquet"

        def coyo_db(where=where, extra=extra, target=target):
            return export(catalog, target, where=where, columns=extra, overwrite=True)

        def duckdb_copy(sql=plan.sql, copy_file=copy_file):
            with catalog.connection() as con:
                con.execute(f"COPY ({sql}) TO '{copy_file}' (FORMAT parquet)")

        result = coyo_db()
        duckdb_copy()
        exported = result.rows
        ours = pq.read_table(target, columns=["id"])["id"].to_numpy()
        theirs = pq.read_table(copy_file, columns=["id"])["id"].to_numpy()
        assert len(ours) == len(theirs) == exported and set(ours) == set(theirs), name
        times = median_times({"coyo-db": coyo_db, "DuckDB COPY": duckdb_copy}, args.repeats)
        times["rows"] = exported
        times["excluded"] = result.counts["excluded"]
        times["coyo-db rows/s"] = exported / times["coyo-db"]
        times["DuckDB COPY rows/s"] = exported / times["DuckDB COPY"]
        times["ratio"] = times["coyo-db"] / times["DuckDB COPY"]
        results[name] = times
        print(
            f"{name:26s} {exported:>10,} rows ({result.counts['excluded']:,} duplicates "
            f"excluded)  coyo-db {times['coyo-db']:6.2f} s ({times['coyo-db rows/s']:,.0f} "
            f"rows/s)  DuckDB COPY {times['DuckDB COPY']:6.2f} s "
            f"({times['DuckDB COPY rows/s']:,.0f} rows/s)  ratio {times['ratio']:.3f}"
        )
    shutil.rmtree(work, ignore_errors=True)
    worst = max(r["ratio"] for r in results.values())
    print(f"worst ratio coyo-db / DuckDB COPY: {worst:.3f} (target <= 1.2)")
    save("export", {"rows": args.rows, "queries": results, "worst_ratio": worst})


if __name__ == "__main__":
    main()
