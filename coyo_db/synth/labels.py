"""Seeded COYO-Labeled-300M-shaped labels for synthetic ids (demo and tests).

Each row gets `top_k` distinct class indices of a taxonomy with descending, independent
probabilities (they need not sum to 1), best first, as COYO-Labeled-300M stores them.
Vectorised: distinct indices come from a random start plus strictly increasing random steps,
so no row is ever built in a Python loop.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from coyo_db.catalog import schemas


def synth_labels(
    ids: pa.Array | np.ndarray,
    *,
    urls: pa.Array | None = None,
    classes: int = 21_841,
    top_k: int = 50,
    seed: int = 0,
) -> pa.Table:
    """A COYO-Labeled-300M-shaped table (schemas.COYO_LABELED) for `ids` (and their urls)."""
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    rng = np.random.default_rng(seed)
    max_step = max(1, (classes - 1) // top_k)
    steps = rng.integers(1, max_step + 1, size=(n, top_k))
    steps[:, 0] = 0
    offsets = np.cumsum(steps, axis=1)  # strictly increasing, < classes: distinct per row
    start = rng.integers(0, classes, size=(n, 1))
    labels = (start + offsets) % classes
    order = np.argsort(rng.random((n, top_k)), axis=1)
    labels = np.take_along_axis(labels, order, axis=1).astype(np.int32)

    top = rng.beta(4, 2, size=(n, 1))
    decay = np.cumprod(rng.uniform(0.55, 0.98, size=(n, top_k)), axis=1)
    probs = (top * np.concatenate([np.ones((n, 1)), decay[:, :-1]], axis=1)).astype(np.float32)
    probs = np.minimum.accumulate(probs, axis=1)  # float32 rounding must not break the order

    offsets_arr = pa.array(np.arange(0, (n + 1) * top_k, top_k, dtype=np.int32))
    phash = rng.integers(0, 2**63, size=n, dtype=np.int64)
    return pa.table(
        {
            "id": pa.array(ids),
            "url": urls if urls is not None else pa.nulls(n, pa.string()),
            "imagehash": pa.array(np.char.mod("%016x", phash).astype(object), pa.string()),
            "labels": pa.ListArray.from_arrays(offsets_arr, pa.array(labels.ravel())),
            "label_probs": pa.ListArray.from_arrays(offsets_arr, pa.array(probs.ravel())),
            "width": pa.array(rng.integers(200, 1200, size=n, dtype=np.int32)),
            "height": pa.array(rng.integers(200, 1200, size=n, dtype=np.int32)),
        },
        schema=schemas.COYO_LABELED,
    )
