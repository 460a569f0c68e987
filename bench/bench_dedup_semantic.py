"""Semantic dedup (SemDeDup) at 1M x 512-d vectors: time per phase, peak memory, recall.

Contender: each vector compared in its two nearest clusters (coyo-db's rule); baseline:
SemDeDup's own rule, one cluster per vector, on the same vectors in the same run (each in a
fresh process, so that peak memory is its own).

The vectors are random unit vectors (nearly orthogonal in 512-d, so the only true duplicates are
the planted ones) plus 2% planted near copies of random originals, at cosine 0.96-0.995. The run
calls `semantic_groups` on in-memory float32 vectors (the Lance read of a float16 table is not
timed: the figure is the grouping, not the command), with the default cluster count
k = sqrt(n). Recall is the share of planted (original,
copy) pairs that land in one group at threshold 0.95; the miss is SemDeDup's approximation
(a pair split across clusters that share none of their nearest centroids is never
compared). Peak memory is the process's maximum
resident set (``resource.getrusage``), the vectors themselves taking n x 2 KiB.
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

from common import save


def planted_vectors(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors, and the (original, copy) rows of the planted near duplicates."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    copies = np.arange(n - n // 50, n)
    originals = rng.integers(0, copies[0], len(copies))
    cosine = rng.uniform(0.96, 0.995, len(copies)).astype(np.float32)[:, None]
    noise = rng.standard_normal((len(copies), dim), dtype=np.float32)
    base = vectors[originals]
    noise -= np.sum(noise * base, axis=1, keepdims=True) * base
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors[copies] = cosine * base + np.sqrt(1 - cosine**2) * noise
    return vectors, originals, copies


def run(n: int, dim: int, threshold: float, assignments: int) -> dict:
    from coyo_db.dedup import semantic_core as sem

    vectors, originals, copies = planted_vectors(n, dim)
    ids = np.arange(n, dtype=np.int64)
    phases: dict[str, float] = {}
    assign = sem.assign_clusters

    def timed_assign(v, k, seed=sem.SEED, count=assignments):
        t = time.perf_counter()
        out = assign(v, k, seed, count)
        phases["kmeans_s"] = round(time.perf_counter() - t, 1)
        return out

    sem.assign_clusters = timed_assign
    start = time.perf_counter()
    gid, member, _ = sem.semantic_groups(ids, vectors, threshold, assignments=assignments)
    seconds = time.perf_counter() - start
    group_of = np.full(n, -1, dtype=np.int64)
    group_of[member] = gid
    found = (group_of[originals] >= 0) & (group_of[originals] == group_of[copies])
    return {
        "vectors": n,
        "dim": dim,
        "threshold": threshold,
        "assignments": assignments,
        "clusters": sem.cluster_count(n),
        "seconds": round(seconds, 1),
        **phases,
        "pairs_and_groups_s": round(seconds - phases["kmeans_s"], 1),
        "groups": len(np.unique(gid)),
        "rows_in_groups": len(member),
        "planted_pairs": len(copies),
        "recall": round(float(found.mean()), 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # assignments, in a child
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run(args.vectors, args.dim, args.threshold, args.one)))
        return
    results = {}
    for assignments, name in ((2, "two_clusters"), (1, "one_cluster_baseline")):
        child = [sys.executable, __file__, "--one", str(assignments)]
        child += ["--vectors", str(args.vectors), "--dim", str(args.dim)]
        child += ["--threshold", str(args.threshold)]
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    two, one = results["two_clusters"], results["one_cluster_baseline"]
    print(
        f"recall {two['recall']:.3f} (one cluster: {one['recall']:.3f}); "
        f"time {two['seconds'] / one['seconds']:.2f}x the one-cluster run"
    )
    save("dedup_semantic", results)


if __name__ == "__main__":
    main()
