"""COYO-700M's own exact dedup rules as `dup_groups` methods.

Three rules, each computed in DuckDB by a view of sql/dedup_rules.sql (a count of the key's
hash over `pairs`, then a group-by on the key of the rows whose hash repeats), then given one
keeper per group by :func:`coyo_db.dedup.groups.choose_keepers` and written by
:func:`coyo_db.dedup.groups.write_groups`:

=============  =====================  =====================================================
rule           method in dup_groups   group
=============  =====================  =====================================================
``phash_text`` ``phash_text``         rows sharing (image_phash, text), COYO's pair rule
``url``        ``url``                rows sharing a url
``text``       ``text_gt<N>``         all rows whose text appears more than N times
                                      (COYO: N = 10)
=============  =====================  =====================================================

Rows whose key is NULL are in no group. ``distance`` is 0 for every member (exact rules).

The ``text`` rule keeps one row per repeated text, like every method. COYO itself removed every
row of such a text (boilerplate such as "Click to enlarge" says nothing of its image); the view
`pairs_filtered` (sql/filters.sql, rule ``pass_text_repeats``) already drops all of them, so use
that view for COYO's behaviour and this rule to keep one example of each text.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from coyo_db.catalog import tables
from coyo_db.dedup.groups import (
    KEEP_RULES,
    DedupSummary,
    choose_keepers,
    record_counts,
    store_groups,
)
from coyo_db.errors import CatalogError, InputError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

RULES = ("phash_text", "url", "text")
DEFAULT_MIN_COUNT = 10  # COYO: a text seen more than 10 times is boilerplate


def rule_method(rule: str, min_count: int = DEFAULT_MIN_COUNT) -> str:
    """The `dup_groups.method` a rule writes: the text rule names its threshold."""
    return f"text_gt{min_count}" if rule == "text" else rule


def _members(catalog: Catalog, rule: str, min_count: int) -> tuple[pa.Table, int]:
    """The rule's group members (id, group_id, group_size, vitl14, vitb32; by group, then id)
    and the number of rows of `pairs`."""
    if rule not in RULES:
        raise InputError(f"unknown dedup rule {rule!r}; choose one of {', '.join(RULES)}")
    if min_count < 1:
        raise InputError(f"--min-count must be at least 1, got {min_count}")
    if not catalog.has_table(tables.PAIRS.name):
        raise CatalogError(f"the catalog at {catalog.location} has no table 'pairs' to dedup")
    with catalog.connection() as con:
        if rule == "text":
            query = "SELECT * FROM dup_rule_text_over($1) ORDER BY group_id, id"
            rel = con.sql(query, params=[min_count])
        else:
            rel = con.sql(f"SELECT * FROM dup_rule_{rule} ORDER BY group_id, id")
        table = rel.to_arrow_table()
    return table, catalog.dataset(tables.PAIRS.name).count_rows()


def dedup_rule(
    catalog: Catalog,
    rule: str,
    *,
    min_count: int = DEFAULT_MIN_COUNT,
    keep: str = "highest-clip",
) -> DedupSummary:
    """Groups of COYO's rule `rule` (phash_text, url or text) over `pairs`, written to
    `dup_groups` with one keeper per group by rule `keep`; replaces that method's rows. Logged
    in `runs` as ``dedup text``."""
    from coyo_db.catalog.runs import recorded_run

    if keep not in KEEP_RULES:
        raise InputError(f"unknown keeper rule {keep!r}; choose one of {', '.join(KEEP_RULES)}")
    arguments = {"rule": rule, "min_count": min_count, "keep": keep}
    with recorded_run(catalog, "dedup text", arguments) as run:
        summary = _dedup_rule(catalog, rule, min_count, keep)
        record_counts(run, summary)
    return summary


def _dedup_rule(catalog: Catalog, rule: str, min_count: int, keep: str) -> DedupSummary:
    started = time.perf_counter()
    members, scanned = _members(catalog, rule, min_count)
    method = rule_method(rule, min_count)
    gid = members["group_id"].to_numpy()
    ids = members["id"].to_numpy()
    vitl14 = members["vitl14"].to_numpy(zero_copy_only=False).astype(np.float64)
    vitb32 = members["vitb32"].to_numpy(zero_copy_only=False).astype(np.float64)
    keeper = choose_keepers(gid, ids, vitl14, vitb32, keep)
    return store_groups(
        catalog,
        method,
        keep,
        gid=gid,
        ids=ids,
        keeper=keeper,
        distance=np.zeros(len(ids), dtype=np.int32),
        rows_scanned=scanned,
        started=started,
    )
