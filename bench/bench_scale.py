"""The metadata pipeline a curator runs, as commands, at `--rows` synthetic rows.

Each step is the `coyo-db` command a user types, run as its own process on one catalog:
ingest metadata (4 files), tables, funnel, stats, four queries, dedup phash --radius 4 (default
keeper), the three dedup text rules, and an export of a thresholded subset. For each: wall
time and the process's own peak resident memory (``ru_maxrss`` of that child, from
``os.wait4``). Baseline for the time of the queries and the ingest: DuckDB itself on the same
Parquet files in the same run (``COPY`` of the files, and the same four queries over
``read_parquet``), so that the figures can be read against the machine's speed that day.

Results go to bench/out/scale-<rows>.json; docs/scaling.md explains the method and holds the
figures. Run it at 10M and 100M rows to get the growth (x10 in rows); the synthetic data and
the catalog take about 110 and 150 bytes a row on disk. ``--repeats N`` runs the whole list N
times on fresh catalogs and reports each step's medians (the 10M run is short enough to repeat,
which steadies the growth figures on a machine whose speed drifts).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_query import QUERIES
from common import OUT, machine, run_measured, synth_data

EXPORT_WHERE = "clip_similarity_vitb32 >= 0.3 AND watermark_score < 0.5 AND width >= 256"


def steps(data: Path, home: Path, scratch: Path) -> list[tuple[str, list[str]]]:
    """(label, argv after `coyo-db`) of every step, in the order a curator runs them."""
    at = ["--home", str(home)]
    queries = [
        (f"query: {name}", ["query", sql.format(t="pairs"), "-f", "csv", "-o", str(scratch / "q")])
        for name, sql in QUERIES.items()
    ]
    return [
        ("init", ["init", *at]),
        ("ingest metadata", ["ingest", "metadata", str(data), *at]),
        ("tables", ["tables", *at]),
        ("funnel", ["funnel", *at]),
        ("stats", ["stats", *at]),
        *[(label, [*argv, *at]) for label, argv in queries],
        ("dedup phash --radius 4", ["dedup", "phash", "--radius", "4", *at]),
        ("dedup text --rule phash_text", ["dedup", "text", "--rule", "phash_text", *at]),
        ("dedup text --rule url", ["dedup", "text", "--rule", "url", *at]),
        ("dedup text --rule text", ["dedup", "text", "--rule", "text", *at]),
        (
            "export (thresholded, parquet)",
            ["export", "--where", EXPORT_WHERE, "--to", str(scratch / "export"), *at],
        ),
    ]


def duckdb_baseline(data: Path, scratch: Path) -> dict[str, float]:
    """DuckDB on the Parquet files: the COPY that ingest is compared with, and the queries."""
    import duckdb

    files = sorted(str(p) for p in data.glob("*.parquet"))
    source = f"read_parquet({files!r})"
    times: dict[str, float] = {}
    con = duckdb.connect()
    start = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM {source}) TO '{scratch / 'copy.parquet'}'")
    times["ingest metadata"] = time.perf_counter() - start
    (scratch / "copy.parquet").unlink()
    for name, sql in QUERIES.items():
        start = time.perf_counter()
        con.execute(sql.format(t=source)).fetchall()
        times[f"query: {name}"] = time.perf_counter() - start
    con.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the last catalog afterwards")
    parser.add_argument(
        "--repeats", type=int, default=1, help="whole runs, each on a fresh catalog (medians)"
    )
    parser.add_argument(
        "--growth",
        nargs=2,
        type=int,
        metavar=("SMALL", "LARGE"),
        help="run nothing: print the table of docs/scaling.md from the saved runs at two sizes",
    )
    args = parser.parse_args()
    if args.growth:
        print(growth_table(*args.growth))
        return

    data = synth_data(args.rows, files=args.files)
    scratch = OUT / f"scale-{args.rows}"
    exe = str(Path(sys.executable).with_name("coyo-db"))
    samples: dict[str, list[dict]] = {}
    baselines: list[dict[str, float]] = []
    for repeat in range(args.repeats):
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        home = scratch / "home"
        baselines.append(duckdb_baseline(data, scratch))
        if args.repeats > 1:
            print(f"-- run {repeat + 1} of {args.repeats}", flush=True)
        print(f"{'step':34s} {'wall s':>8s} {'peak MiB':>9s} {'DuckDB s':>9s}", flush=True)
        for label, argv in steps(data, home, scratch):
            measured = run_measured([exe, *argv])
            output = measured.pop("output").strip().splitlines()
            row = {
                "step": label,
                "command": "coyo-db " + " ".join(argv),
                **measured,
                "last_line": output[-1][:200] if output else "",
            }
            if label in baselines[-1]:
                row["duckdb_s"] = baselines[-1][label]
            samples.setdefault(label, []).append(row)
            _print_row(row)
        if repeat + 1 < args.repeats or not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    results = [_median_row(rows) for rows in samples.values()]
    if args.repeats > 1:
        print(f"-- medians of {args.repeats} runs")
        for row in results:
            _print_row(row)
    total = sum(r["seconds"] for r in results)
    peak = max(r["peak_rss_mib"] for r in results)
    print(f"{'all steps':34s} {total:8.2f} {peak:9.0f}")
    path = OUT / f"scale-{args.rows}.json"
    path.write_text(
        json.dumps(
            {
                "machine": machine(),
                "rows": args.rows,
                "files": args.files,
                "repeats": args.repeats,
                "steps": results,
            },
            indent=2,
        )
    )
    print(path)


def growth_table(small: int, large: int) -> str:
    """The markdown table of docs/scaling.md: each step at both sizes and its growth."""
    runs = [json.loads((OUT / f"scale-{rows}.json").read_text()) for rows in (small, large)]
    at = [{row["step"]: row for row in run["steps"]} for run in runs]
    a, b = (f"{rows // 1_000_000}M" for rows in (small, large))
    lines = [
        f"| step | {a}: wall | {a}: peak memory | DuckDB on the files, {a} | {b}: wall / peak "
        f"| DuckDB, {b} | growth x |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]

    def duck(row: dict) -> str:
        return f"{row['duckdb_s']:.2f} s" if "duckdb_s" in row else ""

    for step, one in at[0].items():
        two = at[1][step]
        lines.append(
            f"| {step} | {one['seconds']:.2f} s | {one['peak_rss_mib']:,.0f} MiB | {duck(one)} "
            f"| {two['seconds']:.2f} s / {two['peak_rss_mib']:,.0f} MiB | {duck(two)} "
            f"| {two['seconds'] / one['seconds']:.1f} |"
        )
    totals = [sum(row["seconds"] for row in steps.values()) for steps in at]
    peaks = [max(row["peak_rss_mib"] for row in steps.values()) for steps in at]
    lines.append(
        f"| **all steps** | **{totals[0]:.1f} s** | **{peaks[0]:,.0f} MiB** (largest step) | "
        f"| **{totals[1]:.0f} s / {peaks[1] / 1024:.1f} GiB** | | "
        f"**{totals[1] / totals[0]:.1f}** |"
    )
    return "\n".join(lines)


def _print_row(row: dict) -> None:
    duck = f"{row['duckdb_s']:9.2f}" if "duckdb_s" in row else ""
    print(f"{row['step']:34s} {row['seconds']:8.2f} {row['peak_rss_mib']:9.0f} {duck}", flush=True)


def _median_row(rows: list[dict]) -> dict:
    """One step over the runs: median wall time, DuckDB time and peak memory; the samples."""
    row = dict(rows[len(rows) // 2])
    for key in ("seconds", "peak_rss_mib", "duckdb_s"):
        if key in row:
            row[key] = statistics.median(r[key] for r in rows)
    if len(rows) > 1:
        row["samples_s"] = [r["seconds"] for r in rows]
    return row


if __name__ == "__main__":
    main()
