"""`coyo-db demo` runs the pipeline end to end and its figures agree with the catalog."""

from __future__ import annotations

import pyarrow.parquet as pq
from typer.testing import CliRunner

from coyo_db.catalog import Catalog
from coyo_db.cli.app import app
from coyo_db.demo import SUBSET_SQL, run_demo


def test_demo_builds_a_catalog_whose_numbers_add_up(tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "home", rows=3_000, images=24, seed=7, emit=lines.append)
    catalog = Catalog(result.home)

    assert result.rows_ingested == 3_000
    assert result.rows_quarantined == 4
    reasons = catalog.sql(
        "SELECT reason FROM quarantine WHERE table_name = 'pairs' ORDER BY reason"
    )["reason"].to_pylist()
    assert len(reasons) == 4 and any("null id" in r for r in reasons)
    counts = catalog.sql("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM pairs").to_pylist()
    assert counts == [{"n": 3_000, "ids": 3_000}], "the second ingest must add nothing"

    survivors = catalog.sql("SELECT count(*) AS n FROM pairs_filtered")["n"][0].as_py()
    assert result.survivors == survivors
    subset = pq.read_table(result.subset_path)
    assert subset.num_rows == result.subset_rows == catalog.sql(SUBSET_SQL).num_rows
    assert subset.column_names[:3] == ["url", "text", "id"]

    unique = catalog.sql("SELECT count(*) AS n FROM pairs_unique")["n"][0].as_py()
    assert result.dedup_removed > 0 and unique == 3_000 - result.dedup_removed

    labeled = catalog.sql("SELECT count(*) AS n FROM labels")["n"][0].as_py()
    assert labeled == result.labels_ingested > 0
    text = "\n".join(lines)
    assert "Git LFS pointer" in text and "already ingested" in text

    images = result.images
    assert images.images == 24 and images.quarantined == 1
    stored = catalog.sql("SELECT count(*) AS n FROM images")["n"][0].as_py()
    assert stored == 24
    assert images.found_by_embedding <= images.copies and images.copies > 0


def test_demo_command(tmp_path):
    result = CliRunner().invoke(
        app, ["demo", "--rows", "1000", "--images", "0", "--home", str(tmp_path / "h")]
    )
    assert result.exit_code == 0, result.output
    assert "filter funnel" in result.stdout and "subset" in result.stdout
