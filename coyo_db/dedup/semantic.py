"""Semantic duplicate groups (SemDeDup) over an `embeddings__<model>` table.

The image vectors (float16 in the table) are read as float32 and L2-normalised, clustered with
FAISS spherical k-means, and inside each cluster every pair with cosine similarity >= the
threshold is linked (block matrix products, no per-pair Python). Groups are the connected
components of those links; the keeper is chosen by `coyo_db.dedup.groups.choose_keepers` and the
groups are written to `dup_groups` under method ``semantic_<model slug>_t<threshold>``.

The clustering, the cluster count and the in-cluster pairs are :mod:`coyo_db.dedup.semantic_core`:
each vector is compared inside its two nearest clusters, so a near-duplicate pair straddling a
cluster border (SemDeDup's known approximation) is still found when the two share either
(recall is measured in tests/test_dedup_semantic.py and bench/bench_dedup_semantic.py).

`distance` in `dup_groups` is an int32 column shared with the pHash methods; here it holds the
cosine distance to the keeper in units of 1e-4: ``round(10_000 * (1 - cosine))``.

Partitioned (`dedup_semantic`): the table is never read whole. (1) k-means is trained on a
seeded sample of `sample` row positions read with Lance `take` (the whole table when it has at
most `sample` rows, so a small table gets exactly the groups of the in-memory
`semantic_groups`); (2) the table is streamed in `batch_size`-row batches, each normalised and
assigned to its two nearest centroids, keeping only id, row position and cluster ids (24 bytes
a row); (3) clusters are paired in groups of at most `max_vectors` vectors read with `take`
(a cluster larger than that is compared chunk pair by chunk pair), so at most
max(`sample`, `max_vectors`) vectors are in memory at once.

Deterministic: k-means uses a fixed seed and a fixed training sample, so a rerun over the same
table gives the same groups.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from coyo_db.catalog import tables
from coyo_db.dedup.groups import (
    KEEP_RULES,
    DedupSummary,
    choose_keepers,
    clip_scores,
    group_spans,
    record_counts,
    store_groups,
)
from coyo_db.dedup.semantic_core import (
    ASSIGNMENTS,
    MIN_POINTS_PER_CENTROID,
    SEED,
    cluster_count,
    components,
    expand,
    nearest_centroids,
    similar_pairs,
    train_kmeans,
)
from coyo_db.dedup.semantic_core import (
    semantic_groups as semantic_groups,  # the in-memory entry point, re-exported
)
from coyo_db.errors import InputError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.95
DISTANCE_SCALE = 10_000
DEFAULT_BATCH_SIZE = 65_536
# k-means training rows: 39 per centroid at the largest k (50,000 x 39 = 1.95M).
DEFAULT_SAMPLE = 2_000_000
DEFAULT_MAX_VECTORS = 2_000_000


def semantic_method(model: str, threshold: float) -> str:
    return f"semantic_{tables.slug(model)}_t{threshold:g}"


def embeddings_dataset(catalog: Catalog, model: str):
    """The Lance dataset of `model`'s embeddings table (InputError when it cannot be deduped)."""
    name = tables.embeddings_name(model)
    if not catalog.has_table(name):
        raise InputError(
            f"the catalog has no embeddings table {name!r}; "
            f"run coyo-db ingest images --embed {model} first"
        )
    dataset = catalog.dataset(name)
    if "image_embedding" not in dataset.schema.names:
        raise InputError(f"{name!r} holds no image_embedding column to dedup")
    return dataset


def _unit_vectors(column, dim: int) -> np.ndarray:
    """L2-normalised float32 rows of a (chunked) fixed-size-list column without nulls."""
    chunks = column.chunks if hasattr(column, "chunks") else [column]
    vectors = np.empty((len(column), dim), dtype=np.float32)
    row = 0
    for chunk in chunks:
        part = chunk.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        vectors[row : row + len(part)] = part
        row += len(part)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.where(norms > 0, norms, 1.0)
    return vectors


