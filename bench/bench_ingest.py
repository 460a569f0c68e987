"""Metadata ingest rows/s against DuckDB's own Parquet-to-Parquet copy of the same files.

coyo-db's ingest validates every row (schema, casts, id / pHash / size / NaN rules),
quarantines bad ones, stages Lance fragments and commits each file atomically. The baseline
is `COPY (SELECT * FROM read_parquet(files)) TO 'copy.parquet'` in DuckDB, which only reads
and writes. The ratio reported is coyo-db time / DuckDB time (lower is better).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, save, synth_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=4)
    args = parser.parse_args()

    import duckdb

    from coyo_db.catalog import Catalog
    from coyo_db.ingest.metadata import ingest_metadata

    data = synth_data(args.rows, files=args.files)
    files = sorted(data.glob("*.parquet"))

    scratch = OUT / "ingest-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)

    start = time.perf_counter()
    con = duckdb.connect()
    listing = ", ".join(f"'{f}'" for f in files)
    con.execute(f"COPY (SELECT * FROM read_parquet([{listing}])) TO '{scratch / 'copy.parquet'}'")
    con.close()
    duck_s = time.perf_counter() - start

    start = time.perf_counter()
    summary = ingest_metadata(Catalog(scratch / "home", create=True), files)
    coyo_s = time.perf_counter() - start
    assert summary.rows_read == args.rows, summary

    shutil.rmtree(scratch, ignore_errors=True)
    ratio = coyo_s / duck_s
    print(f"DuckDB Parquet->Parquet COPY: {duck_s:6.1f} s  {args.rows / duck_s:12,.0f} rows/s")
    print(f"coyo-db ingest metadata:      {coyo_s:6.1f} s  {args.rows / coyo_s:12,.0f} rows/s")
    print(f"ratio coyo-db / DuckDB COPY: {ratio:.2f} (quarantined {summary.rows_quarantined:,})")
    save(
        "ingest",
        {
            "rows": args.rows,
            "files": args.files,
            "duckdb_copy_s": duck_s,
            "coyo_db_ingest_s": coyo_s,
            "ratio": ratio,
            "rows_quarantined": summary.rows_quarantined,
        },
    )


if __name__ == "__main__":
    main()
