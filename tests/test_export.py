"""`coyo-db export`: rows equal the query, default exclusions, the three formats, the CLI."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from coyo_db.catalog import schemas
from coyo_db.cli.app import app
from coyo_db.errors import InputError, QueryError
from coyo_db.export.plan import selection_sql
from coyo_db.export.subset import EmptyExportError, export
from coyo_db.synth.metadata import synth_table

WHERE = "clip_similarity_vitb32 >= 0.3"


def add_pairs(catalog, rows: int = 4000, seed: int = 0) -> pa.Table:
    table = synth_table(rows, seed=seed)
    catalog.ensure_table("pairs", schemas.PAIRS)
    catalog.append("pairs", table)
    return table


def add_dup_groups(catalog, ids: np.ndarray) -> set[int]:
    """Groups of two (keeper, non-keeper) over consecutive `ids`; the non-keepers."""
    from coyo_db.catalog.tables import DUP_GROUPS

    ids = np.asarray(ids[: len(ids) // 2 * 2], dtype=np.int64)
    keeper = np.tile([True, False], len(ids) // 2)
    group = np.repeat(ids[0::2], 2)
    table = pa.table(
        {
            "method": pa.array(["test"] * len(ids)),
            "group_id": group,
            "id": ids,
            "keeper": keeper,
            "distance": np.zeros(len(ids), np.int32),
            "group_size": np.full(len(ids), 2, np.int32),
            "keep_rule": pa.array(["lowest-id"] * len(ids)),
        },
        schema=DUP_GROUPS.schema,
    )
    catalog.ensure(DUP_GROUPS)
    catalog.append("dup_groups", table)
    return set(ids[~keeper].tolist())


def add_contamination(catalog, ids) -> set[int]:
    """Hits in the audit's `contamination` table (the other evidence columns left null)."""
    from coyo_db.catalog import tables

    CONTAMINATION, CONTAMINATION_SCHEMA = tables.CONTAMINATION.name, tables.CONTAMINATION.schema

    rows = [
        {
            "id": int(i),
            "refset": "imagenet-val",
            "ref_id": n,
            "ref_path": f"val/{n}.jpg",
            "method": "phash_exact",
            "score": 1.0,
        }
        for n, i in enumerate(ids)
    ]
    table = pa.Table.from_pylist(rows, schema=CONTAMINATION_SCHEMA)
    catalog.ensure_table(CONTAMINATION, CONTAMINATION_SCHEMA)
    catalog.append(CONTAMINATION, table)
    return set(int(i) for i in ids)


def expected_ids(pairs: pa.Table, where: str, drop: set[int] = frozenset()) -> list[int]:
    """The rows an export must hold, computed with Polars apart from the catalog."""
    frame = pl.from_arrow(pairs)
    selected = frame.sql(f"SELECT id FROM self WHERE {where}")["id"].to_list()
    return [i for i in selected if i not in drop]


