"""Duplicate groups in the catalog: the `dup_groups` table and the keeper rule.

`dup_groups` holds one row per member of a duplicate group found by a method::

    method      e.g. "phash_pairs_r4": near-pHash groups over pairs.image_phash, radius 4
    group_id    the smallest id of the group (deterministic)
    id          the member's id
    keeper      exactly one true per (method, group_id): the row to keep
    distance    Hamming distance of the member's pHash to the keeper's (0 for the keeper; a
                chained group can hold members further than the radius from the keeper)
    group_size  members in the group
    keep_rule   the keeper rule used

Keeper rules (``keep``):

- ``highest-clip`` (default): highest ``clip_similarity_vitl14``, then highest
  ``clip_similarity_vitb32``, where `pairs` knows them (unknown scores rank last), then the
  lowest id;
- ``lowest-id``: the lowest id.

A rerun of a method replaces that method's rows in one commit (the old rows stay until the new
ones are in), so the same inputs give the same table. The view `pairs_unique` (sql/dedup.sql)
is `pairs` without the non-keepers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa

from coyo_db.catalog import tables
from coyo_db.catalog.lance_tables import sql_string
from coyo_db.dedup.near_phash import DEFAULT_RADIUS, PairSearch, phash_group_rows
from coyo_db.errors import CatalogError, InputError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.catalog.runs import Run

log = logging.getLogger(__name__)

KEEP_RULES = ("highest-clip", "lowest-id")
ENGINES = ("local", "ray")
PHASH_TABLES = (tables.PAIRS.name, tables.IMAGES.name)  # what `dedup phash` reads
KeepRule = Literal["highest-clip", "lowest-id"]
_CLIP_COLUMNS = ("clip_similarity_vitl14", "clip_similarity_vitb32")


@dataclass(frozen=True)
class DedupSummary:
    """What one dedup run found."""

    method: str
    rows_scanned: int
    groups: int
    rows_in_groups: int
    removed: int  # members that are not keepers
    seconds: float

    def line(self) -> str:
        return (
            f"{self.method}: {self.groups:,} groups holding {self.rows_in_groups:,} of "
            f"{self.rows_scanned:,} rows; {self.removed:,} rows are not keepers "
            f"({self.seconds:.1f}s)"
        )


def phash_method(table: str, radius: int) -> str:
    return f"phash_{table}_r{radius}"


def choose_keepers(
    group_id: np.ndarray,
    ids: np.ndarray,
    vitl14: np.ndarray | None = None,
    vitb32: np.ndarray | None = None,
    keep: str = "highest-clip",
) -> np.ndarray:
    """A boolean mask with exactly one true per group: the keeper by rule `keep`.

    NaN scores (unknown) rank below every known score.
    """
    if keep not in KEEP_RULES:
        raise InputError(f"unknown keeper rule {keep!r}; choose one of {', '.join(KEEP_RULES)}")
    n = len(ids)
    if n == 0:
        return np.zeros(0, dtype=bool)
    group_id, ids = np.asarray(group_id), np.asarray(ids)
    # the rule's keys, most significant first, each to be minimised within a group
    keys: list[np.ndarray] = []
    if keep == "highest-clip":
        for score in (vitl14, vitb32):
            if score is not None:
                keys.append(np.nan_to_num(-np.asarray(score, np.float64), nan=np.inf))
    keys.append(ids)
    order = None if is_grouped(group_id) else np.argsort(group_id, kind="stable")
    if order is not None:
        group_id, keys = group_id[order], [key[order] for key in keys]
    # one pass per key over the members, grouped (a lexsort of millions of members costs
    # several times more): keep the candidates that reach their group's best value
    sizes, group_index = group_spans(group_id)
    starts = np.cumsum(sizes) - sizes
    candidate = np.ones(n, dtype=bool)
    for key in keys:
        worst = np.inf if key.dtype.kind == "f" else np.iinfo(key.dtype).max
        masked = np.where(candidate, key, worst)
        candidate &= masked == np.minimum.reduceat(masked, starts)[group_index]
    chosen = np.flatnonzero(candidate)
    first = chosen[np.r_[True, group_index[chosen][1:] != group_index[chosen][:-1]]]
    mask = np.zeros(n, dtype=bool)
    mask[first if order is None else order[first]] = True
    return mask


def _load_hashes(
    catalog: Catalog, table: str, with_scores: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """Ids and pHashes of `table`; from pairs with `with_scores`, also its CLIP similarities
    (ViT-L/14, ViT-B/32; NaN where unknown) read in the same scan, for the keeper rule
    (8 B a row more: far cheaper than a second scan matched by id)."""
    from coyo_db.ingest.phash import phash_hex_to_uint64

    if table not in PHASH_TABLES:
        raise InputError(f"unknown table {table!r}; choose one of {', '.join(PHASH_TABLES)}")
    if not catalog.has_table(table):
        raise CatalogError(f"the catalog at {catalog.location} has no table {table!r} to dedup")
    if table == tables.PAIRS.name:
        rows = catalog.dataset(tables.PAIRS.name).to_table(
            columns=["id", "image_phash", *(_CLIP_COLUMNS if with_scores else ())],
            filter="image_phash IS NOT NULL",
        )
        scores = None
        if with_scores:
            l14, b32 = (rows[name].to_numpy() for name in _CLIP_COLUMNS)
            scores = (l14, b32)
        return rows["id"].to_numpy(), phash_hex_to_uint64(rows["image_phash"]), scores
    rows = catalog.dataset(tables.IMAGES.name).to_table(
        columns=["id", "phash"], filter="phash IS NOT NULL"
    )
    # An image ingested twice appears twice; one row per id.
    ids, first = np.unique(rows["id"].to_numpy(), return_index=True)
    return ids, rows["phash"].to_numpy()[first], None


def clip_scores(catalog: Catalog, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CLIP similarities of `ids` from pairs (NaN where unknown).

    One streaming scan of the three columns, each batch's ids looked up in a hash table of
    the distinct `ids` (:class:`coyo_db.id_lookup.IdLookup`): memory stays at a few arrays of
    len(ids) whatever the table's size. (A filter ``id IN (...)`` of millions of ids costs
    Lance far more time and memory, and a binary search of them misses the cache.)
    """
    from coyo_db.id_lookup import IdLookup

    ids = np.asarray(ids, dtype=np.int64)
    vitl14 = np.full(len(ids), np.nan)
    vitb32 = np.full(len(ids), np.nan)
    if not catalog.has_table(tables.PAIRS.name) or len(ids) == 0:
        return vitl14, vitb32
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    wanted = ordered[new]
    lookup = IdLookup(wanted)
    found = {name: np.full(len(wanted), np.nan) for name in _CLIP_COLUMNS}
    scanner = catalog.dataset(tables.PAIRS.name).scanner(columns=["id", *_CLIP_COLUMNS])
    for batch in scanner.to_batches():
        pos = lookup.positions(batch.column(0).to_numpy(zero_copy_only=False))
        rows = np.flatnonzero(pos >= 0)
        if not len(rows):
            continue
        pos = pos[rows]
        for index, name in enumerate(_CLIP_COLUMNS, start=1):
            values = batch.column(index).to_numpy(zero_copy_only=False)
            found[name][pos] = values[rows]
    where = np.empty(len(ids), dtype=np.int64)  # each id's place in `wanted`
    where[order] = np.cumsum(new) - 1
    vitl14[:] = found["clip_similarity_vitl14"][where]
    vitb32[:] = found["clip_similarity_vitb32"][where]
    return vitl14, vitb32


