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
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, save, synth_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs (median)")
    parser.add_argument(
        "--no-again", action="store_true", help="skip the all-duplicates second pass"
    )
    args = parser.parse_args()

    import duckdb

    from coyo_db.catalog import Catalog
    from coyo_db.ingest.metadata import ingest_metadata

    data = synth_data(args.rows, files=args.files)
    files = sorted(data.glob("*.parquet"))

    scratch = OUT / "ingest-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)

    def duck_copy() -> float:
        start = time.perf_counter()
        con = duckdb.connect()
        listing = ", ".join(f"'{f}'" for f in files)
        target = scratch / "copy.parquet"
        con.execute(f"COPY (SELECT * FROM read_parquet([{listing}])) TO '{target}'")
        con.close()
        return time.perf_counter() - start

    def ingest(name: str, check_ids: bool):  # type: ignore[no-untyped-def]
        shutil.rmtree(scratch / name, ignore_errors=True)
        catalog = Catalog.init(scratch / name)
        start = time.perf_counter()
        summary = ingest_metadata(catalog, files, check_ids=check_ids)
        assert summary.rows_read == args.rows, summary
        return time.perf_counter() - start, summary, catalog

    # interleaved repeats, medians: a shared machine's load hits every contender alike
    duck, plain, checked = [], [], []
    for _ in range(args.repeats):
        duck.append(duck_copy())
        seconds, unchecked, _ = ingest("unchecked", False)
        plain.append(seconds)
        seconds, summary, catalog = ingest("home", True)
        checked.append(seconds)
        assert summary.rows_quarantined == unchecked.rows_quarantined, (summary, unchecked)
    duck_s, unchecked_s, coyo_s = (statistics.median(x) for x in (duck, plain, checked))

    again_s = float("nan")
    if not args.no_again:
        again_s = _all_duplicates(catalog, files, scratch, args.rows)

    shutil.rmtree(scratch, ignore_errors=True)
    ratio = coyo_s / duck_s
    check = coyo_s / unchecked_s
    print(f"DuckDB Parquet->Parquet COPY: {duck_s:6.1f} s  {args.rows / duck_s:12,.0f} rows/s")
    rate = args.rows / unchecked_s
    print(f"coyo-db, no id check:         {unchecked_s:6.1f} s  {rate:12,.0f} rows/s")
    print(f"coyo-db ingest metadata:      {coyo_s:6.1f} s  {args.rows / coyo_s:12,.0f} rows/s")
    print(f"  same rows again, renamed:   {again_s:6.1f} s  (all {args.rows:,} quarantined)")
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
            "repeats": args.repeats,
            "samples": {"duckdb": duck, "no_id_check": plain, "ingest": checked},
        },
    )


def _all_duplicates(catalog, files: list[Path], scratch: Path, rows: int) -> float:  # type: ignore[no-untyped-def]
    """The same rows re-saved under other names: every row is a duplicate of one in `pairs`."""
    from coyo_db.ingest.metadata import ingest_metadata

    copies = scratch / "copies"
    copies.mkdir()
    for f in files:
        shutil.copy(f, copies / f"copy-{f.name}")
    renamed = sorted(copies.glob("*.parquet"))
    _touch_content(renamed)
    start = time.perf_counter()
    again = ingest_metadata(catalog, renamed)
    seconds = time.perf_counter() - start
    assert again.rows_written == 0, again
    assert again.rows_read == again.rows_quarantined == rows, again
    return seconds


def _touch_content(paths: list[Path]) -> None:
    """Rewrite each file with another compression: other bytes, the same rows."""
    import pyarrow.parquet as pq

    for path in paths:
        table = pq.read_table(path)
        pq.write_table(table, path, compression="zstd")


if __name__ == "__main__":
    main()
