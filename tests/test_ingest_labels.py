"""`coyo-db ingest labels`: COYO-Labeled-300M rows into `labels`, checks, resume, labels_long."""

from __future__ import annotations

import itertools
import json
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from coyo_db.catalog import schemas
from coyo_db.catalog.ledger import Ledger
from coyo_db.cli.app import app
from coyo_db.errors import SchemaError, SourceFileError
from coyo_db.ingest.row_checks import DUPLICATE_ID, SeenIds
from coyo_db.ingest.safe_pickle import UnsafePickleError
from coyo_db.labels.coyo_labeled import (
    BAD_INDEX,
    BAD_PROB,
    INPUT_COLUMNS,
    LENGTHS_DIFFER,
    NOT_DESCENDING,
    NULL_ID,
    NULL_LABELS,
    NULL_PROBS,
    check_labels,
    ingest_labels,
)
from coyo_db.labels.taxonomy import load_taxonomy

runner = CliRunner()
TOP_K = 50
N_CLASSES = 21841

# The full example row of the COYO-Labeled-300M dataset card (a pair of blue and white table
# lamps): 50 labels and probabilities exactly as published, a tie at ranks 41 and 42 included.
CARD_ROW = {
    "id": 315,
    "url": "https://a.1stdibscdn.com/pair-of-blue-and-white-table-lamps-for-sale/1121189/"
    "f_121556431538206028457/12155643_master.jpg?width=240",
    "imagehash": "daf5a50aae4aa54a",
    "labels": [8087, 11054, 8086, 6614, 6966, 8193, 10576, 9710, 4334, 9909, 8090, 10104, 10105,
               9602, 5278, 9547, 6978, 12011, 7272, 5273, 6279, 4279, 10903, 8656, 9601, 8795,
               9326, 4606, 9907, 9106, 7574, 10006, 7257, 6959, 9758, 9039, 10682, 7164, 5888,
               11654, 8201, 4546, 9238, 8197, 10882, 17380, 4470, 5275, 10537, 11548],
    "label_probs": [0.4453125, 0.30419921875, 0.09417724609375, 0.033905029296875,
                    0.03240966796875, 0.0157928466796875, 0.01406097412109375,
                    0.01129150390625, 0.00978851318359375, 0.00841522216796875,
                    0.007720947265625, 0.00634002685546875, 0.0041656494140625,
                    0.004070281982421875, 0.002910614013671875, 0.0028018951416015625,
                    0.002262115478515625, 0.0020503997802734375, 0.0017080307006835938,
                    0.0016880035400390625, 0.0016679763793945312, 0.0016613006591796875,
                    0.0014324188232421875, 0.0012445449829101562, 0.0011739730834960938,
                    0.0010318756103515625, 0.0008969306945800781, 0.0008792877197265625,
                    0.0008726119995117188, 0.0008263587951660156, 0.0007123947143554688,
                    0.0006799697875976562, 0.0006561279296875, 0.0006542205810546875,
                    0.0006093978881835938, 0.0006046295166015625, 0.0005769729614257812,
                    0.00057220458984375, 0.0005636215209960938, 0.00055694580078125,
                    0.0005092620849609375, 0.000507354736328125, 0.000507354736328125,
                    0.000499725341796875, 0.000484466552734375, 0.0004456043243408203,
                    0.0004439353942871094, 0.0004355907440185547, 0.00043392181396484375,
                    0.00041866302490234375],
    "width": 240,
    "height": 240,
}  # fmt: skip


def as_is(row: dict) -> dict:
    """A preview row with its visible prefixes as the lists, verbatim (lengths differ)."""
    return {
        **row,
        "labels": row["labels_visible_prefix"],
        "label_probs": row["label_probs_visible_prefix"],
    }


def short(row: dict) -> dict:
    """A preview row with its lists cut to the length both visible prefixes have."""
    k = min(len(row["labels_visible_prefix"]), len(row["label_probs_visible_prefix"]))
    return {
        **row,
        "labels": row["labels_visible_prefix"][:k],
        "label_probs": row["label_probs_visible_prefix"][:k],
    }


