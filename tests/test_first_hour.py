"""What a new user meets in the first hour: a catalog of their own crawl (images, no pairs)
exported in every format, Lance exports that LanceDB opens, empty exports and empty dedup
reports said as such, and DuckDB's errors said in the catalog's terms."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import lance
import pyarrow.parquet as pq
import pytest
from imagedata import make_samples, write_webdataset
from typer.testing import CliRunner

from coyo_db.catalog import Catalog, schemas
from coyo_db.cli.app import app
from coyo_db.errors import CatalogError, CoyoDbError, InputError, QueryError
from coyo_db.export.replay import replay_export
from coyo_db.export.subset import EmptyExportError, export
from coyo_db.ingest.images import ingest_images
from coyo_db.synth.metadata import synth_table

README = Path(__file__).parent.parent / "README.md"
runner = CliRunner()


@pytest.fixture(scope="module")
def crawl(tmp_path_factory) -> Path:
    """An img2dataset webdataset shard of 8 images with captions (one failed download)."""
    root = tmp_path_factory.mktemp("crawl")
    samples = make_samples(8, seed=21)
    samples[3].data = None
    samples[3].error_message = "HTTP Error 403: Forbidden"
    write_webdataset(root / "my-crawl" / "00000.tar", samples)
    return root / "my-crawl"


@pytest.fixture
def images_only(tmp_path, crawl) -> Catalog:
    catalog = Catalog(tmp_path / "home", create=True)
    ingest_images(catalog, [crawl], workers=0)
    return catalog


def _captions(catalog: Catalog) -> dict[int, str]:
    rows = catalog.sql("SELECT id, caption FROM images").to_pylist()
    return {r["id"]: r["caption"] for r in rows}


def _cli(*args: str, home: Path) -> tuple[int, str]:
    """Exit code and output of a command; a user error is what `coyo-db` would print."""
    result = runner.invoke(app, [*args, "--home", str(home)])
    if isinstance(result.exception, CoyoDbError):
        return result.exception.exit_code, f"error: {result.exception}"
    return result.exit_code, result.output


# --- a catalog without pairs ----------------------------------------------------------------


def test_export_reads_images_when_there_are_no_pairs(images_only, tmp_path):
    captions = _captions(images_only)
    result = export(images_only, tmp_path / "out", where="width >= 0")
    table = pq.read_table(next((tmp_path / "out").glob("*.parquet")))
    assert table.column_names == ["url", "text", "id"]
    assert dict(zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True)) == captions
    assert result.manifest["selection"]["table"] == "images"
    assert replay_export(images_only, tmp_path / "out").same_ids


def test_where_may_name_text_and_columns_may_add_image_facts(images_only, tmp_path):
    captions = _captions(images_only)
    wanted = {i for i, c in captions.items() if c.endswith("5")}
    export(images_only, tmp_path / "out", where="text LIKE '%5'", columns=["width", "key"])
    table = pq.read_table(next((tmp_path / "out").glob("*.parquet")))
    assert set(table["id"].to_pylist()) == wanted
    assert table.column_names == ["url", "text", "id", "width", "key"]
    export(images_only, tmp_path / "all", where="true", columns=["*"])
    every = pq.read_table(next((tmp_path / "all").glob("*.parquet")))
    assert "text" in every.column_names and "caption" in every.column_names


def test_webdataset_from_images_carries_the_captions(images_only, tmp_path):
    captions = _captions(images_only)
    export(images_only, tmp_path / "wds", where="true", fmt="webdataset")
    [tar] = (tmp_path / "wds").glob("*.tar")
    with tarfile.open(tar) as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    texts = {
        json.loads(members[name[:-4] + ".json"])["id"]: data.decode()
        for name, data in members.items()
        if name.endswith(".txt")
    }
    assert texts == captions


def test_from_images_works_beside_pairs_too(images_only, tmp_path):
    images_only.ensure_table("pairs", schemas.PAIRS)
    images_only.append("pairs", synth_table(20, seed=1))
    export(images_only, tmp_path / "pairs", where="true")
    assert pq.read_metadata(next((tmp_path / "pairs").glob("*.parquet"))).num_rows == 20
    export(images_only, tmp_path / "imgs", where="true", table="images")
    table = pq.read_table(next((tmp_path / "imgs").glob("*.parquet")))
    assert sorted(table["text"].to_pylist()) == sorted(_captions(images_only).values())


def test_a_missing_source_is_named_with_the_command_that_fills_it(images_only, tmp_path):
    with pytest.raises(CatalogError, match=r"no pairs table yet: `coyo-db ingest metadata`"):
        export(images_only, tmp_path / "x", where="true", table="pairs")
    with pytest.raises(CatalogError, match=r"no table or view named nope"):
        export(images_only, tmp_path / "x", where="true", table='nope"; DROP TABLE images; --')
    empty = Catalog(tmp_path / "empty", create=True)
    with pytest.raises(CatalogError, match=r"`coyo-db ingest images`, then export"):
        export(empty, tmp_path / "x", where="true")
    assert not (tmp_path / "x").exists()


def test_readme_crawl_commands_run_as_written(crawl, tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    section = text.split("## A crawl of your own", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line.split("  #")[0] for line in block.splitlines() if line.startswith("coyo-db")]
    assert len(commands) >= 5
    (tmp_path / "my-crawl").symlink_to(crawl)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        result = runner.invoke(app, shlex.split(command)[1:])
        assert result.exit_code == 0, f"{command}\n{result.output}"
    assert any(Path("my-subset").glob("*.parquet")) and any(Path("my-wds").glob("*.tar"))
    opened = lance.dataset("my-subset.lance").to_table()
    assert opened.num_rows == 7 and "text" in opened.column_names
    quarantined = Catalog("crawl-db").sql("SELECT reason FROM quarantine")["reason"].to_pylist()
    assert quarantined == ["img2dataset: HTTP Error 403: Forbidden"]


# --- Lance exports open in LanceDB ----------------------------------------------------------


def test_lance_export_opens_in_lancedb_and_lance(images_only, tmp_path):
    import lancedb

    captions = _captions(images_only)
    result = export(images_only, tmp_path / "db" / "subset.lance", where="true", fmt="lance")
    table = lancedb.connect(str(tmp_path / "db")).open_table("subset")
    assert table.count_rows() == len(captions)
    rows = table.to_arrow()
    assert dict(zip(rows["id"].to_pylist(), rows["text"].to_pylist(), strict=True)) == captions
    assert lance.dataset(str(tmp_path / "db" / "subset.lance")).count_rows() == len(captions)
    assert "open_table('subset')" in result.open_hint()


def test_a_lance_export_must_be_a_dot_lance_folder(images_only, tmp_path):
    with pytest.raises(InputError, match=r"NAME\.lance.*--to .*subset\.lance"):
        export(images_only, tmp_path / "subset", where="true", fmt="lance")
    assert not (tmp_path / "subset").exists()


# --- empty results --------------------------------------------------------------------------


def test_an_empty_export_fails_unless_allowed(images_only, tmp_path):
    home = images_only.home
    code, output = _cli("export", "--where", "width < 0", "--to", str(tmp_path / "e"), home=home)
    assert code != 0 and "0 rows" in output and "--allow-empty" in output
    assert "Traceback" not in output and not (tmp_path / "e").exists()
    args = ["export", "--where", "width < 0", "--to", str(tmp_path / "e"), "--allow-empty"]
    code, output = _cli(*args, home=home)
    assert code == 0 and "exported 0 rows" in output
    runs = images_only.sql("SELECT status FROM runs WHERE command = 'export' ORDER BY started_at")
    assert runs["status"].to_pylist() == ["failed", "ok"]


def _one_group(catalog: Catalog, ids: list[int]) -> None:
    """One duplicate group of `ids`, the first its keeper."""
    from coyo_db.catalog.tables import DUP_GROUPS

    rows = [
        {"method": "test", "group_id": ids[0], "id": i, "keeper": i == ids[0], "distance": 0}
        | {"group_size": len(ids), "keep_rule": "lowest-id"}
        for i in ids
    ]
    catalog.ensure(DUP_GROUPS)
    catalog.append("dup_groups", DUP_GROUPS.from_pylist(rows))


def test_excluded_rows_are_named_when_nothing_is_left(images_only, tmp_path):
    ids = sorted(_captions(images_only))
    _one_group(images_only, ids)
    others = ", ".join(str(i) for i in ids[1:])
    with pytest.raises(EmptyExportError, match=r"\(6 selected; 6 excluded as duplicates\)"):
        export(images_only, tmp_path / "x", where=f"id IN ({others})")
    assert export(images_only, tmp_path / "x", where="true").rows == 1


def test_dedup_report_without_groups_says_so(images_only):
    from coyo_db.catalog.tables import DUP_GROUPS

    code, output = _cli("dedup", "report", home=images_only.home)
    assert code == 0 and output.startswith("no duplicate groups: no dedup has run")
    images_only.ensure(DUP_GROUPS)
    code, output = _cli("dedup", "report", home=images_only.home)
    assert code == 0 and output.strip() == "no duplicate groups: the dedup runs so far found none"
    _one_group(images_only, sorted(_captions(images_only))[:2])
    code, output = _cli("dedup", "report", home=images_only.home)
    assert code == 0 and "no duplicate groups" not in output and "test" in output


# --- errors in the catalog's terms ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM pairs", r"no pairs table yet: `coyo-db ingest metadata` fills it"),
        ("SELECT * FROM pairs_filtered", r"view pairs_filtered needs the table pairs"),
        ("SELECT * FROM labels_long", r"view labels_long needs the table labels"),
        ("SELECT * FROM dup_groups", r"`coyo-db dedup phash\|text\|semantic` fills it"),
        ("SELECT * FROM embeddings__minilm", r"`coyo-db ingest images --embed MODEL` fills it"),
        ("SELECT * FROM nope", r"no table or view named nope in this catalog \(it has images"),
        ("SELECT text FROM images", r"no column text: images has columns id, .*caption"),
        ("SELECT i.text FROM images i", r"i \(images\) has no column text; images has columns"),
    ],
)
def test_query_errors_speak_of_the_catalog(images_only, sql, expected):
    with pytest.raises(QueryError, match=expected) as error:
        images_only.sql(sql)
    message = str(error.value)
    assert "pg_" not in message and "Binder Error" not in message and "\n" not in message


def test_caption_hint_and_writes_into_catalog_tables(images_only):
    with pytest.raises(QueryError, match=r"an image's text is its caption \(`caption`\)"):
        images_only.sql("SELECT text FROM images")
    for sql in ("INSERT INTO images SELECT * FROM images", "DELETE FROM images"):
        with pytest.raises(QueryError, match=r"catalog table, which SQL only reads"):
            images_only.sql(sql, write=True)
    with pytest.raises(QueryError, match="Binder Error"):  # other errors pass through
        images_only.sql("SELECT nosuch")


def test_cli_says_the_missing_table_in_one_line(images_only):
    command = [sys.executable, "-m", "coyo_db.cli.entry", "query", "SELECT count(*) FROM pairs"]
    result = subprocess.run(
        [*command, "--home", str(images_only.home)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: the catalog has no pairs table yet")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_export_column_lists_the_source_columns(images_only, tmp_path):
    with pytest.raises(QueryError, match=r"no column nsfw_score_opennsfw2: images has columns"):
        export(images_only, tmp_path / "x", where="nsfw_score_opennsfw2 < 0.5")
