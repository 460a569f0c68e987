"""Export manifests: what they record, and replays that give the same ids at the same versions."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_export import WHERE, add_contamination, add_dup_groups, add_pairs, read_ids
from typer.testing import CliRunner

import coyo_db
from coyo_db.catalog import schemas
from coyo_db.cli.app import app
from coyo_db.errors import CatalogError, InputError
from coyo_db.export.manifest import MANIFEST_NAME, read_manifest
from coyo_db.export.replay import replay_export
from coyo_db.export.subset import export
from coyo_db.export.writers import IdTally
from coyo_db.synth.metadata import synth_table


def test_the_manifest_records_sql_versions_exclusions_counts_and_files(catalog, tmp_path):
    pairs = add_pairs(catalog, 3000)
    add_dup_groups(catalog, pairs["id"].to_numpy()[:100])
    versions = catalog.versions()
    result = export(catalog, tmp_path / "out", where=WHERE, rows_per_file=400)
    manifest = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert manifest == result.manifest
    assert manifest["tool_version"] == coyo_db.__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["created_at"])
    assert manifest["table_versions"] == versions
    assert manifest["selection"]["where"] == WHERE
    assert WHERE in manifest["selection"]["sql"] and WHERE in manifest["sql"]
    dup = manifest["exclusions"][0]
    assert dup["reason"] == "duplicates" and dup["table_version"] == versions["dup_groups"]
    files = manifest["files"]
    assert sum(f["rows"] for f in files) == manifest["counts"]["exported"] == result.rows
    for entry in files:
        path = tmp_path / "out" / entry["path"]
        assert pq.read_metadata(path).num_rows == entry["rows"]
        assert path.stat().st_size == entry["bytes"]
    tally = IdTally()
    tally.update(np.asarray(read_ids(tmp_path / "out")))
    assert manifest["ids"] == tally.as_dict()
    # the SQL as run, run by hand, gives the same rows
    by_hand = catalog.sql(manifest["sql"])["id"].to_pylist()
    assert sorted(by_hand) == sorted(read_ids(tmp_path / "out"))


def test_id_tally_set_hash_ignores_order_and_sha256_does_not():
    a, b = IdTally(), IdTally()
    a.update(np.array([5, 1, 9, 1]))
    b.update(np.array([1, 9]))
    b.update(np.array([1, 5]))
    assert a.as_dict()["set_hash"] == b.as_dict()["set_hash"]
    assert a.as_dict()["sha256"] != b.as_dict()["sha256"]
    c = IdTally()
    c.update(np.array([5, 1, 9, 2]))
    assert c.as_dict()["set_hash"] != a.as_dict()["set_hash"]


def test_replay_gets_the_same_ids_after_the_catalog_changed(catalog, tmp_path):
    pairs = add_pairs(catalog, 3000)
    add_dup_groups(catalog, pairs["id"].to_numpy()[:200])
    first = export(catalog, tmp_path / "out", where=WHERE)

    # the catalog moves on: more rows that match, new duplicates, a contamination table
    more = synth_table(1000, seed=7)
    more = more.set_column(0, "id", pa.array(more["id"].to_numpy() + 10**9))
    catalog.append("pairs", more.cast(schemas.PAIRS))
    add_dup_groups(catalog, pairs["id"].to_numpy()[1000:1400])
    add_contamination(catalog, pairs["id"].to_numpy()[2000:2100])
    fresh = export(catalog, tmp_path / "fresh", where=WHERE)
    assert fresh.manifest["ids"]["set_hash"] != first.manifest["ids"]["set_hash"]

    check = replay_export(catalog, tmp_path / "out")
    assert check.same_ids and check.same_order and check.export is None
    again = replay_export(catalog, tmp_path / "out" / MANIFEST_NAME, tmp_path / "again")
    assert again.same_ids and again.same_order
    assert read_ids(tmp_path / "again") == read_ids(tmp_path / "out")
    assert again.export.manifest["table_versions"] == first.manifest["table_versions"]
    assert again.export.manifest["selection"]["replay_of"].endswith(MANIFEST_NAME)
    # a replay may change the format and still give the same ids
    as_lance = replay_export(catalog, tmp_path / "out", tmp_path / "a.lance", fmt="lance")
    assert as_lance.same_ids


def test_replay_reports_different_ids_and_the_cli_fails(catalog, tmp_path):
    add_pairs(catalog, 500)
    export(catalog, tmp_path / "out", where=WHERE)
    path = tmp_path / "out" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["query_ids"]["set_hash"] = "0" * 16
    path.write_text(json.dumps(manifest))
    result = replay_export(catalog, path)
    assert not result.same_ids and "DIFFERENT" in result.line()
    cli = CliRunner().invoke(app, ["export", "--home", str(catalog.home), "--manifest", str(path)])
    assert cli.exit_code == 1 and "DIFFERENT" in cli.output


def test_cli_replay_writes_an_export_again(catalog, tmp_path):
    add_pairs(catalog, 500)
    export(catalog, tmp_path / "out.lance", where=WHERE, fmt="lance")
    runner = CliRunner()
    home = ["--home", str(catalog.home)]
    args = ["export", *home, "--manifest", str(tmp_path / "out.lance")]
    args += ["--to", str(tmp_path / "b.lance")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "the same" in result.output and "(same order)" in result.output
    assert read_manifest(tmp_path / "b.lance")["format"] == "lance"
    mixed = runner.invoke(app, [*args[:-2], "--where", "true"])
    assert mixed.exit_code != 0


def test_replay_reads_a_manifest_that_called_output_files_shards(catalog, tmp_path):
    add_pairs(catalog, 900)
    export(catalog, tmp_path / "out", where=WHERE, rows_per_file=200)
    file = tmp_path / "out" / MANIFEST_NAME
    old = json.loads(file.read_text())
    old["options"] = {"shard_rows": 300, "samples_per_shard": 7}
    old["selection"]["source"] = old["selection"].pop("table")
    file.write_text(json.dumps(old))
    replay = replay_export(catalog, file, tmp_path / "again")
    assert replay.same_ids
    again = read_manifest(tmp_path / "again")
    assert again["options"] == {"rows_per_file": 300, "samples_per_file": 7}
    assert again["selection"]["table"] == "pairs" and "source" not in again["selection"]
    assert all(entry["rows"] <= 300 for entry in again["files"])


def test_replay_fails_clearly_when_a_version_is_gone_or_the_manifest_is_bad(catalog, tmp_path):
    add_pairs(catalog, 200)
    export(catalog, tmp_path / "out", where="true")
    path = tmp_path / "out" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["table_versions"]["pairs"] = 999
    path.write_text(json.dumps(manifest))
    with pytest.raises(CatalogError, match="no version 999"):
        replay_export(catalog, path)
    manifest["table_versions"] = {"nope": 1}
    path.write_text(json.dumps(manifest))
    with pytest.raises(CatalogError, match="no table 'nope'"):
        replay_export(catalog, path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a JSON manifest"):
        read_manifest(path)
    path.write_text(json.dumps({"format": "parquet"}))
    with pytest.raises(InputError, match="not an export manifest"):
        read_manifest(tmp_path / "out")
    with pytest.raises(InputError, match="no such manifest"):
        read_manifest(tmp_path / "missing.json")
