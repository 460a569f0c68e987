"""Property-based fuzzing of the readers behind `ingest metadata`, `ingest labels` and
`ingest images`, through the product's own entry points, each example in a fresh catalog.

Whatever the input, an ingest either refuses a whole file with one of the product's user errors
(:class:`CoyoDbError`: a file that is not Parquet or not a tar, a path that is not UTF-8),
having committed nothing of it, or it accounts for every record: rows read = written +
quarantined, the table holds exactly the rows written, `quarantine` the rows quarantined, every
value in both reads back through SQL, and no value that a rule forbids is in a table.
Examples are derandomised (the same ones on every run) and few, to keep the file fast; the bugs
they found are kept as explicit tests in tests/test_bad_values.py.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from coyo_db.catalog import Catalog, schemas
from coyo_db.catalog.summary import IngestSummary
from coyo_db.errors import CoyoDbError
from coyo_db.ingest.image_ids import INT64_MAX, INT64_MIN, as_int64
from coyo_db.ingest.images import ingest_images
from coyo_db.ingest.metadata import ingest_metadata
from coyo_db.labels.coyo_labeled import ingest_labels
from coyo_db.labels.taxonomy import IMAGENET21K, num_classes
from tests.conftest import coyo_table, load_jsonl
from tests.imagedata import (
    bomb_png,
    corrupt_jpeg,
    jpeg_bytes,
    make_images,
    png_bytes,
    truncated_jpeg,
)

# COYO_DB_FUZZ=N runs N times as many examples, fresh random ones: a longer hunt, by hand.
SCALE = int(os.environ.get("COYO_DB_FUZZ", "1"))
FUZZ = settings(
    max_examples=15 * SCALE,
    deadline=timedelta(seconds=60),  # generous: the machine is shared; a hang hits the timeout
    derandomize=SCALE == 1,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
pytestmark = pytest.mark.timeout(300 * SCALE)  # a hang fails the test, not the whole run

ROWS = load_jsonl("coyo700m_rows.jsonl")
N_CLASSES = num_classes(IMAGENET21K)
PHASH = re.compile(r"^[0-9a-f]{16}$")
INT_COLUMNS = ("width", "height", "text_length", "word_count", "num_faces")
TEXT_COLUMNS = ("url", "text", "image_phash")
LONE_SURROGATES = ("\ud800", "\udcff", "ok \udcfe tail")


# --- catalogs and invariants ----------------------------------------------------------------


@contextmanager
def fresh_catalog() -> Iterator[tuple[Catalog, Path]]:
    """A new catalog and a scratch folder for the example's inputs, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="coyo-fuzz-") as scratch:
        root = Path(scratch)
        yield Catalog.init(root / "home"), root / "in"


def count(catalog: Catalog, table: str) -> int:
    if not catalog.has_table(table):
        return 0
    return catalog.sql(f"SELECT count(*) AS n FROM {table}")["n"][0].as_py()


def ingest_or_refuse(
    run: Callable[[], IngestSummary], catalog: Catalog, table: str
) -> IngestSummary | None:
    """The summary of `run`, or None when it refused its input with a user error (then nothing
    of it may be in the catalog)."""
    try:
        summary = run()
    except CoyoDbError as exc:
        event(f"refused: {type(exc).__name__}")
        assert count(catalog, table) == 0
        assert count(catalog, "quarantine") == 0
        return None
    event("ingested")
    return summary


def assert_accounted(catalog: Catalog, summary: IngestSummary, table: str) -> list[dict]:
    """Every record read is written or quarantined, and both tables read back; returns the
    quarantine rows."""
    event("some rows quarantined" if summary.rows_quarantined else "no row quarantined")
    assert summary.rows_read == summary.rows_written + summary.rows_quarantined
    assert count(catalog, table) == summary.rows_written
    assert count(catalog, "quarantine") == summary.rows_quarantined
    assert sum(summary.quarantine_reasons.values()) == summary.rows_quarantined
    bad = catalog.sql("SELECT * FROM quarantine").to_pylist()  # every text is UTF-8
    for row in bad:
        assert row["reason"] and row["table_name"] == table
        json.loads(row["record"])  # the record stays readable
    return bad