def padded(row: dict, seed: int = 0) -> dict:
    """A preview row completed to 50 labels: the visible ones first, then made-up classes with
    probabilities falling geometrically below the last visible one (as COYO's do)."""
    rng = np.random.default_rng(seed + row["id"])
    labels = list(row["labels_visible_prefix"])
    rest = rng.choice(np.setdiff1d(np.arange(N_CLASSES), labels), TOP_K - len(labels), False)
    probs = list(row["label_probs_visible_prefix"])
    tail = np.geomspace(probs[-1] * 0.4, probs[-1] * 4e-4, TOP_K - len(probs))
    return {
        **row,
        "labels": labels + rest.tolist(),
        "label_probs": probs + np.float32(tail).tolist(),
    }


def write_labeled(path: Path, rows: list[dict], schema: pa.Schema = schemas.COYO_LABELED) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def input_rows(path: Path) -> pl.DataFrame:
    return pl.from_arrow(pq.read_table(path))  # type: ignore[return-value]


def expected_long(path: Path) -> pl.DataFrame:
    """labels_long computed independently with Polars from the input file and the taxonomy."""
    taxonomy = pl.from_arrow(load_taxonomy()).select(pl.col("index").alias("label"), "wnid", "name")
    return (
        input_rows(path)
        .select("id", "labels", "label_probs")
        .with_columns(rank=pl.int_ranges(pl.col("labels").list.len(), dtype=pl.Int32))
        .explode("labels", "label_probs", "rank")
        .rename({"labels": "label", "label_probs": "prob"})
        .join(taxonomy, on="label", how="left")
        .select("id", "rank", "label", "wnid", "name", "prob")
        .sort("id", "rank")
    )


def labels_long(catalog) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    return catalog.pl("SELECT * FROM labels_long ORDER BY id, rank")


# ---- ingest and decode ----------------------------------------------------------------------


def test_full_length_rows_decode_to_ranked_named_labels(catalog, tmp_path, labeled_rows):
    path = write_labeled(tmp_path / "part-00000.parquet", [CARD_ROW, *map(padded, labeled_rows)])
    summary = ingest_labels(catalog, [path])
    assert (summary.rows_read, summary.rows_written, summary.rows_quarantined) == (6, 6, 0)

    stored = catalog.sql("SELECT * FROM labels ORDER BY id").to_pylist()
    assert {r["taxonomy"] for r in stored} == {"imagenet-21k"}
    assert {r["model"] for r in stored} == {"coyo-labeled-300m"}
    assert stored[0]["labels"] == CARD_ROW["labels"]
    assert stored[0]["label_probs"] == pytest.approx(CARD_ROW["label_probs"], rel=1e-7)

    long = labels_long(catalog)
    assert long.columns == ["id", "taxonomy", "model", "rank", "label", "wnid", "name", "prob"]
    assert long.height == 6 * TOP_K
    assert (
        long.group_by("id").agg(pl.col("rank").sort()).get_column("rank").to_list()
        == [list(range(TOP_K))] * 6
    )
    assert long.select(expected_long(path).columns).equals(expected_long(path))

    by_rank = {(r["id"], r["rank"]): r for r in long.iter_rows(named=True)}
    assert by_rank[315, 0]["name"] == "lamp" and by_rank[315, 1]["name"] == "table lamp"
    assert [by_rank[601, k]["name"] for k in range(3)] == ["bootee, bootie", "bootstrap", "boot"]
    assert [by_rank[601, k]["wnid"] for k in range(3)] == ["n02873733", "n02874750", "n02872752"]
    assert by_rank[1105, 0]["name"] == "casserole"
    assert by_rank[601, 0]["prob"] == pytest.approx(0.8496094)


def test_short_lists_are_ingested_as_they_are(catalog, tmp_path, labeled_rows):
    path = write_labeled(tmp_path / "short.parquet", [short(r) for r in labeled_rows])
    summary = ingest_labels(catalog, [path])
    assert (summary.rows_written, summary.rows_quarantined) == (5, 0)
    long = labels_long(catalog)
    assert long.get_column("rank").to_list() == [0] * 5
    assert dict(zip(long["id"], long["name"], strict=True)) == {
        463: "web site, website, internet site, site",
        601: "bootee, bootie",
        1105: "casserole",
        2308: "exhibition hall, exhibition area",
        3710: "great-nephew, grandnephew",
    }
    assert long.select(expected_long(path).columns).equals(expected_long(path))


def test_the_verbatim_prefixes_differ_in_length_and_are_quarantined(
    catalog, tmp_path, labeled_rows
):
    path = write_labeled(tmp_path / "prefixes.parquet", [as_is(r) for r in labeled_rows])
    summary = ingest_labels(catalog, [path])
    assert (summary.rows_read, summary.rows_written, summary.rows_quarantined) == (5, 0, 5)
    assert summary.quarantine_reasons == {LENGTHS_DIFFER: 5}
    assert catalog.dataset("labels").count_rows() == 0


