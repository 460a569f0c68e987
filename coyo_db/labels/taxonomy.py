"""Label taxonomies: the class lists label indices point into, and their synset trees.

The catalog keeps them in two tables:

- `taxonomies` (:data:`tables.TAXONOMIES`): one row per class (taxonomy, index, wnid, name,
  definition). Two taxonomies ship in the package: ``imagenet-21k``
  (`coyo_db/data/imagenet21k.tsv.gz`: the 21,841 fall11 synsets sorted by wnid,
  COYO-Labeled-300M's index order) and ``imagenet-1k`` (`imagenet1k.tsv.gz`: the ILSVRC-2012
  classes in their usual order, named as open_clip's zero-shot names them, with their wnids,
  which map them onto ImageNet-21k), read by :mod:`coyo_db.ingest.models.class_lists` (the
  labelers use them too). :func:`ensure_taxonomy`, which any job that writes labels
  calls first, writes them. A user's own class list (a text file, one class a line) becomes a
  taxonomy with :func:`add_taxonomy`; :func:`resolve_taxonomy` finds any of them by name.
- `taxonomy_tree` (:data:`tables.TAXONOMY_TREE`): the hierarchy as (taxonomy, parent_wnid,
  child_wnid) edges, read from a pickle such as COYO's `imagenet21k_tree.pickle` by
  :func:`ingest_tree`. That file's layout is not documented, so :func:`tree_edges` accepts the
  shapes a synset tree plausibly has and refuses any other with a message saying what it found.

Writing a taxonomy or a tree that the catalog holds in another version replaces its rows in one
commit: a crash leaves the old version or the new one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.catalog import tables
from coyo_db.catalog.lance_tables import sql_string
from coyo_db.catalog.ledger import file_fingerprint
from coyo_db.errors import InputError, SourceFileError
from coyo_db.ingest.models.class_lists import (
    IMAGENET1K,  # noqa: F401 - re-exported: callers import it from here
    IMAGENET21K,
    SHIPPED_FILES,
    available_taxonomies,
    class_wnids,
    load_taxonomy,
    num_classes,
)
from coyo_db.ingest.safe_pickle import load_plain

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

WNID = re.compile(r"^n\d{8}$")
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def ensure_taxonomy(catalog: Catalog, name: str = IMAGENET21K) -> int:
    """Write taxonomy `name` into the table `taxonomies` unless it is there already.

    Returns the number of rows written (0 when the catalog already held it in full).
    """
    rows = load_taxonomy(name)
    if catalog.has_table(tables.TAXONOMIES.name):
        dataset = catalog.dataset(tables.TAXONOMIES.name)
        held = dataset.count_rows(filter=taxonomy_where(name))
        if held == rows.num_rows:
            return 0
        if held:  # a different build of the same taxonomy: replaced in the same commit
            log.info("replacing %d rows of taxonomy %s", held, name)
    catalog.replace(tables.TAXONOMIES.name, taxonomy_where(name), rows, {"taxonomy": name})
    log.info("wrote taxonomy %s (%d classes)", name, rows.num_rows)
    return rows.num_rows


def taxonomy_where(name: str) -> str:
    """The Lance filter that selects the rows of taxonomy `name`."""
    return f"taxonomy = {sql_string(name)}"


# ---- a user's own taxonomies ----------------------------------------------------------------


def read_class_file(path: str | Path) -> list[tuple[str | None, str]]:
    """(wnid or None, name) per class of a class-list file, in index order.

    One class a line; blank lines and lines starting with ``#`` are skipped. A line may be
    ``wnid<TAB>name`` (``n02084071\tdog``), which ties the class to a WordNet synset and so to
    the ImageNet hierarchy; otherwise the whole line is the name.
    """
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceFileError(path, f"cannot read a class list ({type(exc).__name__})") from None
    classes: list[tuple[str | None, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        wnid, tab, name = line.partition("\t")
        if tab and WNID.match(wnid.strip()) and name.strip():
            classes.append((wnid.strip(), name.strip()))
        else:
            classes.append((None, line))
    if not classes:
        raise SourceFileError(path, "holds no class names (one class a line)")
    names = [name for _, name in classes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SourceFileError(path, f"names a class more than once: {', '.join(repeated[:3])}")
    return classes


def user_taxonomy_rows(name: str, classes: Sequence[tuple[str | None, str]]) -> pa.Table:
    """Rows of :data:`tables.TAXONOMIES` for a user's class list (no definitions)."""
    n = len(classes)
    return pa.table(
        {
            "taxonomy": pa.array([name] * n, pa.string()),
            "index": pa.array(range(n), pa.int32()),
            "wnid": pa.array([w for w, _ in classes], pa.string()),
            "name": pa.array([c for _, c in classes], pa.string()),
            "definition": pa.nulls(n, pa.string()),
        },
        schema=tables.TAXONOMIES.schema,
    )