def assert_quarantine_ids_from_records(bad: list[dict]) -> None:
    """A Parquet row's quarantine id is its id as read whenever that fits int64, else null."""
    for row in bad:
        value = json.loads(row["record"]).get("id")
        usable = isinstance(value, int) and INT64_MIN <= value <= INT64_MAX
        assert row["id"] == (value if usable else None), row


# --- Parquet values -------------------------------------------------------------------------


def unchecked_text(values: list[bytes | None], kind: pa.DataType) -> pa.Array:
    """A string column holding `values` byte for byte, UTF-8 or not (as a broken writer
    leaves one)."""
    binary = pa.array(values, pa.large_binary() if kind == pa.large_string() else pa.binary())
    return pa.Array.from_buffers(kind, len(binary), binary.buffers(), null_count=binary.null_count)


def nullable(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), values)


def rows_of(n: int, values: st.SearchStrategy) -> st.SearchStrategy:
    """Lists of exactly `n` values: one column of an `n`-row table."""
    return st.lists(values, min_size=n, max_size=n)


def int64s() -> st.SearchStrategy:
    edges = st.sampled_from([INT64_MIN, INT64_MAX, -1, 0, 1, 7])
    return nullable(st.one_of(edges, st.integers(INT64_MIN, INT64_MAX)))


def floats_any() -> st.SearchStrategy:
    edges = st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, 3.5e38, 0.0, 1.0])
    return nullable(st.one_of(edges, st.floats(allow_nan=True, allow_infinity=True)))


def texts_as_bytes() -> st.SearchStrategy:
    text = st.text(max_size=24).map(lambda t: t.encode("utf-8"))
    return nullable(st.one_of(text, st.binary(max_size=24), st.just(b"0123456789ABCDEF")))


@st.composite
def id_column(draw: st.DrawFn, n: int) -> pa.Array:
    kind = draw(st.sampled_from(["int64", "uint64", "int32"]))
    if kind == "uint64":
        values = st.integers(0, 2**64 - 1) | st.sampled_from([INT64_MAX, INT64_MAX + 1, 2**64 - 1])
        return pa.array(draw(rows_of(n, nullable(values))), pa.uint64())
    if kind == "int32":
        values = nullable(st.integers(-(2**31), 2**31 - 1) | st.sampled_from([1, 2]))
        return pa.array(draw(rows_of(n, values)), pa.int32())
    return pa.array(draw(rows_of(n, int64s())), pa.int64())


@st.composite
def int_column(draw: st.DrawFn, n: int) -> pa.Array:
    kind = draw(st.sampled_from([pa.int32(), pa.int64(), pa.uint32(), pa.int8()]))
    info = np.iinfo(kind.to_pandas_dtype())
    edges = st.sampled_from([int(info.min), int(info.max), 0, -1 if info.min < 0 else 1, 5])
    values = nullable(edges | st.integers(int(info.min), int(info.max)))
    return pa.array(draw(rows_of(n, values)), kind)


@st.composite
def score_column(draw: st.DrawFn, n: int) -> pa.Array:
    kind = draw(st.sampled_from(["float32", "float64", "int64"]))
    if kind == "int64":
        return pa.array(draw(rows_of(n, int64s())), pa.int64())
    values = draw(rows_of(n, floats_any()))
    if kind == "float32":
        with np.errstate(over="ignore"):
            values = [None if v is None else float(np.float32(v)) for v in values]
    return pa.array(values, pa.float64() if kind == "float64" else pa.float32())


@st.composite
def text_column(draw: st.DrawFn, n: int) -> pa.Array:
    values = draw(rows_of(n, texts_as_bytes()))
    kind = draw(st.sampled_from(["string", "large_string", "binary", "dictionary"]))
    if kind == "binary":
        return pa.array(values, pa.binary())
    if kind == "dictionary":
        return pa.array(values, pa.binary()).dictionary_encode()
    return unchecked_text(values, pa.string() if kind == "string" else pa.large_string())