def load_vectors(catalog: Catalog, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Ids (unique, sorted) and their L2-normalised float32 image vectors (whole table)."""
    dataset = embeddings_dataset(catalog, model)
    table = dataset.to_table(
        columns=["id", "image_embedding"], filter="image_embedding IS NOT NULL"
    )
    dim = dataset.schema.field("image_embedding").type.list_size
    vectors = _unit_vectors(table["image_embedding"], dim)
    # An image ingested twice appears twice; one row per id.
    ids, first = np.unique(table["id"].to_numpy(), return_index=True)
    if len(first) != len(vectors) or np.any(np.diff(first) != 1):
        vectors = vectors[first]
    return ids, vectors


def take_rows(dataset, positions: np.ndarray, columns: list[str]):
    """Rows at ascending, distinct `positions` of a Lance dataset (the one place that reads
    vectors by position)."""
    import pyarrow as pa

    return dataset.take(pa.array(positions, pa.int64()), columns=columns)


def _read_unit(dataset, positions: np.ndarray, dim: int) -> np.ndarray:
    """Normalised vectors of the rows at `positions` (any order, repeats allowed)."""
    unique, inverse = np.unique(positions, return_inverse=True)
    vectors = _unit_vectors(take_rows(dataset, unique, ["image_embedding"])["image_embedding"], dim)
    if len(unique) == len(positions) and np.array_equal(unique, positions):
        return vectors
    return vectors[inverse]


def _training_sample(dataset, n_rows: int, sample: int, batch_size: int, dim: int, seed: int):
    """Normalised vectors of a seeded sample of rows (unique ids, id order), and rows drawn.

    With n_rows <= sample every row is drawn, which is exactly `load_vectors`' set and order.
    """
    import pyarrow.compute as pc

    if n_rows <= sample:
        positions = np.arange(n_rows, dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        positions = np.sort(rng.choice(n_rows, sample, replace=False)).astype(np.int64)
    ids: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    for i in range(0, len(positions), batch_size):
        table = take_rows(dataset, positions[i : i + batch_size], ["id", "image_embedding"])
        table = table.filter(pc.is_valid(table["image_embedding"]))
        ids.append(table["id"].to_numpy())
        vectors.append(_unit_vectors(table["image_embedding"], dim))
    if not ids:
        return np.zeros((0, dim), np.float32), 0
    _, first = np.unique(np.concatenate(ids), return_index=True)
    return np.concatenate(vectors)[first], len(positions)


def _assign_stream(dataset, index, batch_size: int, dim: int):
    """Id, row position and nearest clusters (n, ASSIGNMENTS) of every row with a vector, one
    row per id (id order)."""
    ids: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    offset = 0
    scanner = dataset.scanner(
        columns=["id", "image_embedding"], batch_size=batch_size, scan_in_order=True
    )
    for batch in scanner.to_batches():
        column = batch.column("image_embedding")
        valid = column.is_valid()
        rows = np.flatnonzero(valid.to_numpy(zero_copy_only=False))
        ids.append(batch.column("id").to_numpy(zero_copy_only=False)[rows])
        positions.append(offset + rows)
        vectors = _unit_vectors(column.filter(valid), dim)
        labels.append(nearest_centroids(index, vectors, ASSIGNMENTS).astype(np.int32))
        offset += batch.num_rows
    if not ids:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros((0, 1), np.int32)
    # An image ingested twice appears twice; its first row counts, as in load_vectors.
    unique, first = np.unique(np.concatenate(ids), return_index=True)
    return unique, np.concatenate(positions)[first], np.concatenate(labels)[first]


def unit_pairs(
    dataset, positions: np.ndarray, labels: np.ndarray, threshold: float, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """`similar_pairs` of one unit: the vectors at `positions` (ascending) read with `take`,
    compared inside each of `labels`' clusters; edges as indices into the unit."""
    return similar_pairs(_read_unit(dataset, positions, dim), labels, threshold)


# (dataset, [(positions, labels) per unit], threshold, dim) -> [(a, b) per unit]
RunUnits = Callable[..., list[tuple[np.ndarray, np.ndarray]]]


def _local_units(dataset, units, threshold: float, dim: int):  # type: ignore[no-untyped-def]
    return [unit_pairs(dataset, p, lab, threshold, dim) for p, lab in units]


def _cluster_pairs(
    dataset,
    positions: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    max_vectors: int,
    dim: int,
    run_units: RunUnits | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`similar_pairs` edges (row indices) cluster by cluster, reading at most `max_vectors`
    vectors at a time: whole clusters packed into units, larger ones chunk pair by pair. The
    units are independent: `run_units` may run them anywhere (default: here, in turn)."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    ends = np.r_[starts[1:], len(order)]
    plural = (ends - starts) >= 2
    starts, ends = starts[plural], ends[plural]
    units: list[tuple[np.ndarray, np.ndarray]] = []  # (members, their labels), by position

    def add(members: np.ndarray, member_labels: np.ndarray) -> None:
        by_position = np.argsort(positions[members], kind="stable")
        units.append((members[by_position], member_labels[by_position]))

    i = 0
    while i < len(starts):
        size = ends[i] - starts[i]
        if size > max_vectors:
            members = order[starts[i] : ends[i]]
            chunk = max_vectors // 2
            log.warning("cluster of %d vectors exceeds max_vectors; comparing in chunks", size)
            parts = [members[j : j + chunk] for j in range(0, size, chunk)]
            for x in range(len(parts)):
                for y in range(x + 1, len(parts)):
                    both = np.concatenate([parts[x], parts[y]])
                    add(both, np.zeros(len(both), np.int32))
            i += 1
            continue
        j, total = i, 0
        while j < len(starts) and total + ends[j] - starts[j] <= max_vectors:
            total += ends[j] - starts[j]
            j += 1
        members = order[starts[i] : ends[j - 1]]
        add(members, labels[members])
        i = j
    jobs = [(positions[members], member_labels) for members, member_labels in units]
    found = (run_units or _local_units)(dataset, jobs, threshold, dim)
    left = [members[a] for (members, _), (a, _) in zip(units, found, strict=True)]
    right = [members[b] for (members, _), (_, b) in zip(units, found, strict=True)]
    if not left:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(left), np.concatenate(right)


def dedup_semantic(
    catalog: Catalog,
    model: str,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    clusters: int | None = None,
    keep: str = "highest-clip",
    batch_size: int = DEFAULT_BATCH_SIZE,
    sample: int = DEFAULT_SAMPLE,
    max_vectors: int = DEFAULT_MAX_VECTORS,
    engine: str = "local",
    address: str | None = None,
) -> DedupSummary:
    """SemDeDup groups of the image vectors of `model` with cosine >= `threshold`, written to
    `dup_groups` under method ``semantic_<model slug>_t<threshold>`` with one keeper each.

    The table is read in partitions: k-means on `sample` rows, assignment in `batch_size`-row
    batches, pairs with at most `max_vectors` vectors in memory (see the module docstring).
    ``engine="ray"`` runs the per-cluster units as Ray tasks, each reading its own vectors
    (:mod:`coyo_db.dedup.ray_semantic`; cluster `address`, else a local Ray): the same groups.
    Logged in `runs` as ``dedup semantic``.
    """
    if keep not in KEEP_RULES:
        raise InputError(f"unknown keeper rule {keep!r}; choose one of {', '.join(KEEP_RULES)}")
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must be a cosine similarity in (0, 1], not {threshold}")
    if clusters is not None and clusters < 1:
        raise InputError(f"clusters must be at least 1, not {clusters}")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    if sample < 1:
        raise InputError(f"sample must be at least 1 row, not {sample}")
    if max_vectors < 2:
        raise InputError(f"max_vectors must be at least 2, not {max_vectors}")
    if engine not in ("local", "ray"):
        raise InputError(f"unknown engine {engine!r}; choose one of local, ray")
    if address is not None and engine != "ray":
        raise InputError("--address is for --engine ray")
    run_units = None
    if engine == "ray":
        from coyo_db.dedup.ray_semantic import ray_units

        run_units = ray_units(unit_pairs, address)
    from coyo_db.catalog.runs import recorded_run

    arguments = {
        "model": model,
        "threshold": threshold,
        "clusters": clusters,
        "keep": keep,
        "batch_size": batch_size,
        "sample": sample,
        "max_vectors": max_vectors,
        "engine": engine,
    }
    with recorded_run(catalog, "dedup semantic", arguments) as run:
        summary = _dedup_semantic(
            catalog, model, threshold, clusters, keep, batch_size, sample, max_vectors, run_units
        )
        record_counts(run, summary)
    return summary


def _dedup_semantic(
    catalog: Catalog,
    model: str,
    threshold: float,
    clusters: int | None,
    keep: str,
    batch_size: int,
    sample: int,
    max_vectors: int,
    run_units: RunUnits | None = None,
) -> DedupSummary:
    started = time.perf_counter()
    method = semantic_method(model, threshold)
    dataset = embeddings_dataset(catalog, model)
    dim = dataset.schema.field("image_embedding").type.list_size
    n_rows = dataset.count_rows()
    train, drawn = _training_sample(dataset, n_rows, sample, batch_size, dim, SEED)
    # Unique vectors in the table, estimated from the sample (exact when it is the whole table).
    estimate = len(train) if drawn >= n_rows else round(len(train) * n_rows / max(drawn, 1))
    k = cluster_count(estimate) if clusters is None else min(clusters, max(estimate, 1))
    if clusters is None:
        # FAISS wants 39 training points per centroid; the sample bounds k as well.
        k = min(k, len(train) // MIN_POINTS_PER_CENTROID)
    k = max(1, min(k, len(train)))
    index = train_kmeans(train, k)
    del train
    ids, positions, labels = _assign_stream(dataset, index, batch_size, dim)
    log.info("%d vectors in %d clusters (k-means on %d sampled rows)", len(ids), k, drawn)
    rows, flat = expand(labels)  # each row once per cluster it is compared in
    a, b = _cluster_pairs(
        dataset, positions[rows], flat, threshold, max_vectors, dim, run_units=run_units
    )
    a, b = rows[a], rows[b]
    del rows, flat
    gid, member, rows = components(ids, a, b)
    if keep == "highest-clip":
        vitl14, vitb32 = clip_scores(catalog, member)
    else:
        vitl14 = vitb32 = None
    keeper = choose_keepers(gid, member, vitl14, vitb32, keep)
    sizes, group_index = group_spans(gid)
    keeper_row = np.zeros(len(sizes), dtype=np.int64)
    keeper_row[group_index[keeper]] = rows[keeper]
    cosine = np.empty(len(rows), dtype=np.float32)
    step = max(1, max_vectors // 2)
    for i in range(0, len(rows), step):
        part = slice(i, i + step)
        mine = _read_unit(dataset, positions[rows[part]], dim)
        theirs = _read_unit(dataset, positions[keeper_row[group_index[part]]], dim)
        cosine[part] = (mine * theirs).sum(axis=1)
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