# ---- bad rows -------------------------------------------------------------------------------

BAD_ROWS = [
    ({"id": None}, [NULL_ID]),
    ({"labels": None}, [NULL_LABELS]),
    ({"label_probs": None}, [NULL_PROBS]),
    ({"labels": [1, 2, 3], "label_probs": [0.5, 0.4]}, [LENGTHS_DIFFER]),
    ({"labels": [1, N_CLASSES], "label_probs": [0.5, 0.4]}, [BAD_INDEX]),
    ({"labels": [-1, 2], "label_probs": [0.5, 0.4]}, [BAD_INDEX]),
    ({"labels": [1, None], "label_probs": [0.5, 0.4]}, [BAD_INDEX]),
    ({"labels": [1, 2], "label_probs": [0.5, float("nan")]}, [BAD_PROB]),
    ({"labels": [1, 2], "label_probs": [1.5, 0.4]}, [BAD_PROB]),
    ({"labels": [1, 2], "label_probs": [0.5, -0.1]}, [BAD_PROB]),
    ({"labels": [1, 2], "label_probs": [0.5, None]}, [BAD_PROB]),
    ({"labels": [1, 2, 3], "label_probs": [0.5, 0.2, 0.3]}, [NOT_DESCENDING]),
    ({"labels": [1, N_CLASSES], "label_probs": [0.4, 0.5]}, [BAD_INDEX, NOT_DESCENDING]),
    ({"id": 601}, [DUPLICATE_ID]),
]
GOOD_EDGES = [
    {"labels": [], "label_probs": []},  # empty lists: nothing to check, nothing wrong
    {"labels": [0, N_CLASSES - 1], "label_probs": [1.0, 0.0]},  # the bounds are inclusive
    {"labels": [5, 6, 7], "label_probs": [0.5, 0.5, 0.5]},  # ties are not a rise
]


def test_bad_rows_are_quarantined_with_every_reason(catalog, tmp_path, labeled_rows):
    good = [short(r) for r in labeled_rows]
    rows, expected = [], {}
    for n, (change, reasons) in enumerate(BAD_ROWS):
        rows.append({**good[n % 5], "id": 10_000 + n, **change})
        expected[len(rows) - 1] = "; ".join(r.format(max_index=N_CLASSES - 1) for r in reasons)
        rows.append(good[n % 5] if n < 5 else {**good[0], "id": 20_000 + n})
    rows += [{**good[0], "id": 30_000 + n, **edge} for n, edge in enumerate(GOOD_EDGES)]
    path = write_labeled(tmp_path / "mixed.parquet", rows)

    summary = ingest_labels(catalog, [path], batch_size=4)  # checks cross batch boundaries
    assert summary.rows_read == len(rows) == summary.rows_written + summary.rows_quarantined
    assert summary.rows_quarantined == len(BAD_ROWS)

    quarantined = catalog.sql(
        "SELECT row_index, id, reason, record, table_name, input FROM quarantine ORDER BY row_index"
    ).to_pylist()
    assert {q["row_index"]: q["reason"] for q in quarantined} == expected
    assert {q["table_name"] for q in quarantined} == {"labels"}
    assert {q["input"] for q in quarantined} == {str(path.resolve())}
    for q in quarantined:
        record = json.loads(q["record"])
        assert record["id"] == q["id"] == rows[q["row_index"]]["id"]
        assert set(record) == {"id", "labels", "label_probs"}
    written = set(catalog.sql("SELECT id FROM labels").column("id").to_pylist())
    assert written == {r["id"] for i, r in enumerate(rows) if i not in expected}


def test_checks_follow_list_offsets_not_raw_values():
    # A null list may still span values in its offsets; a sliced array starts mid-buffer.
    labels = pa.ListArray.from_arrays(
        pa.array([0, 2, 4, 6], pa.int32()),
        pa.array([1, 2, 99_999, -5, 3, 4], pa.int32()),
        mask=pa.array([False, True, False]),
    )
    probs = pa.ListArray.from_arrays(
        pa.array([0, 2, 4, 6], pa.int32()),
        pa.array([0.9, 0.1, 0.2, 0.8, 0.6, 0.3], pa.float32()),
    )
    batch = pa.RecordBatch.from_arrays(
        [pa.array([1, 2, 3], pa.int64()), labels, probs], names=["id", "labels", "label_probs"]
    )
    checked = check_labels(batch, N_CLASSES, SeenIds())
    assert checked.bad_index.to_pylist() == [1]
    assert checked.bad_reasons.to_pylist() == [f"{NULL_LABELS}; {NOT_DESCENDING}"]

    tail = check_labels(batch.slice(2), N_CLASSES, SeenIds())
    assert tail.bad_index.to_pylist() == [] and tail.good.num_rows == 1


