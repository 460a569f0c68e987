"""The job log: every command that changes the catalog leaves one `runs` row, written when it
starts (``running``) and completed when it ends (``ok``, ``failed``, ``interrupted``) with its
counts and the versions of the tables it wrote."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coyo_db.catalog import Catalog, tables
from coyo_db.catalog.runs import Run, read_runs, recorded_run
from coyo_db.errors import QueryError
from coyo_db.synth.metadata import synth_table

MODEL = "effnet-lite0"
DIM = 16


def runs(catalog: Catalog) -> list[dict]:
    return read_runs(catalog).to_pylist()


def last_run(catalog: Catalog) -> dict:
    rows = runs(catalog)
    assert rows, "no run was logged"
    return rows[-1]


@pytest.fixture
def home(catalog: Catalog, tmp_path: Path) -> Catalog:
    """A catalog holding synthetic pairs and image vectors, written without any run."""
    pairs = synth_table(400, seed=3)
    catalog.append(tables.PAIRS.name, pairs)
    rng = np.random.default_rng(0)
    ids = pairs["id"].to_numpy()[:200]
    vectors = rng.standard_normal((len(ids), DIM)).astype(np.float16)
    vectors[1::2] = vectors[0::2]  # pairs of identical vectors: semantic duplicates
    spec = tables.embeddings(MODEL, DIM, None)
    values = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float16()), DIM)
    catalog.ensure(spec)
    catalog.append(spec.name, pa.table({"id": ids, "image_embedding": values}, schema=spec.schema))
    return catalog


# ---- one call per command that changes the catalog ------------------------------------------


def ingest_metadata_command(catalog: Catalog, tmp_path: Path) -> None:
    from coyo_db.ingest.metadata import ingest_metadata

    path = tmp_path / "more.parquet"
    more = synth_table(50, seed=9)
    fresh_ids = pa.array(range(10**9, 10**9 + more.num_rows), pa.int64())
    pq.write_table(more.set_column(more.schema.get_field_index("id"), "id", fresh_ids), path)
    ingest_metadata(catalog, [path])


def ingest_labels_command(catalog: Catalog, tmp_path: Path) -> None:
    from coyo_db.labels.coyo_labeled import ingest_labels

    ids = catalog.dataset("pairs").to_table(columns=["id"])["id"].to_pylist()[:5]
    rows = [
        {"id": i, "url": "u", "imagehash": "0", "labels": [1, 2], "label_probs": [0.6, 0.3]}
        for i in ids
    ]
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=_coyo_labeled_schema()), path)
    ingest_labels(catalog, [path])


def _coyo_labeled_schema() -> pa.Schema:
    from coyo_db.catalog import schemas

    return schemas.COYO_LABELED


def dedup_phash_command(catalog: Catalog, tmp_path: Path) -> None:
    from coyo_db.dedup.groups import dedup_phash

    dedup_phash(catalog, 2)


def dedup_text_command(catalog: Catalog, tmp_path: Path) -> None:
    from coyo_db.dedup.rules import dedup_rule

    dedup_rule(catalog, "url")


def dedup_semantic_command(catalog: Catalog, tmp_path: Path) -> None:
    from coyo_db.dedup.semantic import dedup_semantic

    dedup_semantic(catalog, MODEL, 0.99, clusters=2)


def index_build_command(catalog: Catalog, tmp_path: Path) -> None:
    from coyo_db.search.vector_index import build_index

    build_index(catalog, MODEL, kind="flat")


def taxonomy_add_command(catalog: Catalog, tmp_path: Path) -> None:
    from coyo_db.labels.taxonomy import add_taxonomy

    path = tmp_path / "classes.txt"
    path.write_text("cat\ndog\nbird\n", encoding="utf-8")
    add_taxonomy(catalog, "pets", path)


def export_command(catalog: Catalog, tmp_path: Path) -> None:
    from coyo_db.export.subset import export

    export(catalog, tmp_path / "out", where="width > 0")


COMMANDS = {
    "ingest metadata": (ingest_metadata_command, {"pairs", "ledger"}),
    "ingest labels": (ingest_labels_command, {"labels", "ledger", "taxonomies"}),
    "dedup phash": (dedup_phash_command, {"dup_groups"}),
    "dedup text": (dedup_text_command, {"dup_groups"}),
    "dedup semantic": (dedup_semantic_command, {"dup_groups"}),
    "index build": (index_build_command, set()),
    "taxonomy add": (taxonomy_add_command, {"taxonomies"}),
    "export": (export_command, set()),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_that_changes_the_catalog_logs_one_run(home, tmp_path, command):
    call, written = COMMANDS[command]
    call(home, tmp_path)
    [run] = runs(home)
    assert run["command"] == command
    assert run["status"] == "ok" and run["error"] is None
    assert run["finished_at"] >= run["started_at"]
    assert isinstance(json.loads(run["arguments"]), dict)
    versions = json.loads(run["tables_written"])
    assert set(versions) == written
    now = home.versions()
    assert all(versions[name] == now[name] for name in written)


def test_counts_are_the_commands_own(home, tmp_path):
    from coyo_db.dedup.rules import dedup_rule

    summary = dedup_rule(home, "url")
    run = last_run(home)
    assert (run["rows_read"], run["rows_written"]) == (summary.rows_scanned, summary.rows_in_groups)
    assert summary.rows_in_groups > 0


def test_every_table_the_commands_write_has_its_registered_schema(home, tmp_path):
    for call, _ in COMMANDS.values():
        folder = tmp_path / call.__name__
        folder.mkdir()
        call(home, folder)
    for name in home.table_names():
        schema = home.dataset(name).schema
        assert tables.by_name(name, schema).schema == schema, name


# ---- failed and interrupted runs ------------------------------------------------------------


def test_a_command_that_fails_midway_is_logged_failed_with_its_error(home, monkeypatch):
    from coyo_db.dedup import groups

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(groups, "phash_group_rows", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        groups.dedup_phash(home, 2)
    run = last_run(home)
    assert (run["command"], run["status"]) == ("dedup phash", "failed")
    assert run["error"] == "RuntimeError: disk full"
    assert run["finished_at"] is not None and json.loads(run["tables_written"]) == {}


def test_bad_input_is_a_failed_run(home, tmp_path):
    from coyo_db.errors import SourceFileError
    from coyo_db.ingest.metadata import ingest_metadata

    good = tmp_path / "good.parquet"
    pq.write_table(synth_table(20, seed=5), good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"<!DOCTYPE html><html>")
    with pytest.raises(SourceFileError):
        ingest_metadata(home, [good, bad])
    run = last_run(home)
    assert (run["command"], run["status"]) == ("ingest metadata", "failed")
    assert "HTML" in run["error"]


def test_an_export_with_bad_sql_is_a_failed_run(home, tmp_path):
    from coyo_db.export.subset import export

    with pytest.raises(QueryError):
        export(home, tmp_path / "out", where="no_such_column > 1")
    run = last_run(home)
    assert (run["command"], run["status"]) == ("export", "failed")
    assert run["error"].startswith("QueryError")


def test_ctrl_c_is_logged_interrupted(home, tmp_path, monkeypatch):
    from coyo_db.dedup import rules
    from coyo_db.export import writers
    from coyo_db.export.subset import export

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rules, "store_groups", interrupt)
    with pytest.raises(KeyboardInterrupt):
        rules.dedup_rule(home, "url")
    monkeypatch.setattr(writers, "write_parquet", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export(home, tmp_path / "out", where="true")
    statuses = [(r["command"], r["status"]) for r in runs(home)]
    assert statuses == [("dedup text", "interrupted"), ("export", "interrupted")]
    assert not (tmp_path / "out").exists()


def test_an_interrupted_ingest_reports_what_it_had_written(catalog, tmp_path, monkeypatch):
    from coyo_db.catalog.ledger import Ledger
    from coyo_db.ingest.metadata import ingest_metadata

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"part-{i}.parquet")
        pq.write_table(synth_table(30, seed=i), paths[-1])
    real = Ledger.commit_input
    calls = []

    def second_interrupts(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "commit_input", second_interrupts)
    with pytest.raises(KeyboardInterrupt):
        ingest_metadata(catalog, paths)
    run = last_run(catalog)
    assert run["status"] == "interrupted"
    assert run["rows_written"] == catalog.dataset("pairs").count_rows() > 0
    assert json.loads(run["tables_written"])["pairs"] == catalog.dataset("pairs").version


def test_the_row_says_running_while_the_command_runs(home, monkeypatch):
    from coyo_db.dedup import groups

    seen = []
    real = groups.phash_group_rows

    def peek(*args, **kwargs):
        seen.append([(r["command"], r["status"]) for r in runs(home)])
        return real(*args, **kwargs)

    monkeypatch.setattr(groups, "phash_group_rows", peek)
    groups.dedup_phash(home, 2)
    assert seen == [[("dedup phash", "running")]]
    assert [(r["command"], r["status"]) for r in runs(home)] == [("dedup phash", "ok")]


KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from coyo_db.catalog import Catalog
    from coyo_db.catalog.runs import Run
    Run(Catalog(sys.argv[1], create=True), "dedup phash", {"radius": 2})
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_command_leaves_its_row_running(catalog):
    done = subprocess.run([sys.executable, "-c", KILLED, str(catalog.home)], check=False)
    assert done.returncode != 0
    [run] = runs(catalog)
    assert (run["command"], run["status"], run["finished_at"]) == ("dedup phash", "running", None)


# ---- the API ----------------------------------------------------------------------------------


def test_recorded_run_and_run_finish(catalog):
    with recorded_run(catalog, "dedup text", {"rule": "url"}) as run:
        catalog.append(tables.DUP_GROUPS.name, tables.DUP_GROUPS.empty())
        run.counts(rows_read=7, rows_written=3)
    manual = Run(catalog, "refset add", {"name": "x"})
    manual.finish("ok", rows_read=2, rows_written=2, tables_written={"refsets": 4})
    first, second = runs(catalog)
    assert (first["status"], first["rows_read"], first["rows_written"]) == ("ok", 7, 3)
    assert json.loads(first["tables_written"]) == {"dup_groups": catalog.versions()["dup_groups"]}
    assert first["run_id"] == run.run_id and second["run_id"] == manual.run_id
    assert json.loads(second["tables_written"]) == {"refsets": 4}
    with pytest.raises(ValueError, match="running"):
        manual.finish("running")


def test_a_body_that_finishes_its_run_itself_is_left_as_it_finished(catalog):
    with recorded_run(catalog, "export", {}) as run:
        run.finish("failed", error="told so")
    assert [(r["status"], r["error"]) for r in runs(catalog)] == [("failed", "told so")]


def test_a_runs_table_from_before_the_new_columns_is_extended(catalog):
    old = pa.schema([f for f in tables.RUNS.schema if f.name not in ("tables_written", "error")])
    row = {"run_id": "old", "command": "ingest metadata", "status": "ok", "arguments": "{}"}
    catalog.append(tables.RUNS.name, pa.Table.from_pylist([row], schema=old))
    with recorded_run(catalog, "dedup phash", {}):
        pass
    rows = runs(catalog)
    assert catalog.dataset(tables.RUNS.name).schema == tables.RUNS.schema
    by_id = {r["run_id"]: r for r in rows}
    assert by_id["old"]["tables_written"] is None and by_id["old"]["command"] == "ingest metadata"
    [new] = [r for r in rows if r["run_id"] != "old"]
    assert new["status"] == "ok" and new["tables_written"] == "{}"
