"""COYO's filter rules (sql/filters.sql), the funnel and `coyo-db funnel`.

Every rule is checked on crafted rows at its boundaries (with the expected verdict written out)
and against an independent Polars computation on those rows plus a few thousand random rows.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from coyo_db.catalog import Catalog, schemas
from coyo_db.cli.app import app
from coyo_db.errors import CatalogError
from coyo_db.stats.funnel import funnel, funnel_sql, funnel_table
from tests.conftest import coyo_table, load_jsonl

RULES = ("min_side", "aspect_ratio", "nsfw", "text_length", "word_count", "text_repeats")
PASS_COLUMNS = tuple(f"pass_{rule}" for rule in RULES)
ABOVE_HALF = float(np.nextafter(np.float32(0.5), np.float32(1)))  # 0.50000006 in float32
INT32_MAX = 2**31 - 1

# (name, overrides of a good row, the rules the row must fail)
CASES: list[tuple[str, dict, set[str]]] = [
    ("good", {}, set()),
    ("width 199", {"width": 199}, {"min_side"}),
    ("width 200", {"width": 200, "height": 200}, set()),
    ("height 199", {"width": 500, "height": 199}, {"min_side"}),
    ("height 200", {"width": 500, "height": 200}, set()),
    ("width NULL", {"width": None}, {"min_side", "aspect_ratio"}),
    ("height NULL", {"height": None}, {"min_side", "aspect_ratio"}),
    ("ratio exactly 3 wide", {"width": 600, "height": 200}, set()),
    ("ratio exactly 3 tall", {"width": 200, "height": 600}, set()),
    ("ratio above 3 wide", {"width": 601, "height": 200}, {"aspect_ratio"}),
    ("ratio above 3 tall", {"width": 200, "height": 601}, {"aspect_ratio"}),
    ("small and thin", {"width": 100, "height": 400}, {"min_side", "aspect_ratio"}),
    ("zero size", {"width": 0, "height": 0}, {"min_side", "aspect_ratio"}),
    ("negative size", {"width": -600, "height": -600}, {"min_side", "aspect_ratio"}),
    ("int32 max sides", {"width": INT32_MAX, "height": INT32_MAX}, set()),
    ("int32 max by 1e9", {"width": INT32_MAX, "height": 10**9}, set()),
    ("int32 max by 700M", {"width": INT32_MAX, "height": 7 * 10**8}, {"aspect_ratio"}),
    ("nsfw both 0.5", {"nsfw_score_opennsfw2": 0.5, "nsfw_score_gantman": 0.5}, set()),
    ("opennsfw2 above 0.5", {"nsfw_score_opennsfw2": ABOVE_HALF}, {"nsfw"}),
    ("gantman above 0.5", {"nsfw_score_gantman": ABOVE_HALF}, {"nsfw"}),
    ("opennsfw2 NULL", {"nsfw_score_opennsfw2": None}, {"nsfw"}),
    ("gantman NULL", {"nsfw_score_gantman": None}, {"nsfw"}),
    ("opennsfw2 NaN", {"nsfw_score_opennsfw2": math.nan}, {"nsfw"}),
    ("gantman NaN", {"nsfw_score_gantman": math.nan}, {"nsfw"}),
    ("text_length 5", {"text_length": 5}, {"text_length"}),
    ("text_length 6", {"text_length": 6}, set()),
    ("text_length 1000", {"text_length": 1000}, set()),
    ("text_length 1001", {"text_length": 1001}, {"text_length"}),
    ("text_length NULL", {"text_length": None}, {"text_length"}),
    ("word_count 2", {"word_count": 2}, {"word_count"}),
    ("word_count 3", {"word_count": 3}, set()),
    ("word_count 256", {"word_count": 256}, set()),
    ("word_count 257", {"word_count": 257}, {"word_count"}),
    ("word_count NULL", {"word_count": None}, {"word_count"}),
    ("text NULL", {"text": None}, {"text_repeats"}),
    ("fails all", {"width": 10, "height": 100, "nsfw_score_gantman": 0.9, "text_length": 2,
                   "word_count": 1, "text": "repeated eleven times"}, set(RULES)),
]  # fmt: skip
REPEATS = {"repeated ten times": 10, "repeated eleven times": 11}


def crafted_rows(base: dict) -> tuple[list[dict], dict[int, tuple[str, set[str]]]]:
    """The boundary cases plus texts repeated 10 and 11 times, and what each must fail."""
    rows, expected = [], {}
    for number, (name, overrides, fails) in enumerate(CASES):
        row = {**base, "id": 10_000 + number, "text": f"crafted caption number {number}"}
        row.update(overrides)
        rows.append(row)
        expected[row["id"]] = (name, fails)
    for text, times in REPEATS.items():
        for copy in range(times - (text == "repeated eleven times")):  # "fails all" has one
            row = {**base, "id": 20_000 + 100 * times + copy, "text": text}
            rows.append(row)
            expected[row["id"]] = (f"{text} #{copy}", set() if times <= 10 else {"text_repeats"})
    return rows, expected


def random_rows(n: int, seed: int = 7) -> pa.Table:
    """Rows whose values crowd every boundary, with NULLs, NaNs and texts repeated ~10 times."""
    rng = np.random.default_rng(seed)

    def ints(values: np.ndarray, null_share: float = 0.03) -> pa.Array:
        return pa.array(values.astype(np.int32), mask=rng.random(n) < null_share)

    def near(points: list[int], spread: int) -> np.ndarray:
        return rng.choice(points, n) + rng.integers(-spread, spread + 1, n)

    width = near([0, 200, 600], 3) + rng.integers(0, 2, n) * rng.integers(0, 900, n)
    height = np.where(rng.random(n) < 0.5, width // 3 + rng.integers(-2, 3, n), near([200], 5))
    scores = rng.choice([0.0, 0.25, 0.5, ABOVE_HALF, 0.75, math.nan], (2, n))
    pool = [f"caption {k}" for k in range(n // 9)]  # about 9 rows per text: many near 10
    text = pa.array(rng.choice(pool, n), mask=rng.random(n) < 0.02)
    base = coyo_table(load_jsonl("coyo700m_rows.jsonl")[:1]).to_pylist()[0]
    columns = {name: pa.array([base[name]] * n, schemas.PAIRS.field(name).type) for name in base}
    columns.update(
        id=pa.array(np.arange(n, dtype=np.int64) * 13 + 1_000_000),
        text=text,
        width=ints(width),
        height=ints(height),
        text_length=ints(near([6, 1000], 2)),
        word_count=ints(near([3, 256], 2)),
        nsfw_score_opennsfw2=pa.array(scores[0], pa.float32(), mask=rng.random(n) < 0.03),
        nsfw_score_gantman=pa.array(scores[1], pa.float32(), mask=rng.random(n) < 0.03),
    )
    return pa.table(columns, schema=schemas.PAIRS)


def expected_rules(df: pl.DataFrame) -> pl.DataFrame:
    """The rules computed independently in Polars (ratio by float division, counts by join)."""
    w, h = pl.col("width").cast(pl.Float64), pl.col("height").cast(pl.Float64)
    both = pl.col("width").is_not_null() & pl.col("height").is_not_null()
    counts = df.filter(pl.col("text").is_not_null()).group_by("text").agg(pl.len().alias("n"))

    def score_ok(name: str) -> pl.Expr:
        return pl.col(name).is_not_null() & ~pl.col(name).is_nan() & (pl.col(name) <= 0.5)

    return (
        df.join(counts, on="text", how="left")
        .with_columns(
            pass_min_side=both & (pl.min_horizontal(w, h) >= 200),
            pass_aspect_ratio=both
            & (pl.min_horizontal(w, h) > 0)
            & (pl.max_horizontal(w, h) / pl.min_horizontal(w, h) <= 3.0),
            pass_nsfw=score_ok("nsfw_score_opennsfw2") & score_ok("nsfw_score_gantman"),
            pass_text_length=pl.col("text_length").is_between(6, 1000),
            pass_word_count=pl.col("word_count").is_between(3, 256),
            pass_text_repeats=pl.col("text").is_not_null() & (pl.col("n") <= 10),
        )
        .with_columns(pl.col(PASS_COLUMNS).fill_null(False))
        .select("id", *PASS_COLUMNS)
        .sort("id")
    )


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, pl.DataFrame, dict]:
    """A catalog whose `pairs` holds the real rows, the crafted rows and 3,000 random rows."""
    real = load_jsonl("coyo700m_rows.jsonl")
    crafted, expected = crafted_rows(real[0])
    catalog = Catalog(tmp_path_factory.mktemp("filters") / "home", create=True)
    catalog.append("pairs", coyo_table(real + crafted))
    catalog.append("pairs", random_rows(3000))
    return catalog, pl.from_arrow(catalog.dataset("pairs").to_table()), expected


def test_real_rows_pass_every_rule(loaded: tuple) -> None:
    catalog, _, _ = loaded
    ids = [row["id"] for row in load_jsonl("coyo700m_rows.jsonl")]
    rules = catalog.pl(f"SELECT * FROM pairs_rules WHERE id IN ({', '.join(map(str, ids))})")
    assert rules.height == len(ids)
    assert rules.select(pl.all_horizontal(PASS_COLUMNS).all()).item()


def test_boundaries_and_nulls_give_the_written_verdicts(loaded: tuple) -> None:
    catalog, _, expected = loaded
    listed = ", ".join(str(i) for i in expected)
    rules = catalog.sql(f"SELECT * FROM pairs_rules WHERE id IN ({listed})").to_pylist()
    assert len(rules) == len(expected)
    for row in rules:
        name, fails = expected[row["id"]]
        failed = {rule for rule in RULES if not row[f"pass_{rule}"]}
        assert failed == fails, name
        assert None not in row.values(), f"{name}: a rule is NULL"


def test_rules_match_polars(loaded: tuple) -> None:
    catalog, df, _ = loaded
    got = catalog.pl("SELECT * FROM pairs_rules ORDER BY id")
    want = expected_rules(df)
    assert got.schema == want.schema
    assert got.equals(want)
    # the random rows exercise every rule both ways
    for column in PASS_COLUMNS:
        assert 0 < got[column].sum() < got.height, column


def test_repeated_texts_counts_the_whole_table(loaded: tuple) -> None:
    catalog, df, _ = loaded
    got = catalog.pl("SELECT text, occurrences FROM pairs_repeated_texts ORDER BY text")
    want = (
        df.filter(pl.col("text").is_not_null())
        .group_by("text")
        .agg(pl.len().cast(pl.Int64).alias("occurrences"))
        .filter(pl.col("occurrences") > 10)
        .sort("text")
    )
    assert got.equals(want)
    assert "repeated eleven times" in got["text"].to_list()
    assert "repeated ten times" not in got["text"].to_list()


def test_pairs_filtered_is_pairs_passing_every_rule(loaded: tuple) -> None:
    catalog, df, _ = loaded
    got = catalog.sql("SELECT * FROM pairs_filtered ORDER BY id")
    assert got.schema == schemas.PAIRS
    keep = expected_rules(df).filter(pl.all_horizontal(PASS_COLUMNS))["id"]
    want = df.filter(pl.col("id").is_in(keep.implode())).sort("id")
    assert pl.from_arrow(got).equals(want, null_equal=True)
    assert 0 < got.num_rows < df.height


def test_funnel_removes_each_row_at_its_first_failed_rule(loaded: tuple) -> None:
    catalog, df, _ = loaded
    steps = funnel(catalog)
    assert [s.rule for s in steps] == list(RULES)
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6]

    rules = expected_rules(df)
    alive = pl.repeat(True, rules.height, eager=True)
    for step, column in zip(steps, PASS_COLUMNS, strict=True):
        removed = alive & ~rules[column]
        alive = alive & rules[column]
        assert (step.removed, step.remaining) == (removed.sum(), alive.sum()), step.rule
        assert step.removed > 0, step.rule
        assert step.input_rows == df.height

    assert df.height == sum(s.removed for s in steps) + steps[-1].remaining
    filtered = catalog.sql("SELECT count(*) AS n FROM pairs_filtered").column("n")[0].as_py()
    assert steps[-1].remaining == filtered
    assert sum(s.removed_pct for s in steps) + steps[-1].remaining_pct == pytest.approx(100)


def test_funnel_sql_is_what_runs(loaded: tuple) -> None:
    catalog, _, _ = loaded
    rows = catalog.sql(funnel_sql()).to_pylist()
    assert [(r["rule"], r["removed"], r["remaining"]) for r in rows] == [
        (s.rule, s.removed, s.remaining) for s in funnel(catalog)
    ]


def test_funnel_table_shape(loaded: tuple) -> None:
    catalog, df, _ = loaded
    table = funnel_table(funnel(catalog))
    assert table.column_names == [
        "step", "rule", "removed", "removed_pct", "remaining", "description"
    ]  # fmt: skip
    removed = table.column("removed").to_pylist()
    pct = table.column("removed_pct").to_pylist()
    assert pct == [round(100 * r / df.height, 3) for r in removed]


def test_funnel_of_an_empty_table(catalog: Catalog) -> None:
    catalog.ensure_table("pairs", schemas.PAIRS)
    steps = funnel(catalog)
    assert [(s.removed, s.remaining, s.removed_pct) for s in steps] == [(0, 0, 0.0)] * 6


def test_funnel_without_pairs_is_a_catalog_error(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="no table 'pairs'"):
        funnel(catalog)


# ---- the command ------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_funnel_table(loaded: tuple) -> None:
    catalog, df, _ = loaded
    result = runner.invoke(app, ["funnel", "--home", str(catalog.home)])
    assert result.exit_code == 0, result.output
    for rule in RULES:
        assert rule in result.stdout
    last = funnel(catalog)[-1]
    assert f"{last.remaining:,}" in result.stdout or str(last.remaining) in result.stdout
    assert f"input {df.height:,} rows" in result.stderr


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_cli_funnel_csv_and_json(loaded: tuple, fmt: str) -> None:
    catalog, _, _ = loaded
    result = runner.invoke(app, ["funnel", "--home", str(catalog.home), "--format", fmt])
    assert result.exit_code == 0, result.output
    if fmt == "json":
        rows = [json.loads(line) for line in result.stdout.splitlines()]
    else:
        rows = pl.read_csv(result.stdout.encode()).to_dicts()
    steps = funnel(catalog)
    assert [(r["rule"], r["removed"], r["remaining"]) for r in rows] == [
        (s.rule, s.removed, s.remaining) for s in steps
    ]


def test_cli_funnel_to_a_file(loaded: tuple, tmp_path) -> None:
    catalog, _, _ = loaded
    out = tmp_path / "funnel.csv"
    result = runner.invoke(
        app, ["funnel", "--home", str(catalog.home), "-f", "csv", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert pl.read_csv(out)["rule"].to_list() == list(RULES)


def test_cli_funnel_sql_shows_views_and_query(catalog: Catalog) -> None:
    result = runner.invoke(app, ["funnel", "--home", str(catalog.home), "--sql"])
    assert result.exit_code == 0, result.output
    assert "CREATE OR REPLACE TEMP VIEW filter_funnel" in result.stdout
    assert funnel_sql() in result.stdout


def test_cli_funnel_errors(catalog: Catalog) -> None:
    result = runner.invoke(app, ["funnel", "--home", str(catalog.home)])
    assert isinstance(result.exception, CatalogError)
    result = runner.invoke(app, ["funnel", "--home", str(catalog.home), "-f", "parquet"])
    assert result.exception is not None and "unknown format" in str(result.exception)
