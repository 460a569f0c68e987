"""Semantic duplicate groups (SemDeDup) over an `embeddings__<model>` table.

The image vectors (float16 in the table) are read as float32 and L2-normalised, clustered with
FAISS spherical k-means, and inside each cluster every pair with cosine similarity >= the
threshold is linked (block matrix products, no per-pair Python). Groups are the connected
components of those links; the keeper is chosen by `coyo_db.dedup.choose_keepers` and the
groups are written to `dup_groups` under method ``semantic_<model slug>_t<threshold>``.

Cluster count: ``k = clamp(round(sqrt(n)), 1, min(50_000, n // 39))``. k-means assignment costs
about n·k·d and the in-cluster pairs about n·(n/k)·d, so k = sqrt(n) balances the two (each
n^1.5·d); FAISS wants at least 39 training points per centroid; 50k is SemDeDup's count for
LAION-440M (747M rows give k ≈ 27k). Below 78 vectors k = 1 and the search is exact all-pairs.

The known SemDeDup approximation: a pair whose two vectors fall in different clusters is never
compared, so a near-duplicate pair straddling a cluster border is missed (recall is measured
in tests/test_dedup_semantic.py and bench/bench_dedup_semantic.py).

`distance` in `dup_groups` is an int32 column shared with the pHash methods; here it holds the
cosine distance to the keeper in units of 1e-4: ``round(10_000 * (1 - cosine))``.

Deterministic: k-means uses a fixed seed and a fixed training sample, so a rerun over the same
table gives the same groups.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from coyo_db.dedup import KEEP_RULES, DedupSummary, choose_keepers, group_spans, store_groups
from coyo_db.errors import InputError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.95
MAX_CLUSTERS = 50_000
MIN_POINTS_PER_CENTROID = 39
SEED = 1234
KMEANS_ITERATIONS = 20
DISTANCE_SCALE = 10_000
# Similarity blocks are at most this many float32 cells (256 MiB).
BLOCK_CELLS = 1 << 26


def semantic_method(model: str, threshold: float) -> str:
    from coyo_db.ingest.registry import table_slug

    return f"semantic_{table_slug(model)}_t{threshold:g}"


def cluster_count(n: int) -> int:
    """The documented k for n vectors (see the module docstring)."""
    upper = min(MAX_CLUSTERS, n // MIN_POINTS_PER_CENTROID)
    return int(max(1, min(round(np.sqrt(n)), upper)))


def load_vectors(catalog: Catalog, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Ids (unique, sorted) and their L2-normalised float32 image vectors."""
    from coyo_db.ingest.image_outputs import embeddings_table

    name = embeddings_table(model)
    if not catalog.has_table(name):
        raise InputError(
            f"the catalog has no embeddings table {name!r}; "
            f"run coyo-db ingest images --embed {model} first"
        )
    dataset = catalog.dataset(name)
    if "image_embedding" not in dataset.schema.names:
        raise InputError(f"{name!r} holds no image_embedding column to dedup")
    table = dataset.to_table(
        columns=["id", "image_embedding"], filter="image_embedding IS NOT NULL"
    )
    dim = dataset.schema.field("image_embedding").type.list_size
    ids = table["id"].to_numpy()
    vectors = np.empty((len(ids), dim), dtype=np.float32)
    row = 0
    for chunk in table["image_embedding"].chunks:
        part = chunk.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        vectors[row : row + len(part)] = part
        row += len(part)
    # An image ingested twice appears twice; one row per id.
    ids, first = np.unique(ids, return_index=True)
    if len(first) != len(vectors) or np.any(np.diff(first) != 1):
        vectors = vectors[first]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.where(norms > 0, norms, 1.0)
    return ids, vectors


def assign_clusters(vectors: np.ndarray, k: int, seed: int = SEED) -> np.ndarray:
    """The spherical k-means cluster of each vector (all zeros when k == 1)."""
    if k <= 1:
        return np.zeros(len(vectors), dtype=np.int64)
    import faiss

    kmeans = faiss.Kmeans(
        vectors.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed, spherical=True, verbose=False
    )
    kmeans.train(vectors)
    _, labels = kmeans.index.search(vectors, 1)
    return labels[:, 0].astype(np.int64)


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
    """Row-index edges (a, b) linking vectors of one cluster with cosine >= threshold.

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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group_id, id, row index) of every grouped vector, sorted by group then id.

    `vectors` must be L2-normalised float32; group_id is the smallest id of the group.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(ids)
    k = cluster_count(n) if clusters is None else min(clusters, max(n, 1))
    labels = assign_clusters(vectors, k)
    a, b = similar_pairs(vectors, labels, threshold)
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


def dedup_semantic(
    catalog: Catalog,
    model: str,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    clusters: int | None = None,
    keep: str = "highest-clip",
) -> DedupSummary:
    """SemDeDup groups of the image vectors of `model` with cosine >= `threshold`, written to
    `dup_groups` under method ``semantic_<model slug>_t<threshold>`` with one keeper each."""
    from coyo_db.dedup import _clip_scores

    if keep not in KEEP_RULES:
        raise InputError(f"unknown keeper rule {keep!r}; choose one of {', '.join(KEEP_RULES)}")
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must be a cosine similarity in (0, 1], not {threshold}")
    if clusters is not None and clusters < 1:
        raise InputError(f"clusters must be at least 1, not {clusters}")
    started = time.perf_counter()
    method = semantic_method(model, threshold)
    ids, vectors = load_vectors(catalog, model)
    gid, member, rows = semantic_groups(ids, vectors, threshold, clusters)
    if keep == "highest-clip":
        vitl14, vitb32 = _clip_scores(catalog, member)
    else:
        vitl14 = vitb32 = None
    keeper = choose_keepers(gid, member, vitl14, vitb32, keep)
    sizes, group_index = group_spans(gid)
    keeper_row = np.zeros(len(sizes), dtype=np.int64)
    keeper_row[group_index[keeper]] = rows[keeper]
    cosine = np.empty(len(rows), dtype=np.float32)
    for i in range(0, len(rows), 65_536):
        part = slice(i, i + 65_536)
        pair = vectors[rows[part]] * vectors[keeper_row[group_index[part]]]
        cosine[part] = pair.sum(axis=1)
    distance = np.rint(np.clip(1.0 - cosine, 0.0, 2.0) * DISTANCE_SCALE).astype(np.int32)
    distance[keeper] = 0
    return store_groups(
        catalog,
        method,
        keep,
        gid=gid,
        ids=member,
        keeper=keeper,
        distance=distance,
        rows_scanned=len(ids),
        started=started,
    )