def _reference_reasons(row: dict, n_classes: int, seen: set) -> str:
    """The rules written the slow, obvious way, one row at a time."""
    ids, labels, probs = row["id"], row["labels"], row["label_probs"]
    reasons = []
    if ids is None:
        reasons.append(NULL_ID)
    if labels is None:
        reasons.append(NULL_LABELS)
    if probs is None:
        reasons.append(NULL_PROBS)
    if labels is not None and probs is not None and len(labels) != len(probs):
        reasons.append(LENGTHS_DIFFER)
    if any(v is None or not 0 <= v < n_classes for v in labels or []):
        reasons.append(BAD_INDEX.format(max_index=n_classes - 1))
    if any(p is None or not 0.0 <= p <= 1.0 for p in probs or []):
        reasons.append(BAD_PROB)
    if any(b > a for a, b in itertools.pairwise(probs or []) if a is not None and b is not None):
        reasons.append(NOT_DESCENDING)
    if ids is not None and ids in seen:
        reasons.append(DUPLICATE_ID)
    seen.add(ids)
    return "; ".join(reasons)


def _random_rows(rng: random.Random) -> list[dict]:
    probs = [0.0, 0.1, 0.5, 0.5, 0.9, 1.0, 1.5, -0.1, float("nan"), None]
    labels = [0, 1, 5, 9, 10, -1, None]

    def some(values: list, p_null: float = 0.15) -> list | None:
        return None if rng.random() < p_null else rng.choices(values, k=rng.randint(0, 4))

    return [
        {
            "id": rng.choice([1, 2, 3, 4, None]),
            "labels": some(labels),
            "label_probs": some(probs),
        }
        for _ in range(rng.randint(1, 12))
    ]


def test_vectorised_checks_agree_with_a_row_by_row_reference():
    for seed in range(300):
        rng = random.Random(seed)
        rows = _random_rows(rng)
        batch = pa.RecordBatch.from_pylist(rows, schema=INPUT_COLUMNS)
        batch = batch.slice(rng.randint(0, len(rows) - 1))  # offsets that do not start at 0
        seen: set = set()
        expected = [_reference_reasons(row, 10, seen) for row in batch.to_pylist()]
        checked = check_labels(batch, 10, SeenIds())
        got = [""] * batch.num_rows
        bad = zip(checked.bad_index.to_pylist(), checked.bad_reasons.to_pylist(), strict=True)
        for index, reason in bad:
            got[index] = reason
        assert got == expected, (seed, batch.to_pylist())
        assert checked.good.num_rows == expected.count(""), seed


# ---- files, resume, runs --------------------------------------------------------------------


def test_reingest_adds_nothing(catalog, tmp_path, labeled_rows):
    path = write_labeled(tmp_path / "part.parquet", [short(r) for r in labeled_rows])
    first = ingest_labels(catalog, [path])
    versions = catalog.versions()
    again = ingest_labels(catalog, [tmp_path])
    copy = shutil.copy(path, tmp_path / "renamed-copy.parquet")
    renamed = ingest_labels(catalog, [copy])
    assert first.inputs_done == 1
    assert (again.inputs_skipped, again.rows_read) == (1, 0)
    assert (renamed.inputs_skipped, renamed.rows_read) == (1, 0)
    current = catalog.versions()
    assert {k: current[k] for k in ("labels", "taxonomies")} == {
        k: versions[k] for k in ("labels", "taxonomies")
    }
    assert catalog.dataset("labels").count_rows() == 5


def test_the_same_content_twice_in_one_run_is_ingested_once(catalog, tmp_path, labeled_rows):
    path = write_labeled(tmp_path / "part.parquet", [short(r) for r in labeled_rows])
    copy = shutil.copy(path, tmp_path / "mirror.parquet")
    summary = ingest_labels(catalog, [path, copy])
    assert (summary.inputs_done, summary.inputs_skipped) == (1, 1)
    assert catalog.dataset("labels").count_rows() == 5


