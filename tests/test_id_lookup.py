"""IdLookup: exact positions of int64 ids, checked against a Python dict."""

from __future__ import annotations

import numpy as np
import pytest

from coyo_db.id_lookup import IdLookup, mix64

EXTREMES = np.array(
    [0, -1, 1, np.iinfo(np.int64).min, np.iinfo(np.int64).max, -2, 2**32, -(2**32)], np.int64
)


@pytest.mark.parametrize("size", [0, 1, 7, 1000, 200_000])
def test_positions_match_a_dict(size: int) -> None:
    rng = np.random.default_rng(size)
    ids = np.unique(rng.integers(-(2**62), 2**62, size * 2, dtype=np.int64))[:size]
    ids = rng.permutation(ids)
    lookup = IdLookup(ids)
    where = {int(v): i for i, v in enumerate(ids)}
    queries = np.concatenate([ids, rng.integers(-(2**62), 2**62, 3 * size + 5, dtype=np.int64)])
    queries = rng.permutation(queries)
    expected = np.array([where.get(int(q), -1) for q in queries], np.int64)
    assert np.array_equal(lookup.positions(queries), expected)
    assert np.array_equal(lookup.contains(queries), expected >= 0)
    assert len(lookup) == size


def test_extreme_and_sentinel_like_ids() -> None:
    lookup = IdLookup(EXTREMES)
    assert np.array_equal(lookup.positions(EXTREMES), np.arange(len(EXTREMES)))
    assert not lookup.contains(np.array([3, -3, 2**40], np.int64)).any()
    # -1 as an id is found; 0 as an id does not collide with the table's empty keys
    assert IdLookup(np.array([5], np.int64)).positions(np.array([0, -1, 5])).tolist() == [-1, -1, 0]
    # the smallest int64 marks free slots inside the table: as an id it is kept beside it
    smallest = np.array([np.iinfo(np.int64).min], np.int64)
    assert not IdLookup(np.array([5, 7], np.int64)).contains(smallest).any()
    assert IdLookup(np.array([5, smallest[0]], np.int64)).positions(smallest).tolist() == [1]


def test_dense_runs_and_shared_slots_probe_correctly() -> None:
    # consecutive ids, and ids that differ only in high bits, stress linear probing
    ids = np.concatenate([np.arange(50_000), np.arange(1, 50_001) << np.int64(40)]).astype(np.int64)
    lookup = IdLookup(ids)
    assert np.array_equal(lookup.positions(ids), np.arange(len(ids)))
    assert not lookup.contains(ids[1:50_000] + np.int64(1 << 39)).any()


def test_repeated_ids_are_found_at_one_of_their_positions() -> None:
    ids = np.array([4, 9, 4, 4, 11], np.int64)
    at = IdLookup(ids).positions(np.array([4, 9, 11, 5], np.int64))
    assert at[0] in (0, 2, 3) and at[1:].tolist() == [1, 4, -1]


def test_mix64_is_splitmix64s_finaliser() -> None:
    # reference values of SplitMix64 seeded at 0: next() = mix64(0 + k * golden ratio)
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        states = np.arange(1, 4, dtype=np.uint64) * golden
    assert [f"{v:016x}" for v in mix64(states)] == [
        "e220a8397b1dcdaf",
        "6e789e6aa1b965f4",
        "06c45d188009454f",
    ]