def add_taxonomy(catalog: Catalog, name: str, path: str | Path) -> int:
    """Register the class-list file at `path` as taxonomy `name` (see :func:`read_class_file`).

    Returns the number of classes written: 0 when the catalog holds the same list already. A
    different list under a name already taken is refused (labels point into it by index).
    Logged in `runs` as ``taxonomy add``.
    """
    from coyo_db.catalog.runs import recorded_run

    with recorded_run(catalog, "taxonomy add", {"name": name, "path": str(path)}) as run:
        written = _add_taxonomy(catalog, name, path)
        run.counts(rows_written=written)
    return written


def _add_taxonomy(catalog: Catalog, name: str, path: str | Path) -> int:
    if name in SHIPPED_FILES:
        raise InputError(f"{name!r} is a shipped taxonomy; choose another name")
    if not _USER_NAME.match(name):
        raise InputError(
            f"taxonomy name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    rows = user_taxonomy_rows(name, read_class_file(path))
    held = catalog_taxonomy(catalog, name)
    if held is not None:
        if held.select(["wnid", "name"]).equals(rows.select(["wnid", "name"])):
            return 0
        raise InputError(
            f"taxonomy {name!r} already exists with other classes ({held.num_rows}); "
            "labels point into it by index, so choose another name"
        )
    catalog.append(tables.TAXONOMIES.name, rows, {"taxonomy": name, "input": str(path)})
    log.info("wrote taxonomy %s (%d classes) from %s", name, rows.num_rows, path)
    return rows.num_rows


def catalog_taxonomy(catalog: Catalog, name: str) -> pa.Table | None:
    """Taxonomy `name` as the catalog holds it, in index order; None when it holds none."""
    if not catalog.has_table(tables.TAXONOMIES.name):
        return None
    table = catalog.dataset(tables.TAXONOMIES.name).to_table(filter=pc.field("taxonomy") == name)
    if not table.num_rows:
        return None
    return table.sort_by("index").select(tables.TAXONOMIES.schema.names)


def resolve_taxonomy(catalog: Catalog, spec: str) -> tuple[str, pa.Table]:
    """(name, classes in index order) for a shipped taxonomy, one the catalog holds, or a
    class-list file (registered under its file stem first)."""
    if spec in SHIPPED_FILES:
        ensure_taxonomy(catalog, spec)
        return spec, load_taxonomy(spec)
    held = catalog_taxonomy(catalog, spec)
    if held is not None:
        return spec, held
    path = Path(spec).expanduser()
    if path.is_file():
        name = path.stem
        _add_taxonomy(catalog, name, path)  # within the run of the job resolving it
        table = catalog_taxonomy(catalog, name)
        assert table is not None
        return name, table
    raise InputError(
        f"unknown taxonomy {spec!r}: not one of {', '.join(available_taxonomies())}, not in the "
        "catalog (coyo-db taxonomy add NAME FILE), and not a class-list file"
    )


def list_taxonomies(catalog: Catalog) -> pa.Table:
    """Every taxonomy: shipped ones (held or not) and the catalog's own, with class counts."""
    held: dict[str, int] = {}
    if catalog.has_table(tables.TAXONOMIES.name):
        names = (
            catalog.dataset(tables.TAXONOMIES.name)
            .to_table(columns=["taxonomy"])
            .column("taxonomy")
        )
        counts = pc.value_counts(names)
        held = {
            v.as_py(): c.as_py()
            for v, c in zip(counts.field("values"), counts.field("counts"), strict=True)
        }
    names = sorted(set(SHIPPED_FILES) | set(held))
    return pa.table(
        {
            "taxonomy": pa.array(names, pa.string()),
            "classes": pa.array(
                [num_classes(n) if n in SHIPPED_FILES else held[n] for n in names], pa.int64()
            ),
            "kind": pa.array(
                ["shipped" if n in SHIPPED_FILES else "user" for n in names], pa.string()
            ),
            "in_catalog": pa.array([n in held for n in names], pa.bool_()),
        }
    )


# ---- the synset tree ------------------------------------------------------------------------

_CHILD_KEYS = ("children", "child", "subtree", "subtrees", "hyponyms")
_ID_KEYS = ("wnid", "id", "synset", "node")
_CHILD_TO_PARENT_KEYS = ("child_2_parent", "child_to_parent", "child2parent", "parent", "parents")
_PARENT_TO_CHILDREN_KEYS = (
    "parent_2_children",
    "parent_to_children",
    "parent2children",
    "children",
    "child",
    "tree",
    "edges",
)
_PARENT_KEYS = ("parent", "parents")
_CLASS_LIST_KEYS = ("class_list", "classes", "synsets", "wnids")
_COLLECTIONS = (list, tuple, set, frozenset)


class TreeShapeError(SourceFileError):
    """A tree pickle whose layout is not one :func:`tree_edges` understands."""


def tree_edges(tree: Any, classes: Sequence[str]) -> list[tuple[str, str]]:
    """(parent_wnid, child_wnid) edges of a synset tree, sorted and without duplicates.

    Understood shapes (a node is a wnid string, or an int index into `classes`, or into the
    tree's own class list when it has one):

    - ``{parent: [child, ...]}``: children of each node;
    - ``{child: parent}``: the parent of each node (a root may map to None or to itself);
    - ``{"id": wnid, "children": [node, ...]}``: nested nodes (keys child/children/subtree,
      id/wnid/synset; a root without an id only groups its children);
    - ``[(parent, child), ...]``: an edge list;
    - a dict wrapping one of these under a key such as ``child_2_parent``, ``parent``,
      ``children``, ``tree``, optionally with ``class_list`` giving the wnids of int nodes.

    Raises ValueError, saying what was found, for any other shape.
    """
    if isinstance(tree, dict):
        wrapped_classes = _first(tree, _CLASS_LIST_KEYS)
        if wrapped_classes is not None and _is_wnid_list(wrapped_classes):
            classes = list(wrapped_classes)
        if _is_nested_node(tree):
            edges = list(_nested_edges(tree, classes))
        elif (inner := _first(tree, _CHILD_TO_PARENT_KEYS)) is not None and _is_node_map(inner):
            edges = _mapping_edges(inner, classes, child_to_parent=True)
        elif (key := next((k for k in _PARENT_TO_CHILDREN_KEYS if k in tree), None)) is not None:
            try:
                return tree_edges(tree[key], classes)
            except ValueError as exc:
                raise ValueError(f"a dict whose {key!r} holds {exc}") from None
        elif _is_node_map(tree):
            edges = _mapping_edges(tree, classes, child_to_parent=None)
        else:
            raise ValueError(f"a dict with keys like {_sample(tree.keys())}")
    elif isinstance(tree, _COLLECTIONS) and all(
        isinstance(pair, list | tuple) and len(pair) == 2 for pair in tree
    ):
        edges = [(_node(p, classes), _node(c, classes)) for p, c in tree]
    elif isinstance(tree, _COLLECTIONS):
        raise ValueError(f"a {type(tree).__name__} whose items are not (parent, child) pairs")
    else:
        raise ValueError(f"a {type(tree).__name__}")
    unique = sorted({(parent, child) for parent, child in edges if parent != child})
    if not unique:
        raise ValueError("no parent-child edges")
    return unique


def read_tree(path: str | Path, taxonomy: str = IMAGENET21K) -> pa.Table:
    """The edges of the tree pickle at `path` as rows of :data:`tables.TAXONOMY_TREE`.

    The pickle is read with :func:`coyo_db.ingest.safe_pickle.load_plain`: one that carries any
    object other than plain containers and scalars is refused without running anything.
    """
    tree = load_plain(path)
    classes = class_wnids(taxonomy)
    try:
        edges = tree_edges(tree, classes)
    except ValueError as exc:
        raise TreeShapeError(
            path,
            f"not a synset tree coyo-db understands (found {exc}); expected"
            " {parent_wnid: [child_wnid, ...]}, {child_wnid: parent_wnid}, nested"
            " {'id': wnid, 'children': [...]} nodes or a list of (parent, child) pairs",
        ) from None
    known = set(classes)
    outside = {w for edge in edges for w in edge if w not in known}
    if outside:
        log.info(
            "%s: %d synsets of the tree are not classes of %s (inner nodes)",
            path,
            len(outside),
            taxonomy,
        )
    parents, children = zip(*edges, strict=True)
    return pa.table(
        {
            "taxonomy": pa.array([taxonomy] * len(edges), pa.string()),
            "parent_wnid": pa.array(parents, pa.string()),
            "child_wnid": pa.array(children, pa.string()),
        },
        schema=tables.TAXONOMY_TREE.schema,
    )


def ingest_tree(catalog: Catalog, path: str | Path, taxonomy: str = IMAGENET21K) -> int:
    """Load a tree pickle into `taxonomy_tree`, replacing an earlier tree of `taxonomy`.

    Returns the number of edges written: 0 when the table already holds exactly these edges.
    """
    return store_tree(catalog, read_tree(path, taxonomy), path)


def store_tree(catalog: Catalog, edges: pa.Table, path: str | Path) -> int:
    """Write the edges :func:`read_tree` made of the file at `path` (see :func:`ingest_tree`)."""
    taxonomy = edges.column("taxonomy")[0].as_py()
    if catalog.has_table(tables.TAXONOMY_TREE.name):
        dataset = catalog.dataset(tables.TAXONOMY_TREE.name)
        held = dataset.to_table(
            columns=["parent_wnid", "child_wnid"], filter=taxonomy_where(taxonomy)
        )
        if _edge_set(held) == _edge_set(edges):
            return 0
        if held.num_rows:
            log.info("replacing the %d-edge tree of %s", held.num_rows, taxonomy)
    catalog.replace(
        tables.TAXONOMY_TREE.name,
        taxonomy_where(taxonomy),
        edges,
        {"taxonomy": taxonomy, "input": str(path), "fingerprint": file_fingerprint(path)},
    )
    log.info("wrote the %d-edge tree of %s from %s", edges.num_rows, taxonomy, path)
    return edges.num_rows


def _edge_set(table: pa.Table) -> set[tuple[str, str]]:
    return set(
        zip(
            table.column("parent_wnid").to_pylist(),
            table.column("child_wnid").to_pylist(),
            strict=True,
        )
    )


def _first(mapping: dict, keys: Sequence[str]) -> Any:
    for key in keys:
        if key in mapping:
            return mapping[key]
    return None


def _sample(values: Any, n: int = 5) -> str:
    items = [repr(v) for _, v in zip(range(n), values, strict=False)]
    return "[" + ", ".join(items) + (", ...]" if len(values) > n else "]")


def _is_wnid_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(
        isinstance(v, str) and WNID.match(v) for v in value
    )


def _is_node(value: Any) -> bool:
    if isinstance(value, str):
        return WNID.match(value) is not None
    return isinstance(value, int) and not isinstance(value, bool)


def _is_node_map(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(_is_node(k) for k in value)


def _is_nested_node(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    children = _first(value, _CHILD_KEYS)
    return isinstance(children, list | tuple) and all(isinstance(c, dict) for c in children)


def _node(value: Any, classes: Sequence[str]) -> str:
    if isinstance(value, str) and WNID.match(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(classes):
        return classes[value]
    raise ValueError(f"a node {value!r} that is neither a wnid nor a class index")


def _mapping_edges(
    mapping: dict, classes: Sequence[str], *, child_to_parent: bool | None
) -> list[tuple[str, str]]:
    """Edges of a dict keyed by node; None for `child_to_parent` means: tell by the values.

    Values may be the node's children (a collection), its parent (a node, or None for a
    root), or a dict of the node's own with children and/or parent keys.
    """
    values = list(mapping.values())
    edges: list[tuple[str, str]] = []
    if all(isinstance(v, dict) for v in values):
        for key, info in mapping.items():
            node = _node(key, classes)
            edges += [(node, _node(c, classes)) for c in _nodes_of(_first(info, _CHILD_KEYS))]
            edges += [(_node(p, classes), node) for p in _nodes_of(_first(info, _PARENT_KEYS))]
        return edges
    if all(isinstance(v, _COLLECTIONS) for v in values):
        for key, others in mapping.items():
            node = _node(key, classes)
            for other in others:  # {child: [parents]} where a synset has several, as in WordNet
                pair = (
                    (_node(other, classes), node)
                    if child_to_parent
                    else (node, _node(other, classes))
                )
                edges.append(pair)
        return edges
    if all(v is None or _is_node(v) for v in values):
        return [(_node(p, classes), _node(c, classes)) for c, p in mapping.items() if p is not None]
    odd = next(v for v in values if not (v is None or _is_node(v) or isinstance(v, _COLLECTIONS)))
    raise ValueError(f"a dict of nodes whose values include {odd!r}")


def _nodes_of(value: Any) -> list[Any]:
    """A node's children or parents given as one node, a collection, or nothing."""
    if value is None:
        return []
    return list(value) if isinstance(value, _COLLECTIONS) else [value]


def _nested_edges(root: dict, classes: Sequence[str]) -> Iterator[tuple[str, str]]:
    """Walk nested {'id': ..., 'children': [...]} nodes without recursion (trees can be deep)."""
    stack: list[tuple[str | None, dict]] = [(None, root)]
    while stack:
        parent, node = stack.pop()
        node_id = _first(node, _ID_KEYS)
        wnid = _node(node_id, classes) if node_id is not None else None
        if parent is not None and wnid is not None:
            yield parent, wnid
        children = _first(node, _CHILD_KEYS) or []
        if not isinstance(children, list | tuple):
            raise ValueError(f"a node whose children are a {type(children).__name__}")
        for child in children:
            if not isinstance(child, dict):
                raise ValueError(f"a child node {child!r} that is not a dict")
            stack.append((wnid, child))
