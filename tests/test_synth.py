"""The synthetic COYO generator: row invariants, planted shares, determinism, files, CLI."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from coyo_db.catalog import schemas
from coyo_db.cli.app import app
from coyo_db.errors import InputError
from coyo_db.synth.metadata import (
    PlantedShares,
    synth_batches,
    synth_table,
    synth_truth,
    write_synth,
)

ROWS = 50_000
SEED = 7
CARD_DISTINCT = {"image_phash": 0.7760, "url": 0.8784, "text": 0.7581}


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return synth_table(ROWS, seed=SEED)


@pytest.fixture(scope="module")
def truth() -> pa.Table:
    return synth_truth(ROWS, seed=SEED)


def test_schema_is_pairs_exactly(table: pa.Table) -> None:
    assert table.schema.equals(schemas.PAIRS, check_metadata=True)
    assert table.num_rows == ROWS
    assert all(table.column(name).null_count == 0 for name in table.column_names)


def test_text_length_and_word_count_on_every_row(table: pa.Table) -> None:
    texts = table["text"].to_pylist()
    lengths = table["text_length"].to_pylist()
    words = table["word_count"].to_pylist()
    assert [len(t) for t in texts] == lengths
    assert [len(re.findall(r"\w+", t)) for t in texts] == words
    # COYO collapsed whitespace: no leading, trailing or doubled spaces.
    assert all(t == t.strip() and "  " not in t for t in texts)


def test_word_count_agrees_with_arrow_unicode_class_not_ascii_w(table: pa.Table) -> None:
    unicode_runs = pc.count_substring_regex(table["text"], r"[\p{L}\p{N}_]+")
    assert unicode_runs.equals(table["word_count"])
    # RE2's \w is ASCII-only: it splits words such as "naïve" that Python counts once.
    ascii_runs = pc.count_substring_regex(table["text"], r"\w+")
    assert not ascii_runs.equals(table["word_count"])


def test_texts_hold_entities_and_non_ascii(table: pa.Table) -> None:
    texts = table["text"]
    entity = pc.mean(pc.match_substring(texts, "&amp;").cast(pa.int8())).as_py()
    non_ascii = 1 - pc.mean(pc.string_is_ascii(texts).cast(pa.int8())).as_py()
    assert 0.005 < entity < 0.1
    assert 0.01 < non_ascii < 0.15


def test_phash_is_16_lowercase_hex_digits(table: pa.Table) -> None:
    pattern = re.compile(r"[0-9a-f]{16}")
    assert all(pattern.fullmatch(h) for h in table["image_phash"].to_pylist())


def test_scores_lie_on_the_float16_grid(table: pa.Table) -> None:
    for name in schemas.SCORE_COLUMNS:
        values = table[name].to_numpy()
        assert values.dtype == np.float32
        np.testing.assert_array_equal(values, values.astype(np.float16).astype(np.float32))
    assert abs(np.mean(table["clip_similarity_vitb32"]) - 0.291) < 0.01
    assert abs(np.mean(table["clip_similarity_vitl14"]) - 0.255) < 0.01
    assert abs(np.mean(table["watermark_score"]) - 0.179) < 0.02
    assert abs(np.mean(table["aesthetic_score_laion_v2"]) - 4.77) < 0.1
    for name in ("nsfw_score_opennsfw2", "nsfw_score_gantman", "watermark_score"):
        assert pc.min(table[name]).as_py() >= 0.0 and pc.max(table[name]).as_py() <= 1.0


def test_ids_are_unique_spark_shaped_and_unsorted(table: pa.Table) -> None:
    ids = table["id"].to_numpy()
    assert len(np.unique(ids)) == ROWS
    assert (ids >= 0).all()
    assert not (np.diff(ids) > 0).all()
    partition, row = ids >> 33, ids & ((1 << 33) - 1)
    assert np.unique(partition).tolist() == list(range(math.ceil(math.sqrt(ROWS) / 4)))
    # Inside a partition, rows are spaced 1 to 5 apart (not dense), the first below 3.
    order = np.lexsort((row, partition))
    partition, row = partition[order], row[order]
    same = partition[1:] == partition[:-1]
    gaps = np.diff(row)[same]
    assert gaps.min() >= 1 and gaps.max() <= 5 and gaps.mean() > 2
    assert row[np.r_[True, ~same]].max() < 3


def test_sizes_and_other_columns_follow_the_card(table: pa.Table) -> None:
    width, height = table["width"].to_numpy(), table["height"].to_numpy()
    assert abs(width.mean() / 621.78 - 1) < 0.1 and abs(height.mean() / 540.99 - 1) < 0.1
    short, long = np.minimum(width, height), np.maximum(width, height)
    assert abs(np.mean(short < 200) - 0.005) < 0.002
    assert abs(np.mean(long / short > 3) - 0.003) < 0.002
    words = table["word_count"].to_numpy()
    assert abs(words.mean() - 11.13) < 1.0
    assert abs(table["text_length"].to_numpy().mean() - 68.53) < 10
    bert, gpt = table["num_tokens_bert"].to_numpy(), table["num_tokens_gpt"].to_numpy()
    assert bert.min() >= 1 and gpt.min() >= 1
    assert 1.2 < bert.mean() / words.mean() < 1.6 and 1.3 < gpt.mean() / words.mean() < 1.8
    faces = table["num_faces"].to_numpy()
    assert np.mean(faces == 0) > 0.65 and abs(faces.mean() - 0.6) < 0.15


def test_filter_violations_are_small_shares(table: pa.Table) -> None:
    nsfw = pc.or_(
        pc.greater(table["nsfw_score_opennsfw2"], 0.5), pc.greater(table["nsfw_score_gantman"], 0.5)
    )
    assert abs(pc.mean(nsfw.cast(pa.int8())).as_py() - 0.004) < 0.002
    lengths, words = table["text_length"].to_numpy(), table["word_count"].to_numpy()
    assert 0.003 < np.mean(words < 3) < 0.03
    assert 0.0 < np.mean(lengths <= 5) < 0.01
    assert 0.0 < np.mean(lengths > 1000) < 0.005
    assert 0.0 < np.mean(words > 256) < 0.003


def test_distinct_shares_match_the_card(table: pa.Table) -> None:
    for name, share in CARD_DISTINCT.items():
        distinct = pc.count_distinct(table[name]).as_py() / ROWS
        assert abs(distinct - share) < 0.012, name
    pairs = table.group_by(["image_phash", "text"]).aggregate([]).num_rows
    assert abs((ROWS - pairs) / ROWS - 0.01) < 0.003


def test_some_texts_repeat_more_than_ten_times(table: pa.Table) -> None:
    counts = table.group_by("text").aggregate([("text", "count")])
    frequent = pc.filter(counts["text_count"], pc.greater(counts["text_count"], 10))
    share = pc.sum(frequent).as_py() / ROWS
    assert 0.018 < share < 0.03
    frequent_texts = pc.filter(counts["text"], pc.greater(counts["text_count"], 10)).to_pylist()
    assert "thumbnail for" in frequent_texts


def test_truth_describes_the_planted_rows(table: pa.Table, truth: pa.Table) -> None:
    assert truth["id"].equals(table["id"])
    roles = truth["role"].cast(pa.string()).to_numpy(zero_copy_only=False)
    shares = PlantedShares()
    for role in ("url_dup", "phash_text_dup", "image_dup", "near_dup", "text_dup"):
        assert abs(np.mean(roles == role) - getattr(shares, role)) < 0.006, role
    by_id = {i: n for n, i in enumerate(table["id"].to_pylist())}
    source = [by_id.get(i, -1) for i in truth["source_id"].fill_null(-1).to_pylist()]
    source = np.array(source)
    has_source = truth["source_id"].is_valid().to_numpy(zero_copy_only=False)
    assert (source[has_source] >= 0).all()
    copied = np.flatnonzero(has_source)
    originals = set(np.flatnonzero(roles == "original"))
    assert set(source[copied]) <= originals

    def same(column: str) -> np.ndarray:
        values = np.array(table[column].to_pylist(), dtype=object)
        return values[copied] == values[source[copied]]

    url, phash, text = same("url"), same("image_phash"), same("text")
    kind = roles[copied]
    assert (url & phash & ~text)[kind == "url_dup"].all()
    assert (~url & phash & text)[kind == "phash_text_dup"].all()
    assert (~url & phash & ~text)[kind == "image_dup"].all()
    assert (~phash & text)[kind == "text_dup"].all()
    hashes = np.array([int(h, 16) for h in table["image_phash"].to_pylist()], dtype=np.uint64)
    near = copied[kind == "near_dup"]
    flipped = hashes[near] ^ hashes[source[near]]
    distances = np.array([bin(int(x)).count("1") for x in flipped])
    assert distances.min() >= 1 and distances.max() <= 4 and len(set(distances)) == 4


def test_same_seed_same_rows_whatever_the_batching() -> None:
    whole = synth_table(5_000, seed=3)
    batched = pa.Table.from_batches(list(synth_batches(5_000, seed=3, batch_rows=777)))
    threaded = pa.Table.from_batches(list(synth_batches(5_000, seed=3, batch_rows=999, threads=2)))
    ranged = pa.Table.from_batches(list(synth_batches(5_000, seed=3, start=1234, stop=4321)))
    assert batched.equals(whole) and threaded.equals(whole)
    assert ranged.equals(whole.slice(1234, 4321 - 1234))
    other = synth_table(5_000, seed=4)
    assert not other["text"].equals(whole["text"])
    assert not other["id"].equals(whole["id"])
    assert len(set(other["image_phash"].to_pylist()) & set(whole["image_phash"].to_pylist())) == 0


def test_tiny_and_empty_datasets() -> None:
    assert synth_table(0).num_rows == 0
    assert synth_table(0).schema.equals(schemas.PAIRS)
    for rows in (1, 2, 7, 100):
        ids = synth_table(rows, seed=1)["id"].to_numpy()
        assert len(np.unique(ids)) == rows


def test_bad_arguments_raise_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        list(synth_batches(10, batch_rows=0))
    with pytest.raises(InputError):
        list(synth_batches(10, start=5, stop=20))
    with pytest.raises(InputError):
        synth_table(10, shares=PlantedShares(text_dup=0.9))
    with pytest.raises(InputError):
        write_synth(tmp_path / "one.parquet", 100, files=2)
    with pytest.raises(InputError):
        write_synth(tmp_path / "many", 3, files=4)


def test_written_parquet_reads_back_with_the_exact_schema(tmp_path: Path) -> None:
    expected = synth_table(3_000, seed=1)
    single = write_synth(tmp_path / "one.parquet", 3_000, seed=1, batch_rows=1_000)
    assert single == [tmp_path / "one.parquet"]
    back = pq.read_table(single[0])
    assert back.schema.equals(schemas.PAIRS) and back.equals(expected)
    with pytest.raises(InputError):
        write_synth(tmp_path / "one.parquet", 3_000, seed=1)
    write_synth(tmp_path / "one.parquet", 10, seed=1, overwrite=True)
    assert pq.read_metadata(single[0]).num_rows == 10

    shards = write_synth(tmp_path / "parts", 3_000, seed=1, files=3)
    assert len(shards) == 3 and sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        p.name for p in shards
    ]
    name = re.compile(
        r"part-0000[0-2]-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}-c000\.snappy\.parquet"
    )
    assert all(name.fullmatch(p.name) for p in shards)
    joined = pa.concat_tables(pq.read_table(p) for p in shards)
    assert joined.schema.equals(schemas.PAIRS) and joined.equals(expected)
    with pytest.raises(InputError):
        write_synth(tmp_path / "parts", 3_000, seed=1, files=3)
    again = write_synth(tmp_path / "parts", 3_000, seed=1, files=2, overwrite=True)
    assert sorted((tmp_path / "parts").iterdir()) == sorted(again)


def test_cli_synth_writes_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "synth.parquet"
    result = CliRunner().invoke(app, ["synth", "--rows", "2000", "--out", str(out), "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "wrote 2,000 rows (seed 5)" in result.output and str(out) in result.output
    assert pq.read_table(out).equals(synth_table(2_000, seed=5))

    folder = tmp_path / "coyo"
    args = ["synth", "--rows", "900", "--out", str(folder), "--files", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 files" in result.output and len(list(folder.glob("part-*.parquet"))) == 3

    result = CliRunner().invoke(app, ["synth", "--rows", "10", "--out", str(out), "--files", "2"])
    assert isinstance(result.exception, InputError)
