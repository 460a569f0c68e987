"""Values that would poison a table are quarantined with the column named, and the run goes on:
invalid UTF-8 in a string column (binary-typed too), infinite scores and scores too large for
float32, integers that do not fit their column, label probabilities outside [0, 1], image
sidecars whose text is not UTF-8, whose JSON is no object or whose id is unusable. Whole files
that cannot be read are refused in one line, never with a traceback.

Several of these are inputs tests/test_fuzz_readers.py found, kept here as explicit examples.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coyo_db.catalog import Catalog
from coyo_db.errors import SourceFileError
from coyo_db.ingest.image_ids import as_int64
from coyo_db.ingest.images import ingest_images
from coyo_db.ingest.metadata import ingest_metadata
from coyo_db.labels.coyo_labeled import BAD_INDEX, BAD_PROB, ingest_labels
from tests.conftest import coyo_table
from tests.imagedata import jpeg_bytes, make_images, write_tar

JPEG = jpeg_bytes(make_images(1, seed=9)[0])


def _with_bad_text(table: pa.Table, row: int) -> pa.Table:
    """`table` whose `text` at `row` holds bytes that are not UTF-8, as a broken writer leaves."""
    data = [v.encode() if v is not None else None for v in table["text"].to_pylist()]
    data[row] = b"caption \xff\xfe broken"
    binary = pa.array(data, pa.binary())
    text = pa.Array.from_buffers(
        pa.string(), len(binary), binary.buffers(), null_count=binary.null_count
    )
    return table.set_column(table.schema.get_field_index("text"), "text", text)


def test_invalid_utf8_and_non_finite_scores_are_quarantined(tmp_path: Path, coyo_rows):
    table = coyo_table(coyo_rows)
    table = table.set_column(0, "id", pa.array(np.arange(1, len(table) + 1, dtype=np.int64)))
    table = _with_bad_text(table, 2)
    # A float64 file: one score infinite, one beyond float32's range (inf once cast).
    scores = table["watermark_score"].to_numpy(zero_copy_only=False).astype(np.float64)
    scores[4], scores[6] = np.inf, 1e300
    index = table.schema.get_field_index("watermark_score")
    table = table.set_column(index, "watermark_score", pa.array(scores, pa.float64()))
    path = tmp_path / "bad-values.parquet"
    pq.write_table(table, path)

    catalog = Catalog(tmp_path / "home", create=True)
    summary = ingest_metadata(catalog, [path])

    assert (summary.rows_read, summary.rows_written, summary.rows_quarantined) == (11, 8, 3)
    bad = catalog.sql("SELECT id, reason, record FROM quarantine ORDER BY id").to_pylist()
    assert [(r["id"], r["reason"]) for r in bad] == [
        (3, "invalid UTF-8 in text"),
        (5, "infinite watermark_score"),
        (7, "infinite watermark_score"),
    ]
    assert "broken" in json.loads(bad[0]["record"])["text"], "the record stays readable"
    texts = catalog.sql("SELECT text FROM pairs")["text"].to_pylist()  # reads every text
    assert len(texts) == 8


# ---- ingest metadata ------------------------------------------------------------------------


def _numbered(coyo_rows: list[dict]) -> pa.Table:
    table = coyo_table(coyo_rows)
    return table.set_column(0, "id", pa.array(np.arange(1, len(table) + 1, dtype=np.int64)))


def _replaced(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)


def test_binary_text_that_is_not_utf8_is_quarantined_not_fatal(tmp_path: Path, coyo_rows):
    """A text column typed binary used to fail the whole file mid-read on its cast."""
    table = _numbered(coyo_rows)
    urls = [u.encode() for u in table["url"].to_pylist()]
    urls[3] = b"https://example.com/\xff\xfe.jpg"
    path = tmp_path / "binary-url.parquet"
    pq.write_table(_replaced(table, "url", pa.array(urls, pa.binary())), path)

    catalog = Catalog.init(tmp_path / "home")
    summary = ingest_metadata(catalog, [path])

    assert (summary.rows_written, summary.rows_quarantined) == (10, 1)
    bad = catalog.sql("SELECT id, reason FROM quarantine").to_pylist()
    assert bad == [{"id": 4, "reason": "invalid UTF-8 in url"}]
    assert len(catalog.sql("SELECT url FROM pairs")) == 10


def test_integers_that_do_not_fit_their_column_are_quarantined(tmp_path: Path, coyo_rows):
    """A uint64 id above int64's range, an int64 width above int32's: each used to fail the
    whole file mid-read; now that row is quarantined, with its id when it has one."""
    table = _numbered(coyo_rows)
    first = tmp_path / "a.parquet"
    pq.write_table(table.slice(0, 5), first)
    ids = [int(v) for v in table["id"].to_numpy()]
    ids[6] = 2**64 - 1
    widths = [int(w) for w in table["width"].to_numpy()]
    widths[8] = 2**40
    scores = table["watermark_score"].to_pylist()
    scores[9] = 2**40  # an int64 score: rounded into float32, not a reason to fail the file
    table = _replaced(table, "id", pa.array(ids, pa.uint64()))
    table = _replaced(table, "width", pa.array(widths, pa.int64()))
    table = _replaced(table, "watermark_score", pa.array([int(v or 0) for v in scores]))
    second = tmp_path / "b.parquet"
    pq.write_table(table.slice(5), second)

    catalog = Catalog.init(tmp_path / "home")
    summary = ingest_metadata(catalog, [first, second])

    assert (summary.rows_read, summary.rows_written, summary.rows_quarantined) == (11, 9, 2)
    bad = catalog.sql("SELECT id, reason, record FROM quarantine ORDER BY reason").to_pylist()
    assert [(r["id"], r["reason"]) for r in bad] == [
        (None, "id does not fit int64"),  # no usable id: none is made up
        (9, "width does not fit int32"),
    ]
    assert json.loads(bad[0]["record"])["id"] == 2**64 - 1, "the record keeps the value read"


def test_a_file_whose_name_is_not_utf8_is_refused_in_one_line(tmp_path: Path, coyo_rows):
    """Such a name used to end in a UnicodeEncodeError traceback from pyarrow."""
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(coyo_table(coyo_rows), folder / "part.parquet")
    os.rename(folder / "part.parquet", os.fsencode(folder) + b"/part-\xff.parquet")
    catalog = Catalog.init(tmp_path / "home")
    with pytest.raises(
        SourceFileError, match=r"part-\ufffd\.parquet: has a name that is not valid"
    ):
        ingest_metadata(catalog, [folder])
    assert catalog.dataset("quarantine").count_rows() == 0


def test_a_footer_with_a_column_name_that_is_not_utf8_is_a_corrupt_file(tmp_path: Path, coyo_rows):
    """pyarrow raises UnicodeDecodeError for it; ingest used to pass that on as a traceback."""
    table = coyo_table(coyo_rows).append_column("zzzzzzzz", pa.array([1] * len(coyo_rows)))
    path = tmp_path / "flipped.parquet"
    pq.write_table(table, path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"zzzzzzzz", b"\xff\xfe\xfd\xfc\xff\xfe\xfd\xfc"))
    catalog = Catalog.init(tmp_path / "home")
    with pytest.raises(SourceFileError, match=r"flipped\.parquet: has a corrupt Parquet footer"):
        ingest_metadata(catalog, [path])
    with pytest.raises(SourceFileError, match="has a corrupt Parquet footer"):
        ingest_labels(catalog, [path])


# ---- ingest labels --------------------------------------------------------------------------


def test_label_values_that_do_not_fit_or_are_out_of_range_are_quarantined(tmp_path: Path):
    """uint64 ids, int64 label indices and integer probabilities beyond their columns used to
    fail the file; infinite and float32-overflowing probabilities are named as bad values."""
    probs = [[0.5, 0.25]] * 7
    probs[3] = [2.0**40, 0.0]  # int64 values: the cast to float32 must not fail the file
    table = pa.table(
        {
            "id": pa.array([1, 2, 2**64 - 1, 4, 5, 6, 7], pa.uint64()),
            "labels": pa.array([[1, 2], [2**40, 1], [3, 4], [5, 6], [7, 8], [1, 2], [3, 4]]),
            "label_probs": pa.array(
                [
                    [0.5, 0.25],
                    [0.5, 0.25],
                    [0.5, 0.25],
                    [0.5, 0.25],
                    [1e300, 0.1],
                    [float("inf"), 0.0],
                    [0.5, float("-inf")],
                ],
                pa.list_(pa.float64()),
            ),
        }
    )
    path = tmp_path / "labels.parquet"
    pq.write_table(table, path)
    ints = tmp_path / "int-probs.parquet"
    as_ints = pa.array([[int(p) for p in row] for row in probs], pa.list_(pa.int64()))
    pq.write_table(table.set_column(2, "label_probs", as_ints).slice(3, 1), ints)

    catalog = Catalog.init(tmp_path / "home")
    summary = ingest_labels(catalog, [path, ints])

    assert summary.rows_read == summary.rows_written + summary.rows_quarantined == 8
    bad = catalog.sql("SELECT id, reason, input FROM quarantine ORDER BY id, input").to_pylist()
    index = BAD_INDEX.format(max_index=21840)
    assert [(r["id"], r["reason"]) for r in bad] == [
        (2, index),
        (4, BAD_PROB),  # 2**40 as a probability, from the integer file
        (5, BAD_PROB),  # 1e300: infinite in float32
        (6, BAD_PROB),
        (7, BAD_PROB),
        (None, "id does not fit int64"),
    ]
    assert "label_probs" in BAD_PROB and "infinite" in BAD_PROB
    assert catalog.sql("SELECT id FROM labels ORDER BY id")["id"].to_pylist() == [1, 4]


# ---- ingest images: webdataset sidecars ------------------------------------------------------


def _ingest_tar(tmp_path: Path, members: dict[str, bytes]) -> tuple[Catalog, list[dict]]:
    tar = write_tar(tmp_path / "00000.tar", members)
    catalog = Catalog.init(tmp_path / "home")
    summary = ingest_images(catalog, [tar], workers=0)
    assert summary.rows_read == summary.rows_written + summary.rows_quarantined
    assert catalog.dataset("images").count_rows() == summary.rows_written
    bad = catalog.sql("SELECT id, reason, record FROM quarantine ORDER BY reason").to_pylist()
    return catalog, bad


def _sample(key: str, meta: bytes | None = None, txt: bytes | None = None) -> dict[str, bytes]:
    members = {f"{key}.jpg": JPEG}
    if meta is not None:
        members[f"{key}.json"] = meta
    if txt is not None:
        members[f"{key}.txt"] = txt
    return members


def test_sidecar_text_that_is_not_utf8_quarantines_the_sample(tmp_path: Path):
    """A lone surrogate escaped in the .json used to crash the commit of `images` (and of
    `quarantine`); bytes that are not UTF-8 in the .txt were silently replaced, in the .json
    made the whole metadata (id included) be ignored."""
    catalog, bad = _ingest_tar(
        tmp_path,
        {
            **_sample("a", b'{"id": 11, "url": "https://x/\\ud800.jpg"}'),
            **_sample("b", b'{"id": 12}', txt=b"caption \xff\xfe"),
            **_sample("c", b'{"id": 13, "url": "https://x/\xff.jpg"}'),
            **_sample("d", b'{"id": 14, "tags": [{"k": "\\udfff"}]}'),
            **_sample("e", b'{"id": 15}', txt=b"a fine caption"),
        },
    )
    assert [(r["id"], r["reason"]) for r in bad] == [
        (12, "invalid UTF-8 in caption"),
        (14, "invalid UTF-8 in tags"),
        (11, "invalid UTF-8 in url"),
        (13, "invalid UTF-8 in url"),
    ]
    assert "\ufffd" in json.loads(bad[0]["record"])["caption"], "replaced in the record"
    assert catalog.sql("SELECT id, caption FROM images").to_pylist() == [
        {"id": 15, "caption": "a fine caption"}
    ]


def test_a_member_name_that_is_not_utf8_quarantines_the_sample(tmp_path: Path):
    """It used to crash the commit: the key and member columns are text."""
    name = os.fsdecode(b"\xff\xfe")
    _, bad = _ingest_tar(tmp_path, {**_sample(name, b'{"id": 21}'), f"{name}x.json": b'{"id": 22}'})
    assert [(r["id"], r["reason"]) for r in bad] == [
        (21, "invalid UTF-8 in member name"),
        (22, "no image in sample \ufffd\ufffdx; invalid UTF-8 in member name"),
    ]


@pytest.mark.parametrize(
    ("sidecar", "reason"),
    [
        (b"[1, 2]", "json is not an object (a JSON array)"),
        (b'"text"', "json is not an object (a JSON string)"),
        (b'{"id": 9223372036854775808}', "bad id: does not fit int64"),
        (b'{"id": "99999999999999999999999"}', "bad id: does not fit int64"),
        (b'{"id": 5.0}', "bad id: not an integer"),
        (b'{"id": true}', "bad id: not an integer"),
        (b'{"id": "--5"}', "bad id: not an integer"),  # a ValueError traceback before
        (b'{"id": "\xc2\xb2"}', "bad id: not an integer"),  # "²": isdigit() but not int()
        (b'{"id": {"nested": 1}}', "bad id: not an integer"),
    ],
)
def test_a_json_that_is_no_object_or_whose_id_is_unusable_is_quarantined(
    tmp_path: Path, sidecar: bytes, reason: str
):
    """An unusable id no longer falls back to a made-up (hash) id."""
    catalog, bad = _ingest_tar(tmp_path, _sample("000000007", sidecar))
    assert [(r["id"], r["reason"]) for r in bad] == [(7, reason)]  # 7: the numeric key
    assert catalog.dataset("images").count_rows() == 0


def test_usable_ids_and_unparsable_json_still_go_in(tmp_path: Path, caplog):
    """A numeric string and a null id are fine; JSON too deep to parse (a RecursionError
    traceback before) is ignored with a warning, like any JSON that does not parse."""
    deep = b'{"deep": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with caplog.at_level(logging.WARNING):
        catalog, bad = _ingest_tar(
            tmp_path,
            {
                **_sample("a", b'{"id": "42"}'),
                **_sample("b", b'{"id": null}'),
                **_sample("c", deep),
            },
        )
    assert bad == []
    origins = catalog.sql("SELECT key, id_origin FROM images ORDER BY key").to_pylist()
    assert [r["id_origin"] for r in origins] == ["json", "hash", "hash"]
    assert "c.json is not valid JSON" in caplog.text


# ---- ingest images: folders and img2dataset Parquet -------------------------------------------


def test_folder_file_names_that_are_not_utf8(tmp_path: Path):
    """An image file so named is quarantined; a folder so named is refused in one line (its
    path is the shard's name in the catalog). A "²" key used to crash the id resolver."""
    root = tmp_path / "images"
    root.mkdir()
    (root / "good.jpg").write_bytes(JPEG)
    (root / "²³.jpg").write_bytes(JPEG)
    with open(os.fsencode(root) + b"/\xfe.jpg", "wb") as fh:
        fh.write(JPEG)
    catalog = Catalog.init(tmp_path / "home")
    summary = ingest_images(catalog, [root], workers=0)
    assert (summary.rows_written, summary.quarantine_reasons) == (
        2,
        {"invalid UTF-8 in member name": 1},
    )
    assert set(catalog.sql("SELECT id_origin FROM images")["id_origin"].to_pylist()) == {"hash"}

    os.mkdir(os.fsencode(root) + b"/sub\xff")
    with open(os.fsencode(root) + b"/sub\xff/a.jpg", "wb") as fh:
        fh.write(JPEG)
    with pytest.raises(SourceFileError, match="sub\ufffd: has a name that is not valid UTF-8"):
        ingest_images(Catalog.init(tmp_path / "home2"), [root], workers=0)


def test_parquet_shard_text_that_is_not_utf8_is_quarantined(tmp_path: Path):
    """A string column holding bytes that are not UTF-8 used to crash the reader
    (UnicodeDecodeError), at the top level or nested in a struct."""

    def unchecked(values: list[bytes]) -> pa.Array:
        binary = pa.array(values, pa.binary())
        return pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())

    notes = pa.StructArray.from_arrays([unchecked([b"ok", b"ok", b"\xff"])], names=["note"])
    table = pa.table(
        {
            "jpg": pa.array([JPEG] * 3, pa.binary()),
            "key": ["000000031", "000000032", "000000033"],
            "id": pa.array([31, 32, 33], pa.int64()),
            "caption": unchecked([b"fine", b"bad \xff", b"fine"]),
            "extra": notes,
        }
    )
    path = tmp_path / "00000.parquet"
    pq.write_table(table, path)
    catalog = Catalog.init(tmp_path / "home")
    summary = ingest_images(catalog, [path], workers=0)
    assert summary.rows_written == 1
    bad = catalog.sql("SELECT id, reason FROM quarantine ORDER BY id").to_pylist()
    assert bad == [
        {"id": 32, "reason": "invalid UTF-8 in caption"},
        {"id": 33, "reason": "invalid UTF-8 in extra"},
    ]


def test_as_int64_takes_ascii_decimal_text_only():
    assert as_int64("42") == 42 and as_int64("-9223372036854775808") == -(2**63)
    for text in ("--5", "²", "٣", "1_000", " 7", "9" * 5000):  # int() raised on the first two
        assert as_int64(text) is None
