"""`coyo-db stats`: the card's statistics and histograms against Polars, PNGs, the command."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from coyo_db.catalog import Catalog, schemas
from coyo_db.cli.app import app
from coyo_db.errors import CatalogError, InputError, MissingExtraError
from coyo_db.stats import plots
from coyo_db.stats.card import Histogram, histograms, stats, stats_sql
from tests.conftest import coyo_table, load_jsonl

N_RANDOM = 4000
NUMERIC = [
    f.name
    for f in schemas.PAIRS
    if f.name != "id" and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
]


def random_pairs(n: int, seed: int = 3) -> pa.Table:
    """COYO-shaped rows with repeated urls/pHashes/texts, NULLs everywhere, NaNs and an inf."""
    rng = np.random.default_rng(seed)

    def mask(share: float = 0.05) -> np.ndarray:
        return rng.random(n) < share

    def pick(prefix: str, pool: int) -> pa.Array:
        return pa.array([f"{prefix}{k}" for k in rng.integers(0, pool, n)], mask=mask())

    columns: dict[str, pa.Array] = {
        "id": pa.array(np.arange(n, dtype=np.int64) * 31 + 7),
        "url": pick("https://img.example/", n // 2),
        "text": pick("a caption ", n // 3),
        "image_phash": pa.array([f"{k:016x}" for k in rng.integers(0, n // 4, n)], mask=mask()),
    }
    for field in schemas.PAIRS:
        if field.name in columns:
            continue
        if pa.types.is_integer(field.type):
            values = rng.integers(0, 2000, n)
        else:
            values = rng.normal(0.3, 0.1, n)
            values[rng.random(n) < 0.02] = math.nan
        columns[field.name] = pa.array(values, field.type, mask=mask())
    watermark = columns["watermark_score"]
    values = watermark.fill_null(0).to_numpy().copy()
    values[0] = math.inf  # left out of the histogram, kept by min/max
    nulls = watermark.is_null().to_numpy(zero_copy_only=False)
    nulls[0] = False
    columns["watermark_score"] = pa.array(values, pa.float32(), mask=nulls)
    return pa.table(columns, schema=schemas.PAIRS)


def labels_table(n: int = 300, seed: int = 5) -> pa.Table:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 51, n)
    labels = [rng.choice(21841, k, replace=False).tolist() for k in lengths]
    probs = [np.sort(rng.random(k))[::-1].astype(np.float32).tolist() for k in lengths]
    return pa.table(
        {
            "id": pa.array(rng.integers(0, n // 2, n), pa.int64()),
            "taxonomy": ["imagenet-21k"] * n,
            "model": ["coyo-labeled-300m"] * n,
            "labels": pa.array(labels, pa.list_(pa.int32())),
            "label_probs": pa.array(probs, pa.list_(pa.float32())),
        },
        schema=schemas.LABELS,
    )


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, pl.DataFrame]:
    catalog = Catalog(tmp_path_factory.mktemp("stats") / "home", create=True)
    catalog.append("pairs", coyo_table(load_jsonl("coyo700m_rows.jsonl")))
    catalog.append("pairs", random_pairs(N_RANDOM))
    catalog.append("labels", labels_table())
    return catalog, pl.from_arrow(catalog.dataset("pairs").to_table())


def finite_values(series: pl.Series) -> pl.Series:
    series = series.drop_nulls()
    return series.filter(series.is_finite()) if series.dtype.is_float() else series


def test_pairs_stats_match_polars(loaded: tuple) -> None:
    catalog, df = loaded
    result = stats(catalog)["pairs"]
    assert result.rows == df.height == 11 + N_RANDOM
    for name in ("url", "image_phash", "text"):
        count = result.distinct_of(name)
        assert count.distinct == df[name].drop_nulls().n_unique(), name
        assert count.ratio == count.distinct / df.height
        assert not count.approximate
    assert [c.column for c in result.columns] == NUMERIC
    for column in result.columns:
        series = df[column.column]
        floating = series.dtype.is_float()
        values = (
            series.drop_nulls().filter(~series.drop_nulls().is_nan())
            if floating
            else (series.drop_nulls())
        )
        assert column.nulls == series.null_count(), column.column
        assert column.nans == (series.is_nan().sum() if floating else 0), column.column
        assert column.count == values.len() == df.height - column.nulls - column.nans
        assert column.min == values.min(), column.column
        assert column.max == values.max(), column.column
        assert column.mean == pytest.approx(values.mean(), rel=1e-9), column.column
        if math.isfinite(column.max):  # t-digest: a p50 between the 45th and 55th percentile
            low, high = values.quantile(0.45), values.quantile(0.55)
            assert low <= column.p50 <= high, column.column
    assert result.column("watermark_score").max == math.inf


def test_approx_distinct_is_close(loaded: tuple) -> None:
    catalog, df = loaded
    result = stats(catalog, approx=True)["pairs"]
    for count in result.distinct:
        exact = df[count.column].drop_nulls().n_unique()
        assert count.approximate
        assert count.distinct == pytest.approx(exact, rel=0.1)


def test_labels_stats_match_polars(loaded: tuple) -> None:
    catalog, _ = loaded
    labels = pl.from_arrow(labels_table())
    result = stats(catalog)["labels"]
    assert result.rows == labels.height
    assert result.distinct_of("id").distinct == labels["id"].n_unique()
    top1 = labels["labels"].list.first().drop_nulls()
    assert result.distinct_of("top1_label").distinct == top1.n_unique()
    per_row = result.column("labels_per_row")
    lengths = labels["labels"].list.len()
    assert (per_row.min, per_row.max) == (lengths.min(), lengths.max())
    assert per_row.mean == pytest.approx(lengths.mean())
    prob = result.column("top1_prob")
    first = labels["label_probs"].list.first()
    assert prob.nulls == first.null_count() > 0  # empty lists have no top-1
    assert (prob.min, prob.max) == (first.min(), first.max())


def test_labels_alone_and_nothing(tmp_path) -> None:
    catalog = Catalog(tmp_path / "home", create=True)
    with pytest.raises(CatalogError, match="neither 'pairs' nor 'labels'"):
        stats(catalog)
    catalog.append("labels", labels_table(20))
    result = stats(catalog)
    assert "labels" in result and "pairs" not in result


def test_empty_pairs(tmp_path) -> None:
    catalog = Catalog(tmp_path / "home", create=True)
    catalog.ensure_table("pairs", schemas.PAIRS)
    result = stats(catalog)["pairs"]
    assert result.rows == 0
    assert all(c.distinct == 0 and c.ratio == 0.0 for c in result.distinct)
    assert all(c.count == 0 and c.mean is None for c in result.columns)
    assert histograms(catalog)["watermark_score"] == Histogram("watermark_score", (), (), 0)


def test_stats_sql_is_what_runs(loaded: tuple) -> None:
    catalog, _ = loaded
    statements = stats_sql(catalog)
    assert set(statements) == {"pairs", "labels"}
    assert 'count(DISTINCT "url")' in statements["pairs"][1]
    assert "approx_count_distinct" in stats_sql(catalog, approx=True)["pairs"][1]
    with catalog.connection() as con:
        (url_distinct,) = con.execute(statements["pairs"][1]).fetchone()
    assert url_distinct == stats(catalog)["pairs"].distinct_of("url").distinct


def test_to_dict_is_json(loaded: tuple) -> None:
    catalog, _ = loaded
    data = json.loads(json.dumps(stats(catalog).to_dict(), allow_nan=False))
    assert data["pairs"]["rows"] == 11 + N_RANDOM
    assert data["pairs"]["columns"][0]["column"] == "width"


# ---- histograms -------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [1, 7, 50])
def test_histograms_match_numpy(loaded: tuple, bins: int) -> None:
    catalog, df = loaded
    result = histograms(catalog, bins=bins)
    assert list(result) == list(schemas.SCORE_COLUMNS)
    for name, histogram in result.items():
        values = finite_values(df[name]).cast(pl.Float64).to_numpy()
        lo, hi = values.min(), values.max()
        width = (hi - lo) / bins
        index = np.minimum(np.floor((values - lo) / width), bins - 1).astype(int)
        assert histogram.counts == tuple(np.bincount(index, minlength=bins)), name
        assert histogram.edges[0] == lo and histogram.edges[-1] == hi
        assert len(histogram.edges) == bins + 1
        assert histogram.total + histogram.nulls == df.height
    watermark = df["watermark_score"]
    left_out = watermark.null_count() + watermark.is_nan().sum() + 1  # NULLs, NaNs, the inf
    assert result["watermark_score"].nulls == left_out


def test_histogram_edge_cases(tmp_path) -> None:
    catalog = Catalog(tmp_path / "home", create=True)
    rows = load_jsonl("coyo700m_rows.jsonl")[:3]
    for row in rows:
        row.update(watermark_score=0.25, aesthetic_score_laion_v2=None)
    catalog.append("pairs", coyo_table(rows))
    result = histograms(catalog, ["watermark_score", "aesthetic_score_laion_v2", "width", "nope"])
    assert list(result) == ["watermark_score", "aesthetic_score_laion_v2", "width"]
    assert result["watermark_score"] == Histogram("watermark_score", (-0.25, 0.75), (3,), 0)
    assert result["aesthetic_score_laion_v2"].counts == ()
    assert result["aesthetic_score_laion_v2"].nulls == 3
    assert result["width"].total == 3
    with pytest.raises(InputError, match="not numeric"):
        histograms(catalog, ["text"])
    with pytest.raises(InputError, match="at least 1"):
        histograms(catalog, bins=0)
    with pytest.raises(CatalogError):
        histograms(catalog, table="labels")


def test_plots_are_pngs(loaded: tuple, tmp_path) -> None:
    catalog, _ = loaded
    out = tmp_path / "plots" / "nested"
    written = plots.write_histograms(histograms(catalog).values(), out)
    assert [p.name for p in written] == [f"{c}.png" for c in schemas.SCORE_COLUMNS]
    for path in written:
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG"
            assert image.size == (640, 400)
            # a drawn histogram, not a blank canvas
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 10
    empty = plots.plot_histogram(Histogram("x", (), (), 5), tmp_path / "empty.png")
    with Image.open(empty) as image:
        assert image.size == (640, 400)


def test_plots_refuse_a_file_as_folder(tmp_path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        plots.write_histograms([], target)


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'coyo-db\[plots\]'"):
        plots.write_histograms([], tmp_path / "plots")
    assert not (tmp_path / "plots").exists()


# ---- the command ------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_stats_table(loaded: tuple) -> None:
    catalog, df = loaded
    result = runner.invoke(app, ["stats", "--home", str(catalog.home)])
    assert result.exit_code == 0, result.output
    assert f"pairs: {df.height:,} rows" in result.stdout
    url = df["url"].drop_nulls().n_unique()
    assert f"distinct url: {url:,} ({url / df.height:.1%})" in result.stdout
    assert "aesthetic_score_laion_v2" in result.stdout
    assert "labels: 300 rows" in result.stdout


def test_cli_stats_json_and_plots(loaded: tuple, tmp_path) -> None:
    catalog, _ = loaded
    out = tmp_path / "plots"
    args = ["stats", "--home", str(catalog.home), "-f", "json", "--plots", str(out), "--bins", "9"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    got, want = json.loads(result.stdout), stats(catalog).to_dict()
    assert set(got) == {"pairs", "labels"}
    for table in got:  # means and p50 may differ in the last bits between parallel runs
        assert got[table]["distinct"] == want[table]["distinct"]
        for mine, theirs in zip(got[table]["columns"], want[table]["columns"], strict=True):
            assert mine.keys() == theirs.keys()
            for key, value in theirs.items():
                if isinstance(value, float):
                    assert mine[key] == pytest.approx(value, rel=1e-3), (mine["column"], key)
                else:
                    assert mine[key] == value, (mine["column"], key)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{c}.png" for c in schemas.SCORE_COLUMNS
    )
    assert "wrote 6 histogram(s)" in result.stderr


def test_cli_stats_sql_and_errors(loaded: tuple, tmp_path, monkeypatch) -> None:
    catalog, _ = loaded
    result = runner.invoke(app, ["stats", "--home", str(catalog.home), "--sql"])
    assert result.exit_code == 0, result.output
    assert 'count(DISTINCT "image_phash")' in result.stdout
    result = runner.invoke(app, ["stats", "--home", str(catalog.home), "-f", "csv"])
    assert isinstance(result.exception, InputError)
    result = runner.invoke(app, ["stats", "--home", str(tmp_path / "none")])
    assert isinstance(result.exception, CatalogError)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = runner.invoke(app, ["stats", "--home", str(catalog.home), "--plots", str(tmp_path)])
    assert isinstance(result.exception, MissingExtraError)


def test_report_commands_import_nothing_heavy() -> None:
    code = (
        "import sys, coyo_db.cli.report_cmds; "
        "print([m for m in ('duckdb', 'polars', 'matplotlib', 'lance') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