def test_a_run_killed_before_the_labels_commit_resumes_exactly_once(
    catalog, tmp_path, labeled_rows, monkeypatch
):
    rows = [short(r) for r in labeled_rows] + [{**short(labeled_rows[0]), "id": None}]
    path = write_labeled(tmp_path / "part.parquet", rows)
    real_commit = Ledger.commit_input

    def killed(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(Ledger, "commit_input", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest_labels(catalog, [path])
    assert catalog.dataset("labels").count_rows() == 0
    assert catalog.dataset("quarantine").count_rows() == 1  # committed before the kill
    monkeypatch.setattr(Ledger, "commit_input", real_commit)

    summary = ingest_labels(catalog, [path])
    assert (summary.rows_written, summary.rows_quarantined) == (5, 1)
    assert catalog.dataset("labels").count_rows() == 5
    assert catalog.dataset("quarantine").count_rows() == 1
    runs = catalog.sql("SELECT status FROM runs ORDER BY started_at").column("status")
    assert runs.to_pylist() == ["interrupted", "ok"]


def test_a_run_killed_after_the_labels_commit_is_recognised_as_done(
    catalog, tmp_path, labeled_rows, monkeypatch
):
    path = write_labeled(tmp_path / "part.parquet", [short(r) for r in labeled_rows])
    real_write = Ledger._write

    def killed(self, entries):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(Ledger, "_write", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest_labels(catalog, [path])
    monkeypatch.setattr(Ledger, "_write", real_write)
    assert catalog.dataset("labels").count_rows() == 5
    summary = ingest_labels(catalog, [path])
    assert (summary.inputs_skipped, summary.rows_written) == (1, 0)
    assert catalog.dataset("labels").count_rows() == 5


def test_runs_progress_and_summary(catalog, tmp_path, labeled_rows):
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def start(self, description: str, total: int | None = None) -> None:
            self.calls.append(("start", total))

        def advance(self, n: int) -> None:
            self.calls.append(("advance", n))

        def finish(self) -> None:
            self.calls.append(("finish",))

    paths = [
        write_labeled(tmp_path / "a.parquet", [short(r) for r in labeled_rows[:3]]),
        write_labeled(tmp_path / "b.parquet", [short(r) for r in labeled_rows[3:]]),
    ]
    progress = Recorder()
    summary = ingest_labels(catalog, paths, progress=progress, batch_size=2)
    assert progress.calls[0] == ("start", 5) and progress.calls[-1] == ("finish",)
    assert sum(c[1] for c in progress.calls if c[0] == "advance") == 5
    assert (summary.inputs_seen, summary.inputs_done, summary.rows_written) == (2, 2, 5)
    assert "labels: 2 of 2 files ingested" in summary.line()
    run = catalog.sql("SELECT * FROM runs").to_pylist()
    assert len(run) == 1 and run[0]["run_id"] == summary.run_id
    assert (run[0]["command"], run[0]["status"], run[0]["rows_written"]) == (
        "ingest labels",
        "ok",
        5,
    )
    entries = catalog.sql("SELECT rows_read FROM ledger WHERE table_name = 'labels'")
    assert sorted(entries.column("rows_read").to_pylist()) == [2, 3]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"<!DOCTYPE html><html><head><title>Hugging Face</title>", "HTML page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9000\n", "LFS"),
        (b"PAR1\x15\x04\x15", "truncated"),
    ],
)
def test_files_that_are_not_parquet_stop_before_anything_is_written(
    catalog, tmp_path, labeled_rows, content, problem
):
    good = write_labeled(tmp_path / "a.parquet", [short(r) for r in labeled_rows])
    bad = tmp_path / "b.parquet"
    bad.write_bytes(content)
    with pytest.raises(SourceFileError, match=problem):
        ingest_labels(catalog, [good, bad])
    assert catalog.table_names() == ["quarantine", "runs"]  # init's table and the failed run
    run = catalog.sql("SELECT status, error, tables_written FROM runs").to_pylist()
    assert run == [{"status": "failed", "error": ANY, "tables_written": "{}"}]
    assert problem in run[0]["error"]


def test_a_file_without_label_probs_is_a_schema_error(catalog, tmp_path, labeled_rows):
    schema = pa.schema([f for f in schemas.COYO_LABELED if f.name != "label_probs"])
    path = write_labeled(tmp_path / "a.parquet", [short(r) for r in labeled_rows], schema)
    with pytest.raises(SchemaError, match="label_probs"):
        ingest_labels(catalog, [path])


