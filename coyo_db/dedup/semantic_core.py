"""SemDeDup's core over vectors in memory: k-means clusters, in-cluster similar pairs, groups.

Each vector is assigned to its :data:`ASSIGNMENTS` nearest centroids (SemDeDup uses one). A
near-duplicate pair straddling a cluster border, the approximation that costs SemDeDup its
recall, is still compared when the two vectors share any of their nearest centroids: on the
planted-pairs benchmark (1M random 512-d vectors) recall goes from 0.79 with one centroid to
the figure in docs/benchmarks.md with two, for about twice the in-cluster pair work. Edges
found twice (in both shared clusters) are harmless: groups are connected components.

Cluster count: ``k = clamp(round(sqrt(n)), 1, min(50_000, n // 39))``. k-means assignment
costs about n·k·d and the in-cluster pairs about n·(n/k)·d, so k = sqrt(n) balances the two
(each n^1.5·d); FAISS wants at least 39 training points per centroid; 50k is SemDeDup's count
for LAION-440M (747M rows give k ≈ 27k). Below 78 vectors k = 1 and the search is exact.
"""

from __future__ import annotations

import numpy as np

MAX_CLUSTERS = 50_000
MIN_POINTS_PER_CENTROID = 39
SEED = 1234
KMEANS_ITERATIONS = 20
# each vector goes to this many nearest centroids (1 is SemDeDup's own rule)
ASSIGNMENTS = 2
# Similarity blocks are at most this many float32 cells (256 MiB).
BLOCK_CELLS = 1 << 26


def cluster_count(n: int) -> int:
    """The documented k for n vectors (see the module docstring)."""
    upper = min(MAX_CLUSTERS, n // MIN_POINTS_PER_CENTROID)
    return int(max(1, min(round(np.sqrt(n)), upper)))


def train_kmeans(vectors: np.ndarray, k: int, seed: int = SEED):
    """A FAISS index of the spherical k-means centroids of `vectors` (None when k == 1)."""
    if k <= 1:
        return None
    import faiss

    kmeans = faiss.Kmeans(
        vectors.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed, spherical=True, verbose=False
    )
    kmeans.train(vectors)
    return kmeans.index


def nearest_centroids(index, vectors: np.ndarray, count: int = ASSIGNMENTS) -> np.ndarray:
    """The `count` nearest clusters of each vector under a `train_kmeans` index, shape
    (n, count'); fewer columns when there are fewer clusters (one column of zeros for None)."""
    if index is None:
        return np.zeros((len(vectors), 1), dtype=np.int64)
    _, labels = index.search(vectors, min(count, index.ntotal))
    return labels.astype(np.int64)


def assign_clusters(
    vectors: np.ndarray, k: int, seed: int = SEED, count: int = ASSIGNMENTS
) -> np.ndarray:
    """The `count` nearest spherical k-means clusters of each vector, shape (n, count')."""
    return nearest_centroids(train_kmeans(vectors, k, seed), vectors, count)


def expand(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, cluster) memberships of an (n, c) label array: rows repeated once per cluster."""
    labels = labels.reshape(len(labels), -1)
    rows = np.repeat(np.arange(len(labels), dtype=np.int64), labels.shape[1])
    return rows, labels.ravel()


def _spanning(rows: np.ndarray, cols: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges with the same components as (rows, cols) but at most one per node."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(m, m))
    _, labels = connected_components(graph, directed=False)
    nodes = np.unique(np.concatenate([rows, cols]))
    root = np.full(labels.max() + 1, m, dtype=np.int64)
    np.minimum.at(root, labels[nodes], nodes)
    keep = nodes != root[labels[nodes]]
    return nodes[keep], root[labels[nodes[keep]]]


def similar_pairs(
    vectors: np.ndarray, labels: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Row-index edges (a, b) linking vectors of one cluster with cosine >= threshold;
    `labels` gives each row of `vectors` one cluster (see :func:`expand` for several).

    Every pair inside a cluster is compared; the edges returned span the same connected
    components as all such pairs (dense clusters are reduced to a spanning forest per block).
    """
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    ends = np.r_[starts[1:], len(order)]
    left: list[np.ndarray] = []
    right: list[np.ndarray] = []
    for start, end in zip(starts, ends, strict=True):
        m = end - start
        if m < 2:
            continue
        members = order[start:end]
        block = vectors[members]
        step = max(1, min(m, BLOCK_CELLS // m))
        for i in range(0, m, step):
            sims = block[i : i + step] @ block[i:].T
            r, c = np.nonzero(sims >= threshold)
            upper = c > r
            r, c = r[upper] + i, c[upper] + i
            if len(r) > 4 * m:
                r, c = _spanning(r, c, m)
            left.append(members[r])
            right.append(members[c])
    if not left:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(left), np.concatenate(right)


def semantic_groups(
    ids: np.ndarray,
    vectors: np.ndarray,
    threshold: float,
    clusters: int | None = None,
    assignments: int = ASSIGNMENTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group_id, id, row index) of every grouped vector, sorted by group then id.

    `vectors` must be L2-normalised float32; group_id is the smallest id of the group. Each
    vector is compared inside each of its `assignments` nearest clusters.
    """
    n = len(ids)
    k = cluster_count(n) if clusters is None else min(clusters, max(n, 1))
    labels = assign_clusters(vectors, k, count=assignments)
    if labels.shape[1] == 1:
        a, b = similar_pairs(vectors, labels[:, 0], threshold)
    else:
        a, b = cluster_pairs_in_memory(vectors, labels, threshold)
    return components(ids, a, b)


def cluster_pairs_in_memory(
    vectors: np.ndarray, labels: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`similar_pairs` over several clusters per vector, cluster by cluster, each
    cluster's vectors gathered once (memory: the largest cluster, not a copy per assignment)."""
    rows, flat = expand(labels)
    order = np.argsort(flat, kind="stable")
    bounds = np.flatnonzero(np.r_[True, flat[order][1:] != flat[order][:-1], True])
    left: list[np.ndarray] = []
    right: list[np.ndarray] = []
    step = 1 << 16  # memberships per call: whole clusters, a bounded gather
    start = 0
    while start < len(bounds) - 1:
        stop = start + 1
        while stop < len(bounds) - 1 and bounds[stop + 1] - bounds[start] <= step:
            stop += 1
        members = order[bounds[start] : bounds[stop]]
        a, b = similar_pairs(vectors[rows[members]], flat[members], threshold)
        left.append(rows[members][a])
        right.append(rows[members][b])
        start = stop
    if not left:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(left), np.concatenate(right)


def components(
    ids: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group_id, id, row index) of the connected components of row edges (a, b)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(ids)
    if len(a) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    rows = np.unique(np.concatenate([a, b]))
    comp = component[rows]
    smallest = np.full(component.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, comp, ids[rows])
    group_id = smallest[comp]
    order = np.lexsort((ids[rows], group_id))
    return group_id[order], ids[rows][order], rows[order]
