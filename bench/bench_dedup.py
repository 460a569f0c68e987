"""Near-duplicate pHash dedup at 1M and 3M synthetic hashes: time, peak memory, recall.

The hashes follow COYO's shape: about 78% distinct random hashes, 20% exact copies of one of
them, 2% near copies with 1-4 bits flipped. Each size runs in a fresh process so that its peak
resident memory (``resource.getrusage``) is its own; the input arrays themselves take 16 bytes
a row. Recall is measured against brute force on a separate 200k-hash sample of the same
shape: every pair within the radius is found by checking all 2e10 pairs in numpy chunks, and a
pair counts as recalled when both hashes share a group.
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

from common import machine, save


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
    parser.add_argument("--sizes", default="1000000,3000000")
    parser.add_argument("--radius", type=int, default=4)
    parser.add_argument("--sample", type=int, default=200_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_size(args.one, args.radius)))
        return
    sizes = []
    for n in map(int, args.sizes.split(",")):
        child = [sys.executable, __file__, "--one", str(n), "--radius", str(args.radius)]
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        sizes.append(json.loads(out.strip().splitlines()[-1]))
        print(sizes[-1], flush=True)
    result = {"machine": machine(), "sizes": sizes}
    if args.sample:
        result["recall"] = recall(args.sample, args.radius)
        print(result["recall"], flush=True)
    print(save("dedup", result))


if __name__ == "__main__":
    main()
