"""Shared benchmark helpers: timing, the machine's description, cached synthetic data."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).parent / "out"


def machine() -> str:
    """One line naming the machine the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, Python {platform.python_version()}"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Run the contenders interleaved `repeats` times (after one warm-up each); medians."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


# Forks and waits for the command, then writes its ru_maxrss (KiB) to argv[1]. On Linux a
# process's peak RSS starts at its parent's RSS at fork/exec time, so the command is started
# from this small launcher, never straight from a benchmark process that holds gigabytes.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None) -> dict:
    """Run `cmd` as a child process: its wall time and its own peak resident memory.

    The peak is the command's own ``ru_maxrss`` (from ``os.wait4`` in a small launcher
    process, see :data:`_LAUNCHER`; the launcher's ~10 MiB is the floor). Raises with the
    child's output when it fails.
    """
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "maxrss"
        launcher = [sys.executable, "-c", _LAUNCHER, str(peak_file), *cmd]
        start = time.perf_counter()
        done = subprocess.run(launcher, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        seconds = time.perf_counter() - start
        text = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{text[-3000:]}")
        peak_kib = int(peak_file.read_text())
    return {"seconds": seconds, "peak_rss_mib": peak_kib / 1024, "output": text}


def synth_data(rows: int, files: int = 4, seed: int = 0) -> Path:
    """A cached folder of synthetic COYO Parquet files with `rows` rows in all."""
    from coyo_db.synth.metadata import write_synth

    folder = OUT / f"synth-{rows}-{files}-{seed}"
    marker = folder / ".complete"
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_synth(folder, rows, seed=seed, files=files)
        marker.write_text("ok")
    return folder


def save(name: str, result: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    result = {"machine": machine(), **result}
    path.write_text(json.dumps(result, indent=2))
    return path


def synth_catalog(rows: int, files: int = 4, seed: int = 0) -> Path:
    """A cached catalog holding :func:`synth_data` ingested into `pairs` (for benchmarks of
    commands that read a catalog; built once, read-only afterwards)."""
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.metadata import ingest_metadata

    home = OUT / f"catalog-{rows}-{files}-{seed}"
    marker = home / ".complete"
    if not marker.exists():
        import shutil

        shutil.rmtree(home, ignore_errors=True)
        ingest_metadata(Catalog.init(home), sorted(synth_data(rows, files, seed).glob("*.parquet")))
        marker.write_text("ok")
    return home
