"""Two writers at once: they take turns on the catalog's writer lock and each row lands once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from coyo_db.catalog import Catalog, writer_lock
from coyo_db.catalog.writer_lock import CatalogBusyError
from coyo_db.synth.metadata import write_synth

ROWS = 120_000


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    return write_synth(tmp_path_factory.mktemp("synth"), ROWS, seed=2, files=3)


def _cli(home: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "coyo_db.cli.entry", *args, "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_two_metadata_ingests_at_once_write_each_row_once(tmp_path, files):
    home = tmp_path / "home"
    catalog = Catalog.init(home)
    # Both start while a third job writes, so both wait and then race for the lock when it
    # goes: a deterministic "at once".
    with writer_lock.writing(catalog.home, "refset add"):
        first = _cli(home, "ingest", "metadata", *map(str, files))
        second = _cli(home, "ingest", "metadata", *map(str, files))
        time.sleep(4)
        assert first.poll() is None and second.poll() is None
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)

    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "waiting for `refset add`" in err1 and "waiting for `refset add`" in err2, err2
    summaries = sorted([out1, out2], key=lambda out: "skipped" in out)
    assert "3 of 3 files ingested" in summaries[0] and "0 of 3" in summaries[1], summaries
    catalog = Catalog(home)
    counts = catalog.sql("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM pairs")
    n = counts.to_pylist()[0]
    assert n["n"] == n["ids"]
    quarantined = catalog.sql("SELECT count(*) AS n FROM quarantine").to_pylist()[0]["n"]
    assert n["n"] + quarantined == ROWS  # every row once: written or quarantined, not both
    ledger = catalog.sql("SELECT count(*) AS n FROM ledger WHERE table_name = 'pairs'")
    assert ledger.to_pylist() == [{"n": len(files)}]
    statuses = catalog.sql("SELECT status FROM runs ORDER BY started_at").column(0).to_pylist()
    assert statuses == ["ok", "ok"]


def test_two_dedups_at_once_leave_one_set_of_groups(tmp_path, files):
    home = tmp_path / "home"
    catalog = Catalog.init(home)
    from coyo_db.ingest.metadata import ingest_metadata

    ingest_metadata(catalog, files)
    runs = [_cli(home, "dedup", "phash") for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    groups = catalog.sql(
        "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM dup_groups"
    ).to_pylist()[0]
    assert groups["n"] == groups["ids"] > 0


def test_a_writer_gives_up_after_the_timeout_with_one_line(tmp_path):
    home = tmp_path / "home"
    catalog = Catalog.init(home)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with writer_lock.writing(catalog.home, "dedup phash"):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(10)
        # another process: the lock is per catalog, not per process
        proc = _cli(home, "dedup", "phash", env={"COYO_DB_LOCK_TIMEOUT": "0.5"})
        _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[-1].startswith("error: the catalog at"), err
        assert "`dedup phash`" in lines[-1] and "Traceback" not in err
    finally:
        release.set()
        holder.join()
    assert writer_lock.holder(catalog.home) is None


def test_the_lock_is_reentrant_in_one_process_and_freed_by_a_kill(tmp_path):
    home = tmp_path / "home"
    catalog = Catalog.init(home)
    with writer_lock.writing(catalog.home, "outer"), writer_lock.writing(catalog.home, "inner"):
        assert writer_lock.holder(catalog.home)["command"] == "outer"
    assert writer_lock.holder(catalog.home) is None

    script = (
        "import time; from pathlib import Path; from coyo_db.catalog import writer_lock\n"
        f"writer_lock.acquire(Path({str(catalog.home)!r}), 'ingest images')\n"
        "print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(CatalogBusyError, match="ingest images"):
        writer_lock.acquire(catalog.home, "test", timeout=0)
    proc.kill()
    proc.wait()
    writer_lock.acquire(catalog.home, "test", timeout=5)  # the kernel freed it
    writer_lock.release(catalog.home)