COLUMN_STRATEGIES: dict[str, Callable[[int], st.SearchStrategy]] = {
    "id": id_column,
    **{name: int_column for name in INT_COLUMNS},
    **{name: score_column for name in schemas.SCORE_COLUMNS},
    **{name: text_column for name in TEXT_COLUMNS},
}


@st.composite
def pairs_tables(draw: st.DrawFn) -> pa.Table:
    """COYO-shaped tables: the real rows, some columns replaced by hostile values and types."""
    table = coyo_table(ROWS).slice(0, draw(st.integers(1, len(ROWS))))
    if draw(st.booleans()):  # the same id twice or more
        ids = table["id"].to_pylist()
        table = table.set_column(0, "id", pa.array([ids[0] if ids else 0, *ids[1:]], pa.int64()))
    names = draw(st.sets(st.sampled_from(sorted(COLUMN_STRATEGIES)), min_size=1, max_size=4))
    for name in sorted(names):
        column = draw(COLUMN_STRATEGIES[name](table.num_rows))
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def assert_pairs_clean(catalog: Catalog) -> None:
    """What `pairs` holds obeys its rules (and reads back: every text is UTF-8)."""
    rows = catalog.sql("SELECT * FROM pairs").to_pylist()
    ids = [row["id"] for row in rows]
    assert None not in ids and len(set(ids)) == len(ids)
    for row in rows:
        assert row["width"] > 0 and row["height"] > 0
        assert PHASH.match(row["image_phash"])
        for name in schemas.SCORE_COLUMNS:
            assert row[name] is None or math.isfinite(row[name]), (name, row[name])


@FUZZ
@given(table=pairs_tables(), row_group=st.integers(1, 8))
def test_metadata_quarantines_any_bad_value_and_never_fails(table: pa.Table, row_group: int):
    with fresh_catalog() as (catalog, folder):
        folder.mkdir()
        path = folder / "part.parquet"
        pq.write_table(table, path, row_group_size=row_group)
        summary = ingest_metadata(catalog, [path], batch_size=4)
        bad = assert_accounted(catalog, summary, "pairs")
        assert summary.rows_read == table.num_rows
        assert_pairs_clean(catalog)
        assert_quarantine_ids_from_records(bad)


# --- Parquet bytes --------------------------------------------------------------------------


def parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


METADATA_FILES = [
    parquet_bytes(coyo_table(ROWS), row_group_size=4),
    parquet_bytes(coyo_table(ROWS), compression="none", use_dictionary=False),
    parquet_bytes(coyo_table(ROWS), compression="zstd", data_page_size=64),
]


@st.composite
def mutated(draw: st.DrawFn, files: list[bytes]) -> bytes:
    """One of `files` with a few bytes changed, and one time in four cut short (a cut file is
    refused at once: the flips are what reach the page and footer decoders)."""
    data = bytearray(draw(st.sampled_from(files)))
    where = st.integers(4, len(data) - 5)  # past the magic bytes, which preflight checks first
    flips = draw(st.lists(st.tuples(where, st.integers(0, 255)), min_size=1, max_size=4))
    for position, value in flips:
        data[position] = value
    if draw(st.integers(0, 3)) == 0:
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


@settings(FUZZ, max_examples=25 * SCALE)
@given(data=mutated(METADATA_FILES))
def test_metadata_of_mangled_bytes_is_refused_or_accounted_for(data: bytes):
    with fresh_catalog() as (catalog, folder):
        folder.mkdir()
        path = folder / "part.parquet"
        path.write_bytes(data)
        summary = ingest_or_refuse(lambda: ingest_metadata(catalog, [path]), catalog, "pairs")
        if summary is not None:
            bad = assert_accounted(catalog, summary, "pairs")
            assert_pairs_clean(catalog)
            assert_quarantine_ids_from_records(bad)


# --- COYO-Labeled-300M ----------------------------------------------------------------------


