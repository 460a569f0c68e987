"""Metadata ingest rows/s against DuckDB's own Parquet-to-Parquet copy of the same files.

coyo-db's ingest validates every row (schema, casts, id / pHash / size / NaN rules),
quarantines bad ones, stages Lance fragments and commits each file atomically. The baseline
is `COPY (SELECT * FROM read_parquet(files)) TO 'copy.parquet'` in DuckDB, which only reads
and writes. The ratio reported is coyo-db time / DuckDB time (lower is better).

The same files are also ingested with `check_ids=False` (no check against the ids `pairs`
holds already, :mod:`coyo_db.catalog.id_keys`): the second ratio is the check's cost. Then the
same files go in a second time, into the filled table, where every row is a duplicate: each
must be quarantined, none written.
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
    unchecked = ingest_metadata(Catalog.init(scratch / "unchecked"), files, check_ids=False)
    unchecked_s = time.perf_counter() - start
    assert unchecked.rows_read == args.rows, unchecked

    catalog = Catalog.init(scratch / "home")
    start = time.perf_counter()
    summary = ingest_metadata(catalog, files)
    coyo_s = time.perf_counter() - start
    assert summary.rows_read == args.rows, summary
    assert summary.rows_quarantined == unchecked.rows_quarantined, (summary, unchecked)

    # the same rows re-saved under other names: every row is a duplicate of one in `pairs`
    copies = scratch / "copies"
    copies.mkdir()
    for f in files:
        shutil.copy(f, copies / f"copy-{f.name}")
    renamed = sorted(copies.glob("*.parquet"))
    _touch_content(renamed)
    start = time.perf_counter()
    again = ingest_metadata(catalog, renamed)
    again_s = time.perf_counter() - start
    assert again.rows_written == 0, again
    assert again.rows_read == args.rows, again

    shutil.rmtree(scratch, ignore_errors=True)
    ratio = coyo_s / duck_s
    check = coyo_s / unchecked_s
    print(f"DuckDB Parquet->Parquet COPY: {duck_s:6.1f} s  {args.rows / duck_s:12,.0f} rows/s")
    rate = args.rows / unchecked_s
    print(f"coyo-db, no id check:         {unchecked_s:6.1f} s  {rate:12,.0f} rows/s")
    print(f"coyo-db ingest metadata:      {coyo_s:6.1f} s  {args.rows / coyo_s:12,.0f} rows/s")
    print(f"  same rows again, renamed:   {again_s:6.1f} s  {again.rows_quarantined:,} quarantined")
    print(f"ratio coyo-db / DuckDB COPY: {ratio:.2f} (quarantined {summary.rows_quarantined:,})")
    print(f"ratio id check / no id check: {check:.2f}")
    save(
        "ingest",
        {
            "rows": args.rows,
            "files": args.files,
            "duckdb_copy_s": duck_s,
            "coyo_db_ingest_s": coyo_s,
            "coyo_db_ingest_no_id_check_s": unchecked_s,
            "duplicates_again_s": again_s,
            "ratio": ratio,
            "id_check_ratio": check,
            "rows_quarantined": summary.rows_quarantined,
        },
    )


def _touch_content(paths: list[Path]) -> None:
    """Rewrite each file with another compression: other bytes, the same rows."""
    import pyarrow.parquet as pq

    for path in paths:
        table = pq.read_table(path)
        pq.write_table(table, path, compression="zstd")


if __name__ == "__main__":
    main()
