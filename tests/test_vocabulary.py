"""One word, one meaning: no table has a `source` column, and the options renamed for that
still accept their earlier spellings (hidden from --help)."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from coyo_db.catalog import Catalog, lance_tables, tables
from coyo_db.cli.app import app
from coyo_db.ingest.metadata import ingest_metadata


@pytest.mark.parametrize("spec", tables.FIXED.values(), ids=lambda spec: spec.name)
def test_no_table_has_a_column_called_source(spec):
    # `source` once meant a model, an input file, a candidate kind, a folder and a table
    assert "source" not in spec.schema.names
    assert spec.name != "sources"


def _stub(monkeypatch, module, function, result):
    calls = []

    def record(*args, **kwargs):
        calls.append(kwargs)
        return result

    monkeypatch.setattr(f"{module}.{function}", record)
    return calls


@pytest.mark.parametrize(
    ("option", "table"), [("--table", "images"), ("--source", "images"), (None, "pairs")]
)
def test_dedup_phash_reads_table_and_its_old_name(monkeypatch, option, table):
    monkeypatch.setattr("coyo_db.cli.dedup_cmds.open_catalog", lambda home, create: None)
    summary = SimpleNamespace(line=lambda: "done")
    calls = _stub(monkeypatch, "coyo_db.dedup.groups", "dedup_phash", summary)
    args = ["dedup", "phash"] + ([option, table] if option else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert calls == [{"table": table, "keep": "highest-clip", "engine": "local", "address": None}]


@pytest.mark.parametrize(
    ("args", "rows", "samples"),
    [
        (["--rows-per-file", "7", "--samples-per-file", "3"], 7, 3),
        (["--shard-rows", "7", "--samples-per-shard", "3"], 7, 3),
        ([], 1_000_000, 10_000),
    ],
)
def test_export_reads_per_file_options_and_their_old_names(
    monkeypatch, tmp_path, args, rows, samples
):
    monkeypatch.setattr("coyo_db.cli.export_cmds.open_catalog", lambda home, create: None)
    done = SimpleNamespace(
        line=lambda: "done", manifest_path=tmp_path / "m.json", open_hint=lambda: None
    )
    calls = _stub(monkeypatch, "coyo_db.export.subset", "export", done)
    command = ["export", "--where", "true", "--to", str(tmp_path / "out"), "--from", "pairs"]
    result = CliRunner().invoke(app, command + args)
    assert result.exit_code == 0, result.output
    (kwargs,) = calls
    assert (kwargs["table"], kwargs["rows_per_file"], kwargs["samples_per_file"]) == (
        "pairs",
        rows,
        samples,
    )


def test_old_option_names_are_not_documented():
    runner = CliRunner()
    dedup = runner.invoke(app, ["dedup", "phash", "--help"]).output
    export = runner.invoke(app, ["export", "--help"]).output
    assert "--table" in dedup and "--source" not in dedup
    assert "--rows-per-file" in export and "--samples-per-file" in export
    assert "shard" not in export


def test_a_catalog_from_before_the_ledger_table_resumes_from_commit_history(
    monkeypatch, tmp_path, coyo_parquet
):
    """An older catalog kept its ledger in `sources` (not read) and its commits said `source`:
    without a `ledger` table every commit of the target is read, the old key too."""
    real = lance_tables.commit

    def old_commit(uri, transaction, properties):
        old = {("source" if k == "input" else k): v for k, v in properties.items()}
        return real(uri, transaction, old)

    monkeypatch.setattr(lance_tables, "commit", old_commit)
    home = tmp_path / "home"
    ingest_metadata(Catalog(home, create=True), [coyo_parquet])
    monkeypatch.setattr(lance_tables, "commit", real)
    shutil.rmtree(Catalog(home).table_uri(tables.LEDGER.name))

    catalog = Catalog(home)
    assert not catalog.has_table(tables.LEDGER.name)
    again = ingest_metadata(catalog, [coyo_parquet])
    assert (again.inputs_skipped, again.inputs_done, again.rows_written) == (1, 0, 0)
    entries = catalog.dataset(tables.LEDGER.name).to_table().to_pylist()
    assert [e["input"] for e in entries] == [str(coyo_parquet)]