@st.composite
def labels_tables(draw: st.DrawFn) -> pa.Table:
    """id, labels and label_probs in many layouts, with hostile values and lengths."""
    n = draw(st.integers(0, 8))
    ids = draw(id_column(n))
    label = st.sampled_from([0, 1, N_CLASSES - 1, N_CLASSES, -1, 2**31, 2**40]) | st.integers(
        0, N_CLASSES
    )
    prob = st.sampled_from([0.0, 0.5, 1.0, -0.0, 1.0000001, -1e-9]) | floats_any()
    label_lists = draw(rows_of(n, nullable(st.lists(nullable(label), max_size=5))))
    prob_lists = draw(rows_of(n, nullable(st.lists(prob, max_size=5))))
    label_type = draw(st.sampled_from([pa.int32(), pa.int64()]))
    if label_type == pa.int32():
        label_lists = [
            None if v is None else [x if x is None or -(2**31) <= x < 2**31 else 0 for x in v]
            for v in label_lists
        ]
    list_type = draw(st.sampled_from([pa.list_, pa.large_list]))
    prob_type = draw(st.sampled_from([pa.float32(), pa.float64()]))
    with np.errstate(over="ignore"):
        if prob_type == pa.float32():
            prob_lists = [
                None if v is None else [None if x is None else float(np.float32(x)) for x in v]
                for v in prob_lists
            ]
    columns = {
        "id": ids,
        "url": pa.array(draw(rows_of(n, texts_as_bytes())), pa.binary()),
        "labels": pa.array(label_lists, list_type(label_type)),
        "label_probs": pa.array(prob_lists, list_type(prob_type)),
    }
    return pa.table(columns)


def assert_labels_clean(catalog: Catalog) -> None:
    rows = catalog.sql("SELECT * FROM labels").to_pylist()
    ids = [row["id"] for row in rows]
    assert None not in ids and len(set(ids)) == len(ids)
    for row in rows:
        labels, probs = row["labels"], row["label_probs"]
        assert len(labels) == len(probs)
        assert all(index is not None and 0 <= index < N_CLASSES for index in labels)
        assert all(p is not None and math.isfinite(p) and 0.0 <= p <= 1.0 for p in probs)
        assert all(a >= b for a, b in itertools.pairwise(probs))


@FUZZ
@given(table=labels_tables())
def test_labels_quarantines_any_bad_value_and_never_fails(table: pa.Table):
    with fresh_catalog() as (catalog, folder):
        folder.mkdir()
        path = folder / "labels.parquet"
        pq.write_table(table, path, row_group_size=3)
        summary = ingest_labels(catalog, [path], batch_size=2)
        bad = assert_accounted(catalog, summary, "labels")
        assert summary.rows_read == table.num_rows
        assert_labels_clean(catalog)
        assert_quarantine_ids_from_records(bad)


LABELS_FILES = [
    parquet_bytes(
        pa.table(
            {
                "id": pa.array(range(1, 7), pa.int64()),
                "labels": pa.array([[5, 6, 7]] * 6, pa.list_(pa.int32())),
                "label_probs": pa.array([[0.5, 0.3, 0.1]] * 6, pa.list_(pa.float32())),
            }
        ),
        row_group_size=2,
    )
]


@settings(FUZZ, max_examples=25 * SCALE)
@given(data=mutated(LABELS_FILES))
def test_labels_of_mangled_bytes_are_refused_or_accounted_for(data: bytes):
    with fresh_catalog() as (catalog, folder):
        folder.mkdir()
        path = folder / "labels.parquet"
        path.write_bytes(data)
        summary = ingest_or_refuse(lambda: ingest_labels(catalog, [path]), catalog, "labels")
        if summary is not None:
            bad = assert_accounted(catalog, summary, "labels")
            assert_labels_clean(catalog)
            assert_quarantine_ids_from_records(bad)


# --- image shards ---------------------------------------------------------------------------


class Blob(bytes):
    """Bytes that a failing example prints by name (the bomb alone is 60 kB)."""

    name: str

    def __new__(cls, data: bytes, name: str) -> Blob:
        blob = super().__new__(cls, data)
        blob.name = name
        return blob

    def __repr__(self) -> str:
        return f"<{self.name}: {len(self)} bytes>"


_PICTURES = make_images(2, seed=5, min_side=32, max_side=48)
IMAGE_PAYLOADS = {
    name: Blob(data, name)
    for name, data in {
        "jpg": jpeg_bytes(_PICTURES[0]),
        "png": png_bytes(_PICTURES[1]),
        "corrupt": corrupt_jpeg(1),
        "truncated": truncated_jpeg(2),
        "bomb": bomb_png(16_000, 12_000),
        "html": b"<!doctype html><html><body>404</body></html>",
        "empty": b"",
    }.items()
}