def write_groups(catalog: Catalog, method: str, groups: pa.Table) -> None:
    """Replace the rows of `method` in `dup_groups` with `groups` (its schema)."""
    spec = tables.DUP_GROUPS
    where = f"method = {sql_string(method)}"
    catalog.replace(spec.name, where, groups.cast(spec.schema), {"method": method})


def is_grouped(gid: np.ndarray) -> bool:
    """Whether members come sorted by group id (each group's members together, in order)."""
    return bool(np.all(gid[1:] >= gid[:-1]))


def group_spans(gid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For members sorted by group: each group's size, and each member's group index."""
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]]) if len(gid) else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, len(gid)])
    return sizes, np.repeat(np.arange(len(starts)), sizes)


def store_groups(
    catalog: Catalog,
    method: str,
    keep: str,
    *,
    gid: np.ndarray,
    ids: np.ndarray,
    keeper: np.ndarray,
    distance: np.ndarray,
    rows_scanned: int,
    started: float,
) -> DedupSummary:
    """Write one method's groups (members in any order) to `dup_groups`; its summary."""
    if is_grouped(gid):
        sizes, member_group = group_spans(gid)  # no sort needed
    else:
        _, member_group, sizes = np.unique(gid, return_inverse=True, return_counts=True)
    n = len(ids)
    table = pa.table(
        {
            "method": pa.repeat(pa.scalar(method, pa.string()), n),
            "group_id": gid,
            "id": ids,
            "keeper": keeper,
            "distance": np.asarray(distance, dtype=np.int32),
            "group_size": sizes[member_group].astype(np.int32),
            "keep_rule": pa.repeat(pa.scalar(keep, pa.string()), n),
        },
        schema=tables.DUP_GROUPS.schema,
    )
    write_groups(catalog, method, table)
    summary = DedupSummary(
        method=method,
        rows_scanned=rows_scanned,
        groups=len(sizes),
        rows_in_groups=n,
        removed=n - len(sizes),
        seconds=time.perf_counter() - started,
    )
    log.info("dedup %s: %s", method, summary)
    return summary


def dedup_phash(
    catalog: Catalog,
    radius: int = DEFAULT_RADIUS,
    table: str = "pairs",
    keep: str = "highest-clip",
    engine: str = "local",
    address: str | None = None,
) -> DedupSummary:
    """Near-duplicate pHash groups of `table` (pairs or images) within `radius`, written to
    `dup_groups` under method ``phash_<table>_r<radius>`` with one keeper per group. Logged in
    `runs` as ``dedup phash``.

    ``engine="ray"`` runs the search's block combinations as Ray tasks (on the cluster at
    `address`, else a local Ray; :mod:`coyo_db.dedup.ray_phash`): the same groups."""
    from coyo_db.catalog.runs import recorded_run

    if keep not in KEEP_RULES:
        raise InputError(f"unknown keeper rule {keep!r}; choose one of {', '.join(KEEP_RULES)}")
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if address is not None and engine != "ray":
        raise InputError("--address is for --engine ray")
    search = None
    if engine == "ray":
        from coyo_db.dedup.ray_phash import ray_near_pairs

        search = ray_near_pairs(address)
    arguments = {"radius": radius, "table": table, "keep": keep, "engine": engine}
    with recorded_run(catalog, "dedup phash", arguments) as run:
        summary = _dedup_phash(catalog, radius, table, keep, search)
        record_counts(run, summary)
    return summary


def record_counts(run: Run, summary: DedupSummary) -> None:
    """A dedup run's counts: rows scanned, group members written."""
    run.counts(rows_read=summary.rows_scanned, rows_written=summary.rows_in_groups)


def _dedup_phash(
    catalog: Catalog, radius: int, table: str, keep: str, search: PairSearch | None
) -> DedupSummary:
    started = time.perf_counter()
    ids, hashes, scores = _load_hashes(catalog, table, with_scores=keep == "highest-clip")
    row, gid, _ = phash_group_rows(ids, hashes, radius, pair_search=search)
    method = phash_method(table, radius)
    member = ids[row]
    vitl14 = vitb32 = None
    if keep == "highest-clip":
        if scores is not None:
            vitl14, vitb32 = scores[0][row], scores[1][row]
        else:
            vitl14, vitb32 = clip_scores(catalog, member)
    keeper = choose_keepers(gid, member, vitl14, vitb32, keep)
    # Hamming distance to the keeper's hash: groups are sorted by group_id.
    member_hash = hashes[row]
    sizes, group_index = group_spans(gid)
    keeper_hash = np.zeros(len(sizes), dtype=np.uint64)
    keeper_hash[group_index[keeper]] = member_hash[keeper]
    distance = np.bitwise_count(member_hash ^ keeper_hash[group_index])
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


def dedup_report(catalog: Catalog) -> tuple[pa.Table, pa.Table]:
    """Per method: (groups, rows, removed, largest group), and the group size distribution."""
    if not catalog.has_table(tables.DUP_GROUPS.name):
        raise CatalogError(
            f"the catalog at {catalog.location} has no {tables.DUP_GROUPS.name}; "
            "run 'coyo-db dedup'"
        )
    summary = catalog.sql("SELECT * FROM dup_summary ORDER BY method")
    sizes = catalog.sql("SELECT * FROM dup_group_sizes ORDER BY method, size_bucket_min")
    return summary, sizes
