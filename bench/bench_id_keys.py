"""The duplicate-id check's cost per new id as the table grows, against a scan of the table's ids.

Ingest asks, for every file, which of its ids the table holds already
(:class:`coyo_db.catalog.id_keys.IdKeys`: a Bloom filter, then an exact lookup of its few
candidates through a BTREE index on `id`). This bench grows a keyed table step by step to
`--max-rows` and, at each size, times the check of one file of `--file-rows` new ids (1% of
them already in the table) the way ingest runs it: `add_absent` (the filter), `present` of
the ids it cannot rule out and `add` before the commit, `committed` (the index delta, once
16M rows lack it) after it; the commit itself is the ingest's write, not the check,
and is not timed. Loading and saving the filter happen once per run, and are shown apart.
The baseline is what the check replaces: reading every id of the table and testing the file's
ids against them (`np.isin`), per file. Its cost grows with the table; the check's should not.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-rows", type=int, default=64_000_000)
    parser.add_argument("--file-rows", type=int, default=1_000_000)
    args = parser.parse_args()

    import numpy as np
    import pyarrow as pa

    from coyo_db.catalog import Catalog
    from coyo_db.catalog.id_keys import IdKeys

    scratch = OUT / "id-keys-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    catalog = Catalog.init(scratch / "home")
    rng = np.random.default_rng(0)
    table = "keyed"
    held = 0
    sizes = []
    size = args.file_rows
    while size <= args.max_rows:
        sizes.append(size)
        size *= 4
    results = []
    print(
        f"{'table rows':>12} {'check us/id':>12} {'scan us/id':>11} {'scan/check':>10} "
        f"{'open+save s (per run)':>22}"
    )
    for size in sizes:
        # grow the table to `size` ids (through the check, as ingest would)
        keys = IdKeys(catalog, table)
        while held < size:
            step = min(size - held, 4 * args.file_rows)
            ids = rng.integers(0, 2**62, step, dtype=np.int64)
            keys.add(ids)
            catalog.append(table, pa.table({"id": pa.array(ids, pa.int64())}))
            keys.committed()
            held += step
        keys.close()

        # one file: 99% new ids, 1% already in the table
        new = rng.integers(0, 2**62, args.file_rows, dtype=np.int64)
        sample = catalog.dataset(table).take(
            rng.choice(held, args.file_rows // 100, replace=False), columns=["id"]
        )
        new[: args.file_rows // 100] = sample["id"].to_numpy()

        start = time.perf_counter()
        keys = IdKeys(catalog, table)
        open_s = time.perf_counter() - start
        start = time.perf_counter()
        # as ingest: the filter rules out most ids (and records them), the rest are held and
        # settled by one exact lookup
        maybe = keys.add_absent(new)
        present = np.zeros(len(new), dtype=bool)
        present[maybe] = keys.present(new[maybe])
        keys.add(new[maybe & ~present])
        check_s = time.perf_counter() - start
        catalog.append(table, pa.table({"id": pa.array(new[~present], pa.int64())}))  # the write
        start = time.perf_counter()
        keys.committed()
        check_s += time.perf_counter() - start
        start = time.perf_counter()
        keys.close()
        close_s = time.perf_counter() - start
        held += int((~present).sum())
        assert present.sum() == args.file_rows // 100, present.sum()

        start = time.perf_counter()
        every = catalog.dataset(table).to_table(columns=["id"])["id"]
        scanned = np.isin(new, every.to_numpy())
        scan_s = time.perf_counter() - start
        assert scanned.sum() >= present.sum()
        del every, scanned

        per_check = check_s / args.file_rows * 1e6
        per_scan = scan_s / args.file_rows * 1e6
        print(
            f"{held:>12,} {per_check:>12.2f} {per_scan:>11.2f} {scan_s / check_s:>10.2f} "
            f"{open_s + close_s:>22.2f}"
        )
        results.append(
            {
                "table_rows": held,
                "check_s": check_s,
                "scan_s": scan_s,
                "ratio": scan_s / check_s,
                "open_s": open_s,
                "save_s": close_s,
            }
        )
    shutil.rmtree(scratch, ignore_errors=True)
    save("id_keys", {"file_rows": args.file_rows, "steps": results})


if __name__ == "__main__":
    main()
