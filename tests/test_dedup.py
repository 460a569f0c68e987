"""Near-duplicate pHash groups, the keeper rule, the dup_groups table and the dedup commands."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from coyo_db.catalog import Catalog, schemas
from coyo_db.dedup.groups import choose_keepers, clip_scores, dedup_phash, dedup_report
from coyo_db.dedup.near_phash import brute_force_groups, phash_groups
from coyo_db.errors import CatalogError, InputError
from coyo_db.ingest.phash import uint64_to_phash_hex
from coyo_db.synth.metadata import synth_table, synth_truth

ONE = np.uint64(1)


def random_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)


def flip(value: np.uint64, rng: np.random.Generator, bits: int) -> np.uint64:
    mask = np.uint64(0)
    for bit in rng.choice(64, bits, replace=False):
        mask |= ONE << np.uint64(bit)
    return value ^ mask


def groups_of(table: pa.Table) -> dict[int, int]:
    return dict(zip(table["id"].to_pylist(), table["group_id"].to_pylist(), strict=True))


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 6, 8])
def test_planted_pairs_group_up_to_the_radius_and_not_beyond(radius):
    rng = np.random.default_rng(radius)
    base = random_hashes(rng, radius + 2)
    hashes = np.concatenate([base, [flip(h, rng, d) for d, h in enumerate(base)]])
    hashes = hashes.astype(np.uint64)
    ids = np.arange(len(hashes), dtype=np.int64) * 7 + 3
    found = groups_of(phash_groups(ids, hashes, radius))
    for d in range(radius + 2):
        a, b = ids[d], ids[len(base) + d]
        if d <= radius:
            assert found[a] == found[b] == min(a, b), f"distance {d} not grouped at {radius}"
        else:
            assert a not in found and b not in found, f"distance {d} grouped at radius {radius}"


def test_chains_are_one_group_and_distance_is_to_the_nearest_member():
    a = np.uint64(0)
    b = np.uint64(0b1111)  # 4 from a
    c = np.uint64(0b1111_1111)  # 4 from b, 8 from a
    with pytest.raises(InputError, match="shape"):
        phash_groups(np.array([30, 10, 20]), np.array([a, b, c, c]), 4)
    table = phash_groups(np.array([30, 10, 20, 40]), np.array([a, b, c, c]), 4)
    assert table.to_pydict() == {
        "id": [10, 20, 30, 40],
        "group_id": [10, 10, 10, 10],
        "distance": [4, 0, 4, 0],
    }


def test_radius_out_of_range_is_refused():
    with pytest.raises(InputError, match="radius"):
        phash_groups(np.arange(3), np.arange(3, dtype=np.uint64), 17)
    with pytest.raises(InputError, match="radius"):
        phash_groups(np.arange(3), np.arange(3, dtype=np.uint64), -1)


def test_adversarial_all_equal_hashes_are_fast():
    n = 1_000_000
    hashes = np.full(n, 0x0123456789ABCDEF, dtype=np.uint64)
    hashes[-1] ^= np.uint64(0b101)  # one near member at distance 2
    started = time.perf_counter()
    table = phash_groups(np.arange(n, dtype=np.int64), hashes, 4)
    assert time.perf_counter() - started < 10
    assert table.num_rows == n
    assert pc_unique_count(table["group_id"]) == 1
    distance = table["distance"].to_numpy()
    assert distance[:-1].max() == 0 and distance[-1] == 2


def pc_unique_count(column: pa.ChunkedArray) -> int:
    return len(np.unique(column.to_numpy()))


@pytest.mark.parametrize("radius", [0, 1, 3, 4, 5, 7])
def test_equals_brute_force_on_random_hashes_with_planted_clusters(radius):
    rng = np.random.default_rng(100 + radius)
    n = 3000
    hashes = random_hashes(rng, n)
    # Clusters: copies of some hashes with 0..radius+2 bits flipped, chained on each other.
    for i in range(n - 600, n):
        hashes[i] = flip(hashes[rng.integers(0, i)], rng, int(rng.integers(0, radius + 3)))
    # Low-entropy hashes: long runs of equal blocks, many distinct near neighbours.
    low = rng.integers(0, 2**14, 400).astype(np.uint64) * np.uint64(0x0101010101010101 >> 8)
    hashes = np.concatenate([hashes, low])
    ids = rng.permutation(10 * len(hashes))[: len(hashes)].astype(np.int64)
    fast = phash_groups(ids, hashes, radius)
    assert fast.num_rows > 0
    assert fast.equals(brute_force_groups(ids, hashes, radius))


def test_keeper_rule_prefers_vitl14_then_vitb32_then_lowest_id():
    group = np.array([1, 1, 1, 5, 5, 5, 9, 9])
    ids = np.array([1, 2, 3, 5, 6, 7, 9, 10])
    nan = np.nan
    vitl14 = np.array([0.2, 0.3, nan, nan, nan, nan, 0.4, 0.4])
    vitb32 = np.array([0.9, 0.1, 0.9, nan, 0.2, 0.3, 0.1, 0.5])
    keep = choose_keepers(group, ids, vitl14, vitb32)
    assert ids[keep].tolist() == [2, 7, 10]
    assert ids[choose_keepers(group, ids, vitl14, vitb32, "lowest-id")].tolist() == [1, 5, 9]
    assert ids[choose_keepers(group, ids)].tolist() == [1, 5, 9]
    with pytest.raises(InputError, match="keeper rule"):
        choose_keepers(group, ids, keep="newest")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keepers_match_the_rule_in_any_member_order(seed):
    """Members shuffled (groups not contiguous), scores with ties and NaNs: each group's keeper
    is the member with the best (ViT-L/14, ViT-B/32, lowest id), known scores first."""
    rng = np.random.default_rng(seed)
    n = 5000
    group = rng.integers(0, 700, n)
    ids = rng.permutation(n * 3)[:n].astype(np.int64)
    levels = np.array([0.1, 0.2, 0.3, np.nan])
    vitl14, vitb32 = levels[rng.integers(0, 4, n)], levels[rng.integers(0, 4, n)]
    keep = choose_keepers(group, ids, vitl14, vitb32)
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        best = min(
            members,
            key=lambda i: (
                -vitl14[i] if vitl14[i] == vitl14[i] else np.inf,
                -vitb32[i] if vitb32[i] == vitb32[i] else np.inf,
                ids[i],
            ),
        )
        assert np.flatnonzero(keep[members]).tolist() == [list(members).index(best)]
    lowest = choose_keepers(group, ids, keep="lowest-id")
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        assert ids[members][lowest[members]].tolist() == [ids[members].min()]


@pytest.fixture
def synth_catalog(tmp_path) -> Catalog:
    catalog = Catalog(tmp_path / "home", create=True)
    catalog.append("pairs", synth_table(20_000, seed=3))
    return catalog


def test_dedup_phash_finds_the_planted_duplicates(synth_catalog):
    summary = dedup_phash(synth_catalog, 4)
    groups = synth_catalog.sql("SELECT * FROM dup_groups")
    truth = synth_truth(20_000, seed=3)
    group_of = groups_of(groups)
    role = truth["role"].cast(pa.string()).to_numpy(zero_copy_only=False)
    planted = np.isin(role, ["near_dup", "url_dup", "image_dup", "phash_text_dup"])
    ids = truth["id"].to_numpy()[planted]
    sources = truth["source_id"].to_numpy()[planted]
    assert all(group_of[i] == group_of[s] for i, s in zip(ids, sources, strict=True))
    # Exactly one keeper per group; the summary agrees with the table.
    per_group = groups.group_by("group_id").aggregate([("keeper", "sum")])
    assert set(per_group["keeper_sum"].to_pylist()) == {1}
    assert summary.groups == per_group.num_rows
    assert summary.rows_in_groups == groups.num_rows
    unique = synth_catalog.sql("SELECT count(*) AS n FROM pairs_unique")["n"][0].as_py()
    assert unique == 20_000 - summary.removed
    # The keeper has the best ViT-L/14 score of its group where one is known.
    best = synth_catalog.sql(
        """SELECT g.group_id, bool_and(NOT g.keeper OR p.clip_similarity_vitl14 >= m.best) AS ok
           FROM dup_groups g JOIN pairs p USING (id)
           JOIN (SELECT g2.group_id, max(p2.clip_similarity_vitl14) AS best
                 FROM dup_groups g2 JOIN pairs p2 USING (id) GROUP BY 1) m USING (group_id)
           GROUP BY 1"""
    )
    assert all(best["ok"].to_pylist())
    keepers = groups.filter(groups["keeper"])
    assert set(keepers["distance"].to_pylist()) == {0}


def test_clip_scores_stream_every_fragment_with_unknowns_as_nan(tmp_path):
    """Scores are matched to ids across fragments (one scan, no id filter); ids pairs does
    not hold and null scores come back NaN, in the order asked."""
    catalog = Catalog.init(tmp_path / "home")
    for part in range(3):  # three appends: three fragments
        table = synth_table(500, seed=part).slice(0, 500)
        ids = pa.array(np.arange(part * 500, (part + 1) * 500), pa.int64())
        table = table.set_column(table.schema.get_field_index("id"), "id", ids)
        catalog.append("pairs", table)
    pairs = catalog.sql(
        "SELECT id, clip_similarity_vitl14 AS l, clip_similarity_vitb32 AS b FROM pairs"
    )
    truth_l = dict(zip(pairs["id"].to_pylist(), pairs["l"].to_pylist(), strict=True))
    truth_b = dict(zip(pairs["id"].to_pylist(), pairs["b"].to_pylist(), strict=True))
    asked = np.array([1499, 3, 99_999, 742, 3, 1000, -5], dtype=np.int64)
    vitl14, vitb32 = clip_scores(catalog, asked)
    for i, l14, b32 in zip(asked, vitl14, vitb32, strict=True):
        want_l, want_b = truth_l.get(int(i)), truth_b.get(int(i))
        assert np.isnan(l14) if want_l is None else l14 == pytest.approx(want_l)
        assert np.isnan(b32) if want_b is None else b32 == pytest.approx(want_b)
    assert np.isnan(vitl14[2]) and np.isnan(vitl14[6])


def test_rerun_replaces_the_method_and_keeps_others(synth_catalog):
    dedup_phash(synth_catalog, 4)
    dedup_phash(synth_catalog, 0, keep="lowest-id")
    query = "SELECT * FROM dup_groups WHERE method = '{}' ORDER BY id"
    first = synth_catalog.sql(query.format("phash_pairs_r4"))
    exact = synth_catalog.sql(query.format("phash_pairs_r0"))
    dedup_phash(synth_catalog, 4)
    assert synth_catalog.sql(query.format("phash_pairs_r4")).equals(first)
    assert synth_catalog.sql(query.format("phash_pairs_r0")).equals(exact)
    assert exact.num_rows < first.num_rows
    summary, sizes = dedup_report(synth_catalog)
    assert summary["method"].to_pylist() == ["phash_pairs_r0", "phash_pairs_r4"]
    assert summary["rows_in_groups"].to_pylist() == [exact.num_rows, first.num_rows]
    r4 = sizes.filter(pa.compute.equal(sizes["method"], "phash_pairs_r4"))
    assert sum(r4["rows_in_groups"].to_pylist()) == first.num_rows


def test_dedup_over_images_and_user_mistakes(tmp_path):
    catalog = Catalog(tmp_path / "home", create=True)
    with pytest.raises(CatalogError, match="no table 'images'"):
        dedup_phash(catalog, table="images")
    with pytest.raises(InputError, match="table"):
        dedup_phash(catalog, table="urls")
    with pytest.raises(CatalogError, match="dup_groups"):
        dedup_report(catalog)
    phash = np.array([5, 5 ^ 3, 1 << 40, 5], dtype=np.uint64)
    images = pa.table(
        {
            "id": [1, 2, 3, 1],
            "image_phash": uint64_to_phash_hex(phash),
            "phash": phash,
        }
    )
    full = pa.table(
        {
            f.name: images[f.name] if f.name in images.column_names else pa.nulls(4, f.type)
            for f in schemas.IMAGES
        },
        schema=schemas.IMAGES,
    )
    catalog.append("images", full)
    summary = dedup_phash(catalog, 2, table="images", keep="lowest-id")
    assert (summary.method, summary.rows_scanned, summary.groups) == ("phash_images_r2", 3, 1)
    rows = catalog.sql("SELECT id, keeper, distance FROM dup_groups ORDER BY id").to_pylist()
    assert rows == [
        {"id": 1, "keeper": True, "distance": 0},
        {"id": 2, "keeper": False, "distance": 2},
    ]


def test_dedup_commands(synth_catalog):
    from typer.testing import CliRunner

    from coyo_db.cli.app import app

    home = str(synth_catalog.home)
    result = CliRunner().invoke(app, ["dedup", "phash", "--radius", "2", "--home", home])
    assert result.exit_code == 0, result.output
    assert "phash_pairs_r2:" in result.stdout and "of 20,000 rows" in result.stdout
    report = CliRunner().invoke(app, ["dedup", "report", "--home", home])
    assert report.exit_code == 0, report.output
    assert "phash_pairs_r2" in report.stdout and "4-5" in report.stdout
    bad = CliRunner().invoke(app, ["dedup", "phash", "--keep", "newest", "--home", home])
    assert bad.exit_code != 0


@pytest.mark.parametrize(("radius", "blocks"), [(1, 2), (1, 8), (2, 12), (4, 5), (4, 9)])
def test_any_block_count_equals_brute_force(monkeypatch, radius, blocks):
    """Every block split is exact, including keys wider than the bits beside the index."""
    import coyo_db.dedup.near_phash as dedup_phash_module

    monkeypatch.setattr(dedup_phash_module, "choose_blocks", lambda n, r: blocks)
    rng = np.random.default_rng(blocks)
    hashes = random_hashes(rng, 1500)
    for i in range(1000, 1500):
        hashes[i] = flip(hashes[rng.integers(0, i)], rng, int(rng.integers(0, radius + 2)))
    ids = np.arange(len(hashes), dtype=np.int64)
    assert phash_groups(ids, hashes, radius).equals(brute_force_groups(ids, hashes, radius))


@pytest.mark.parametrize("radius", [1, 4, 6])
def test_every_pair_is_found_by_exactly_one_block_combination(radius):
    """A pair agreeing on more blocks than a combination needs comes from the first such
    combination only, so the search returns each pair within the radius once, all of them."""
    import coyo_db.dedup.near_phash as module

    rng = np.random.default_rng(radius)
    hashes = random_hashes(rng, 1500)
    for i in range(500, 1500):
        hashes[i] = flip(hashes[rng.integers(0, i)], rng, int(rng.integers(1, radius + 1)))
    unique = np.unique(hashes)
    dist = np.bitwise_count(unique[:, None] ^ unique[None, :])
    expected = {(i, j) for i, j in zip(*np.nonzero(dist <= radius), strict=True) if i < j}
    for m in sorted({radius + 1, radius + 2, module.choose_blocks(len(unique), radius)}):
        found = [module.combination_pairs(unique, c, radius) for c in module._combos(radius, m)]
        a = np.concatenate([f[0] for f in found])
        b = np.concatenate([f[1] for f in found])
        d = np.concatenate([f[2] for f in found])
        pairs = [(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
        assert len(pairs) == len(set(pairs)) and set(pairs) == expected
        assert (d == dist[a, b]).all()
    assert len(expected) > 900


def test_both_member_orders_and_the_bit_permutation_agree(monkeypatch):
    """Groups ordered by packed ranks equal those ordered by a lexsort (the path past 2**32
    grouped rows); every block combination's bit permutation keeps distances and inverts."""
    import coyo_db.dedup.near_phash as module

    rng = np.random.default_rng(7)
    hashes = random_hashes(rng, 2000)
    for i in range(1200, 2000):
        hashes[i] = flip(hashes[rng.integers(0, i)], rng, int(rng.integers(0, 5)))
    ids = rng.permutation(50_000)[:2000].astype(np.int64)
    packed = phash_groups(ids, hashes, 4)
    monkeypatch.setattr(module, "RANK_LIMIT", 0)
    assert packed.num_rows > 500 and packed.equals(phash_groups(ids, hashes, 4))
    for m in (5, 7, 9, 16):
        for combination in module._combos(4, m):
            order = module._bit_order(combination.key)
            assert sum(bits for _, bits in order) == 64
            permuted = module._permute(hashes, order)
            assert (module._unpermute(permuted, order) == hashes).all()
            assert (
                np.bitwise_count(permuted[1:] ^ permuted[:-1])
                == np.bitwise_count(hashes[1:] ^ hashes[:-1])
            ).all()


@pytest.mark.parametrize("size", [0, 1, 2, 1000, 50_000])
def test_distinct_hashes_equals_numpy_unique(size):
    """The packed-sort distinct hashes give np.unique's values, inverse and counts, including
    hashes that share their top bits but differ below (the runs re-sorted by whole hash)."""
    from coyo_db.dedup.near_phash import distinct_hashes

    rng = np.random.default_rng(size)
    hashes = random_hashes(rng, size)
    if size > 10:
        hashes[: size // 4] = hashes[size // 4 : size // 2]  # exact repeats
        # same top bits, different low bits: within the packed index's width
        hashes[size // 2 : size // 2 + 200] = (hashes[0] & ~np.uint64(0xFFFF)) | rng.integers(
            0, 0xFFFF, 200, dtype=np.uint64
        )
    expected = np.unique(hashes, return_inverse=True, return_counts=True)
    for got, want in zip(distinct_hashes(hashes), expected, strict=True):
        assert (np.asarray(got) == np.asarray(want)).all() and len(got) == len(want)
