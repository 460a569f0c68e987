"""Review decisions: the `reviews` table, the latest decision per subject, the reviewed views
checked against a plain-Python reading of the decisions, exports and replays that honour them,
`coyo-db review`, and subjects that do not exist refused."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from coyo_db.catalog import tables
from coyo_db.cli.app import app
from coyo_db.errors import InputError
from coyo_db.export.replay import replay_export
from coyo_db.export.subset import export
from coyo_db.review.decisions import review, reviews
from tests.test_export import add_contamination, add_dup_groups, add_pairs, read_ids


def add_near_misses(catalog, ids) -> None:
    rows = [
        {"id": int(i), "refset": "imagenet-val", "ref_id": 1000 + n, "score": 0.5, "hit": False}
        for n, i in enumerate(ids)
    ]
    spec = tables.CONTAMINATION_CANDIDATES
    catalog.ensure(spec)
    catalog.append(spec.name, pa.Table.from_pylist(rows, schema=spec.schema))


@pytest.fixture
def reviewed(catalog):
    pairs = add_pairs(catalog, 600)
    ids = np.sort(pairs["id"].to_numpy())
    dups = add_dup_groups(catalog, ids[:40])  # groups (ids[0], ids[1]), (ids[2], ids[3]), ...
    contaminated = add_contamination(catalog, ids[100:110])  # ref_id 0..9
    add_near_misses(catalog, ids[200:205])  # ref_id 1000..1004
    return catalog, ids, dups, contaminated


def oracle(catalog, ids, dups, contaminated) -> set[int]:
    """What an export of every row keeps, from the reviews read in Python."""
    latest: dict[tuple, dict] = {}
    for row in sorted(reviews(catalog).to_pylist(), key=lambda r: r["reviewed_at"]):
        subject = (row["kind"], row["id"], row["method"], row["refset"], row["ref_id"])
        latest[subject] = row
    groups = catalog.sql("SELECT * FROM dup_groups").to_pylist()
    keeper = {(g["method"], g["group_id"]): None for g in groups}
    for row in sorted(latest.values(), key=lambda r: r["reviewed_at"]):
        if row["decision"] == "keeper":
            for g in groups:
                if g["method"] == row["method"] and g["id"] == row["id"]:
                    keeper[(g["method"], g["group_id"])] = row["id"]
    freed = {r["id"] for r in latest.values() if r["decision"] == "not_duplicate"}
    dropped = set()
    for g in groups:
        chosen = keeper[(g["method"], g["group_id"])]
        keeps = g["keeper"] if chosen is None else g["id"] == chosen
        if not keeps and g["id"] not in freed:
            dropped.add(g["id"])
    hits = catalog.sql("SELECT id, refset, ref_id FROM contamination").to_pylist()
    for h in hits:
        row = latest.get(("contamination", h["id"], None, h["refset"], h["ref_id"]))
        if row is None or row["decision"] != "not_copy":
            dropped.add(h["id"])
    dropped |= {r["id"] for r in latest.values() if r["decision"] == "copy"}
    return set(ids.tolist()) - dropped


def test_decisions_change_what_the_export_keeps_and_the_latest_counts(reviewed, tmp_path):
    catalog, ids, dups, contaminated = reviewed
    base = export(catalog, tmp_path / "base", where="true")
    assert set(read_ids(tmp_path / "base")) == set(ids.tolist()) - dups - contaminated
    assert base.manifest["reviews"] == {"table_version": None}

    a, b = int(ids[1]), int(ids[0])  # a non-keeper and its group's keeper
    review(catalog, "keeper", a, method="test", reviewer="ana", note="sharper")
    review(catalog, "not_duplicate", int(ids[3]), method="test", reviewer="ana")
    review(catalog, "not_copy", int(ids[100]), refset="imagenet-val", ref_id=0, reviewer="bo")
    review(catalog, "copy", int(ids[101]), refset="imagenet-val", ref_id=1, reviewer="bo")
    review(catalog, "copy", int(ids[200]), refset="imagenet-val", ref_id=1000, reviewer="bo")
    # changed minds: the later decision on the same subject counts
    review(catalog, "not_copy", int(ids[201]), refset="imagenet-val", ref_id=1001, reviewer="cy")
    review(catalog, "copy", int(ids[201]), refset="imagenet-val", ref_id=1001, reviewer="cy")
    review(catalog, "keeper", int(ids[5]), method="test", reviewer="cy")
    review(catalog, "not_duplicate", int(ids[5]), method="test", reviewer="cy")

    after = export(catalog, tmp_path / "after", where="true")
    kept = set(read_ids(tmp_path / "after"))
    assert kept == oracle(catalog, ids, dups, contaminated)
    assert a in kept and b not in kept  # the keeper changed
    assert int(ids[3]) in kept and int(ids[100]) in kept  # not a duplicate; hit overturned
    assert int(ids[200]) not in kept and int(ids[201]) not in kept  # near misses now copies
    assert int(ids[5]) in kept and int(ids[4]) in kept  # freed; its group's keeper stays
    version = catalog.dataset("reviews").version
    assert after.manifest["reviews"] == {"table_version": version}
    assert after.manifest["table_versions"]["reviews"] == version
    assert len(reviews(catalog)) == 9 and len(reviews(catalog, latest=True)) == 7

    # the manifest pins the reviews: a later decision does not change its replay
    review(catalog, "not_copy", int(ids[200]), refset="imagenet-val", ref_id=1000, reviewer="dee")
    assert replay_export(catalog, after.manifest_path).same_ids
    again = export(catalog, tmp_path / "again", where="true")
    assert int(ids[200]) in set(read_ids(tmp_path / "again"))
    assert again.manifest["reviews"]["table_version"] == version + 1

    # pairs_unique agrees with the export's duplicates
    unique = set(catalog.sql("SELECT id FROM pairs_unique")["id"].to_pylist())
    assert a in unique and b not in unique
    runs = catalog.sql("SELECT count(*) AS n FROM runs WHERE command = 'review'")["n"][0]
    assert runs.as_py() == 10


@pytest.mark.parametrize(
    ("decision", "subject", "message"),
    [
        ("keeper", {"method": "test"}, "in no 'test' duplicate group"),
        ("keeper", {}, "needs the dedup --method"),
        ("keeper", {"method": "test", "refset": "imagenet-val"}, "takes --method"),
        ("copy", {"refset": "imagenet-val", "ref_id": 77}, "never compared"),
        ("copy", {"refset": "imagenet-val"}, "needs --refset and --ref-id"),
        ("not_copy", {"method": "test", "refset": "x", "ref_id": 1}, "not --method"),
        ("drop", {}, "unknown review decision"),
    ],
)
def test_reviews_of_subjects_that_do_not_exist_are_refused(reviewed, decision, subject, message):
    catalog, ids, _, _ = reviewed
    with pytest.raises(InputError, match=message):
        review(catalog, decision, int(ids[-1]), **subject)
    assert not catalog.has_table("reviews")


def test_a_quote_in_a_note_or_name_is_stored_as_it_is(reviewed):
    catalog, ids, _, _ = reviewed
    evil = "x'); DROP TABLE pairs; --"
    review(catalog, "keeper", int(ids[1]), method="test", reviewer=evil, note=evil)
    row = reviews(catalog).to_pylist()[0]
    assert row["reviewer"] == evil and row["note"] == evil
    assert catalog.has_table("pairs")
    with pytest.raises(InputError, match="note"):
        review(catalog, "keeper", int(ids[1]), method="test", note="x" * 5000)


def test_the_review_command_records_and_lists_decisions(reviewed):
    catalog, ids, _, _ = reviewed
    home = str(catalog.home)
    runner = CliRunner()
    done = runner.invoke(
        app, ["review", "keeper", str(ids[1]), "--method", "test", "--home", home, "--note", "ok"]
    )
    assert done.exit_code == 0, done.output
    assert f"id {ids[1]} in test group" in done.stdout
    done = runner.invoke(
        app,
        [
            "review",
            "not-copy",
            str(ids[100]),
            "--refset",
            "imagenet-val",
            "--ref-id",
            "0",
            "--home",
            home,
            "--reviewer",
            "ana",
        ],
    )
    assert done.exit_code == 0, done.output
    listed = runner.invoke(app, ["review", "list", "--home", home, "--format", "json"])
    assert listed.exit_code == 0 and listed.stdout.count('"decision"') == 2
    bad = runner.invoke(
        app, ["review", "copy", "5", "--refset", "nope", "--ref-id", "1", "--home", home]
    )
    assert bad.exit_code != 0 and "Traceback" not in bad.output
