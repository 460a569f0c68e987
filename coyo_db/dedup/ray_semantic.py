"""Semantic dedup's per-cluster step on Ray: each unit of clusters is one task.

A unit is whole clusters packed up to ``max_vectors`` vectors (or two chunks of a larger
cluster, see :func:`coyo_db.dedup.semantic._cluster_pairs`). Its task gets only the unit's row
positions and cluster labels (12 bytes a vector), opens the embeddings table at the version the
driver read, reads its own vectors with Lance ``take`` and returns the unit's edges: vectors
never pass through the driver. Each task's memory, about the unit's vectors and one similarity
block, is declared to Ray (``memory=``) so that a node runs only as many at once as fit. The
edges come back to the driver, which makes the same connected components as the local engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from coyo_db.dedup.semantic_core import BLOCK_CELLS

# (dataset, positions, labels, threshold, dim) -> one unit's edges
UnitPairs = Callable[..., tuple[np.ndarray, np.ndarray]]

MAX_RETRIES = 3


def _unit_task(
    pairs: UnitPairs,
    uri: str,
    version: int,
    positions: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    dim: int,
) -> tuple[np.ndarray, np.ndarray]:
    from coyo_db.catalog.lance_tables import open_dataset

    return pairs(open_dataset(uri, version), positions, labels, threshold, dim)


def ray_units(pairs: UnitPairs, address: str | None = None) -> Callable[..., list]:
    """A unit runner for :func:`coyo_db.dedup.semantic.dedup_semantic` on Ray: `pairs` (the
    module-level :func:`coyo_db.dedup.semantic.unit_pairs`, pickled by reference) per unit."""

    def run(dataset: Any, units: list, threshold: float, dim: int) -> list:
        from coyo_db.ingest.ray_engine import session

        if not units:
            return []
        largest = max(len(positions) for positions, _ in units)
        memory = 3 * largest * dim * 4 + 4 * min(BLOCK_CELLS, largest * largest)
        with session(address) as ray:
            task = ray.remote(max_retries=MAX_RETRIES, memory=memory)(_unit_task)
            uri, version = str(dataset.uri), dataset.version
            refs = [task.remote(pairs, uri, version, p, lab, threshold, dim) for p, lab in units]
            return ray.get(refs)

    return run
