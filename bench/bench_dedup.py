"""Near-duplicate pHash dedup: the grouping alone, and the command against it.

Part 1 (grouping alone, :func:`phash_groups` on arrays in memory) at 1M, 3M and 10M synthetic
hashes: time, peak memory, recall against brute force.

The hashes follow COYO's shape: about 78% distinct random hashes, 20% exact copies of one of
them, 2% near copies with 1-4 bits flipped. Each size runs in a fresh process so that its peak
resident memory (``resource.getrusage``) is its own; the input arrays themselves take 16 bytes
a row. Recall is measured against brute force on a separate 200k-hash sample of the same
shape: every pair within the radius is found by checking all 2e10 pairs in numpy chunks, and a
pair counts as recalled when both hashes share a group.

Part 2 (the command a user runs) on a catalog of `--command-rows` synthetic rows
(`coyo-db synth`, ingested once and cached): ``coyo-db dedup phash --radius 4`` with the default
keeper (highest CLIP score, read from `pairs`) and with ``--keep lowest-id``, each in a fresh
process, against the baseline of the grouping alone on the same catalog's hashes in a fresh
process (reading id and image_phash from `pairs`, then :func:`phash_groups`). Wall time and the
process's own peak RSS; target: the command within 1.5x of the grouping in both.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, run_measured, save, synth_catalog

GROUPING_ALONE = """
import sys, time
import numpy as np
from coyo_db.catalog import Catalog
from coyo_db.dedup.near_phash import phash_groups
from coyo_db.ingest.phash import phash_hex_to_uint64
start = time.perf_counter()
rows = Catalog(sys.argv[1]).dataset("pairs").to_table(
    columns=["id", "image_phash"], filter="image_phash IS NOT NULL")
hashes = phash_hex_to_uint64(rows["image_phash"])
ids = rows["id"].to_numpy()
del rows
groups = phash_groups(ids, hashes, int(sys.argv[2]))
print(groups.num_rows, len(ids), time.perf_counter() - start)
"""


def command_vs_grouping(rows: int, radius: int) -> dict:
    """The `dedup phash` command (two keeper rules) against the grouping alone, same catalog."""
    home = str(synth_catalog(rows))
    exe = str(Path(sys.executable).with_name("coyo-db"))
    grouping = run_measured([sys.executable, "-c", GROUPING_ALONE, home, str(radius)])
    members, scanned, _ = grouping.pop("output").split()
    result = {
        "rows": rows,
        "radius": radius,
        "rows_in_groups": int(members),
        "rows_scanned": int(scanned),
        "grouping_alone": grouping,
    }
    for keep in ("highest-clip", "lowest-id"):
        cmd = [exe, "dedup", "phash", "--radius", str(radius), "--keep", keep, "--home", home]
        measured = run_measured(cmd)
        measured["output"] = measured["output"].strip().splitlines()[-1]
        measured["time_ratio"] = measured["seconds"] / grouping["seconds"]
        measured["memory_ratio"] = measured["peak_rss_mib"] / grouping["peak_rss_mib"]
        result[f"command_keep_{keep}"] = measured
    return result


def planted_hashes(n: int, seed: int = 0) -> np.ndarray:
    """`n` COYO-shaped hashes: 78% distinct, 20% exact copies, 2% copies 1-4 bits away."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    distinct = int(n * 0.78)
    copies = rng.integers(0, distinct, n - distinct)
    hashes[distinct:] = hashes[copies]
    near = np.arange(n - int(n * 0.02), n)
    flips = np.zeros(len(near), dtype=np.uint64)
    bits = rng.integers(1, 5, len(near))
    for k in range(4):
        chosen = bits > k
        flips[chosen] ^= np.uint64(1) << rng.integers(0, 64, chosen.sum()).astype(np.uint64)
    hashes[near] ^= flips  # a repeated bit cancels: distances 0-4
    return hashes[rng.permutation(n)]


def run_size(n: int, radius: int) -> dict:
    from coyo_db.dedup.near_phash import phash_groups

    hashes = planted_hashes(n)
    ids = np.arange(n, dtype=np.int64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    table = phash_groups(ids, hashes, radius)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "hashes": n,
        "radius": radius,
        "seconds": round(seconds, 2),
        "hashes_per_s": round(n / seconds),
        "peak_rss_mib": round(peak / 1024),
        "rss_before_mib": round(before / 1024),
        "rows_in_groups": table.num_rows,
        "groups": len(np.unique(table["group_id"].to_numpy())),
    }


def recall(n: int, radius: int, chunk: int = 2000) -> dict:
    from coyo_db.dedup.near_phash import phash_groups

    hashes = planted_hashes(n, seed=1)
    ids = np.arange(n, dtype=np.int64)
    table = phash_groups(ids, hashes, radius)
    group = np.full(n, -1, dtype=np.int64)
    group[table["id"].to_numpy()] = table["group_id"].to_numpy()
    start = time.perf_counter()
    pairs = found = 0
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        dist = np.bitwise_count(hashes[lo:hi, None] ^ hashes[None, lo:])
        a, b = np.nonzero(dist <= radius)
        a, b = a + lo, b + lo
        later = b > a
        a, b = a[later], b[later]
        pairs += len(a)
        found += int(((group[a] == group[b]) & (group[a] >= 0)).sum())
    return {
        "sample": n,
        "radius": radius,
        "pairs_within_radius": pairs,
        "pairs_grouped": found,
        "recall": found / pairs if pairs else 1.0,
        "brute_force_s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,3000000,10000000")
    parser.add_argument("--radius", type=int, default=4)
    parser.add_argument("--sample", type=int, default=200_000)
    parser.add_argument(
        "--command-rows",
        type=int,
        default=10_000_000,
        help="catalog rows for the command against the grouping (0: skip)",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_size(args.one, args.radius)))
        return
    sizes = []
    for n in (int(x) for x in args.sizes.split(",") if x):
        child = [sys.executable, __file__, "--one", str(n), "--radius", str(args.radius)]
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        sizes.append(json.loads(out.strip().splitlines()[-1]))
        print(sizes[-1], flush=True)
    result = {"machine": machine(), "sizes": sizes}
    if args.sample:
        result["recall"] = recall(args.sample, args.radius)
        print(result["recall"], flush=True)
    if args.command_rows:
        command = command_vs_grouping(args.command_rows, args.radius)
        result["command"] = command
        base = command["grouping_alone"]
        print(
            f"grouping alone (load + phash_groups): {base['seconds']:6.1f} s "
            f"{base['peak_rss_mib']:7.0f} MiB"
        )
        for keep in ("highest-clip", "lowest-id"):
            run = command[f"command_keep_{keep}"]
            print(
                f"coyo-db dedup phash --keep {keep:12s} {run['seconds']:6.1f} s "
                f"{run['peak_rss_mib']:7.0f} MiB  ratio {run['time_ratio']:.2f} time, "
                f"{run['memory_ratio']:.2f} memory (target 1.5)"
            )
    print(save("dedup", result))


if __name__ == "__main__":
    main()
