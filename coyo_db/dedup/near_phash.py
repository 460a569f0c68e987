"""Near-duplicate pHash groups: every pair of 64-bit hashes within Hamming radius R, no all-pairs.

Method (multi-index hashing, a generalised pigeonhole):

1. Identical hashes are merged first: the search runs over the distinct hashes, and rows are
   expanded back at the end. So a million rows with one hash cost one hash, not 5e11 pairs.
   (:func:`distinct_hashes`: one plain sort of packed words, not an argsort.)
2. The 64 bits are split into ``m >= R + 1`` near-equal blocks. Two hashes within distance R
   differ in at most R blocks, so they agree exactly on at least ``m - R`` of them. For each
   choice of ``m - R`` blocks (``C(m, m - R)`` choices), the hashes are sorted with their bits
   rearranged so that those blocks lead (numpy's SIMD sort of plain integers; a bit permutation
   keeps every Hamming distance, so the sorted words are compared as they are, in memory
   order); inside each run of equal keys every pair is a candidate, verified by popcount
   (``np.bitwise_count`` of the xor). With ``m = R + 1`` this is the
   plain block split (one block must match); a larger ``m`` gives fewer, longer keys and far
   fewer random candidates. ``m`` is chosen from the number of distinct hashes by an estimate
   of sort work plus expected random candidates (:func:`choose_blocks`), e.g. R=4 over 3M
   hashes takes m=6: 15 sorts on 21-bit keys instead of 5 sorts on 12-bit keys. A pair that
   agrees on more than ``m - R`` blocks is reported only by the first combination it agrees
   on (:class:`Combination`), so every pair is found once. The combinations run on one
   thread per core, a cache-sized chunk of hashes at a time.
3. Candidate pairs of a run are made by offset (position p with p + d in the same run, for
   d = 1, 2, ...), so memory stays at a few arrays of the hash count whatever the run length.
   Work grows with the square of a run of *distinct* hashes sharing a key (an adversary can
   build such runs: hashes that differ only inside R blocks' worth of bits); identical hashes
   never form such a run.
4. Groups are the connected components of the verified pairs
   (``scipy.sparse.csgraph.connected_components``): a chain a~b~c is one group even when a and
   c lie further apart than R.

``distance`` in :func:`phash_groups` is each row's Hamming distance to its nearest other member
of the group (0 when another row has the very same hash).
"""

from __future__ import annotations

import itertools
import math
import os
import queue
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from coyo_db.errors import InputError

# A small radius catches re-encodes and resizes (fast-mode pHash and JPEG recompression flip
# 1-2 bits) without chaining distinct images together.
DEFAULT_RADIUS = 4
MAX_RADIUS = 16
# hashes per step of the chunked passes: 256 KiB of words, in cache
CHUNK = 1 << 15
# grouped rows beyond which member and group ranks no longer pack into one uint64
RANK_LIMIT = 2**32

# (distinct hashes, radius) -> index pairs within the radius and their distances
PairSearch = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]

GROUPS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("group_id", pa.int64()),
        pa.field("distance", pa.int32()),
    ]
)