# ---- the synset tree ------------------------------------------------------------------------


def test_the_tree_pickle_goes_to_taxonomy_tree(catalog, tmp_path, labeled_rows):
    path = write_labeled(tmp_path / "a.parquet", [short(r) for r in labeled_rows])
    boot, bootee = "n02872752", "n02873733"
    footwear = "n03381126"
    tree = tmp_path / "imagenet21k_tree.pickle"
    tree.write_bytes(pickle.dumps({footwear: [boot], boot: [bootee]}))
    ingest_labels(catalog, [path], tree=tree)
    edges = catalog.sql("SELECT parent_wnid, child_wnid FROM taxonomy_tree ORDER BY 1")
    assert edges.to_pylist() == [
        {"parent_wnid": boot, "child_wnid": bootee},
        {"parent_wnid": footwear, "child_wnid": boot},
    ]
    parents = catalog.sql(
        "SELECT l.id, t.parent_wnid FROM labels_long l JOIN taxonomy_tree t"
        " ON t.child_wnid = l.wnid"
    ).to_pylist()
    assert parents == [{"id": 601, "parent_wnid": boot}]


def test_a_tree_pickle_carrying_code_stops_the_ingest_first(catalog, tmp_path, labeled_rows):
    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (shutil.rmtree, (str(tmp_path),))

    path = write_labeled(tmp_path / "a.parquet", [short(r) for r in labeled_rows])
    tree = tmp_path / "imagenet21k_tree.pickle"
    tree.write_bytes(pickle.dumps({"n02872752": Payload()}))
    with pytest.raises(UnsafePickleError, match=r"shutil\.rmtree"):
        ingest_labels(catalog, [path], tree=tree)
    assert path.exists()
    assert catalog.table_names() == ["quarantine", "runs"]  # init's table and the failed run
    assert catalog.sql("SELECT status FROM runs")["status"].to_pylist() == ["failed"]


# ---- the command line -----------------------------------------------------------------------


def test_cli_ingests_labels_and_tree(tmp_path, labeled_rows):
    path = write_labeled(tmp_path / "a.parquet", [short(r) for r in labeled_rows])
    tree = tmp_path / "tree.pickle"
    tree.write_bytes(pickle.dumps({"n02872752": ["n02873733"]}))
    home = str(tmp_path / "home")
    assert runner.invoke(app, ["init", "--home", home]).exit_code == 0
    result = runner.invoke(
        app, ["ingest", "labels", str(path), "--tree", str(tree), "--home", home]
    )
    assert result.exit_code == 0, result.output
    assert "labels: 1 of 1 files ingested" in result.stdout
    assert "5 rows read = 5 written + 0 quarantined" in result.stdout


def test_cli_refuses_an_unsafe_tree_in_one_line(tmp_path, labeled_rows):
    path = write_labeled(tmp_path / "a.parquet", [short(r) for r in labeled_rows])
    tree = tmp_path / "tree.pickle"
    tree.write_bytes(pickle.dumps({"root": Path("x")}))
    assert runner.invoke(app, ["init", "--home", str(tmp_path / "home")]).exit_code == 0
    result = subprocess.run(
        [sys.executable, "-m", "coyo_db.cli.entry", "ingest", "labels", str(path),
         "--tree", str(tree), "--home", str(tmp_path / "home")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:")
    assert str(tree) in result.stderr and "refused" in result.stderr


def test_label_lists_of_other_integer_and_float_widths_are_cast(catalog, tmp_path):
    wide = pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("labels", pa.large_list(pa.field("item", pa.int64(), nullable=False))),
            pa.field("label_probs", pa.list_(pa.float64())),
        ]
    )
    table = pa.table(
        {"id": [1, 2], "labels": [[5, 3], [7]], "label_probs": [[0.9, 0.2], [0.5]]}, schema=wide
    )
    path = tmp_path / "wide-labels.parquet"
    pq.write_table(table, path)
    summary = ingest_labels(catalog, [path])
    assert summary.rows_written == 2
    stored = catalog.sql("SELECT id, labels, label_probs FROM labels ORDER BY id")
    assert stored.schema.field("labels").type == pa.list_(pa.int32())
    assert stored["labels"].to_pylist() == [[5, 3], [7]]
    assert stored["label_probs"].to_pylist()[1] == [0.5]
