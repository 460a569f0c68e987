"""Kill -9 at every named crash point of the writers (:mod:`coyo_db.faults`), then run again.

Each test runs a real command in a child process with ``COYO_DB_CRASH_AT`` set, checks the
process died there (exit 137) leaving the previous result intact, runs the command again and
checks the catalog holds what one clean run gives: each row once. The rewrite points are killed
in tests/test_atomic_rewrites.py; the last test here keeps every declared point covered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import coyo_table

from coyo_db import faults
from coyo_db.catalog import Catalog
from coyo_db.ingest.metadata import ingest_metadata

TESTS = Path(__file__).parent


def _run(args: list[str], point: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    environment.pop(faults.ENV, None)
    if point is not None:
        environment[faults.ENV] = point
    command = [sys.executable, "-m", "coyo_db.cli.entry", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


@pytest.fixture
def inputs(tmp_path, coyo_rows) -> list[Path]:
    """Two files; the second has one bad row (NaN score) so that it quarantines something."""
    table = coyo_table(coyo_rows)
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(table.slice(0, 6), first)
    rows = table.slice(6).to_pylist()
    rows[0]["watermark_score"] = float("nan")
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), second)
    return [first, second]


def _state(home: Path) -> dict:
    catalog = Catalog(home)
    return {
        "pairs": sorted(catalog.sql("SELECT id FROM pairs").column(0).to_pylist()),
        "quarantine": sorted(
            catalog.sql("SELECT id, reason FROM quarantine").to_pylist(), key=json.dumps
        ),
        "ledger": sorted(
            catalog.sql("SELECT input FROM ledger WHERE table_name = 'pairs'").column(0).to_pylist()
        ),
    }


@pytest.mark.parametrize(
    ("point", "times"),
    [
        ("ledger.after_quarantine", 2),  # the second file's bad row is in, its rows are not
        ("ledger.after_table_commit", 1),  # the first file's rows are in, its ledger row not
        ("ledger.after_table_commit", 2),
    ],
)
def test_a_metadata_ingest_killed_at_a_commit_point_resumes_to_a_clean_result(
    tmp_path, inputs, point, times
):
    clean_home, home = tmp_path / "clean", tmp_path / "home"
    ingest_metadata(Catalog.init(clean_home), inputs)
    Catalog.init(home)
    args = ["ingest", "metadata", *map(str, inputs), "--home", str(home)]

    killed = _run(args, f"{point}:{times}")
    assert killed.returncode == faults.EXIT_CODE, killed.stderr
    status = Catalog(home).sql("SELECT status FROM runs").column(0).to_pylist()
    assert status == ["running"]  # as kill -9 leaves it

    again = _run(args)
    assert again.returncode == 0, again.stderr
    assert _state(home) == _state(clean_home)


def _export(home: Path, to: Path, where: str, point: str | None = None, **env: str):
    args = ["export", "--where", where, "--to", str(to), "--overwrite", "--home", str(home)]
    return _run(args, point, **env)


@pytest.fixture
def exported(tmp_path, coyo_parquet) -> tuple[Path, Path]:
    home = tmp_path / "home"
    ingest_metadata(Catalog.init(home), [coyo_parquet])
    target = tmp_path / "subset"
    first = _export(home, target, "width > 0")
    assert first.returncode == 0, first.stderr
    return home, target


def _manifest(target: Path) -> dict:
    return json.loads((target / "_manifest.json").read_text())


def test_an_export_killed_before_its_manifest_leaves_the_previous_one(exported):
    home, target = exported
    before = _manifest(target)
    killed = _export(home, target, "width > 500", "export.mid_write")
    assert killed.returncode == faults.EXIT_CODE, killed.stderr
    assert _manifest(target) == before
    leftovers = sorted(p.name for p in target.parent.iterdir() if p.name.startswith("."))
    assert leftovers and all(".tmp-" in name for name in leftovers)

    again = _export(home, target, "width > 500")
    assert again.returncode == 0, again.stderr
    assert _manifest(target)["counts"] != before["counts"]
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # cleaned up


def test_an_export_killed_between_its_renames_is_put_back(exported):
    home, target = exported
    before = _manifest(target)
    # where the system cannot swap two folders in one step, the export renames twice
    script = (
        "import coyo_db.export.subset as s; s._exchange = lambda a, b: False\n"
        "from coyo_db.cli.entry import main; main()\n"
    )
    env = {**os.environ, faults.ENV: "export.between_renames"}
    args = ["export", "--where", "width > 500", "--to", str(target), "--overwrite"]
    killed = subprocess.run(
        [sys.executable, "-c", script, *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert killed.returncode == faults.EXIT_CODE, killed.stderr
    assert not target.exists()  # moved aside, the new one not yet in place

    from coyo_db.export.subset import restore_interrupted

    restore_interrupted(target)
    assert _manifest(target) == before
    again = _export(home, target, "width > 500")
    assert again.returncode == 0, again.stderr


def test_every_declared_crash_point_is_killed_by_some_test():
    sources = "\n".join(path.read_text() for path in TESTS.glob("test_*.py"))
    sources = sources.replace('"".join', "")
    missing = [name for name in faults.POINTS if f'"{name}' not in sources]
    assert not missing, f"crash points no test kills: {missing}"


def test_an_unknown_crash_point_is_a_bug_not_a_silent_pass(monkeypatch):
    monkeypatch.setenv(faults.ENV, "no.such.point")
    faults.point("ledger.after_table_commit")  # another point set: this one goes on
    with pytest.raises(ValueError, match="undeclared"):
        faults.point("no.such.point")
