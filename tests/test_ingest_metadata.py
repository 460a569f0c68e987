"""`coyo-db ingest metadata`: COYO-700M Parquet into `pairs`, preflight, quarantine, resume."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import coyo_table
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from coyo_db.catalog import Catalog, schemas
from coyo_db.cli.app import app
from coyo_db.errors import InputError, SchemaError, SourceFileError
from coyo_db.ingest.metadata import ingest_metadata
from coyo_db.ingest.parquet_inputs import resolve_paths
from coyo_db.ingest.prefetch import prefetch
from coyo_db.ingest.row_checks import records_json, repeated_ids

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:5c4a9a1b3e2f0d4c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c\n"
    "size 1013374419\n"
)
HTML_PAGE = (
    "<!DOCTYPE html>\n<html class=''>\n<head><meta charset='utf-8'>"
    "<title>data/part-00000.parquet · kakaobrain/coyo-700m at main</title></head>\n"
    "<body>...</body></html>\n"
)


# ---- helpers ------------------------------------------------------------------------------


def pairs_table(coyo_rows: list[dict], n: int, first_id: int) -> pa.Table:
    """`n` rows cycling through the real rows, with ids first_id, first_id + 1, ..."""
    base = coyo_table(coyo_rows)
    table = base.take(pa.array(np.arange(n) % base.num_rows))
    return table.set_column(0, "id", pa.array(np.arange(first_id, first_id + n, dtype=np.int64)))


def with_values(table: pa.Table, column: str, values: dict[int, object]) -> pa.Table:
    """`table` with `column` set to `values` ({row: value}) at the given rows."""
    data = table.column(column).to_pylist()
    for row, value in values.items():
        data[row] = value
    index = table.schema.get_field_index(column)
    return table.set_column(index, table.field(index), pa.array(data, table.field(index).type))


def write(table: pa.Table, path: Path, **options: object) -> Path:
    pq.write_table(table, path, **options)
    return path


def read_pairs(catalog: Catalog) -> pa.Table:
    return catalog.dataset("pairs").to_table().sort_by("id")


def read_quarantine(catalog: Catalog) -> pa.Table:
    if not catalog.has_table("quarantine"):
        return schemas.QUARANTINE.empty_table()
    return (
        catalog.dataset("quarantine")
        .to_table()
        .sort_by([("input", "ascending"), ("row_index", "ascending")])
    )


def pairs_rows(catalog: Catalog) -> int:
    return catalog.dataset("pairs").count_rows() if catalog.has_table("pairs") else 0


class RecordingProgress:
    def __init__(self) -> None:
        self.totals: list[int | None] = []
        self.advanced = 0
        self.finished = 0

    def start(self, description: str, total: int | None = None) -> None:
        self.totals.append(total)

    def advance(self, n: int) -> None:
        self.advanced += n

    def finish(self) -> None:
        self.finished += 1


# ---- the real rows ------------------------------------------------------------------------


def test_real_rows_read_back_equal(catalog: Catalog, coyo_parquet: Path, coyo_rows: list[dict]):
    progress = RecordingProgress()
    summary = ingest_metadata(catalog, [coyo_parquet], progress=progress)

    stored = read_pairs(catalog)
    assert stored.schema == schemas.PAIRS
    assert stored.equals(coyo_table(coyo_rows).sort_by("id"))
    # float32 values exactly as published (the README's rounded ones read back as float32)
    watermark = stored.column("watermark_score")
    assert watermark.type == pa.float32()
    by_id = {row["id"]: row for row in coyo_rows}
    for row in stored.to_pylist():
        assert row["watermark_score"] == np.float32(by_id[row["id"]]["watermark_score"])
        assert row["text"] == by_id[row["id"]]["text"]  # byte for byte, "&" and all
    assert summary.rows_read == summary.rows_written == len(coyo_rows)
    assert summary.rows_quarantined == 0 and summary.inputs_done == 1
    assert progress.totals == [len(coyo_rows)] and progress.advanced == len(coyo_rows)
    assert progress.finished == 1
    runs = catalog.dataset("runs").to_table().to_pylist()
    assert [(r["command"], r["status"], r["rows_written"]) for r in runs] == [
        ("ingest metadata", "ok", len(coyo_rows))
    ]
    entries = catalog.dataset("ledger").to_table().to_pylist()
    assert [(e["input"], e["rows_read"]) for e in entries] == [(str(coyo_parquet), 11)]
    types = catalog.sql(
        "SELECT typeof(id), typeof(width), typeof(image_phash), typeof(watermark_score)"
        " FROM pairs LIMIT 1"
    )
    assert list(types.to_pylist()[0].values()) == ["BIGINT", "INTEGER", "VARCHAR", "FLOAT"]


def test_html_entities_and_unicode_are_kept(catalog: Catalog, tmp_path: Path, coyo_rows):
    texts = {
        0: "Tom &amp; Jerry &#39;classic&#39; &lt;b&gt;",
        1: "caf\u00e9 \u2014 \u6771\u4eac \U0001f600",
    }
    table = with_values(pairs_table(coyo_rows, 2, 1), "text", texts)
    ingest_metadata(catalog, [write(table, tmp_path / "entities.parquet")])
    assert read_pairs(catalog).column("text").to_pylist() == [texts[0], texts[1]]


def test_castable_types_are_cast(catalog: Catalog, tmp_path: Path, coyo_rows, caplog):
    table = coyo_table(coyo_rows)
    wide = pa.schema(
        [
            pa.field(f.name, pa.int64())
            if f.name in ("width", "height", "num_faces")
            else pa.field(f.name, pa.float64())
            if f.name in schemas.SCORE_COLUMNS
            else pa.field(f.name, pa.large_string())
            if f.name in ("url", "text")
            else pa.field(f.name, pa.uint32())
            if f.name == "word_count"
            else f
            for f in table.schema
        ]
    )
    wide_table = table.cast(wide).append_column("extra_note", pa.array(["x"] * table.num_rows))
    path = write(wide_table, tmp_path / "wide.parquet")

    with caplog.at_level(logging.WARNING, logger="coyo_db.ingest.parquet_job"):
        summary = ingest_metadata(catalog, [path])

    assert summary.rows_written == table.num_rows
    assert read_pairs(catalog).equals(table.sort_by("id"))
    assert any("extra_note" in record.getMessage() for record in caplog.records)


def test_uppercase_phash_is_lowercased(catalog: Catalog, tmp_path: Path, coyo_rows):
    table = pairs_table(coyo_rows, 3, 1)
    upper = table.column("image_phash")[0].as_py().upper()
    table = with_values(table, "image_phash", {0: upper})
    summary = ingest_metadata(catalog, [write(table, tmp_path / "upper.parquet")])
    assert summary.rows_quarantined == 0
    assert read_pairs(catalog).column("image_phash")[0].as_py() == upper.lower()


# ---- preflight: files that are not what they claim ------------------------------------------


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: p.write_text(LFS_POINTER),
            "is a Git LFS pointer, not Parquet: run `git lfs pull`",
        ),
        (lambda p: p.write_text(HTML_PAGE), "is an HTML page, not Parquet"),
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (_cut_in_half, "is truncated (the Parquet footer is missing"),
        (lambda p: p.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1"), "has a corrupt Parquet footer"),
        (lambda p: p.write_bytes(b"id,url\n1,http://x\n"), "is not a Parquet file"),
    ],
    ids=["lfs-pointer", "html-page", "empty", "truncated", "bad-footer", "csv"],
)
def test_bad_files_fail_preflight_before_anything_is_written(
    catalog: Catalog, tmp_path: Path, coyo_parquet: Path, make, message: str
):
    bad = tmp_path / "coyo-700m-part-00001.parquet"
    shutil.copy(coyo_parquet, bad)
    make(bad)

    with pytest.raises(SourceFileError) as caught:
        ingest_metadata(catalog, [coyo_parquet, bad])

    text = str(caught.value)
    assert text.startswith(f"{bad.resolve()}: ") and message in text
    assert "\n" not in text
    assert caught.value.path == str(bad.resolve())
    assert pairs_rows(catalog) == 0  # the good file before it was not ingested either


def test_lfs_pointer_message_names_the_real_size(tmp_path: Path, catalog: Catalog):
    pointer = tmp_path / "part-00000.parquet"
    pointer.write_text(LFS_POINTER)
    with pytest.raises(SourceFileError, match=r"download the file itself \(1,013,374,419 bytes\)"):
        ingest_metadata(catalog, [pointer])


def test_every_bad_file_is_counted(tmp_path: Path, catalog: Catalog, caplog):
    for name in ("a.parquet", "b.parquet", "c.parquet"):
        (tmp_path / name).write_text(LFS_POINTER)
    with pytest.raises(SourceFileError, match=r"a\.parquet: .*\(and 2 more bad files, logged\)"):
        ingest_metadata(catalog, [tmp_path])
    assert sum("LFS pointer" in r.getMessage() for r in caplog.records) == 2


def test_missing_column_is_a_schema_error(catalog: Catalog, tmp_path: Path, coyo_rows):
    path = write(coyo_table(coyo_rows).drop_columns(["image_phash"]), tmp_path / "short.parquet")
    with pytest.raises(SchemaError) as caught:
        ingest_metadata(catalog, [path])
    assert str(caught.value) == (
        f"{path.resolve()}: lacks the column 'image_phash' of the expected schema"
    )
    assert pairs_rows(catalog) == 0


def test_uncastable_column_is_a_schema_error(catalog: Catalog, tmp_path: Path, coyo_rows):
    table = coyo_table(coyo_rows)
    table = table.set_column(3, "width", pc.cast(table.column("width"), pa.string()))
    path = write(table, tmp_path / "string-width.parquet")
    with pytest.raises(SchemaError, match=r"string-width\.parquet: column 'width' is string"):
        ingest_metadata(catalog, [path])


def test_value_too_large_for_int32_is_quarantined(catalog: Catalog, tmp_path: Path, coyo_rows):
    table = coyo_table(coyo_rows).cast(schemas.PAIRS.set(3, pa.field("width", pa.int64())))
    table = with_values(table, "width", {4: 2**40})
    path = write(table, tmp_path / "huge.parquet")
    summary = ingest_metadata(catalog, [path])
    assert (summary.rows_written, summary.rows_quarantined) == (table.num_rows - 1, 1)
    assert summary.quarantine_reasons == {"width does not fit int32": 1}
    assert pairs_rows(catalog) == table.num_rows - 1


# ---- corruption found mid-read --------------------------------------------------------------


def test_corruption_mid_read_commits_nothing_of_that_file(
    catalog: Catalog, tmp_path: Path, coyo_rows
):
    good = write(pairs_table(coyo_rows, 50, 1), tmp_path / "a.parquet")
    table = pairs_table(coyo_rows, 3000, 10_000)
    table = with_values(table, "image_phash", {5: "not-a-phash"})  # a quarantined row too
    bad = write(table, tmp_path / "b.parquet", row_group_size=1000)
    # Overwrite the last row group's url column chunk: the footer is intact, preflight passes.
    chunk = pq.ParquetFile(bad).metadata.row_group(2).column(1)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(bad.read_bytes())
    data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    bad.write_bytes(bytes(data))

    with pytest.raises(SourceFileError, match=r"b\.parquet: is corrupt \(.*\): download it again"):
        ingest_metadata(catalog, [good, bad], batch_size=500)

    assert read_pairs(catalog).column("id").to_pylist() == list(range(1, 51))
    assert read_quarantine(catalog).num_rows == 0
    inputs = catalog.dataset("ledger").to_table().column("input").to_pylist()
    assert inputs == [str(good.resolve())]
    runs = catalog.dataset("runs").to_table().to_pylist()
    assert [(r["status"], r["rows_written"]) for r in runs] == [("failed", 50)]


# ---- bad rows go to quarantine --------------------------------------------------------------


def test_each_bad_row_rule_lands_in_quarantine(catalog: Catalog, tmp_path: Path, coyo_rows):
    table = pairs_table(coyo_rows, 40, 100)
    expected = {
        1: "null id",
        2: "null image_phash",
        3: "bad image_phash",  # 15 digits
        4: "bad image_phash",  # not hex
        5: "null width",
        6: "non-positive width",
        7: "non-positive height",
        8: "null height",
        9: "NaN clip_similarity_vitb32",
        10: "NaN aesthetic_score_laion_v2",
        11: "duplicate id",  # repeats row 0's id
        12: "null id; bad image_phash; non-positive width",
        20: "duplicate id",  # its id was given to row 13 too: the first copy is kept
    }
    table = with_values(table, "id", {1: None, 11: 100, 12: None, 13: 120})
    table = with_values(
        table, "image_phash", {2: None, 3: "bac58374982e0fc", 4: "bac58374982e0fcz", 12: "x"}
    )
    table = with_values(table, "width", {5: None, 6: 0, 12: -3})
    table = with_values(table, "height", {7: -1, 8: None})
    table = with_values(table, "clip_similarity_vitb32", {9: float("nan")})
    table = with_values(table, "aesthetic_score_laion_v2", {10: float("nan")})
    table = with_values(table, "nsfw_score_gantman", {14: None})  # a null score is kept
    path = write(table, tmp_path / "rules.parquet")

    summary = ingest_metadata(catalog, [path])

    quarantine = read_quarantine(catalog)
    got = dict(
        zip(
            quarantine.column("row_index").to_pylist(),
            quarantine.column("reason").to_pylist(),
            strict=True,
        )
    )
    assert got == expected
    assert summary.rows_read == 40 == summary.rows_written + summary.rows_quarantined
    assert summary.rows_quarantined == len(expected)
    assert pairs_rows(catalog) == 40 - len(expected)
    assert summary.quarantine_reasons["bad image_phash"] == 2
    assert summary.quarantine_reasons["null id; bad image_phash; non-positive width"] == 1
    assert sum(summary.quarantine_reasons.values()) == summary.rows_quarantined
    # The kept copy of a repeated id is the first one, and the null-score row is in pairs.
    stored = read_pairs(catalog)
    assert pc.count_distinct(stored.column("id")).as_py() == stored.num_rows
    assert 100 in stored.column("id").to_pylist() and 114 in stored.column("id").to_pylist()
    # Nothing lost: each record is the bad row as JSON text, NaN spelled "NaN".
    records = {r["row_index"]: r for r in quarantine.to_pylist()}
    for row_index, record in records.items():
        assert_same_row(json.loads(record["record"]), table.slice(row_index, 1).to_pylist()[0])
    assert json.loads(records[9]["record"])["clip_similarity_vitb32"] == "NaN"
    # float32 values as their shortest decimal, not 0.10146417468786240
    watermark = table.column("watermark_score")[9].as_py()
    assert json.loads(records[9]["record"])["watermark_score"] == float(str(np.float32(watermark)))
    assert f'"watermark_score": {np.float32(watermark)!s},' in records[9]["record"]
    assert records[4]["id"] == 104 and records[1]["id"] is None
    assert json.loads(records[4]["record"])["image_phash"] == "bac58374982e0fcz"
    assert {r["fingerprint"] for r in records.values()} == {
        catalog.dataset("ledger").to_table().column("fingerprint")[0].as_py()
    }


def assert_same_row(record: dict, row: dict) -> None:
    assert list(record) == list(row)
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            assert record[key] == {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[str(value)]
        elif isinstance(value, float):  # float64 exact, float32 as its shortest decimal
            assert record[key] == value or np.float32(record[key]) == np.float32(value), key
        else:
            assert record[key] == value, key


def test_duplicate_ids_across_batches_keep_the_first(catalog: Catalog, tmp_path: Path, coyo_rows):
    table = pairs_table(coyo_rows, 30, 1)
    table = with_values(table, "id", {25: 3, 26: None, 27: 3, 29: 26})
    summary = ingest_metadata(catalog, [write(table, tmp_path / "dups.parquet")], batch_size=7)
    quarantine = read_quarantine(catalog)
    assert dict(
        zip(
            quarantine.column("row_index").to_pylist(),
            quarantine.column("reason").to_pylist(),
            strict=True,
        )
    ) == {25: "duplicate id", 26: "null id", 27: "duplicate id"}
    stored = read_pairs(catalog)
    assert (
        stored.filter(pc.equal(stored.column("id"), 3)).column("url")[0] == table.column("url")[2]
    )
    assert summary.rows_written == 27


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none() | st.integers(-(2**63), 2**63 - 1),
            st.none() | st.text(),
            st.none() | st.floats(width=32),
            st.none() | st.floats(),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_records_json_reads_back_as_the_rows(rows):
    names = ["id", "text", "score", "double"]
    types = [pa.int64(), pa.string(), pa.float32(), pa.float64()]
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(column, kind)
            for column, kind in zip(zip(*rows, strict=True), types, strict=True)
        ],
        names=names,
    )
    for text, row in zip(records_json(batch).to_pylist(), batch.to_pylist(), strict=True):
        record = json.loads(text)
        assert list(record) == names
        assert_same_row(record, row)
        assert record["double"] == row["double"] or not math.isfinite(row["double"])


def test_repeated_ids_marks_later_copies():
    ids = pa.chunked_array([[5, 3, None, 5], [7, 3, 3, None, 9]])
    assert repeated_ids(ids).tolist() == [
        False,
        False,
        False,
        True,
        False,
        True,
        True,
        False,
        False,
    ]
    assert repeated_ids(pa.array([1, 2, None, 3])) is None


# ---- re-ingest and resume -------------------------------------------------------------------


def test_reingest_adds_nothing_same_file_or_renamed_copy(
    catalog: Catalog, tmp_path: Path, coyo_rows
):
    table = with_values(pairs_table(coyo_rows, 20, 1), "width", {3: 0})
    path = write(table, tmp_path / "part-00000.parquet")
    first = ingest_metadata(catalog, [path])
    copy = tmp_path / "elsewhere" / "renamed.parquet"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    versions = catalog.versions()

    again = ingest_metadata(catalog, [path, copy])

    assert first.rows_written == 19 and first.rows_quarantined == 1
    assert (again.inputs_seen, again.inputs_skipped, again.inputs_done) == (2, 2, 0)
    assert again.rows_read == again.rows_written == 0
    assert pairs_rows(catalog) == 19 and read_quarantine(catalog).num_rows == 1
    changed = {name for name, v in catalog.versions().items() if versions.get(name) != v}
    assert changed == {"runs"}
    # The same content twice in one run is ingested once.
    other = Catalog(tmp_path / "other-home", create=True)
    once = ingest_metadata(other, [path, copy])
    assert (once.inputs_done, once.inputs_skipped, pairs_rows(other)) == (1, 1, 19)


KILLER = textwrap.dedent(
    """
    import os, sys
    from coyo_db.catalog import lance_tables
    from coyo_db.catalog import ledger
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.metadata import ingest_metadata

    home, point, *files = sys.argv[1:]
    seen = []
    if point == "before-pairs-commit":  # quarantine committed, pairs not yet
        real = ledger.Ledger.commit_input
        def commit_input(self, transaction, record, run_id):
            seen.append(record)
            if len(seen) == 2:
                os._exit(137)
            return real(self, transaction, record, run_id)
        ledger.Ledger.commit_input = commit_input
    else:  # pairs committed, its `ledger` row not yet written
        real = lance_tables.commit
        def commit(uri, transaction, properties):
            dataset = real(uri, transaction, properties)
            if str(uri).endswith("pairs.lance"):
                seen.append(uri)
                if len(seen) == 2:
                    os._exit(137)
            return dataset
        lance_tables.commit = commit
    ingest_metadata(Catalog(home, create=True), files)
    sys.exit(3)  # not reached
    """
)


@pytest.mark.parametrize("point", ["before-pairs-commit", "after-pairs-commit"])
def test_killed_ingest_resumes_with_each_row_once(tmp_path: Path, coyo_rows, point: str):
    files = []
    for index in range(3):
        table = pairs_table(coyo_rows, 40, 1000 * index)
        table = with_values(table, "image_phash", {index: "BAD", 30: None})
        files.append(write(table, tmp_path / f"part-{index:05d}.parquet"))
    home = tmp_path / "home"
    scratch = tmp_path / "scratch"  # where the killed run leaves its spill file
    scratch.mkdir()
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(home), point, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert killed.returncode == 137, killed.stderr
    catalog = Catalog(home)
    ids_after_kill = catalog.dataset("pairs").to_table().num_rows
    assert ids_after_kill == (38 if point == "before-pairs-commit" else 76)
    assert read_quarantine(catalog).num_rows == 4  # two files' bad rows, whatever the point

    summary = ingest_metadata(catalog, files)

    assert summary.inputs_skipped == (1 if point == "before-pairs-commit" else 2)
    ids = catalog.dataset("pairs").to_table().column("id")
    assert len(ids) == 3 * 38 and pc.count_distinct(ids).as_py() == len(ids)
    expected = {1000 * i + r for i in range(3) for r in range(40)} - {
        1000 * i + r for i in range(3) for r in (i, 30)
    }
    assert set(ids.to_pylist()) == expected
    quarantine = read_quarantine(catalog)
    assert quarantine.num_rows == 6
    keys = zip(quarantine["input"].to_pylist(), quarantine["row_index"].to_pylist(), strict=True)
    assert len(set(keys)) == 6
    entries = catalog.dataset("ledger").to_table()
    assert sorted(entries.column("input").to_pylist()) == sorted(str(f.resolve()) for f in files)


# ---- finding files --------------------------------------------------------------------------


def test_paths_are_files_folders_and_globs(tmp_path: Path, coyo_rows):
    nested = tmp_path / "data" / "deep"
    nested.mkdir(parents=True)
    a = write(pairs_table(coyo_rows, 2, 1), tmp_path / "data" / "a.parquet")
    b = write(pairs_table(coyo_rows, 2, 10), nested / "b.parquet")
    (nested / "notes.txt").write_text("not parquet")

    assert resolve_paths([tmp_path / "data"]) == [a.resolve(), b.resolve()]
    assert resolve_paths([str(tmp_path / "data" / "**" / "*.parquet")]) == [
        a.resolve(),
        b.resolve(),
    ]
    assert resolve_paths([a, str(tmp_path / "data" / "*.parquet")]) == [a.resolve()]
    for missing in [str(tmp_path / "nope.parquet"), str(tmp_path / "*.nothing"), tmp_path / "e"]:
        if str(missing).endswith("e"):
            Path(missing).mkdir()
        with pytest.raises(InputError, match=str(missing).replace("*", r"\*")):
            resolve_paths([missing])


def test_folder_ingest_sums_up(catalog: Catalog, tmp_path: Path, coyo_rows):
    folder = tmp_path / "coyo"
    folder.mkdir()
    for index in range(3):
        write(pairs_table(coyo_rows, 10 + index, 100 * index), folder / f"part-{index}.parquet")
    progress = RecordingProgress()
    summary = ingest_metadata(catalog, [folder], progress=progress)
    assert (summary.inputs_seen, summary.inputs_done, summary.rows_written) == (3, 3, 33)
    assert progress.totals == [33] and progress.advanced == 33
    assert "3 of 3 files ingested" in summary.line()


# ---- the command line -----------------------------------------------------------------------


def test_cli_bad_file_prints_one_line_and_fails(tmp_path: Path):
    pointer = tmp_path / "part-00000.parquet"
    pointer.write_text(LFS_POINTER)
    Catalog.init(tmp_path / "home")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "coyo_db.cli.entry",
            "ingest",
            "metadata",
            str(pointer),
            "--home",
            str(tmp_path / "home"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(pointer.resolve()) in lines[0] and "git lfs pull" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_cli_ingests_and_reports(tmp_path: Path, coyo_rows):
    table = with_values(pairs_table(coyo_rows, 12, 1), "width", {0: -5})
    path = write(table, tmp_path / "part.parquet")
    Catalog.init(tmp_path / "home")
    result = CliRunner().invoke(
        app, ["ingest", "metadata", str(path), "--home", str(tmp_path / "home")]
    )
    assert result.exit_code == 0, result.output
    assert "11 written + 1 quarantined" in result.output
    assert "quarantined 1: non-positive width" in result.output


# ---- prefetch -------------------------------------------------------------------------------


def test_prefetch_keeps_order_and_passes_errors_through():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))

    def failing():
        yield 1
        raise SourceFileError("f.parquet", "is corrupt")

    got = []
    with pytest.raises(SourceFileError, match="is corrupt"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1]


def test_prefetch_stops_its_thread_when_the_consumer_stops():
    closed = []

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.append(True)

    items = prefetch(endless(), depth=2)
    assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    items.close()
    assert closed == [True]
