"""COYO's exact dedup rules (phash_text, url, text) against Polars and the planted truth."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from coyo_db.catalog import Catalog
from coyo_db.dedup.rules import RULES, dedup_rule, rule_method
from coyo_db.errors import CatalogError, InputError
from coyo_db.synth.metadata import synth_table, synth_truth

ROWS = 20_000
SEED = 5
KEYS = {"phash_text": ["image_phash", "text"], "url": ["url"], "text": ["text"]}


@pytest.fixture(scope="module")
def rows() -> pa.Table:
    return synth_table(ROWS, seed=SEED)


@pytest.fixture
def rules_catalog(tmp_path, rows) -> Catalog:
    catalog = Catalog(tmp_path / "home", create=True)
    catalog.append("pairs", rows)
    return catalog


def polars_groups(rows: pa.Table, rule: str, min_count: int = 10) -> pl.DataFrame:
    """The rule's groups computed independently: id -> group_id (smallest id sharing the key)."""
    keys = KEYS[rule]
    frame = pl.from_arrow(rows.select(["id", *keys])).drop_nulls(keys)
    sized = frame.group_by(keys).agg(pl.col("id").min().alias("group_id"), pl.len().alias("n"))
    floor = min_count if rule == "text" else 1
    return (
        frame.join(sized.filter(pl.col("n") > floor), on=keys)
        .select("id", "group_id", pl.col("n").cast(pl.Int32).alias("group_size"))
        .sort("id")
    )


def written(catalog: Catalog, method: str) -> pl.DataFrame:
    return catalog.pl(f"SELECT * FROM dup_groups WHERE method = '{method}' ORDER BY id")


@pytest.mark.parametrize(
    ("rule", "min_count"),
    [("phash_text", 10), ("url", 10), ("text", 10), ("text", 3), ("text", 1)],
)
def test_rule_equals_polars_and_keeps_one_per_group(rules_catalog, rows, rule, min_count):
    summary = dedup_rule(rules_catalog, rule, min_count=min_count)
    got = written(rules_catalog, summary.method)
    want = polars_groups(rows, rule, min_count)
    assert want.height > 0, "the synthetic rows plant this rule's duplicates"
    assert got.select("id", "group_id", "group_size").equals(want)
    per_group = got.group_by("group_id").agg(pl.col("keeper").sum())
    assert per_group["keeper"].unique().to_list() == [1]
    assert (summary.rows_scanned, summary.groups, summary.rows_in_groups) == (
        ROWS,
        per_group.height,
        got.height,
    )
    assert summary.removed == got.height - per_group.height
    assert got["distance"].unique().to_list() == [0]
    assert got["keep_rule"].unique().to_list() == ["highest-clip"]
    # The keeper holds its group's best ViT-L/14 score.
    scores = pl.from_arrow(rows.select(["id", "clip_similarity_vitl14"]))
    scored = got.join(scores, on="id")
    best = scored.group_by("group_id").agg(pl.col("clip_similarity_vitl14").max().alias("best"))
    keepers = scored.filter("keeper").join(best, on="group_id")
    assert (keepers["clip_similarity_vitl14"] == keepers["best"]).all()


def test_rules_group_the_planted_duplicates_with_their_sources(rules_catalog):
    truth = pl.from_arrow(synth_truth(ROWS, seed=SEED)).with_columns(pl.col("role").cast(pl.Utf8))
    for rule, role in (("phash_text", "phash_text_dup"), ("url", "url_dup")):
        dedup_rule(rules_catalog, rule)
        group = written(rules_catalog, rule).select("id", "group_id")
        planted = truth.filter(pl.col("role") == role)
        joined = planted.join(group, on="id").join(
            group.rename({"id": "source_id", "group_id": "source_group"}), on="source_id"
        )
        assert joined.height == planted.height
        assert (joined["group_id"] == joined["source_group"]).all()
    dedup_rule(rules_catalog, "text")
    boiler = truth.filter(pl.col("role") == "boilerplate_text")
    in_groups = boiler.join(written(rules_catalog, "text_gt10"), on="id")
    assert in_groups.height == boiler.height
    # COYO's filter drops every member of a repeated-text group; dedup keeps one of each.
    kept = rules_catalog.sql(
        "SELECT count(*) AS n FROM pairs_filtered JOIN dup_groups g USING (id)"
        " WHERE g.method = 'text_gt10'"
    )["n"][0].as_py()
    assert kept == 0


def test_rerun_is_idempotent_and_min_count_names_the_method(rules_catalog):
    dedup_rule(rules_catalog, "url", keep="lowest-id")
    first = written(rules_catalog, "url")
    assert first.filter("keeper")["id"].equals(first.filter("keeper")["group_id"])
    dedup_rule(rules_catalog, "text", min_count=3)
    dedup_rule(rules_catalog, "url", keep="lowest-id")
    assert written(rules_catalog, "url").equals(first)
    assert rule_method("text", 3) == "text_gt3"
    loose = written(rules_catalog, "text_gt3")
    strict = dedup_rule(rules_catalog, "text")
    assert loose.height > strict.rows_in_groups
    methods = rules_catalog.sql("SELECT DISTINCT method FROM dup_groups ORDER BY 1")
    assert methods["method"].to_pylist() == ["text_gt10", "text_gt3", "url"]


def test_user_mistakes(tmp_path, rules_catalog):
    with pytest.raises(CatalogError, match="no table 'pairs'"):
        dedup_rule(Catalog(tmp_path / "empty", create=True), "url")
    with pytest.raises(InputError, match="unknown dedup rule"):
        dedup_rule(rules_catalog, "phash")
    with pytest.raises(InputError, match="keeper rule"):
        dedup_rule(rules_catalog, "url", keep="newest")
    with pytest.raises(InputError, match="min-count"):
        dedup_rule(rules_catalog, "text", min_count=0)
    assert RULES == ("phash_text", "url", "text")


def test_dedup_text_command(rules_catalog):
    from typer.testing import CliRunner

    from coyo_db.cli.app import app

    home = str(rules_catalog.home)
    run = CliRunner().invoke
    result = run(app, ["dedup", "text", "--rule", "text", "--min-count", "5", "--home", home])
    assert result.exit_code == 0, result.output
    assert "text_gt5:" in result.stdout and f"of {ROWS:,} rows" in result.stdout
    result = run(
        app, ["dedup", "text", "--rule", "phash_text", "--keep", "lowest-id", "--home", home]
    )
    assert result.exit_code == 0, result.output
    assert written(rules_catalog, "phash_text")["keep_rule"].unique().to_list() == ["lowest-id"]
    bad = run(app, ["dedup", "text", "--rule", "simhash", "--home", home])
    assert bad.exit_code != 0 and isinstance(bad.exception, InputError)
