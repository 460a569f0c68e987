"""The shipped WordNet synset hierarchy: known synsets, its build, and its place in the catalog."""

from __future__ import annotations

import gzip
import pickle
from importlib import resources
from pathlib import Path

import pytest
from conftest import load_script

from coyo_db.catalog import tables
from coyo_db.labels.hierarchy import (
    ancestors,
    descendants,
    ensure_hierarchy,
    hierarchy_table,
    hypernym_edges,
)
from coyo_db.labels.taxonomy import (
    IMAGENET1K,
    IMAGENET21K,
    class_wnids,
    ingest_tree,
    load_taxonomy,
)

DATA_NOUN = Path("/usr/share/wordnet/data.noun")

DOG = "n02084071"  # dog, domestic dog, Canis familiaris
CANINE = "n02083346"
DOMESTIC_ANIMAL = "n01317541"
CHIHUAHUA = "n02085620"
TABBY = "n02123045"
DOMESTIC_CAT = "n02121808"
ANIMAL = "n00015388"
ARTIFACT = "n00021939"
TEDDY = "n04399382"  # ImageNet-1k's teddy bear, absent from the fall11 list


def test_known_synsets_lie_where_wordnet_puts_them():
    dogs = descendants(DOG)
    assert CHIHUAHUA in dogs and DOG in dogs
    assert TABBY not in dogs
    assert {DOG, CHIHUAHUA, TABBY, DOMESTIC_CAT} <= descendants(ANIMAL)
    assert TABBY in descendants(DOMESTIC_CAT)
    assert not descendants(ANIMAL) & {TEDDY}
    assert TEDDY in descendants(ARTIFACT)
    # WordNet is a DAG: a dog is both a canine and a domestic animal.
    parents = sorted(parent for child, parent in hypernym_edges() if child == DOG)
    assert parents == sorted([CANINE, DOMESTIC_ANIMAL])
    assert {CANINE, DOMESTIC_ANIMAL, ANIMAL} <= ancestors(CHIHUAHUA)


def test_every_imagenet_synset_is_a_node_and_the_graph_has_no_cycle():
    nodes = set(class_wnids(IMAGENET21K)) | set(class_wnids(IMAGENET1K))
    edges = hypernym_edges()
    assert edges == tuple(sorted(set(edges)))
    assert {w for edge in edges for w in edge} <= nodes
    children = {child for child, _ in edges}
    roots = nodes - children
    assert len(roots) < 0.03 * len(nodes)  # the tops of WordNet's noun tree are not classes
    assert "n00004475" in roots  # organism, whose parent 'living thing' is no class
    # Kahn's algorithm consumes every node only when there is no cycle.
    indegree = dict.fromkeys(nodes, 0)
    below: dict[str, list[str]] = {}
    for child, parent in edges:
        indegree[child] += 1
        below.setdefault(parent, []).append(child)
    queue = [n for n, d in indegree.items() if d == 0]
    seen = 0
    while queue:
        node = queue.pop()
        seen += 1
        for child in below.get(node, []):
            indegree[child] -= 1
            if indegree[child] == 0:
                queue.append(child)
    assert seen == len(nodes)


def test_the_walk_skips_synsets_that_are_not_classes_and_follows_instance_hypernyms():
    build = load_script("build_wordnet_hierarchy")
    # data.noun lines: offset lex_filenum ss_type w_cnt word lex_id ... p_cnt pointers | gloss
    text = "\n".join(
        [
            "  1 This software and database is being provided",
            "00000001 03 n 01 root 0 000 | the root",
            "00000002 03 n 01 middle 0 001 @ 00000001 n 0000 | not a class",
            "00000003 03 n 02 leaf 0 leaf2 0 002 @ 00000002 n 0000 ~ 00000001 n 0000 | a leaf",
            "00000004 03 n 01 Paris 0 001 @i 00000002 n 0000 | an instance",
        ]
    )
    hypernyms = build.parse_hypernyms(text)
    assert hypernyms == {
        "n00000001": [],
        "n00000002": ["n00000001"],
        "n00000003": ["n00000002"],
        "n00000004": ["n00000002"],
    }
    nodes = {"n00000001", "n00000003", "n00000004"}
    assert build.nearest_ancestor_edges(hypernyms, nodes) == [
        ("n00000003", "n00000001"),
        ("n00000004", "n00000001"),
    ]
    with pytest.raises(SystemExit, match=r"not WordNet 3\.0 nouns"):
        build.nearest_ancestor_edges(hypernyms, nodes | {"n09999999"})


@pytest.mark.skipif(not DATA_NOUN.is_file(), reason="needs Debian's wordnet-base")
def test_the_build_script_reproduces_the_shipped_file_byte_for_byte(tmp_path):
    build = load_script("build_wordnet_hierarchy")
    out = tmp_path / "hypernyms.tsv.gz"
    assert build.main([str(DATA_NOUN), "--out", str(out)]) == 0
    shipped = resources.files("coyo_db.data").joinpath("imagenet21k_hypernyms.tsv.gz")
    assert out.read_bytes() == shipped.read_bytes()


def test_the_imagenet1k_build_reproduces_the_shipped_file_byte_for_byte(tmp_path):
    pytest.importorskip("open_clip")
    pytest.importorskip("timm")
    build = load_script("build_imagenet1k_taxonomy")
    out = tmp_path / "imagenet1k.tsv.gz"
    assert build.main(["--out", str(out)]) == 0
    shipped = resources.files("coyo_db.data").joinpath("imagenet1k.tsv.gz").read_bytes()
    assert out.read_bytes() == shipped
    header = b"index\twnid\tname\tdefinition\n0\tn01440764\ttench\t"
    assert gzip.decompress(shipped).startswith(header)


def test_imagenet1k_classes_are_imagenet21k_synsets_but_one():
    one_k = load_taxonomy(IMAGENET1K).to_pylist()
    assert len(one_k) == 1000
    assert (one_k[281]["wnid"], one_k[281]["name"]) == (TABBY, "tabby cat")
    assert one_k[967]["name"] == "espresso"
    outside = set(class_wnids(IMAGENET1K)) - set(class_wnids(IMAGENET21K))
    assert outside == {TEDDY}


def test_ensure_hierarchy_writes_once(catalog):
    assert ensure_hierarchy(catalog) == len(hypernym_edges())
    assert ensure_hierarchy(catalog) == 0
    table = catalog.dataset(tables.TAXONOMY_TREE.name).to_table()
    assert table.num_rows == len(hypernym_edges())
    assert set(table["taxonomy"].to_pylist()) == {IMAGENET21K}
    assert table.sort_by([("parent_wnid", "ascending"), ("child_wnid", "ascending")]).equals(
        hierarchy_table().sort_by([("parent_wnid", "ascending"), ("child_wnid", "ascending")])
    )


def test_a_tree_from_coyos_pickle_wins_over_wordnet(catalog, tmp_path):
    path = tmp_path / "imagenet21k_tree.pickle"
    path.write_bytes(pickle.dumps({ANIMAL: [DOG], DOG: [CHIHUAHUA]}))
    assert ingest_tree(catalog, path) == 2
    assert ensure_hierarchy(catalog) == 0
    assert catalog.dataset(tables.TAXONOMY_TREE.name).count_rows() == 2
