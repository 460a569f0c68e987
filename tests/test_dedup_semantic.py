"""Semantic dedup (SemDeDup) over an embeddings table: grouping, threshold, recall, CLI."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from coyo_db.catalog import schemas
from coyo_db.catalog.tables import embeddings_name as embeddings_table
from coyo_db.dedup.semantic import cluster_count, dedup_semantic, semantic_groups
from coyo_db.errors import InputError

MODEL = "effnet-lite0"
DIM = 64


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def at_cosine(rng: np.random.Generator, base: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector at exactly `cosine` from unit vector `base`."""
    noise = rng.standard_normal(base.shape)
    orth = unit(noise - (noise @ base) * base)
    return cosine * base + np.sqrt(1 - cosine**2) * orth


def write_embeddings(catalog, ids: np.ndarray, vectors: np.ndarray) -> None:
    dim = vectors.shape[1]
    name = embeddings_table(MODEL)
    catalog.ensure_table(name, schemas.embeddings_schema(dim, None))
    values = pa.array(vectors.astype(np.float16).ravel(), pa.float16())
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "image_embedding": pa.FixedSizeListArray.from_arrays(values, dim),
        }
    )
    catalog.append(name, table)


def stored(vectors: np.ndarray) -> np.ndarray:
    """Vectors as the table returns them: float16, then normalised float32."""
    return unit(vectors.astype(np.float16).astype(np.float32))


def brute_force(ids: np.ndarray, vectors: np.ndarray, threshold: float) -> set[frozenset]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    sims = vectors @ vectors.T
    a, b = np.nonzero(np.triu(sims >= threshold, 1))
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(ids), len(ids)))
    _, comp = connected_components(graph, directed=False)
    rows = np.unique(np.r_[a, b])
    groups: dict[int, set] = {}
    for r in rows:
        groups.setdefault(comp[r], set()).add(int(ids[r]))
    return {frozenset(g) for g in groups.values()}


def found_groups(gid: np.ndarray, member: np.ndarray) -> set[frozenset]:
    groups: dict[int, set] = {}
    for g, m in zip(gid.tolist(), member.tolist(), strict=True):
        groups.setdefault(g, set()).add(m)
    return {frozenset(g) for g in groups.values()}


def planted(rng: np.random.Generator, n_base: int, n_dup: int, dim: int = DIM, noise=0.02):
    base = unit(rng.standard_normal((n_base, dim)))
    src = rng.choice(n_base, n_dup, replace=False)
    dups = unit(base[src] + noise * rng.standard_normal((n_dup, dim)) / np.sqrt(dim))
    vectors = np.concatenate([base, dups]).astype(np.float32)
    ids = rng.permutation(len(vectors)).astype(np.int64) * 3 + 5
    return ids, vectors, src


def test_cluster_count_rule():
    assert cluster_count(0) == 1
    assert cluster_count(77) == 1
    assert cluster_count(1000) == 25  # capped by 39 points per centroid
    assert cluster_count(10_000) == 100
    assert cluster_count(1_000_000) == 1000
    assert cluster_count(747_000_000) == 27_331
    assert cluster_count(10**11) == 50_000


def test_planted_near_duplicates_group_and_unrelated_do_not(catalog):
    rng = np.random.default_rng(0)
    ids, vectors, src = planted(rng, 3000, 300)
    write_embeddings(catalog, ids, vectors)
    summary = dedup_semantic(catalog, MODEL, 0.95, keep="lowest-id")
    assert summary.method == "semantic_effnet_lite0_t0.95"
    table = pl.from_arrow(catalog.dataset("dup_groups").to_table())
    found = found_groups(table["group_id"].to_numpy(), table["id"].to_numpy())
    expected = {frozenset({int(ids[s]), int(ids[3000 + i])}) for i, s in enumerate(src)}
    assert found == expected  # random 64-d vectors are far apart; recall and precision 1
    assert summary.groups == 300 and summary.removed == 300 and summary.rows_scanned == 3300
    keepers = table.filter(pl.col("keeper"))
    assert (keepers["id"] == keepers["group_id"]).all()
    assert (keepers["distance"] == 0).all()
    others = table.filter(~pl.col("keeper"))
    assert ((others["distance"] > 0) & (others["distance"] < 500)).all()