def _check(ids: np.ndarray, hashes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= radius <= MAX_RADIUS:
        raise InputError(f"radius must be between 0 and {MAX_RADIUS}, got {radius}")
    ids = np.asarray(ids, dtype=np.int64)
    hashes = np.asarray(hashes)
    if hashes.dtype != np.uint64:
        if hashes.dtype.kind not in "iu":
            raise InputError(f"pHashes must be 64-bit integers, got {hashes.dtype}")
        hashes = hashes.astype(np.uint64)
    if ids.shape != hashes.shape or ids.ndim != 1:
        raise InputError(f"ids and hashes differ in shape: {ids.shape} vs {hashes.shape}")
    return ids, hashes


def block_bounds(m: int) -> np.ndarray:
    """Bit offsets of `m` near-equal blocks of a 64-bit hash."""
    return np.linspace(0, 64, m + 1).round().astype(np.int64)


def choose_blocks(distinct: int, radius: int) -> int:
    """The block count m (>= radius + 1) with the least estimated work over `distinct` hashes."""
    best, best_cost = radius + 1, math.inf
    for m in range(radius + 1, min(64, 4 * (radius + 1)) + 1):
        widths = np.sort(np.diff(block_bounds(m)))
        key_bits = int(widths[: m - radius].sum())
        candidates = distinct * (distinct - 1) / 2 / 2.0**key_bits
        # a candidate's verification costs ~2.5x a hash's share of the rearrangement and
        # sort (measured at 77M distinct hashes: 15 ns a hash, 39 ns a candidate)
        cost = math.comb(m, m - radius) * (distinct + 2.5 * candidates)
        if cost < best_cost:
            best, best_cost = m, cost
    return best


@dataclass(frozen=True)
class Combination:
    """One block combination of the search: the blocks whose bits form the sort key, and the
    blocks before the last of them that are not in it. A pair agrees on several combinations
    when it agrees on more than m - R blocks; it is reported by the first of them in
    :func:`itertools.combinations` order only (the m - R lowest blocks it agrees on), which
    is the one whose `earlier` blocks all differ. So every pair is found exactly once."""

    key: tuple[tuple[int, int], ...]  # (low bit, width) of each block, lowest first
    earlier: tuple[tuple[int, int], ...]


def _combos(radius: int, m: int) -> list[Combination]:
    """Each choice of m - radius blocks."""
    bounds = block_bounds(m)
    blocks = [(int(lo), int(hi - lo)) for lo, hi in itertools.pairwise(bounds)]
    found = []
    for key in itertools.combinations(blocks, m - radius):
        earlier = tuple(b for b in blocks if b[0] < key[-1][0] and b not in key)
        found.append(Combination(key, earlier))
    return found


def _bit_order(blocks: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """Every bit range of the hash, as (low bit, width): the chosen `blocks` first, in order,
    then the rest of the 64 bits from the top down; ranges that stay side by side are merged
    (fewer passes over the hashes)."""
    taken = sorted(blocks)
    rest, at = [], 0
    for lo, bits in taken:
        if lo > at:
            rest.append((at, lo - at))
        at = lo + bits
    if at < 64:
        rest.append((at, 64 - at))
    order: list[tuple[int, int]] = []
    for lo, bits in [*blocks, *sorted(rest, reverse=True)]:
        if order and order[-1][0] == lo + bits:  # continues the previous range downwards
            order[-1] = (lo, order[-1][1] + bits)
        else:
            order.append((lo, bits))
    return order


def _permute(
    hashes: np.ndarray, order: list[tuple[int, int]], out: np.ndarray | None = None
) -> np.ndarray:
    """`hashes` with their bit ranges rearranged as `order` lists them, top down: the chosen
    blocks become the key in the top bits and the whole hash stays in the word. Written to
    `out` when given.

    Done a cache-sized chunk at a time: the dozen or more passes of shifts and masks then run
    in cache, where whole-array passes at 100M hashes are bound by memory traffic (4-6x
    slower, measured)."""
    out = np.empty(len(hashes), dtype=np.uint64) if out is None else out
    part = np.empty(min(CHUNK, len(hashes)), dtype=np.uint64)
    for start in range(0, len(hashes), CHUNK):
        src, dst = hashes[start : start + CHUNK], out[start : start + CHUNK]
        tmp = part[: len(src)]
        dst.fill(0)
        for lo, bits in order:
            if bits < 64:
                np.left_shift(dst, np.uint64(bits), out=dst)
            np.right_shift(src, np.uint64(lo), out=tmp)
            if bits < 64:
                np.bitwise_and(tmp, np.uint64((1 << bits) - 1), out=tmp)
            np.bitwise_or(dst, tmp, out=dst)
    return out


def _unpermute(values: np.ndarray, order: list[tuple[int, int]]) -> np.ndarray:
    """The inverse of :func:`_permute`."""
    out = np.zeros(len(values), dtype=np.uint64)
    shift = 0
    for lo, bits in reversed(order):
        mask = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(2**64 - 1)
        out |= ((values >> np.uint64(shift)) & mask) << np.uint64(lo)
        shift += bits
    return out


def combinations(unique: np.ndarray, radius: int) -> list[Combination]:
    """The block combinations to search `unique` (distinct hashes) with: independent tasks."""
    if radius == 0 or len(unique) < 2:
        return []
    return _combos(radius, choose_blocks(len(unique), radius))


def combination_pairs(
    unique: np.ndarray,
    combination: Combination,
    radius: int,
    workspace: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs of distinct hashes that agree on the blocks of `combination` (and on none
    of its `earlier` blocks) and lie within `radius`, and their distances: one block
    combination's share of :func:`near_pairs`. `unique` must be sorted (as ``np.unique``
    returns it).

    The hashes are sorted with their bits rearranged so that the chosen blocks lead (a bit
    permutation keeps every Hamming distance): runs of equal keys are then contiguous and the
    candidates of a run are compared in sorted order, reading memory front to back, where
    comparing by index would gather from random places of the hash array. Only the pairs
    found map back to indexes (by binary search in `unique`).

    Memory: a few arrays of len(unique), whatever the number of pairs found before the
    verification (candidates are made by offset, see the module docstring). `workspace`, a
    uint64 array as long as `unique`, holds the rearranged words when given: a search of
    many combinations reuses it rather than touching fresh pages each time."""
    n = len(unique)
    order = _bit_order(combination.key)
    # two words share the key when their xor has no bit set above the key's lowest bit
    same_key = np.uint64(1 << (64 - sum(bits for _, bits in combination.key)))
    # where each earlier block lies in the rearranged word: a pair agreeing on one of them
    # belongs to an earlier combination
    earlier = [
        np.uint64(_permute(np.array([((1 << bits) - 1) << lo], np.uint64), order)[0])
        for lo, bits in combination.earlier
    ]
    permuted = _permute(unique, order, out=workspace)
    permuted.sort()
    found_a, found_b, found_d = [], [], []
    # A chunk of positions at a time, so that the candidates' arrays stay in cache (at 100M
    # hashes whole-array temporaries cost more in first-touch page faults than in compares).
    # Offset d: the positions p whose key equals that of p + d (then also of p + 1 ... p + d,
    # the words being sorted); those of offset d + 1 are among them.
    buffer = np.empty(min(CHUNK, max(n - 1, 0)), dtype=np.uint64)
    for start in range(0, n - 1, CHUNK):
        stop = min(start + CHUNK, n - 1)
        xor = buffer[: stop - start]
        np.bitwise_xor(permuted[start + 1 : stop + 1], permuted[start:stop], out=xor)
        active = np.flatnonzero(xor < same_key)
        xor = xor[active]
        active += start
        d = 1
        while len(active):
            if d > 1:
                active = active[active < n - d]
                xor = permuted[active] ^ permuted[active + d]
                same = xor < same_key
                active, xor = active[same], xor[same]
            dist = np.bitwise_count(xor)
            keep = dist <= radius
            for mask in earlier:
                keep &= (xor & mask) != 0
            if keep.any():
                pos = active[keep]
                found_a.append(pos)
                found_b.append(pos + d)
                found_d.append(dist[keep].astype(np.int64))
            d += 1
    a, b, dist = join_pairs(found_a, found_b, found_d)
    return (
        _indexes(unique, _unpermute(permuted[a], order)),
        _indexes(unique, _unpermute(permuted[b], order)),
        dist,
    )


def _indexes(unique: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Positions of `values` in the sorted `unique`: searched in sorted order, each search
    starting where the last ended (several times faster than random needles)."""
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values), dtype=np.int64)
    out[order] = np.searchsorted(unique, values[order])
    return out


