"""Start-up time of `coyo-db --help` and `coyo-db query`, and what they import.

Baselines: the bare interpreter (`python -c pass`), and importing what any query needs
(`python -c "import duckdb, lance, pyarrow"`). Targets: `coyo-db query` within 1.3x of the
imports, and neither command imports torch, open_clip or faiss.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import save

HEAVY = ("torch", "open_clip", "faiss")
IMPORTS = "import duckdb+lance+pyarrow"


def wall(cmd: list[str], repeats: int) -> float:
    subprocess.run(cmd, capture_output=True, check=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def imported(args: list[str]) -> list[str]:
    probe = (
        "import sys\nfrom coyo_db.cli.entry import main\n"
        f"sys.argv = ['coyo-db', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("HEAVY="))
    return [m for m in line.removeprefix("HEAVY=").split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    from coyo_db.catalog import Catalog, schemas

    with tempfile.TemporaryDirectory() as tmp:
        home = str(Path(tmp) / "home")
        Catalog(home, create=True).append("pairs", schemas.PAIRS.empty_table())
        exe = str(Path(sys.executable).with_name("coyo-db"))
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            IMPORTS: [sys.executable, "-c", "import duckdb, lance, pyarrow"],
            "coyo-db --help": [exe, "--help"],
            "coyo-db query": [exe, "query", "SELECT count(*) FROM pairs", "--home", home],
        }
        results = {name: wall(cmd, args.repeats) for name, cmd in commands.items()}
        heavy = {
            "coyo-db --help": imported(["--help"]),
            "coyo-db query": imported(["query", "SELECT 1", "--home", home]),
        }
    base = results["python -c pass"]
    imports = results[IMPORTS]
    for name, seconds in results.items():
        print(
            f"{name:28s} {seconds * 1000:7.1f} ms  ({seconds / base:5.1f}x bare interpreter, "
            f"{seconds / imports:4.2f}x the imports)"
        )
    ratio = results["coyo-db query"] / imports
    print(f"coyo-db query / ({IMPORTS}): {ratio:.2f}x (target 1.3x)")
    for name, modules in heavy.items():
        print(f"{name:28s} imports of {', '.join(HEAVY)}: {modules or 'none'}")
    save(
        "startup",
        {
            "seconds": results,
            "query_vs_imports": ratio,
            "heavy_imports": heavy,
            "repeats": args.repeats,
        },
    )


if __name__ == "__main__":
    main()
