"""Near-pHash pair search on Ray: each block combination is one task.

The distinct hashes go to Ray's object store once (8 bytes a hash, read zero-copy by every task
on a node). Each task is :func:`coyo_db.dedup.near_phash.combination_pairs` over one block
combination: it sorts its own packed keys and verifies its candidates, so its memory is a few
arrays of the hash count (about :data:`TASK_BYTES_PER_HASH` bytes a hash), declared to Ray as
the task's ``memory`` so that a node runs only as many at once as fit. The driver gathers the
pairs as tasks finish; :func:`coyo_db.dedup.near_phash.phash_groups` then makes the same
connected components as the local search (the union of the combinations' pairs is the same
set, whatever the order they come back in).

A task that dies is retried (``max_retries``); its pairs arrive once, from the attempt that
finished. Ray is imported only when ``--engine ray`` is asked for.
"""

from __future__ import annotations

import numpy as np

from coyo_db.dedup.near_phash import PairSearch, combination_pairs, combinations, join_pairs

# sorted keys, the order, run ends and candidate arrays: ~6 arrays of 8 bytes per hash
TASK_BYTES_PER_HASH = 48
MAX_RETRIES = 3


def ray_near_pairs(address: str | None = None) -> PairSearch:
    """A pair search for :func:`phash_groups` that runs each block combination as a Ray task
    on the cluster at `address` (or a local Ray; see :func:`coyo_db.ingest.ray_engine.session`)."""

    def search(unique: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from coyo_db.ingest.ray_engine import session

        combos = combinations(unique, radius)
        if not combos:
            return join_pairs([], [], [])
        found_a, found_b, found_d = [], [], []
        with session(address) as ray:
            task = ray.remote(
                max_retries=MAX_RETRIES,
                memory=max(1, TASK_BYTES_PER_HASH * len(unique)),
            )(combination_pairs)
            shared = ray.put(unique)
            pending = [task.remote(shared, combo, radius) for combo in combos]
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                a, b, d = ray.get(done[0])
                found_a.append(a)
                found_b.append(b)
                found_d.append(d)
        return join_pairs(found_a, found_b, found_d)

    return search
