"""The image-job runner on its own: a toy job (tests/toy_job.py) through both decode paths,
killed with kill -9 at its commit points and run again, and with broken records.

The product's jobs (ingest images, label, refset add, audit) have their own kill tests in their
test files; this one holds the runner to its promise for any job: each row once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from coyo_db.catalog import Catalog
from coyo_db.errors import InputError
from coyo_db.ingest.job_runner import check_engine, run_image_job
from coyo_db.synth.images import write_image_shards
from tests.imagedata import jpeg_bytes, write_tar
from tests.toy_job import TABLE, MeanColourJob

IDS = list(range(100, 118))
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("toy-shards")
    paths, _ = write_image_shards(out, IDS, per_shard=6, seed=5)
    good = jpeg_bytes(Image.new("RGB", (40, 30), (10, 200, 30)), quality=75)
    broken = write_tar(out / "broken.tar", {"a.jpg": good, "b.jpg": b"not an image"})
    return [str(p) for p in [*paths, broken]]


def _rows(catalog: Catalog) -> list[tuple[str, str]]:
    table = catalog.dataset(TABLE).to_table(columns=["shard", "member"])
    return sorted(zip(table["shard"].to_pylist(), table["member"].to_pylist(), strict=True))


@pytest.mark.parametrize("workers", [0, 2])
def test_every_unit_is_committed_once_and_counts_reconcile(tmp_path, shards, workers):
    catalog = Catalog(tmp_path / "home", create=True)
    summary = run_image_job(MeanColourJob(catalog, shards), workers=workers)
    rows = _rows(catalog)
    assert len(rows) == len(set(rows)) == len(IDS) + 1
    assert (summary.inputs_seen, summary.inputs_done) == (4, 4)
    assert (summary.rows_read, summary.rows_written, summary.rows_quarantined) == (20, 19, 1)
    assert summary.rows_read == summary.rows_written + summary.rows_quarantined
    run = catalog.sql("SELECT status, command FROM runs").to_pylist()
    assert run == [{"status": "ok", "command": "toy mean colours"}]

    again = run_image_job(MeanColourJob(catalog, shards), workers=workers)
    assert (again.inputs_skipped, again.rows_read) == (4, 0)
    assert _rows(catalog) == rows


@pytest.mark.parametrize("die_after", [1, 3])
def test_killed_at_a_commit_point_and_run_again_each_row_lands_once(tmp_path, shards, die_after):
    home = tmp_path / "home"
    script = [sys.executable, str(HERE / "toy_job.py")]
    env = {"PYTHONPATH": f"{HERE.parent}{':'}{HERE}", "PATH": "/usr/bin:/bin"}
    killed = subprocess.run(
        [*script, "--die-after", str(die_after), str(home), *shards],
        env=env,
        capture_output=True,
        timeout=300,
    )
    # subprocess.run returns only once every holder of the output pipes is gone: the killed
    # job's decode workers died with it
    assert killed.returncode == 9, killed.stderr.decode()[-2000:]
    catalog = Catalog(home)
    assert len(_rows(catalog)) > 0
    statuses = catalog.sql("SELECT status FROM runs")["status"].to_pylist()
    assert statuses == ["running"], "a killed run leaves its row as it was"

    done = subprocess.run([*script, str(home), *shards], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    rows = _rows(catalog)
    assert len(rows) == len(set(rows)) == len(IDS) + 1


def test_an_exception_in_a_job_fails_its_run_and_keeps_whole_units(tmp_path, shards):
    catalog = Catalog(tmp_path / "home", create=True)
    job = MeanColourJob(catalog, shards)
    real = job.commit

    def commit_then_fail(work):  # type: ignore[no-untyped-def]
        real(work)
        if job.commits == 2:
            raise RuntimeError("disk full")

    job.commit = commit_then_fail  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="disk full"):
        run_image_job(job, workers=0)
    assert len(_rows(catalog)) == 12  # two whole shards of six
    assert catalog.sql("SELECT status FROM runs")["status"].to_pylist() == ["failed"]


def test_engine_options_are_checked():
    with pytest.raises(InputError, match="--engine"):
        check_engine("spark", None)
    with pytest.raises(InputError, match="--address"):
        check_engine("local", "auto")
