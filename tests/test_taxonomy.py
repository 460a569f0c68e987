"""The shipped ImageNet-21k taxonomy, its index order, and synset trees read from pickles."""

from __future__ import annotations

import gzip
import pickle
import re
from importlib import resources
from pathlib import Path

import pytest
from conftest import load_script

from coyo_db.catalog import schemas, tables
from coyo_db.ingest.safe_pickle import UnsafePickleError
from coyo_db.labels.taxonomy import (
    IMAGENET21K,
    TreeShapeError,
    class_wnids,
    ensure_taxonomy,
    ingest_tree,
    load_taxonomy,
    num_classes,
    read_tree,
    tree_edges,
)

# Published COYO-Labeled-300M rows: (id, what the image shows, rank, index, expected name).
# id 315 is the dataset card's full example (a pair of blue and white table lamps); the others
# are the preview rows of tests/fixtures/coyo_labeled300m_preview_rows.jsonl. The neighbours of
# each index name something else (4944 'boot camp', 4946 'booth', 11053 'table knife', 11055
# 'table saw'), so an index order shifted by one fails.
KNOWN = [
    (315, "table lamps", 0, 8087, "lamp"),
    (315, "table lamps", 1, 11054, "table lamp"),
    (601, "toddler's pink furry boot", 0, 4945, "bootee, bootie"),
    (601, "toddler's pink furry boot", 1, 4953, "bootstrap"),
    (601, "toddler's pink furry boot", 2, 4942, "boot"),
    (1105, "nectarine raspberry crisp", 0, 12352, "casserole"),
    (1105, "nectarine raspberry crisp", 1, 12658, "oyster stuffing, oyster dressing"),
    (2308, "Expohip fair stand", 0, 6728, "exhibition hall, exhibition area"),
    (463, "gstatic thumbnail", 0, 12213, "web site, website, internet site, site"),
]


def test_the_shipped_taxonomy_is_the_sorted_fall11_list():
    table = load_taxonomy(IMAGENET21K)
    assert table.schema == schemas.TAXONOMIES
    assert num_classes() == table.num_rows == 21841
    assert table.column("index").to_pylist() == list(range(21841))
    wnids = class_wnids()
    assert wnids == sorted(set(wnids))
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert (wnids[0], wnids[-1]) == ("n00004475", "n15102894")
    for column in ("name", "definition"):
        assert table.column(column).null_count == 0
        assert min(len(v) for v in table.column(column).to_pylist()) > 0


@pytest.mark.parametrize(("row_id", "image", "rank", "index", "name"), KNOWN)
def test_index_order_matches_published_coyo_rows(labeled_rows, row_id, image, rank, index, name):
    fixture = {row["id"]: row for row in labeled_rows}
    if row_id in fixture:  # the index really is the one the published row shows
        assert fixture[row_id]["labels_visible_prefix"][rank] == index
    row = load_taxonomy().slice(index, 1).to_pylist()[0]
    assert row["index"] == index
    assert row["name"] == name, image


def test_definitions_fit_the_foods_and_footwear():
    table = load_taxonomy().to_pylist()
    assert "food" in table[12352]["definition"]  # casserole: the crisp is a baked dish
    assert "foot" in table[4942]["definition"]  # boot
    assert "babies" in table[4945]["definition"]  # bootee: the toddler's boot


def test_unknown_taxonomy_is_an_input_error():
    from coyo_db.errors import InputError

    with pytest.raises(InputError, match="imagenet-21k"):
        load_taxonomy("imagenet-99k")


def test_ensure_taxonomy_writes_once(catalog):
    assert ensure_taxonomy(catalog, IMAGENET21K) == 21841
    version = catalog.dataset("taxonomies").version
    assert ensure_taxonomy(catalog) == 0
    assert catalog.dataset("taxonomies").version == version
    rows = catalog.sql(
        'SELECT count(*) AS n, min("index") AS lo, max("index") AS hi FROM taxonomies'
    ).to_pylist()
    assert rows == [{"n": 21841, "lo": 0, "hi": 21840}]


def test_ensure_taxonomy_repairs_a_partial_copy(catalog):
    catalog.append("taxonomies", load_taxonomy().slice(0, 10))
    assert ensure_taxonomy(catalog) == 21841
    assert catalog.dataset("taxonomies").count_rows() == 21841


def test_the_build_script_reproduces_the_shipped_file_byte_for_byte(tmp_path):
    build = load_script("build_taxonomy")
    table = load_taxonomy()
    wnids, names, definitions = (
        table.column(c).to_pylist() for c in ("wnid", "name", "definition")
    )
    # The timm files, reconstructed from the shipped rows (the lemma and definition files of timm
    # hold extra synsets, which the build must leave out).
    info = tmp_path / "timm" / "data" / "_info"
    info.mkdir(parents=True)
    extra = "n03931044\tpicture rail\n"
    (info / build.SYNSETS).write_text("\n".join(wnids) + "\n")
    lemmas = "".join(f"{w}\t{n}\n" for w, n in zip(wnids, names, strict=True)) + extra
    (info / build.LEMMAS).write_text(lemmas)
    glosses = "".join(f"{w}\t{d}\n" for w, d in zip(wnids, definitions, strict=True)) + extra
    (info / build.DEFINITIONS).write_text(glosses)
    out = tmp_path / "imagenet21k.tsv.gz"
    assert build.main([str(tmp_path), "--out", str(out)]) == 0
    shipped = resources.files("coyo_db.data").joinpath("imagenet21k.tsv.gz").read_bytes()
    assert out.read_bytes() == shipped
    assert gzip.decompress(shipped).startswith(b"index\twnid\tname\tdefinition\n0\tn00004475\t")


