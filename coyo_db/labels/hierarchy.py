"""The ImageNet synset hierarchy from WordNet, shipped with the package.

`coyo_db/data/imagenet21k_hypernyms.tsv.gz` holds (child_wnid, parent_wnid) edges among the
21,841 ImageNet-21k synsets and the ImageNet-1k ones: each synset's nearest WordNet 3.0
ancestors among them, through hypernyms and instance hypernyms (built by
`scripts/build_wordnet_hierarchy.py` from Debian's ``wordnet-base``). WordNet lets a synset
have several parents, so this is a DAG: "dog, domestic dog" is both a canine and a domestic
animal.

:func:`ensure_hierarchy` writes it into the catalog's `taxonomy_tree` table (as taxonomy
``imagenet-21k``) unless a tree of that taxonomy is there already, e.g. COYO's own
``imagenet21k_tree.pickle`` ingested with ``coyo-db ingest labels --tree``, which then wins.
The SQL macros of `sql/label_hierarchy.sql` walk that table; :func:`descendants` and
:func:`ancestors` do the same in Python.
"""

from __future__ import annotations

import gzip
import logging
from collections import defaultdict
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

import pyarrow as pa

from coyo_db.catalog import tables
from coyo_db.labels.taxonomy import IMAGENET21K

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

HIERARCHY_FILE = "imagenet21k_hypernyms.tsv.gz"
HIERARCHY = "wordnet-3.0"  # what the shipped tree is, in its commits' properties


@cache
def hypernym_edges() -> tuple[tuple[str, str], ...]:
    """The shipped (child_wnid, parent_wnid) edges, sorted."""
    raw = resources.files("coyo_db.data").joinpath(HIERARCHY_FILE).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").splitlines()
    if not lines or lines[0] != "child_wnid\tparent_wnid":
        raise RuntimeError(f"{HIERARCHY_FILE}: unexpected header {lines[:1]}")
    return tuple(tuple(line.split("\t")) for line in lines[1:] if line)  # type: ignore[misc]


def hierarchy_table(taxonomy: str = IMAGENET21K) -> pa.Table:
    """The shipped edges as rows of :data:`coyo_db.catalog.tables.TAXONOMY_TREE`."""
    edges = hypernym_edges()
    return pa.table(
        {
            "taxonomy": pa.array([taxonomy] * len(edges), pa.string()),
            "parent_wnid": pa.array([parent for _, parent in edges], pa.string()),
            "child_wnid": pa.array([child for child, _ in edges], pa.string()),
        },
        schema=tables.TAXONOMY_TREE.schema,
    )


def ensure_hierarchy(catalog: Catalog, taxonomy: str = IMAGENET21K) -> int:
    """Write the WordNet hierarchy into `taxonomy_tree` unless `taxonomy` has a tree there.

    Returns the number of edges written (0 when a tree was there already).
    """
    if catalog.has_table(tables.TAXONOMY_TREE.name):
        held = catalog.dataset(tables.TAXONOMY_TREE.name).count_rows(
            filter=f"taxonomy = '{taxonomy}'"
        )
        if held:
            return 0
    table = hierarchy_table(taxonomy)
    catalog.append(tables.TAXONOMY_TREE.name, table, {"taxonomy": taxonomy, "input": HIERARCHY})
    log.info("wrote the WordNet hierarchy (%d edges) as the tree of %s", table.num_rows, taxonomy)
    return table.num_rows


def _children() -> dict[str, list[str]]:
    children: dict[str, list[str]] = defaultdict(list)
    for child, parent in hypernym_edges():
        children[parent].append(child)
    return children


def _parents() -> dict[str, list[str]]:
    parents: dict[str, list[str]] = defaultdict(list)
    for child, parent in hypernym_edges():
        parents[child].append(parent)
    return parents


def _closure(start: Iterable[str], step: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    frontier = list(start)
    while frontier:
        node = frontier.pop()
        if node not in seen:
            seen.add(node)
            frontier.extend(step.get(node, ()))
    return seen


def descendants(wnid: str) -> set[str]:
    """`wnid` and every synset under it in the shipped hierarchy."""
    return _closure([wnid], _children())


def ancestors(wnid: str) -> set[str]:
    """`wnid` and every synset above it in the shipped hierarchy."""
    return _closure([wnid], _parents())
