"""Clean stops: Ctrl-C during an image ingest prints one line, no worker traceback, exits 130,
leaves no decode process behind, and the same command run again finishes the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coyo_db.catalog import Catalog
from coyo_db.synth.images import write_image_shards

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the process table from /proc"
)

IMAGES = 200


def children(pid: int) -> dict[int, str]:
    """The live child processes of `pid`: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, parent = fields[0], int(fields[1])
        if parent == pid and state != "Z":
            found[int(entry.name)] = cmdline
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clean-stop") / "shards"
    return write_image_shards(folder, list(range(IMAGES)), per_shard=40, seed=2)[0]


@pytest.mark.parametrize(
    ("workers_seen", "delay"),
    [(1, 0.0), (2, 0.3)],
    ids=["while-a-worker-starts", "while-decoding"],
)
def test_ctrl_c_stops_an_ingest_in_one_line_and_it_resumes(tmp_path, shards, workers_seen, delay):
    home = tmp_path / "home"
    Catalog.init(home)
    command = [
        sys.executable,
        "-m",
        "coyo_db.cli.entry",
        "ingest",
        "images",
        *map(str, shards),
        "--workers",
        "2",
        "--home",
        str(home),
    ]
    # its own process group, which gets the SIGINT as a terminal's Ctrl-C would: the command
    # and its decode workers alike
    job = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    workers: dict[int, str] = {}
    deadline = time.monotonic() + 60
    while len(workers) < workers_seen and job.poll() is None and time.monotonic() < deadline:
        workers = {p: c for p, c in children(job.pid).items() if "spawn_main" in c}
        time.sleep(0.01)
    assert len(workers) >= workers_seen, "the decode workers never started"
    time.sleep(delay)
    assert job.poll() is None, "the ingest finished before it could be interrupted"
    os.killpg(job.pid, signal.SIGINT)
    output, _ = job.communicate(timeout=60)

    assert job.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines == ["interrupted; run the same command again to resume"], output
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "a decode worker outlived the command"

    catalog = Catalog(home)
    assert catalog.sql("SELECT status FROM runs")["status"].to_pylist() == ["interrupted"]
    if not delay:
        return
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    counts = catalog.sql("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM images")
    assert counts.to_pylist() == [{"n": IMAGES, "ids": IMAGES}]


def test_the_interrupted_line_names_resume_only_where_a_rerun_resumes():
    from coyo_db.cli.entry import interrupted_line

    assert interrupted_line(["ingest", "images", "x"]).endswith(
        "run the same command again to resume"
    )
    assert interrupted_line(["label", "-m", "effnet-lite0"]).endswith("to resume")
    assert interrupted_line(["export", "--to", "x"]) == "interrupted"
    assert interrupted_line(["dedup", "phash"]) == "interrupted"
