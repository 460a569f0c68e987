"""Run every benchmark in turn; each prints its own ratio and saves bench/out/<name>.json.

Every script runs with the settings docs/benchmarks.md states for its figures: its defaults,
plus the arguments in ARGUMENTS (bench_scale.py at 10M rows; its 100M figures need
`--rows 100000000` by hand; bench_audit_scale.py's `--audits-only` figures, a second run on the
catalog the first left, also by hand).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = [
    "bench_startup.py",
    "bench_query.py",
    "bench_ingest.py",
    "bench_id_keys.py",
    "bench_fingerprint.py",
    "bench_phash.py",
    "bench_images.py",
    "bench_dedup.py",
    "bench_dedup_semantic.py",
    "bench_label.py",
    "bench_audit.py",
    "bench_audit_scale.py",
    "bench_plain_copies.py",
    "bench_export.py",
    "bench_search.py",
    "bench_ray.py",
    "bench_serve.py",
    "bench_scale.py",
]
# beyond a script's defaults: medians of interleaved or repeated runs, as the page states
ARGUMENTS = {
    "bench_ingest.py": ["--repeats", "3"],
    "bench_scale.py": ["--repeats", "3"],
    "bench_audit_scale.py": ["--refs", "50000", "--images", "2000", "--copies", "100"],
}

if __name__ == "__main__":
    for name in BENCHES:
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, str(HERE / name), *ARGUMENTS.get(name, [])], check=True)
