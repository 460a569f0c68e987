"""`coyo-db query` against raw DuckDB over the same data.

Four queries (filtered aggregate, group-by, distinct pHash, text LIKE) over N synthetic COYO
rows ingested into a catalog. Each contender starts cold the way a command does:

- coyo-db: `Catalog(home).sql(q)`, the call behind `coyo-db query` (opens the catalog's
  DuckDB file read-only, registers every table, creates the views, checks the statement);
- raw DuckDB: a new `duckdb.connect()` with the same Lance dataset registered, same query;
- native Parquet (for reference): DuckDB's own scan of the synthetic Parquet files.

The ratio that counts is coyo-db / raw DuckDB (target: median <= 1.3, goal 1.05).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, median_times, save, synth_data

QUERIES = {
    "filtered aggregate": (
        "SELECT count(*) AS n, avg(clip_similarity_vitb32) AS clip, max(aesthetic_score_laion_v2)"
        " AS best FROM {t} WHERE width >= 512 AND nsfw_score_opennsfw2 < 0.1"
    ),
    "group-by": (
        "SELECT num_faces, count(*) AS n, avg(watermark_score) AS wm FROM {t}"
        " GROUP BY num_faces ORDER BY num_faces"
    ),
    "distinct pHash": "SELECT count(DISTINCT image_phash) AS n FROM {t}",
    "text LIKE": "SELECT count(*) AS n FROM {t} WHERE text LIKE '%sunset%beach%'",
}


def build_catalog(rows: int) -> tuple[Path, Path]:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.metadata import ingest_metadata

    data = synth_data(rows)
    home = OUT / f"home-query-{rows}"
    if not (home / ".complete").exists():
        shutil.rmtree(home, ignore_errors=True)
        ingest_metadata(Catalog(home, create=True), [data])
        (home / ".complete").write_text("ok")
    return data, home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import duckdb

    from coyo_db.catalog import Catalog

    data, home = build_catalog(args.rows)
    catalog = Catalog(home)
    uri = str(catalog.table_uri("pairs"))
    parquet_glob = str(data / "*.parquet")

    def coyo_db(sql: str):
        return lambda: Catalog(home).sql(sql.format(t="pairs"))

    def raw_duckdb(sql: str):
        def run():
            import lance

            con = duckdb.connect()
            con.register("pairs", lance.dataset(uri))
            result = con.sql(sql.format(t="pairs")).to_arrow_table()
            con.close()
            return result

        return run

    def native_parquet(sql: str):
        def run():
            con = duckdb.connect()
            result = con.sql(sql.format(t=f"read_parquet('{parquet_glob}')")).to_arrow_table()
            con.close()
            return result

        return run

    results = {}
    for name, sql in QUERIES.items():
        assert coyo_db(sql)() == raw_duckdb(sql)(), f"{name}: results differ"
        times = median_times(
            {
                "coyo-db": coyo_db(sql),
                "raw DuckDB": raw_duckdb(sql),
                "native Parquet": native_parquet(sql),
            },
            args.repeats,
        )
        times["ratio"] = times["coyo-db"] / times["raw DuckDB"]
        times["ratio vs native Parquet"] = times["coyo-db"] / times["native Parquet"]
        results[name] = times
        print(
            f"{name:20s} coyo-db {times['coyo-db'] * 1000:8.1f} ms   raw DuckDB "
            f"{times['raw DuckDB'] * 1000:8.1f} ms   ratio {times['ratio']:.3f}   "
            f"(native Parquet {times['native Parquet'] * 1000:8.1f} ms)"
        )
    median_ratio = statistics.median(r["ratio"] for r in results.values())
    print(f"median ratio coyo-db / raw DuckDB over {len(results)} queries: {median_ratio:.3f}")
    save("query", {"rows": args.rows, "queries": results, "median_ratio": median_ratio})


if __name__ == "__main__":
    main()
