"""Inputs are known by content: every byte counts, the path never does, and the fingerprints
catalogs of earlier versions recorded still match."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import coyo_table

from coyo_db.catalog import Catalog, tables
from coyo_db.catalog.ledger import (
    FINGERPRINT_PREFIX,
    Fingerprint,
    Ledger,
    file_fingerprint,
    legacy_fingerprint,
)
from coyo_db.ingest import parquet_inputs
from coyo_db.ingest.metadata import ingest_metadata

MARKER = b"middle-marker-AAAA"


def big_pairs_file(path: Path, coyo_rows: list[dict], n: int = 2_000) -> Path:
    """A Parquet file of `n` pairs, stored so that a text in its middle lies there verbatim."""
    base = coyo_table(coyo_rows)
    table = base.take(pa.array(np.arange(n) % base.num_rows))
    table = table.set_column(0, "id", pa.array(np.arange(1, n + 1, dtype=np.int64)))
    texts = table.column("text").to_pylist()
    texts[n // 2] = MARKER.decode()
    index = table.schema.get_field_index("text")
    table = table.set_column(index, table.field(index), pa.array(texts, pa.string()))
    pq.write_table(table, path, compression="none", use_dictionary=False, write_statistics=False)
    return path


def change_middle(path: Path) -> int:
    """Rewrite the marker in place (same length); returns its offset."""
    data = bytearray(path.read_bytes())
    at = data.index(MARKER)
    data[at : at + len(MARKER)] = MARKER.replace(b"AAAA", b"BBBB")
    path.write_bytes(bytes(data))
    return at


def test_fingerprint_hashes_every_byte(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    before, legacy_before = file_fingerprint(path), legacy_fingerprint(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert before.startswith(FINGERPRINT_PREFIX)
    assert file_fingerprint(path) != before
    assert legacy_fingerprint(path) == legacy_before  # what the head+tail hash missed
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert file_fingerprint(empty).startswith(FINGERPRINT_PREFIX)


def test_fingerprint_ignores_the_path_and_pickles(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100_000)
    copy = tmp_path / "elsewhere" / "b.bin"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    assert file_fingerprint(path) == file_fingerprint(copy)
    fingerprint = file_fingerprint(path)
    clone = pickle.loads(pickle.dumps(fingerprint))
    assert clone == fingerprint and clone.legacy() == legacy_fingerprint(path)


def test_a_file_whose_middle_changed_is_ingested_again(catalog: Catalog, tmp_path, coyo_rows):
    path = big_pairs_file(tmp_path / "part-00000.parquet", coyo_rows)
    first = ingest_metadata(catalog, [path])
    legacy = legacy_fingerprint(path)
    at = change_middle(path)
    assert (1 << 16) < at < path.stat().st_size - (1 << 16)
    assert legacy_fingerprint(path) == legacy  # the old fingerprint would have skipped it

    again = ingest_metadata(catalog, [path])

    assert first.inputs_done == 1
    assert (again.inputs_done, again.inputs_skipped, again.rows_read) == (1, 0, 2_000)
    fingerprints = catalog.dataset("ledger").to_table()["fingerprint"].to_pylist()
    assert len(set(fingerprints)) == 2 and file_fingerprint(path) in fingerprints


def test_the_same_file_copied_elsewhere_is_skipped(catalog: Catalog, tmp_path, coyo_rows):
    path = big_pairs_file(tmp_path / "part-00000.parquet", coyo_rows)
    ingest_metadata(catalog, [path])
    copy = tmp_path / "moved" / "renamed.parquet"
    copy.parent.mkdir()
    shutil.copy(path, copy)

    again = ingest_metadata(catalog, [copy])

    assert (again.inputs_done, again.inputs_skipped) == (0, 1)
    recorded = catalog.dataset("ledger").to_table()["fingerprint"].to_pylist()
    assert recorded == [file_fingerprint(copy)]


def test_an_old_style_ledger_entry_still_matches(
    catalog: Catalog, tmp_path, coyo_rows, monkeypatch
):
    path = big_pairs_file(tmp_path / "part-00000.parquet", coyo_rows)
    with monkeypatch.context() as patch:  # a catalog an earlier version wrote
        patch.setattr(parquet_inputs, "file_fingerprint", legacy_fingerprint)
        ingest_metadata(catalog, [path])
    assert catalog.dataset("ledger").to_table()["fingerprint"].to_pylist() == [
        legacy_fingerprint(path)
    ]
    copy = tmp_path / "moved" / "renamed.parquet"
    copy.parent.mkdir()
    shutil.copy(path, copy)

    again = ingest_metadata(catalog, [path, copy])

    assert (again.inputs_done, again.inputs_skipped) == (0, 2)
    assert catalog.dataset("pairs").count_rows() == 2_000


def test_the_ledger_computes_the_old_form_only_when_it_holds_old_entries(catalog, tmp_path):
    asked = []

    def legacy() -> str:
        asked.append(1)
        return "0123456789abcdef0123456789abcdef"

    fingerprint = Fingerprint(FINGERPRINT_PREFIX + "ff" * 16, legacy)
    catalog.ensure_table(tables.PAIRS.name, tables.PAIRS.schema)
    assert Ledger(catalog, tables.PAIRS.name).done(fingerprint) is None
    assert asked == []  # an empty ledger holds no old entries
    derived = fingerprint.derive(lambda f: f"{f}:language")
    assert derived == f"{fingerprint}:language"
    assert derived.legacy() == "0123456789abcdef0123456789abcdef:language"