# ---- synset trees ---------------------------------------------------------------------------

A, B, C, D = "n00004475", "n00005787", "n00006024", "n00006484"
EDGES = [(A, B), (A, C), (B, D)]


@pytest.mark.parametrize(
    "tree",
    [
        {A: [B, C], B: [D], C: [], D: []},
        {A: (B, C), B: {D}},
        {B: A, C: A, D: B, A: None},
        {B: A, C: A, D: B, A: A},  # a root that is its own parent
        {"id": A, "children": [{"id": B, "children": [{"id": D}]}, {"id": C, "children": []}]},
        {"child": [{"wnid": A, "child": [{"wnid": B, "child": [{"wnid": D}]}, {"wnid": C}]}]},
        {"child_2_parent": {B: A, C: A, D: B}},
        {"children": {A: [B, C], B: [D]}, "name": {A: "organism"}},
        {"parents": {B: [A], C: [A], D: [B]}},
        {A: {"children": [B, C]}, B: {"parent": A, "children": [D]}, D: {"parent": B}},
        [(A, B), (A, C), [B, D], (A, B)],
        {0: [1, 2], 1: [3]},
        {"class_list": [A, B, C, D], "child_2_parent": {1: 0, 2: 0, 3: 1}},
    ],
    ids=[
        "children-lists",
        "children-tuples-sets",
        "child-to-parent",
        "self-parent-root",
        "nested-id-children",
        "nested-rootless",
        "wrapped-child_2_parent",
        "wrapped-children",
        "wrapped-parents-lists",
        "per-node-dicts",
        "edge-list",
        "class-indices",
        "own-class-list",
    ],
)
def test_tree_shapes_normalise_to_the_same_edges(tree):
    classes = [A, B, C, D] if isinstance(tree, dict) and 0 in tree else class_wnids()
    assert tree_edges(tree, classes) == EDGES


@pytest.mark.parametrize(
    ("tree", "found"),
    [
        ({"a": 1, "b": 2}, "a dict with keys like"),
        ("n00004475", "a str"),
        ([1, 2, 3], "a list"),
        ({A: "organism, being"}, "values include 'organism, being'"),
        ({A: [B, "not-a-wnid"]}, "'not-a-wnid' that is neither a wnid nor a class index"),
        ({A: [99999]}, "99999"),
        ({A: []}, "no parent-child edges"),
        ({"id": A, "children": "n00005787"}, "a dict whose 'children' holds a str"),
    ],
)
def test_shapes_not_understood_say_what_was_found(tree, found):
    with pytest.raises(ValueError, match=re.escape(found)):
        tree_edges(tree, class_wnids())


def _write_pickle(path: Path, value: object) -> Path:
    path.write_bytes(pickle.dumps(value, protocol=4))
    return path


def test_read_tree_gives_taxonomy_tree_rows(tmp_path):
    path = _write_pickle(tmp_path / "imagenet21k_tree.pickle", {A: [B, C], B: [D]})
    table = read_tree(path)
    assert table.schema == tables.TAXONOMY_TREE.schema
    assert table.to_pylist() == [
        {"taxonomy": IMAGENET21K, "parent_wnid": p, "child_wnid": c} for p, c in EDGES
    ]


def test_a_tree_of_unknown_shape_names_the_file(tmp_path):
    path = _write_pickle(tmp_path / "tree.pickle", {"version": 2, "nodes": 5})
    with pytest.raises(TreeShapeError, match="not a synset tree") as caught:
        read_tree(path)
    assert str(path) in str(caught.value)


def test_ingest_tree_writes_once_and_replaces_a_different_tree(catalog, tmp_path):
    path = _write_pickle(tmp_path / "tree.pickle", {A: [B, C], B: [D]})
    assert ingest_tree(catalog, path) == 3
    assert ingest_tree(catalog, path) == 0
    other = _write_pickle(tmp_path / "other.pickle", {A: [B]})
    assert ingest_tree(catalog, other) == 1
    rows = catalog.sql(f"SELECT * FROM {tables.TAXONOMY_TREE.name}").to_pylist()
    assert rows == [{"taxonomy": IMAGENET21K, "parent_wnid": A, "child_wnid": B}]


def test_a_tree_pickle_carrying_code_writes_nothing(catalog, tmp_path):
    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (eval, ("1",))  # not print: Ray, once started, replaces builtins.print

    path = _write_pickle(tmp_path / "tree.pickle", {A: [Payload()]})
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        ingest_tree(catalog, path)
    assert not catalog.has_table(tables.TAXONOMY_TREE.name)
