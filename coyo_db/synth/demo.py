"""`coyo-db demo`: the whole pipeline on a seeded synthetic sample, narrated step by step.

It writes COYO-shaped Parquet files (plus one with bad rows and one Git-LFS pointer, the
mistakes real downloads contain), ingests metadata and labels into a fresh catalog, shows that
a second ingest adds nothing, then runs the funnel, the statistics, pHash dedup and a label
query. With the models extra it ingests seeded images with planted near-copies (pHash,
embeddings, scores), labels them, audits them against a small reference set (removal list and
HTML report), and finally exports a thresholded subset without duplicates and contaminated ids,
replays its manifest and searches the images. Every step calls the same library functions as
the CLI.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from coyo_db.catalog import Catalog
from coyo_db.errors import CoyoDbError

Emit = Callable[[str], None]

TOP_LABELS_SQL = """
SELECT name, count(*) AS images, round(avg(prob), 3) AS mean_prob
FROM labels_long
WHERE rank = 0 AND prob >= 0.5
GROUP BY name
ORDER BY images DESC, name
LIMIT 5
"""


@dataclass
class DemoResult:
    """What the demo produced, for callers that want more than the narration."""

    home: Path
    rows_ingested: int = 0
    rows_quarantined: int = 0
    labels_ingested: int = 0
    survivors: int = 0
    dedup_removed: int = 0
    subset_rows: int = 0
    subset_path: Path | None = None
    # The image steps' results (ImagesDemoResult, LabelsDemoResult, AuditDemoResult) when the
    # models extra is installed, and the export step's (ExportDemoResult).
    images: object | None = None
    labeling: object | None = None
    audit: object | None = None
    export: object | None = None
    steps: list[str] = field(default_factory=list)


def run_demo(
    home: Path, *, rows: int = 20_000, images: int = 160, seed: int = 0, emit: Emit = print
) -> DemoResult:
    """Run the demo in catalog `home` (created if missing) on `rows` synthetic rows and
    `images` synthetic images (0 skips the image step). Its input files and exports go to a
    folder beside the home, `<home>-data`."""
    from coyo_db.dedup.groups import dedup_phash
    from coyo_db.ingest.metadata import ingest_metadata
    from coyo_db.labels.coyo_labeled import ingest_labels
    from coyo_db.results.output import render_table
    from coyo_db.stats.card import stats
    from coyo_db.stats.funnel import funnel
    from coyo_db.synth.labels import synth_labels
    from coyo_db.synth.metadata import write_synth

    home = Path(home)
    catalog = Catalog(home, create=True)  # first: a catalog is made in a new or empty folder
    data = home.parent / f"{home.name}-data"
    result = DemoResult(home=home)
    started = time.perf_counter()

    def step(title: str) -> None:
        result.steps.append(title)
        emit(f"\n== {len(result.steps)}. {title}")

    step(f"synthesise {rows:,} COYO-700M-shaped rows (seed {seed})")
    files = write_synth(data / "coyo-700m", rows, seed=seed, files=2, overwrite=True)
    bad_file = _write_bad_rows(files[0], data / "bad-rows.parquet")
    pointer = _write_lfs_pointer(data / "part-00099-lfs-pointer.parquet")
    emit(f"wrote {len(files)} part files, one file with 4 bad rows, and a Git-LFS pointer")

    step("ingest a Git-LFS pointer saved as .parquet (a common download mistake)")
    try:
        ingest_metadata(catalog, [pointer])
    except CoyoDbError as exc:
        emit(f"refused before writing anything: {exc}")

    step("ingest metadata into `pairs` (bad rows go to `quarantine` with a reason)")
    summary = ingest_metadata(catalog, [*files, bad_file])
    emit(summary.line())
    for reason, count in sorted(summary.quarantine_reasons.items()):
        emit(f"  quarantined {count}: {reason}")
    result.rows_ingested = summary.rows_written
    result.rows_quarantined = summary.rows_quarantined

    step("ingest the same files again: nothing is added")
    again = ingest_metadata(catalog, [*files, bad_file])
    emit(again.line())

    step("ingest COYO-Labeled-300M-shaped labels for a third of the images")
    ids = catalog.sql("SELECT id, url FROM pairs WHERE id % 3 = 0 ORDER BY id")
    labels_file = data / "coyo-labeled-300m" / "part-00000.parquet"
    labels_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(synth_labels(ids["id"], urls=ids["url"], seed=seed), labels_file)
    labeled = ingest_labels(catalog, [labels_file])
    emit(labeled.line())
    result.labels_ingested = labeled.rows_written

    step("COYO's filter funnel: rows removed by each rule, in order")
    steps = funnel(catalog)
    for s in steps:
        emit(
            f"  {s.rule:<16} removes {s.removed:>7,}  ({s.removed_pct:5.2f}%)  "
            f"leaves {s.remaining:>7,}"
        )
    result.survivors = steps[-1].remaining if steps else 0

    step("dataset-card statistics")
    card = stats(catalog)
    pairs = card["pairs"]
    emit(f"  {pairs.rows:,} pairs")
    for distinct in pairs.distinct:
        emit(f"  distinct {distinct.column:<12} {distinct.distinct:>8,}  ({distinct.ratio:.1%})")
    for name in ("clip_similarity_vitb32", "aesthetic_score_laion_v2"):
        column = pairs.column(name)
        emit(
            f"  {name:<26} mean {_fmt(column.mean)}  min {_fmt(column.min)}  max {_fmt(column.max)}"
        )

    step("near-duplicate pHash groups (Hamming radius 4), one keeper each")
    dedup = dedup_phash(catalog, radius=4)
    unique = catalog.sql("SELECT count(*) AS n FROM pairs_unique")["n"][0].as_py()
    emit(
        f"{dedup.groups:,} groups hold {dedup.rows_in_groups:,} rows; {dedup.removed:,} "
        f"non-keepers removed, {unique:,} rows in pairs_unique ({dedup.seconds:.1f} s)"
    )
    result.dedup_removed = dedup.removed

    step("the most frequent top-1 labels (prob >= 0.5), by name")
    emit(render_table(catalog.sql(TOP_LABELS_SQL)).rstrip())

    step("ingest images: pHash, embeddings and scores, with the offline models")
    if images <= 0:
        emit("skipped (--images 0)")
    else:
        result.images = _images_step(catalog, data, images, seed, emit)

    step("label the images (effnet-lite0, ImageNet-21k top-5) and select by hierarchy")
    if result.images is None:
        emit("skipped: no images were ingested")
    else:
        from coyo_db.synth.demo_labels import run_labels_demo

        result.labeling = run_labels_demo(catalog, data, seed=seed, emit=emit)

    step("contamination audit: a reference set, planted copies, removal list and HTML report")
    if result.images is None:
        emit("skipped: no images were ingested")
    else:
        from coyo_db.synth.demo_audit import run_audit_demo

        result.audit = run_audit_demo(catalog, data, seed=seed, emit=emit)

    step("export a thresholded subset without duplicates and contaminated ids; search it")
    from coyo_db.synth.demo_export import run_export_demo

    exported = run_export_demo(catalog, data, seed=seed, emit=emit)
    result.export = exported
    result.subset_rows = exported.exported
    result.subset_path = exported.export_path

    emit(f"\ndone in {time.perf_counter() - started:.1f} s. Explore the catalog:")
    emit(f"  coyo-db tables --home {home}")
    emit(f'  coyo-db query --home {home} "SELECT * FROM quarantine"')
    emit(f'  coyo-db query --home {home} "SELECT * FROM image_scores LIMIT 5"')
    emit("Look at it, search it and review dedup and the audit in a browser:")
    emit(f"  coyo-db serve --home {home}")
    return result


def _images_step(catalog: Catalog, data: Path, count: int, seed: int, emit: Emit) -> object:
    try:
        import torch  # noqa: F401  (the models extra)
    except ModuleNotFoundError:
        emit("skipped: install the models extra (pip install 'coyo-db[all]') for this step")
        return None
    from coyo_db.synth.demo_images import run_images_demo

    return run_images_demo(catalog, data, count=count, seed=seed, emit=emit)


def _write_bad_rows(template: Path, out: Path) -> Path:
    """Four rows copied from a real part file, each broken the way real data breaks."""
    rows = pq.read_table(template).slice(0, 4).to_pylist()
    rows[0]["id"] = None
    rows[1]["image_phash"] = "not-a-phash"
    rows[2]["width"] = 0
    rows[3]["clip_similarity_vitb32"] = math.nan
    for offset, row in enumerate(rows[1:], start=1):
        row["id"] = -offset  # fresh ids, so only the planted problem is reported
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(template)), out)
    return out


def _write_lfs_pointer(out: Path) -> Path:
    out.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 2097152000\n"
    )
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