def join_pairs(
    a: list[np.ndarray], b: list[np.ndarray], d: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not a:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return np.concatenate(a), np.concatenate(b), np.concatenate(d)


def near_pairs(unique: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (a < b not guaranteed; each pair once) of distinct hashes within `radius`,
    and their distances. `unique` must hold distinct uint64 hashes, sorted (``np.unique``)."""
    from concurrent.futures import ThreadPoolExecutor

    combos = combinations(unique, radius)
    # The combinations are independent and numpy's sorts and ufuncs release the GIL: one
    # thread per core, each reusing its own workspace (8 B a hash), as many as a quarter of
    # the machine's memory holds (a 64-core node with 580M distinct hashes must not take 64).
    fit = _memory() // 4 // (16 * max(1, len(unique)))
    threads = max(1, min(len(combos), os.cpu_count() or 1, fit))
    workspaces = queue.SimpleQueue()
    for _ in range(threads):
        workspaces.put(np.empty(len(unique), dtype=np.uint64))

    def search(combination: Combination) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        workspace = workspaces.get()
        try:
            return combination_pairs(unique, combination, radius, workspace)
        finally:
            workspaces.put(workspace)

    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(search, combos))  # in combination order, whatever finishes first
    return join_pairs([f[0] for f in found], [f[1] for f in found], [f[2] for f in found])


def _memory() -> int:
    """This machine's physical memory in bytes (8 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def phash_groups(
    ids: np.ndarray,
    hashes: np.ndarray,
    radius: int = DEFAULT_RADIUS,
    pair_search: PairSearch | None = None,
) -> pa.Table:
    """Rows whose pHashes lie within Hamming `radius` of another row's, as connected groups.

    `pair_search` finds the pairs of distinct hashes (default :func:`near_pairs`, in this
    process; :func:`coyo_db.dedup.ray_phash.ray_near_pairs` runs each block combination as a
    Ray task): any search that returns every pair within the radius gives the same groups.

    Returns (id, group_id, distance) for every row in a group of two or more rows, sorted by
    (group_id, id): ``group_id`` is the smallest id of the group, ``distance`` the row's Hamming
    distance to its nearest other member. Rows in no group are left out.
    """
    ids, hashes = _check(ids, hashes, radius)
    rows, group_id, distance = phash_group_rows(ids, hashes, radius, pair_search)
    return pa.table(
        {"id": ids[rows], "group_id": group_id, "distance": distance.astype(np.int32)},
        schema=GROUPS_SCHEMA,
    )


def phash_group_rows(
    ids: np.ndarray,
    hashes: np.ndarray,
    radius: int = DEFAULT_RADIUS,
    pair_search: PairSearch | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`phash_groups` as arrays: the grouped rows' positions in `ids`, their group ids
    and distances, in (group_id, id) order (a caller joining other columns by row needs no
    search of the ids)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids, hashes = _check(ids, hashes, radius)
    if len(ids) < 2:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    unique, inverse, counts = distinct_hashes(hashes)
    n = len(unique)
    a, b, dist = (pair_search or near_pairs)(unique, radius)
    if len(a):
        graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
        _, labels = connected_components(graph, directed=True, connection="weak")
    else:
        labels = np.arange(n)
    # Nearest other member per distinct hash: 0 where the hash repeats, else the best pair.
    nearest = np.full(n, 127, dtype=np.int64)
    np.minimum.at(nearest, a, dist)
    np.minimum.at(nearest, b, dist)
    nearest[counts > 1] = 0
    # rows per component, counted over the distinct hashes (fewer, and no per-row labels)
    size = np.bincount(labels, weights=counts, minlength=n)
    rows = np.flatnonzero((size[labels] > 1)[inverse])
    ids_in, label_in = ids[rows], labels[inverse[rows]]
    if len(rows) >= RANK_LIMIT:  # ranks no longer fit 32 bits: sort the two columns
        group_min = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(group_min, label_in, ids_in)
        group_id = group_min[label_in]
        order = np.lexsort((ids_in, group_id))
        group_id = group_id[order]
    else:
        # Ranks of the ids; a group's id is its smallest member id, so its rank is the smallest
        # member rank. Sorting (group rank, id rank) packed into one uint64 gives the
        # (group_id, id) order: one plain sort where a lexsort of two int64 columns costs
        # several times more.
        by_id = np.argsort(ids_in, kind="stable")
        id_rank = np.empty(len(rows), dtype=np.uint64)
        id_rank[by_id] = np.arange(len(rows), dtype=np.uint64)
        group_rank = np.full(n, np.iinfo(np.uint64).max, dtype=np.uint64)
        np.minimum.at(group_rank, label_in, id_rank)
        packed = (group_rank[label_in] << np.uint64(32)) | id_rank
        packed.sort()
        order = by_id[(packed & np.uint64(2**32 - 1)).astype(np.int64)]
        group_id = ids_in[by_id[(packed >> np.uint64(32)).astype(np.int64)]]
        del packed
    rows = rows[order]
    return rows, group_id, nearest[inverse[rows]]


def distinct_hashes(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(hashes, return_inverse=True, return_counts=True)`` for uint64 hashes, by
    one plain sort instead of an argsort (at 100M hashes 7 s instead of 31 s, measured).

    Each hash's top bits and its row index are packed into one word and sorted (numpy's SIMD
    sort of plain integers); words tie on the top bits only where distinct hashes share
    them (a small fraction), and those runs alone are re-sorted by the whole hash."""
    n = len(hashes)
    bits = max(1, (n - 1).bit_length())
    if n < 2 or bits > 40 or hashes.dtype != np.uint64:
        return np.unique(hashes, return_inverse=True, return_counts=True)
    index = np.uint64((1 << bits) - 1)
    packed = np.empty(n, dtype=np.uint64)
    for start in range(0, n, CHUNK):  # in cache, no whole-array temporaries
        top = hashes[start : start + CHUNK] & ~index
        np.bitwise_or(top, np.arange(start, start + len(top), dtype=np.uint64), out=top)
        packed[start : start + len(top)] = top
    packed.sort()
    order = (packed & index).astype(np.int64)
    prefix = packed >> np.uint64(bits)
    del packed
    ordered = hashes[order]
    # runs of equal top bits holding different hashes: sort them by (hash, row)
    new_run = np.empty(n, dtype=bool)
    new_run[0] = True
    np.not_equal(prefix[1:], prefix[:-1], out=new_run[1:])
    mixed = ~new_run[1:] & (ordered[1:] != ordered[:-1])
    if mixed.any():
        run_starts = np.flatnonzero(new_run)
        run_mixed = np.zeros(len(run_starts), dtype=bool)
        run_mixed[np.searchsorted(run_starts, np.flatnonzero(mixed) + 1, side="right") - 1] = True
        member = np.flatnonzero(np.repeat(run_mixed, np.diff(np.r_[run_starts, n])))
        resort = np.lexsort((order[member], ordered[member], prefix[member]))
        order[member] = order[member][resort]
        ordered[member] = ordered[member][resort]
    del prefix, new_run
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    unique = ordered[first]
    del ordered
    starts = np.flatnonzero(first)
    del first
    counts = np.diff(np.r_[starts, n])
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.repeat(np.arange(len(starts)), counts)
    return unique, inverse, counts


def brute_force_groups(ids: np.ndarray, hashes: np.ndarray, radius: int) -> pa.Table:
    """The same groups by checking all pairs (quadratic: a reference for tests, small inputs)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids, hashes = _check(ids, hashes, radius)
    n = len(ids)
    if n < 2:
        return GROUPS_SCHEMA.empty_table()
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :]).astype(np.int64)
    np.fill_diagonal(dist, 127)
    a, b = np.nonzero(dist <= radius)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    size = np.bincount(labels, minlength=n)
    member = size[labels] > 1
    group_min = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(group_min, labels[member], ids[member])
    ids_in, group_id = ids[member], group_min[labels[member]]
    nearest = dist.min(axis=1)[member]
    order = np.lexsort((ids_in, group_id))
    return pa.table(
        {
            "id": ids_in[order],
            "group_id": group_id[order],
            "distance": nearest[order].astype(np.int32),
        },
        schema=GROUPS_SCHEMA,
    )
