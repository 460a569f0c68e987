"""Near-pHash dedup on Ray (`dedup phash --engine ray`): each block combination is a Ray task
on a local Ray, and the groups are the very groups of the local engine."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from typer.testing import CliRunner  # noqa: E402

from coyo_db.catalog import Catalog  # noqa: E402
from coyo_db.cli.app import app  # noqa: E402
from coyo_db.dedup.groups import dedup_phash  # noqa: E402
from coyo_db.dedup.near_phash import (  # noqa: E402
    brute_force_groups,
    combinations,
    near_pairs,
    phash_groups,
)
from coyo_db.dedup.ray_phash import ray_near_pairs  # noqa: E402
from coyo_db.errors import InputError  # noqa: E402
from coyo_db.synth.metadata import synth_table  # noqa: E402


def planted(n: int, seed: int) -> np.ndarray:
    """Random hashes, a quarter of them copies of others with 0-5 bits flipped."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    copies = rng.choice(n, n // 4, replace=False)
    for i in copies:
        source = hashes[rng.integers(0, n)]
        for bit in rng.choice(64, rng.integers(0, 6), replace=False):
            source ^= np.uint64(1) << np.uint64(bit)
        hashes[i] = source
    return hashes


def pair_set(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    low, high = np.minimum(a, b).tolist(), np.maximum(a, b).tolist()
    return set(zip(low, high, strict=True))


@pytest.mark.parametrize("radius", [1, 4, 6])
def test_ray_search_gives_the_local_groups(ray_cluster, radius):
    hashes = planted(4000, seed=radius)
    ids = np.arange(10_000, 14_000, dtype=np.int64)
    local = phash_groups(ids, hashes, radius)
    on_ray = phash_groups(ids, hashes, radius, pair_search=ray_near_pairs(ray_cluster))
    assert on_ray.equals(local)
    assert local.equals(brute_force_groups(ids, hashes, radius))
    assert len(combinations(np.unique(hashes), radius)) > 1  # several tasks, merged


def test_ray_search_finds_every_pair_the_local_search_finds(ray_cluster):
    unique = np.unique(planted(3000, seed=9))
    a, b, _ = near_pairs(unique, 4)
    ra, rb, _ = ray_near_pairs(ray_cluster)(unique, 4)
    assert pair_set(ra, rb) == pair_set(a, b) and len(a) > 100


def test_nothing_to_search_starts_no_task(ray_cluster):
    a, b, d = ray_near_pairs(ray_cluster)(np.array([7], np.uint64), 4)
    assert len(a) == len(b) == len(d) == 0


def test_dedup_phash_on_ray_writes_the_local_groups(tmp_path, ray_cluster):
    catalog = Catalog(tmp_path / "home", create=True)
    catalog.append("pairs", synth_table(20_000, seed=3))
    local = dedup_phash(catalog, 4)
    local_rows = catalog.sql("SELECT * FROM dup_groups ORDER BY id")
    summary = dedup_phash(catalog, 4, engine="ray", address=ray_cluster)
    ray_rows = catalog.sql("SELECT * FROM dup_groups ORDER BY id")
    assert ray_rows.equals(local_rows) and local_rows.num_rows > 100
    assert (summary.groups, summary.removed) == (local.groups, local.removed)
    runs = catalog.sql("SELECT arguments FROM runs WHERE command = 'dedup phash'")
    assert any('"engine": "ray"' in str(a) for a in runs["arguments"].to_pylist())
    home = str(catalog.home)
    args = ["dedup", "phash", "--engine", "ray", "--address", ray_cluster, "--home", home]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"{local.groups:,} groups" in result.stdout
    assert catalog.sql("SELECT * FROM dup_groups ORDER BY id").equals(local_rows)


def test_engine_mistakes(tmp_path):
    catalog = Catalog(tmp_path / "home", create=True)
    catalog.append("pairs", synth_table(100, seed=1))
    with pytest.raises(InputError, match="unknown engine"):
        dedup_phash(catalog, 4, engine="spark")
    with pytest.raises(InputError, match="--address is for --engine ray"):
        dedup_phash(catalog, 4, address="localhost:6379")


def test_semantic_dedup_on_ray_writes_the_local_groups(tmp_path, ray_cluster):
    """The per-cluster units as Ray tasks (each reading its own vectors): the local groups,
    with units packed small enough that there are several."""
    from test_dedup_semantic import MODEL, planted, write_embeddings

    from coyo_db.dedup.semantic import dedup_semantic

    catalog = Catalog(tmp_path / "home", create=True)
    rng = np.random.default_rng(6)
    ids, vectors, _ = planted(rng, 3000, 300, noise=0.3)
    write_embeddings(catalog, ids, vectors)
    kwargs = {"keep": "lowest-id", "max_vectors": 500}
    local = dedup_semantic(catalog, MODEL, 0.96, **kwargs)
    local_rows = catalog.sql("SELECT * FROM dup_groups ORDER BY id")
    on_ray = dedup_semantic(catalog, MODEL, 0.96, engine="ray", address=ray_cluster, **kwargs)
    assert catalog.sql("SELECT * FROM dup_groups ORDER BY id").equals(local_rows)
    assert (on_ray.groups, on_ray.removed) == (local.groups, local.removed)
    assert local.groups > 100
    with pytest.raises(InputError, match="unknown engine"):
        dedup_semantic(catalog, MODEL, 0.96, engine="dask")