def image_payloads() -> st.SearchStrategy:
    return st.sampled_from(sorted(IMAGE_PAYLOADS)).map(IMAGE_PAYLOADS.get) | st.binary(max_size=48)


def json_texts() -> st.SearchStrategy:
    return st.text(max_size=16) | st.sampled_from(LONE_SURROGATES)


def json_ids() -> st.SearchStrategy:
    return st.one_of(
        st.integers(-(2**70), 2**70),
        st.sampled_from([INT64_MAX, INT64_MIN, INT64_MAX + 1, 2**64, 2**100, 7, "42", "--5"]),
        st.sampled_from(["²", "12a", "99999999999999999999999", " 3", True]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
        st.none(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )


def junk_json() -> st.SearchStrategy:
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | json_texts()
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(json_texts(), inner, max_size=3)
        ),
        max_leaves=8,
    )


def dump_json(value: Any) -> bytes:
    """`value` as JSON; a text that is not UTF-8 as raw bytes when it can be, else escaped."""
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return json.dumps(value).encode("ascii")


@st.composite
def json_sidecars(draw: st.DrawFn) -> bytes:
    """img2dataset .json sidecars, right and wrong."""
    kind = draw(st.sampled_from(["object", "object", "object", "not json", "not object", "deep"]))
    if kind == "not json":
        return draw(st.binary(max_size=40))
    if kind == "not object":
        return dump_json(draw(st.lists(st.integers(), max_size=3) | json_texts() | st.integers()))
    if kind == "deep":
        depth = draw(st.sampled_from([10, 400, 5_000]))
        return b'{"id": 3, "deep": ' + b"[" * depth + b"]" * depth + b"}"
    optional = {
        "id": json_ids(),
        "url": json_texts(),
        "caption": json_texts(),
        "status": st.sampled_from(["success", "failed_to_download"]),
        "junk": junk_json(),
    }
    return dump_json(draw(st.fixed_dictionaries({}, optional=optional)))


