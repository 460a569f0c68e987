"""Selecting images by label: the macros of sql/label_select.sql and sql/label_hierarchy.sql,
each checked against an independent Python computation on the same rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from coyo_db.catalog import schemas
from coyo_db.labels.coyo_labeled import to_labels_batch
from coyo_db.labels.hierarchy import descendants, ensure_hierarchy
from coyo_db.labels.taxonomy import IMAGENET1K, IMAGENET21K, ensure_taxonomy, load_taxonomy
from coyo_db.synth.labels import synth_labels

ARTIFACT = "n00021939"
FOOTWEAR = "n03380867"  # footwear, footgear
FOOD = "n00021265"  # food, nutrient
STRUCTURE = "n04341686"  # structure, construction
DOG = "n02084071"
ANIMAL = "n00015388"


def fixture_rows(labeled_rows: list[dict]) -> list[dict]:
    """The published rows cut to their leading (label, prob) pairs that are both visible."""
    rows = []
    for row in labeled_rows:
        n = min(len(row["labels_visible_prefix"]), len(row["label_probs_visible_prefix"]))
        rows.append(
            {
                "id": row["id"],
                "taxonomy": IMAGENET21K,
                "model": "coyo-labeled-300m",
                "labels": row["labels_visible_prefix"][:n],
                "label_probs": row["label_probs_visible_prefix"][:n],
            }
        )
    return rows


@pytest.fixture
def labeled(catalog, labeled_rows):
    """A catalog holding the published rows, 300 synthetic 21k rows and 100 1k rows."""
    ensure_taxonomy(catalog, IMAGENET21K)
    ensure_taxonomy(catalog, IMAGENET1K)
    ensure_hierarchy(catalog)
    catalog.append("labels", pa.Table.from_pylist(fixture_rows(labeled_rows), schemas.LABELS))
    synth21 = synth_labels(np.arange(10_000, 10_300), top_k=10, seed=1)
    batch = to_labels_batch(synth21.to_batches()[0], IMAGENET21K, "synth")
    synth1 = synth_labels(np.arange(20_000, 20_100), classes=1000, top_k=5, seed=2)
    batch1 = to_labels_batch(synth1.to_batches()[0], IMAGENET1K, "synth")
    catalog.append("labels", pa.Table.from_batches([batch, batch1]))
    return catalog


def python_rows(catalog) -> list[dict]:  # type: ignore[no-untyped-def]
    return catalog.dataset("labels").to_table().to_pylist()


def wnids(taxonomy: str) -> list[str]:
    return load_taxonomy(taxonomy).column("wnid").to_pylist()


def test_labels_under_known_synsets_of_the_published_rows(labeled):
    def ids(synset: str, p: float) -> list[int]:
        table = labeled.sql(
            f"SELECT id FROM labels_under('{synset}', {p}) "
            "WHERE model = 'coyo-labeled-300m' ORDER BY id"
        )
        return table["id"].to_pylist()

    # 601 a toddler's boot (bootee, 0.85), 463 a web site (0.72), 2308 an exhibition hall
    # (0.32), 1105 a raspberry crisp (casserole, 0.28), 3710 great-nephew (0.42).
    assert ids(FOOTWEAR, 0.5) == [601]
    assert ids("footwear, footgear", 0.5) == [601]  # by name as well as wnid
    assert ids(ARTIFACT, 0.5) == [463, 601]
    assert ids(ARTIFACT, 0.3) == [463, 601, 2308]
    assert ids(STRUCTURE, 0.3) == [2308]
    assert ids(FOOD, 0.2) == [1105]
    assert ids(FOOD, 0.3) == []
    assert ids(DOG, 0.0) == []
    query = f"SELECT * FROM labels_under('{FOOTWEAR}', 0.5) WHERE id = 601"
    row = labeled.sql(query).to_pylist()[0]  # the synthetic rows may fall under footwear too
    assert (row["rank"], row["label"], row["name"]) == (0, 4945, "bootee, bootie")


def test_synset_descendants_matches_the_python_walk(labeled):
    for synset in (DOG, ANIMAL, FOOTWEAR):
        got = labeled.sql(f"SELECT wnid FROM synset_descendants('{synset}')")["wnid"].to_pylist()
        assert sorted(got) == sorted(descendants(synset))
    by_name = labeled.sql(
        "SELECT count(*) AS n FROM synset_descendants('dog, domestic dog, Canis familiaris')"
    )
    assert by_name["n"][0].as_py() == len(descendants(DOG)) > 100
    assert labeled.sql("SELECT * FROM synset_descendants('no such synset')").num_rows == 0


@pytest.mark.parametrize(("synset", "p"), [(ANIMAL, 0.3), (ARTIFACT, 0.5), (DOG, 0.05)])
def test_labels_under_matches_python_on_both_taxonomies(labeled, synset, p):
    under = descendants(synset)
    names = {IMAGENET21K: wnids(IMAGENET21K), IMAGENET1K: wnids(IMAGENET1K)}
    expected = {}
    for row in python_rows(labeled):
        for rank, (label, prob) in enumerate(zip(row["labels"], row["label_probs"], strict=True)):
            if prob >= p and names[row["taxonomy"]][label] in under:
                expected[(row["id"], row["taxonomy"], row["model"])] = (rank, label)
                break
    got = labeled.sql(f"SELECT * FROM labels_under('{synset}', {p})").to_pylist()
    assert {(r["id"], r["taxonomy"], r["model"]): (r["rank"], r["label"]) for r in got} == (
        expected
    )
    assert len(got) == len(expected)
    assert {r["taxonomy"] for r in got} == {IMAGENET21K, IMAGENET1K} or synset == DOG


def test_labels_top1(labeled):
    p = 0.6
    expected = {
        (r["id"], r["taxonomy"]): (r["labels"][0], r["label_probs"][0])
        for r in python_rows(labeled)
        if r["label_probs"][0] >= p
    }
    got = labeled.sql(f"SELECT * FROM labels_top1({p})").to_pylist()
    assert {(r["id"], r["taxonomy"]): (r["label"], r["prob"]) for r in got} == expected
    names = {IMAGENET21K: load_taxonomy(IMAGENET21K)["name"].to_pylist()}
    names[IMAGENET1K] = load_taxonomy(IMAGENET1K)["name"].to_pylist()
    assert all(r["name"] == names[r["taxonomy"]][r["label"]] for r in got)


def test_labels_any_topk(labeled):
    k, p = 3, 0.25
    expected = set()
    for r in python_rows(labeled):
        for rank, (label, prob) in enumerate(
            zip(r["labels"][:k], r["label_probs"][:k], strict=True)
        ):
            if prob >= p:
                expected.add((r["id"], r["taxonomy"], rank, label))
    got = labeled.sql(f"SELECT * FROM labels_any_topk({k}, {p})").to_pylist()
    assert {(r["id"], r["taxonomy"], r["rank"], r["label"]) for r in got} == expected
    assert len(got) == len(expected)
    assert max(r["rank"] for r in got) == k - 1
    cat = labeled.sql(
        "SELECT DISTINCT id FROM labels_any_topk(2, 0.5) WHERE name = 'bootee, bootie'"
    )
    assert cat["id"].to_pylist() == [601]


def test_labels_multihot(labeled):
    p = 0.3
    expected = {}
    for r in python_rows(labeled):
        chosen = sorted(
            label for label, prob in zip(r["labels"], r["label_probs"], strict=True) if prob >= p
        )
        if chosen:
            expected[(r["id"], r["taxonomy"])] = chosen
    got = labeled.sql(f"SELECT * FROM labels_multihot({p})").to_pylist()
    assert {(r["id"], r["taxonomy"]): r["labels"] for r in got} == expected
    sizes = {r["taxonomy"]: r["num_classes"] for r in got}
    assert sizes == {IMAGENET21K: 21841, IMAGENET1K: 1000}
    # Scattered into dense multi-hot vectors, each row has one bit per chosen class.
    row = next(r for r in got if r["taxonomy"] == IMAGENET21K and len(r["labels"]) > 1)
    dense = np.zeros(row["num_classes"], dtype=bool)
    dense[row["labels"]] = True
    assert dense.sum() == len(row["labels"])


def test_without_a_tree_the_hierarchy_macros_are_absent(catalog, labeled_rows):
    ensure_taxonomy(catalog, IMAGENET21K)
    catalog.append("labels", pa.Table.from_pylist(fixture_rows(labeled_rows), schemas.LABELS))
    views = set(
        catalog.sql("SELECT function_name FROM duckdb_functions()")["function_name"].to_pylist()
    )
    assert {"labels_top1", "labels_any_topk", "labels_multihot"} <= views
    assert "labels_under" not in views
