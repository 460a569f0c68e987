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
