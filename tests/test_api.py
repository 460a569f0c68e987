"""The Python API: every command of the command line is one function of `coyo_db`."""

from __future__ import annotations

import subprocess
import sys

import coyo_db
from coyo_db.cli.app import app

# command line -> the API function behind it
COMMANDS = {
    "init": "Catalog",
    "ingest metadata": "ingest_metadata",
    "ingest labels": "ingest_labels",
    "ingest images": "ingest_images",
    "query": "query",
    "tables": "describe_tables",
    "stats": "dataset_stats",
    "funnel": "funnel",
    "dedup phash": "dedup_phash",
    "dedup text": "dedup_text",
    "dedup semantic": "dedup_semantic",
    "dedup report": "dedup_report",
    "label": "label_images",
    "taxonomy add": "add_taxonomy",
    "taxonomy list": "list_taxonomies",
    "refset add": "add_refset",
    "refset list": "list_refsets",
    "audit": "audit_contamination",
    "export": "export_subset",
    "index build": "build_index",
    "search": "nearest_neighbours",
    "synth": "write_synth",
    "demo": "run_demo",
    "review keeper": "record_review",
    "review not-duplicate": "record_review",
    "review copy": "record_review",
    "review not-copy": "record_review",
    "review list": "list_reviews",
    "serve": "serve_catalog",
}


def _cli_commands() -> set[str]:
    import typer.main

    group = typer.main.get_command(app)
    names = set()
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", None)
        if subcommands:
            names |= {f"{name} {sub}" for sub in subcommands}
        else:
            names.add(name)
    return names


def test_every_command_has_an_api_function() -> None:
    cli = _cli_commands() - {"taxonomy hierarchy"}  # made on demand by label and ingest labels
    assert cli == set(COMMANDS), f"commands without an API entry: {cli - set(COMMANDS)}"
    for name in COMMANDS.values():
        assert callable(getattr(coyo_db, name)), name
    assert set(COMMANDS.values()) <= set(coyo_db.__all__)


def test_import_coyo_db_stays_light() -> None:
    code = (
        "import sys, coyo_db; "
        "heavy = {'duckdb', 'pyarrow', 'torch', 'lance', 'faiss'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_query_through_the_api(tmp_path) -> None:
    catalog = coyo_db.Catalog(tmp_path / "home", create=True)
    result = coyo_db.query(catalog, "SELECT 41 + 1 AS answer", output=tmp_path / "a.parquet")
    assert result.to_pylist() == [{"answer": 42}]
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "a.parquet").to_pylist() == [{"answer": 42}]