def test_threshold_boundary():
    rng = np.random.default_rng(1)
    base = unit(rng.standard_normal((40, DIM)))
    cosines = np.linspace(0.90, 0.99, 40)
    near = np.stack([at_cosine(rng, b, c) for b, c in zip(base, cosines, strict=True)])
    vectors = stored(np.concatenate([base, near]))
    actual = np.sum(vectors[:40] * vectors[40:], axis=1)
    ids = np.arange(80, dtype=np.int64)
    for threshold in (0.93, 0.95, 0.97):
        _, member, _ = semantic_groups(ids, vectors, threshold, clusters=1)
        grouped = set(member.tolist())
        for i in range(40):
            assert (i in grouped) == (actual[i] >= threshold), (threshold, actual[i])
    # exactly at the threshold counts as a duplicate
    pair = stored(np.stack([base[0], near[0]]))
    cos = float((pair @ pair.T)[0, 1])  # as the library computes it
    _, member, _ = semantic_groups(np.array([1, 2]), pair, cos, clusters=1)
    assert member.tolist() == [1, 2]


def test_equals_brute_force_when_clusters_are_exact_and_recall_with_kmeans():
    rng = np.random.default_rng(2)
    # chains and triples too: dups of dups
    ids, vectors, _ = planted(rng, 2500, 400, noise=0.3)
    extra = unit(vectors[-100:] + 0.3 * rng.standard_normal((100, DIM)) / np.sqrt(DIM))
    vectors = stored(np.concatenate([vectors, extra]))
    ids = np.arange(len(vectors), dtype=np.int64) * 2
    reference = brute_force(ids, vectors, 0.96)
    assert len(reference) > 150
    gid, member, _ = semantic_groups(ids, vectors, 0.96, clusters=1)
    assert found_groups(gid, member) == reference
    # with k-means (k = sqrt(n)): pairs split across clusters may be missed, never invented
    gid, member, _ = semantic_groups(ids, vectors, 0.96)
    found = found_groups(gid, member)
    pairs_ref = {frozenset(p) for g in reference for p in _pairs(g)}
    pairs_found = {frozenset(p) for g in found for p in _pairs(g)}
    assert pairs_found <= pairs_ref
    assert len(pairs_found) / len(pairs_ref) >= 0.95


def test_two_nearest_clusters_find_pairs_split_by_a_cluster_border():
    """Each vector is compared in its two nearest clusters: every pair one cluster finds is
    still found, and the pairs a border split are recovered (random vectors: many borders)."""
    rng = np.random.default_rng(11)
    n, dim = 20_000, 64
    vectors = unit(rng.standard_normal((n, dim)))
    copies = np.arange(n - 400, n)
    originals = rng.integers(0, copies[0], len(copies))
    noise = unit(rng.standard_normal((len(copies), dim)))
    vectors[copies] = unit(0.97 * vectors[originals] + 0.2 * noise)
    vectors = vectors.astype(np.float32)
    ids = np.arange(n, dtype=np.int64)

    def found(assignments: int) -> set[frozenset]:
        gid, member, _ = semantic_groups(ids, vectors, 0.95, assignments=assignments)
        group = np.full(n, -1)
        group[member] = gid
        hit = (group[originals] >= 0) & (group[originals] == group[copies])
        return {frozenset(p) for p in zip(originals[hit], copies[hit], strict=True)}

    one, two = found(1), found(2)
    assert one <= two
    assert len(one) < len(copies) * 0.99  # one cluster per vector misses border pairs here
    assert len(two) >= len(copies) * 0.99


def _pairs(group: frozenset):
    items = sorted(group)
    return [(a, b) for i, a in enumerate(items) for b in items[i + 1 :]]


def test_dense_cluster_of_identical_vectors_is_one_group():
    rng = np.random.default_rng(3)
    same = np.tile(unit(rng.standard_normal(DIM)), (3000, 1)).astype(np.float32)
    ids = np.arange(3000, dtype=np.int64)
    gid, member, _ = semantic_groups(ids, same, 0.99, clusters=1)
    assert set(gid.tolist()) == {0} and len(member) == 3000


def test_rerun_is_idempotent_and_replaces_the_method(catalog):
    rng = np.random.default_rng(4)
    ids, vectors, _ = planted(rng, 5000, 200)
    write_embeddings(catalog, ids, vectors)
    dedup_semantic(catalog, MODEL, 0.9)
    first = (
        catalog.dataset("dup_groups")
        .to_table()
        .sort_by([("group_id", "ascending"), ("id", "ascending")])
    )
    dedup_semantic(catalog, MODEL, 0.9)
    second = (
        catalog.dataset("dup_groups")
        .to_table()
        .sort_by([("group_id", "ascending"), ("id", "ascending")])
    )
    assert first.equals(second)
    assert first.num_rows == 400