def read_ids(folder) -> list[int]:
    files = sorted(folder.glob("part-*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files)["id"].to_pylist()


def test_parquet_export_holds_exactly_the_rows_of_the_query_in_shards(catalog, tmp_path):
    pairs = add_pairs(catalog)
    result = export(catalog, tmp_path / "out", where=WHERE, columns=["width"], rows_per_file=500)
    want = expected_ids(pairs, WHERE)
    assert read_ids(tmp_path / "out") == want  # same rows, in the selection's (scan) order
    files = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert [f.name for f in files][:2] == ["part-00000.parquet", "part-00001.parquet"]
    assert len(files) == -(-len(want) // 500)
    assert [pq.read_metadata(f).num_rows for f in files[:-1]] == [500] * (len(files) - 1)
    assert pq.read_schema(files[0]).names == ["url", "text", "id", "width"]
    assert result.counts == {"selected": len(want), "excluded": 0, "exported": len(want)}
    # the folder reads as one dataset (the manifest's leading underscore keeps it out)
    assert pq.read_table(tmp_path / "out").num_rows == len(want)


def test_sql_file_selection_keeps_its_columns_and_order(catalog, tmp_path):
    pairs = add_pairs(catalog, 1000)
    sql = "SELECT id, url, text, width * height AS pixels FROM pairs WHERE width > 300\n"
    sql += "ORDER BY pixels DESC, id;  -- biggest first\n"
    export(catalog, tmp_path / "out", sql=sql)
    got = pq.read_table(tmp_path / "out")
    frame = pl.from_arrow(pairs).filter(pl.col("width") > 300)
    frame = frame.with_columns(pixels=pl.col("width").cast(pl.Int64) * pl.col("height"))
    want = frame.sort(["pixels", "id"], descending=[True, False])["id"].to_list()
    assert got.column_names == ["id", "url", "text", "pixels"]
    assert got["id"].to_pylist() == want


def test_duplicates_and_contaminated_ids_are_excluded_and_counted(catalog, tmp_path):
    pairs = add_pairs(catalog)
    selected = expected_ids(pairs, WHERE)
    dups = add_dup_groups(catalog, np.array(selected[:400]))
    # contamination overlaps the duplicates (a row can be both) and reaches outside the query
    contaminated = add_contamination(catalog, [*selected[390:450], *selected[-5:], 10**12])
    result = export(catalog, tmp_path / "out", where=WHERE)
    want = expected_ids(pairs, WHERE, dups | contaminated)
    assert read_ids(tmp_path / "out") == want
    by_reason = {e["reason"]: e for e in result.manifest["exclusions"]}
    assert by_reason["duplicates"]["excluded"] == len(dups & set(selected)) == 200
    assert by_reason["contaminated"]["excluded"] == 65
    assert by_reason["duplicates"]["methods"] == {"test": 200}
    assert result.counts["excluded"] == len(selected) - len(want)
    assert "200 excluded as duplicates" in result.line()
    assert "65 excluded as contaminated" in result.line()

    kept = export(
        catalog, tmp_path / "kept", where=WHERE, keep_duplicates=True, keep_contaminated=True
    )
    assert read_ids(tmp_path / "kept") == selected
    assert {e["reason"]: e["kept"] for e in kept.manifest["exclusions"]} == {
        "duplicates": 200,
        "contaminated": 65,
    }
    only_dups = export(catalog, tmp_path / "d", where=WHERE, keep_contaminated=True)
    assert read_ids(tmp_path / "d") == expected_ids(pairs, WHERE, dups)
    assert "NOT IN (SELECT id FROM export_duplicate_ids)" in only_dups.manifest["sql"]
    assert "export_contaminated_ids" not in only_dups.manifest["sql"]


def test_without_exclusion_tables_nothing_is_excluded_and_the_manifest_says_so(catalog, tmp_path):
    add_pairs(catalog, 500)
    result = export(catalog, tmp_path / "out", where="true")
    assert result.counts["excluded"] == 0 and result.rows == 500
    for entry in result.manifest["exclusions"]:
        assert entry["present"] is False and entry["applied"] is False
        assert entry["excluded"] == 0 and "nothing excluded" in entry["note"]
    assert "no dup_groups table" in result.line() and "no contamination table" in result.line()


def test_an_empty_result_is_refused_unless_allowed_then_writes_the_schema(catalog, tmp_path):
    add_pairs(catalog, 200)
    with pytest.raises(EmptyExportError, match=r"0 rows \(0 selected\); nothing written"):
        export(catalog, tmp_path / "out", where="false")
    assert not (tmp_path / "out").exists()
    result = export(catalog, tmp_path / "out", where="false", allow_empty=True)
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert table.num_rows == 0 and table.column_names == ["url", "text", "id"]
    assert result.rows == 0


def test_target_is_refused_unless_overwrite_and_failures_leave_nothing_behind(catalog, tmp_path):
    add_pairs(catalog, 300)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="non-empty"):
        export(catalog, target, where="true")
    assert (target / "keep.txt").read_text() == "mine"
    with pytest.raises(InputError, match="only replaces a previous export"):
        export(catalog, target, where="true", overwrite=True)  # not an export: kept
    assert (target / "keep.txt").read_text() == "mine"
    (target / "keep.txt").unlink()
    export(catalog, target, where="true")
    export(catalog, target, where="id % 2 = 0", overwrite=True)  # a previous export: replaced
    assert read_ids(target) and all(i % 2 == 0 for i in read_ids(target))
    with pytest.raises(QueryError):
        export(catalog, tmp_path / "bad", where="no_such_column > 1")
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    empty = tmp_path / "empty"
    empty.mkdir()
    export(catalog, empty, where="true")  # an empty folder is fine
    assert read_ids(empty)


def test_bad_selections_are_user_errors(catalog, tmp_path):
    add_pairs(catalog, 100)
    with pytest.raises(InputError, match="not both"):
        selection_sql(where="true", sql="SELECT 1")
    with pytest.raises(InputError, match="exactly one SELECT"):
        selection_sql(sql="SELECT 1; SELECT 2")
    with pytest.raises(InputError, match="exactly one SELECT"):
        selection_sql(sql="DELETE FROM pairs")
    with pytest.raises(InputError, match="needs an id column"):
        export(catalog, tmp_path / "x", sql="SELECT url FROM pairs")
    with pytest.raises(InputError, match="must be an integer"):
        export(catalog, tmp_path / "x", sql="SELECT url AS id FROM pairs")
    with pytest.raises(InputError, match="NULL id"):
        export(
            catalog, tmp_path / "x", sql="SELECT CASE WHEN id % 2 = 0 THEN id END AS id FROM pairs"
        )
    assert not (tmp_path / "x").exists()
    with pytest.raises(InputError, match="unknown export format"):
        export(catalog, tmp_path / "x", where="true", fmt="csv")


def test_lance_export_reads_back_as_a_lance_dataset(catalog, tmp_path):
    import lance

    pairs = add_pairs(catalog, 1500)
    dups = add_dup_groups(catalog, pairs["id"].to_numpy()[:100])
    export(catalog, tmp_path / "subset.lance", where=WHERE, fmt="lance")
    dataset = lance.dataset(str(tmp_path / "subset.lance"))
    assert dataset.to_table(columns=["id"])["id"].to_pylist() == expected_ids(pairs, WHERE, dups)
    assert (tmp_path / "subset.lance" / "_manifest.json").is_file()


def test_cli_export_reports_counts_and_refuses_a_full_target(catalog, tmp_path):
    pairs = add_pairs(catalog, 800)
    add_dup_groups(catalog, pairs["id"].to_numpy()[:40])
    runner = CliRunner()
    home = ["--home", str(catalog.home)]
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", *home, "--where", "true", "--to", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 780 rows" in result.output and "20 excluded as duplicates" in result.output
    again = runner.invoke(app, ["export", *home, "--where", "true", "--to", str(out)])
    assert again.exit_code != 0 and "non-empty" in str(again.exception or again.output)
    sql_file = tmp_path / "q.sql"
    sql_file.write_text("SELECT id, url, text FROM pairs WHERE id % 3 = 0")
    result = runner.invoke(
        app,
        [
            "export",
            *home,
            "--sql-file",
            str(sql_file),
            "--to",
            str(tmp_path / "q"),
            "--keep-duplicates",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "q" / "_manifest.json").read_text())
    assert manifest["counts"]["exported"] == sum(1 for i in pairs["id"].to_pylist() if i % 3 == 0)


# --- webdataset ------------------------------------------------------------------------------


@pytest.fixture
def image_catalog(catalog, tmp_path):
    """Pairs plus 16 ingested images (pHash only) for the first 16 ids; the shards' bytes."""
    from coyo_db.ingest.images import ingest_images
    from coyo_db.synth.images import write_image_shards

    pairs = add_pairs(catalog, 400)
    first = pairs.slice(0, 16)
    shards, _ = write_image_shards(
        tmp_path / "images",
        first["id"].to_pylist(),
        captions=first["text"].to_pylist(),
        urls=first["url"].to_pylist(),
        per_shard=8,
        seed=2,
    )
    ingest_images(catalog, shards, workers=0)
    return catalog, pairs


def test_webdataset_export_reads_back_with_the_webdataset_package(image_catalog, tmp_path):
    import webdataset as wds

    from coyo_db.ingest.image_fetch import fetch_images

    catalog, pairs = image_catalog
    ids = pairs["id"].to_pylist()
    dups = add_dup_groups(catalog, np.array(ids[:4]))  # drops ids[1] and ids[3]
    wanted = [i for i in ids[:20] if i not in dups]  # 4 of them have no image
    sql = f"SELECT url, text, id, width FROM pairs WHERE id IN ({', '.join(map(str, ids[:20]))})"
    result = export(catalog, tmp_path / "wds", sql=sql, fmt="webdataset", samples_per_file=5)
    assert result.counts["exported"] == 14
    assert result.counts["missing_images"] == 4
    assert result.manifest["missing_image_reasons"] == {"no row in the images table": 4}
    tars = sorted((tmp_path / "wds").glob("*.tar"))
    assert [t.name for t in tars] == ["00000.tar", "00001.tar", "00002.tar"]

    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False))
    assert len(samples) == 14
    images = catalog.sql("SELECT id, shard, member FROM images").to_pylist()
    original = {
        row["id"]: image.data
        for row, image in zip(
            images, fetch_images((r["shard"], r["member"]) for r in images), strict=True
        )
    }
    by_id = {row["id"]: row for row in pairs.to_pylist()}
    seen = []
    for sample in samples:
        meta = json.loads(sample["json"])
        assert sample["__key__"] == meta["key"]
        assert sample["jpg"] == original[meta["id"]]
        assert sample["txt"].decode() == by_id[meta["id"]]["text"]
        assert meta["url"] == by_id[meta["id"]]["url"]
        assert meta["width"] == by_id[meta["id"]]["width"]
        seen.append(meta["id"])
    assert sorted(seen) == sorted(i for i in wanted if i in original)

    decoded = next(iter(wds.WebDataset(str(tars[0]), shardshuffle=False).decode("pil")))
    assert decoded["jpg"].size[0] > 0


def test_webdataset_export_needs_images(catalog, tmp_path):
    add_pairs(catalog, 50)
    with pytest.raises(InputError, match="no images table"):
        export(catalog, tmp_path / "wds", where="true", fmt="webdataset")


def test_a_selection_that_changes_between_runs_is_refused(catalog, tmp_path):
    pairs = add_pairs(catalog, 2000)
    add_dup_groups(catalog, pairs["id"].to_numpy()[:1000])
    sql = "SELECT url, text, id FROM pairs ORDER BY random() LIMIT 500"
    with pytest.raises(InputError, match="deterministic selection"):
        export(catalog, tmp_path / "out", sql=sql)
    assert not (tmp_path / "out").exists()
    sample = "SELECT url, text, id FROM pairs ORDER BY hash(id) LIMIT 500"
    first = export(catalog, tmp_path / "a", sql=sample)
    assert first.counts["selected"] == 500 and first.counts["excluded"] > 0
