"""Content fingerprint MB/s against a plain chunked read of the same file.

coyo-db's `file_fingerprint` (what the ledger recognises an ingested file by) hashes every byte
with xxh3-128, read in chunks of `CHUNK_BYTES` into a reused buffer. The baseline reads the same
file the same way (`readinto` the same buffer size) and does nothing with the bytes, so the ratio
fingerprint time / read time (lower is better; 1.0 means hashing is free) is what the hash adds
to the read every fingerprint needs anyway. The page cache is warm for both: each contender runs
once before the timed, interleaved runs, and the file must fit in memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, median_times, save

WRITE_CHUNK = 8 << 20


def write_file(path: Path, size: int, seed: int = 0) -> None:
    """`size` seeded random bytes (incompressible, so no layer below can shortcut them)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with path.open("wb") as fh:
        left = size
        while left:
            step = min(left, WRITE_CHUNK)
            fh.write(rng.bytes(step))
            left -= step


def plain_read(path: Path, chunk: int) -> int:
    """The baseline: every byte read into one reused buffer, nothing else."""
    buffer = memoryview(bytearray(chunk))
    total = 0
    with open(path, "rb", buffering=0) as fh:
        while count := fh.readinto(buffer):
            total += count
    return total


def measure(path: Path, repeats: int) -> dict[str, float]:
    from coyo_db.catalog.ledger import CHUNK_BYTES, file_fingerprint

    size = path.stat().st_size
    times = median_times(
        {
            "plain read": lambda: plain_read(path, CHUNK_BYTES),
            "file_fingerprint": lambda: file_fingerprint(path),
        },
        repeats,
    )
    result = {f"{name} s": seconds for name, seconds in times.items()}
    result.update({f"{name} MB/s": size / 1e6 / seconds for name, seconds in times.items()})
    result["ratio"] = times["file_fingerprint"] / times["plain read"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the file written")
    parser.add_argument("--path", type=Path, help="fingerprint this file instead of writing one")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="coyo-db-bench-") as scratch:
        path = args.path
        if path is None:
            path = Path(scratch) / "blob.bin"
            write_file(path, args.size_mib << 20)
        size = path.stat().st_size
        result = measure(path, args.repeats)
    print(machine())
    print(f"file: {size / 2**20:,.0f} MiB, page cache warm, median of {args.repeats} runs")
    for name in ("plain read", "file_fingerprint"):
        print(f"{name:17s} {result[f'{name} s']:7.3f} s  {result[f'{name} MB/s']:9,.0f} MB/s")
    print(f"ratio file_fingerprint / plain read: {result['ratio']:.2f} (1.0: hashing is free)")
    save("fingerprint", {"bytes": size, "cpu_count": os.cpu_count(), **result})


if __name__ == "__main__":
    main()