@st.composite
def webdataset_members(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """The members of an img2dataset-like tar: samples with images and sidecars that may be
    missing, extra or broken, keys of any text (or bytes that are not UTF-8), junk members."""
    members: list[tuple[str, bytes]] = []
    for index in range(draw(st.integers(0, 5))):
        stem = draw(
            st.sampled_from(["", "/in", "x.y."])
            | st.text(
                st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"),
                max_size=10,
            )
            | st.binary(min_size=1, max_size=6).map(lambda b: os.fsdecode(b.replace(b"\0", b"")))
        )
        key = f"{index:03d}{stem}".rstrip("/")
        if draw(st.booleans()) or index == 0:
            ext = draw(st.sampled_from(["jpg", "png", "webp", "JPG", "gif"]))
            members.append((f"{key}.{ext}", draw(image_payloads())))
        if draw(st.booleans()):
            members.append((f"{key}.json", draw(json_sidecars())))
        if draw(st.booleans()):
            caption = draw(st.text(max_size=20).map(str.encode) | st.binary(max_size=20))
            members.append((f"{key}.txt", caption))
    junk = st.tuples(st.text(min_size=1, max_size=12).filter(lambda n: "\0" not in n), st.binary())
    members += draw(st.lists(junk, max_size=2))
    if draw(st.booleans()):
        members = draw(st.permutations(members))
    return members


def write_members(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A GNU tar of `members`; names that are not UTF-8 go in as their bytes."""
    with tarfile.open(
        path, "w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape"
    ) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def assert_images_clean(catalog: Catalog, bad: list[dict]) -> None:
    """`images` reads back with one row per id; a quarantined record whose metadata held a
    usable id keeps it in `quarantine.id`."""
    rows = catalog.sql("SELECT * FROM images").to_pylist()
    ids = [row["id"] for row in rows]
    assert None not in ids and len(set(ids)) == len(ids)
    assert {row["id_origin"] for row in rows} <= {"json", "url", "key", "hash"}
    for row in bad:
        meta = json.loads(row["record"]).get("meta")
        found = as_int64(meta.get("id")) if isinstance(meta, dict) else None
        if found is not None:
            assert row["id"] == found, row


def sample_key(name: str) -> str:
    """webdataset's key of a member name: up to the first dot of its last path component."""
    folder, _, base = name.rpartition("/")
    stem = base.partition(".")[0]
    return f"{folder}/{stem}" if folder else stem


def samples_are_contiguous(members: list[tuple[str, bytes]]) -> bool:
    """Whether each sample's members follow one another (otherwise a tar splits it)."""
    keys = [sample_key(name) for name, _ in members]
    runs = [key for index, key in enumerate(keys) if index == 0 or keys[index - 1] != key]
    return len(runs) == len(set(runs))


def refused_samples(members: list[tuple[str, bytes]]) -> set[str]:
    """The keys of samples a reader must refuse, whatever their image: a .txt that is not
    UTF-8, a .json holding text that is not, JSON that is not an object, an unusable id. The
    first member of each (key, extension) counts, as for the reader."""
    first: dict[tuple[str, str], bytes] = {}
    for name, data in members:
        extension = name.rpartition("/")[2].partition(".")[2].lower()
        first.setdefault((sample_key(name), extension), data)
    refused = set()
    for (key, extension), data in first.items():
        if extension == "txt" and not _is_utf8(data):
            refused.add(key)
        if extension == "json" and _must_refuse_json(data):
            refused.add(key)
    return refused


def _must_refuse_json(data: bytes) -> bool:
    try:
        value = json.loads(data)
    except UnicodeDecodeError:
        return True  # text that is not UTF-8 (if it parses; else it is ignored)
    except (ValueError, RecursionError):
        return False  # JSON that does not parse is ignored with a warning, as documented
    if not isinstance(value, dict) or _has_bad_text(value):
        return True
    found = value.get("id")
    return found is not None and as_int64(found) is None


def _has_bad_text(value: Any) -> bool:
    if isinstance(value, str):
        return not _is_utf8(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, list):
        return any(_has_bad_text(item) for item in value)
    if isinstance(value, dict):
        return any(_has_bad_text(key) or _has_bad_text(item) for key, item in value.items())
    return False


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def damage(path: Path, flips: list[tuple[float, int]], cut: float | None) -> None:
    """Set the bytes at the fractions `flips` of `path`, then cut it at the fraction `cut`."""
    data = bytearray(path.read_bytes())
    for where, value in flips:
        if data:
            data[int(where * (len(data) - 1))] = value
    if cut is not None:
        del data[int(len(data) * cut) :]
    path.write_bytes(bytes(data))


FLIPS = st.lists(st.tuples(st.floats(0.02, 1.0), st.integers(0, 255)), max_size=3)


@FUZZ
@given(members=webdataset_members(), flips=FLIPS, cut=st.none() | st.floats(0.0, 1.0))
def test_webdataset_shards_are_refused_or_accounted_for(
    members: list[tuple[str, bytes]], flips: list[tuple[float, int]], cut: float | None
):
    with fresh_catalog() as (catalog, folder):
        folder.mkdir()
        tar = write_members(folder / "00000.tar", members)
        damage(tar, flips, cut)
        summary = ingest_or_refuse(
            lambda: ingest_images(catalog, [tar], workers=0), catalog, "images"
        )
        if summary is None:
            return
        bad = assert_accounted(catalog, summary, "images")
        assert_images_clean(catalog, bad)
        if not flips and cut is None and samples_are_contiguous(members):
            stored = catalog.sql("SELECT member FROM images")["member"].to_pylist()
            assert not {sample_key(member) for member in stored} & refused_samples(members)


@st.composite
def image_folders(draw: st.DrawFn) -> dict[bytes, bytes]:
    """Relative file paths (bytes: they need not be UTF-8) to contents: images, sidecars, junk."""
    files: dict[bytes, bytes] = {}
    for index in range(draw(st.integers(1, 5))):
        stem = draw(st.sampled_from([b"", b"\xff\xfe", "é²".encode(), b" x", b"-5"]))
        name = b"%d%s" % (index, stem)
        files[name + b"." + draw(st.sampled_from([b"jpg", b"png", b"jpeg"]))] = draw(
            image_payloads()
        )
        if draw(st.booleans()):
            files[name + b".json"] = draw(json_sidecars())
        if draw(st.booleans()):
            files[name + b".txt"] = draw(st.binary(max_size=20))
    junk_names = st.sampled_from([b"notes.md", b".hidden.jpg", b"sub/deeper.jpg", b"\xffdir/a.jpg"])
    for name in draw(st.lists(junk_names, max_size=2)):
        files[name] = draw(st.binary(max_size=30))
    return files


@FUZZ
@given(files=image_folders())
def test_image_folders_with_junk_are_refused_or_accounted_for(files: dict[bytes, bytes]):
    with fresh_catalog() as (catalog, folder):
        for name, data in files.items():
            path = os.path.join(os.fsencode(folder), name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
        summary = ingest_or_refuse(
            lambda: ingest_images(catalog, [folder], workers=0), catalog, "images"
        )
        if summary is not None:
            bad = assert_accounted(catalog, summary, "images")
            assert_images_clean(catalog, bad)


@st.composite
def img2dataset_parquet(draw: st.DrawFn) -> pa.Table:
    """img2dataset's parquet output with hostile columns: ids of any type, text that is not
    UTF-8 (in nested values too), failed rows."""
    n = draw(st.integers(0, 5))
    images = draw(rows_of(n, nullable(image_payloads())))
    columns: dict[str, pa.Array] = {"jpg": pa.array(images, pa.binary())}
    id_kind = draw(st.sampled_from(["none", "int64", "uint64", "float64", "string"]))
    if id_kind in ("int64", "uint64"):
        columns["id"] = draw(id_column(n)).cast(
            pa.int64() if id_kind == "int64" else pa.uint64(), safe=False
        )
    elif id_kind == "float64":
        columns["id"] = pa.array(draw(rows_of(n, floats_any())), pa.float64())
    elif id_kind == "string":
        columns["id"] = pa.array(draw(rows_of(n, nullable(st.text(max_size=22)))))
    for name in draw(st.sets(st.sampled_from(["key", "url", "caption", "txt"]))):
        values = draw(rows_of(n, texts_as_bytes()))
        columns[name] = unchecked_text(values, pa.string())
    if draw(st.booleans()):
        inner = unchecked_text(draw(rows_of(n, texts_as_bytes())), pa.string())
        columns["extra"] = pa.StructArray.from_arrays([inner], names=["note"])
    statuses = rows_of(n, st.sampled_from(["success", "failed_to_download", None]))
    columns["status"] = pa.array(draw(statuses), pa.string())
    return pa.table(columns)


@settings(FUZZ, max_examples=12 * SCALE)
@given(table=img2dataset_parquet())
def test_img2dataset_parquet_shards_are_accounted_for(table: pa.Table):
    with fresh_catalog() as (catalog, folder):
        folder.mkdir()
        path = folder / "00000.parquet"
        pq.write_table(table, path, row_group_size=2)
        summary = ingest_images(catalog, [path], workers=0)
        bad = assert_accounted(catalog, summary, "images")
        assert summary.rows_read == table.num_rows
        assert_images_clean(catalog, bad)


@settings(FUZZ, max_examples=12 * SCALE)
@given(table=img2dataset_parquet(), flips=FLIPS.filter(bool), cut=st.none() | st.floats(0.5, 1))
def test_img2dataset_parquet_shards_of_mangled_bytes_are_refused_or_accounted_for(
    table: pa.Table, flips: list[tuple[float, int]], cut: float | None
):
    with fresh_catalog() as (catalog, folder):
        folder.mkdir()
        path = folder / "00000.parquet"
        pq.write_table(table, path, row_group_size=2, compression="none")
        damage(path, flips, cut)
        summary = ingest_or_refuse(
            lambda: ingest_images(catalog, [path], workers=0), catalog, "images"
        )
        if summary is not None:
            bad = assert_accounted(catalog, summary, "images")
            assert_images_clean(catalog, bad)