def test_missing_table_and_bad_arguments(catalog):
    with pytest.raises(InputError, match="ingest images --embed effnet-lite0"):
        dedup_semantic(catalog, MODEL)
    write_embeddings(catalog, np.arange(3), unit(np.ones((3, 4))))
    with pytest.raises(InputError, match="threshold"):
        dedup_semantic(catalog, MODEL, 1.5)
    with pytest.raises(InputError, match="keeper"):
        dedup_semantic(catalog, MODEL, keep="newest")
    with pytest.raises(InputError, match="clusters"):
        dedup_semantic(catalog, MODEL, clusters=0)


def test_cli(catalog):
    from typer.testing import CliRunner

    from coyo_db.cli.app import app

    rng = np.random.default_rng(5)
    ids, vectors, _ = planted(rng, 500, 20)
    write_embeddings(catalog, ids, vectors)
    home = str(catalog.home)
    args = ["dedup", "semantic", "--model", MODEL, "--threshold", "0.95", "--home", home]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "semantic_effnet_lite0_t0.95: 20 groups holding 40 of 520 rows" in result.output
    missing = CliRunner().invoke(app, ["dedup", "semantic", "--model", "other", "--home", home])
    assert missing.exit_code != 0
    assert isinstance(missing.exception, InputError)
    assert "--embed other" in str(missing.exception)


def stored_groups(catalog) -> set[frozenset]:
    table = catalog.dataset("dup_groups").to_table()
    return found_groups(table["group_id"].to_numpy(), table["id"].to_numpy())


def test_tiny_batches_and_memory_budget_give_the_same_groups(catalog):
    from coyo_db.dedup.semantic import load_vectors

    rng = np.random.default_rng(6)
    ids, vectors, _ = planted(rng, 3000, 300, noise=0.3)
    write_embeddings(catalog, ids, vectors)
    write_embeddings(catalog, ids[:50], vectors[:50] * 0.5)  # re-ingested rows: first counts
    dedup_semantic(catalog, MODEL, 0.96, keep="lowest-id")
    default = stored_groups(catalog)
    assert len(default) > 100
    # the table (3,350 rows) is smaller than the sample: the in-memory path's groups exactly
    mem_ids, mem_vectors = load_vectors(catalog, MODEL)
    gid, member, _ = semantic_groups(mem_ids, mem_vectors, 0.96)
    assert found_groups(gid, member) == default
    # clusters average ~58 vectors, so max_vectors=40 packs small ones and splits large ones
    summary = dedup_semantic(catalog, MODEL, 0.96, keep="lowest-id", batch_size=7, max_vectors=40)
    assert stored_groups(catalog) == default
    assert summary.rows_scanned == 3300


def test_vectors_read_at_once_stay_within_max_vectors(catalog, monkeypatch):
    import coyo_db.dedup.semantic as sem

    rng = np.random.default_rng(7)
    ids, vectors, src = planted(rng, 3000, 300)
    write_embeddings(catalog, ids, vectors)
    reads: list[int] = []
    real = sem.take_rows

    def counting(dataset, positions, columns):
        reads.append(len(positions))
        return real(dataset, positions, columns)

    monkeypatch.setattr(sem, "take_rows", counting)
    dedup_semantic(
        catalog, MODEL, 0.95, keep="lowest-id", batch_size=64, sample=500, max_vectors=120
    )
    assert reads and max(reads) <= 120
    assert max(reads) > 60  # groups are packed up to the budget, not read cluster by cluster
    expected = {frozenset({int(ids[s]), int(ids[3000 + i])}) for i, s in enumerate(src)}
    found = stored_groups(catalog)
    assert found <= expected and len(found) / len(expected) >= 0.95


def test_table_larger_than_the_sample_finds_planted_duplicates(catalog):
    rng = np.random.default_rng(8)
    ids, vectors, src = planted(rng, 6000, 400)
    write_embeddings(catalog, ids, vectors)
    summary = dedup_semantic(catalog, MODEL, 0.95, keep="lowest-id", sample=800)
    found = stored_groups(catalog)
    expected = {frozenset({int(ids[s]), int(ids[6000 + i])}) for i, s in enumerate(src)}
    assert found <= expected  # never invents a group
    assert len(found) / len(expected) >= 0.95
    assert summary.rows_scanned == 6400


def test_bad_partition_arguments(catalog):
    write_embeddings(catalog, np.arange(3), unit(np.ones((3, 4))))
    for kwargs, word in (
        ({"batch_size": 0}, "batch size"),
        ({"sample": 0}, "sample"),
        ({"max_vectors": 1}, "max_vectors"),
    ):
        with pytest.raises(InputError, match=word):
            dedup_semantic(catalog, MODEL, **kwargs)
