"""SQL that cannot write: attacks through every entry point that takes a user's SQL.

Each attack must be refused with a one-line CoyoDbError, leave no file anywhere under the test
folder (which is also the current directory), and leave the catalog answering normal queries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from conftest import coyo_table
from typer.testing import CliRunner

from coyo_db.catalog import Catalog, schemas, tables
from coyo_db.catalog.readonly import ALLOWED_SETTINGS, RESTRICTED_SETTINGS
from coyo_db.cli.app import app
from coyo_db.errors import CoyoDbError, QueryError

runner = CliRunner()

# {out} is an absolute path under the test folder; relative paths land in the current directory.
STATEMENT_ATTACKS = [
    "EXPLAIN ANALYZE COPY (SELECT 1 AS id) TO '{out}'",
    "EXPLAIN ANALYZE COPY (SELECT 1 AS id) TO 'pwned-relative.csv'",
    "EXPLAIN (ANALYZE) COPY (SELECT 1 AS id) TO '{out}'",
    "COPY (SELECT 1 AS id) TO '{out}'",
    "SELECT 1 AS id; COPY (SELECT 1) TO '{out}'",
    "PRAGMA enable_profiling='json'; PRAGMA profiling_output='{out}'; SELECT 1 AS id",
    "SET enable_profiling='json'; SET profiling_output='{out}'; SELECT 1 AS id",
    "SET profile_output='{out}'; PRAGMA enable_profiling; SELECT 1 AS id",
    "SET log_query_path='{out}'; SELECT 1 AS id",
    "CALL enable_logging(storage='file', storage_path='{out}')",
    "SELECT * FROM enable_logging(storage='file', storage_path='{out}')",
    "SET logging_sink='file'",
    "SET temp_directory='{out}'",
    "RESET lock_configuration",
    "SET lock_configuration=false; SELECT 1 AS id",
    "SET enable_external_access=true; SELECT 1 AS id",
    "SET allowed_directories=['/']",
    "EXPORT DATABASE '{out}'",
    "ATTACH '{out}' AS pwned",
    "INSTALL httpfs",
    "FORCE INSTALL json",
    "LOAD '{out}'",
    "UPDATE EXTENSIONS",
    "CREATE PERSISTENT SECRET pwned (TYPE http)",
    "SELECT * FROM query('COPY (SELECT 1) TO ''{out}''')",
    "/* note */ COPY (SELECT 1 AS id) TO '{out}' -- trailing",
    "SELECT 1 AS id -- ;\n; COPY (SELECT 1) TO '{out}'",
    "SELECT ';' AS id; COPY (SELECT 1) TO '{out}'",
    "SELECT $$;$$ AS id; COPY (SELECT 1) TO '{out}'",
    "SELECT * FROM read_text('{parquet}')",
    "SELECT * FROM read_parquet('{parquet}')",
]

WHERE_ATTACKS = [
    "1=1); COPY (SELECT 1) TO '{out}'; SELECT url, text, id FROM pairs WHERE (1=1",
    "true); EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'; SELECT 1 WHERE (true",
    "true); PRAGMA enable_profiling='json'; PRAGMA profiling_output='{out}'; SELECT 1 WHERE (true",
    "true); SET log_query_path='{out}'; SELECT 1 WHERE (true",
    "true); CALL enable_logging(storage='file', storage_path='{out}'); SELECT 1 WHERE (true",
    "true); ATTACH '{out}' AS pwned; SELECT 1 WHERE (true",
    "true); INSTALL httpfs; SELECT 1 WHERE (true",
    "true) --\n; COPY (SELECT 1) TO '{out}'; --",
    "true /* x */); COPY (SELECT 1) TO '{out}'; /*",
    "text = 'x'); COPY (SELECT 1) TO '{out}'; SELECT 1 WHERE (text = 'x'",
    "true; COPY (SELECT 1) TO '{out}'",
    "1=1) UNION ALL SELECT url, text, id FROM read_parquet('{parquet}') WHERE (true",
    "id IN (SELECT * FROM query('COPY (SELECT 1) TO ''{out}'''))",
    "(SELECT count(*) FROM enable_logging(storage='file', storage_path='{out}')) >= 0",
    "id IN (SELECT id FROM read_parquet('{parquet}'))",
]


def fill(attack: str, root: Path) -> str:
    return attack.format(out=root / "pwned.out", parquet=root / "mine.parquet")


def files_under(root: Path) -> set[str]:
    """Every file and folder under `root`, except the run log (a refused export that got as
    far as starting is recorded there as failed, by design)."""
    found = set()
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != f"{tables.RUNS.name}.lance"]
        rel = Path(folder).relative_to(root)
        found.update(str(rel / n) for n in [*dirs, *names])
    return found


@pytest.fixture
def setup(tmp_path, monkeypatch, coyo_rows):
    """A catalog with pairs and an empty images table, the current directory in the test
    folder, and a Parquet file of the user's own."""
    monkeypatch.chdir(tmp_path)
    catalog = Catalog(tmp_path / "home", create=True)
    catalog.append("pairs", coyo_table(coyo_rows))
    catalog.ensure(tables.IMAGES)
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2]}), tmp_path / "mine.parquet")
    return catalog, tmp_path


def still_works(catalog: Catalog, expected: int = 11) -> None:
    assert catalog.sql("SELECT count(*) AS n FROM pairs")["n"][0].as_py() == expected


def refused(call, root: Path, before: set[str]) -> CoyoDbError:
    with pytest.raises(CoyoDbError) as caught:
        call()
    assert "\n" not in str(caught.value).strip()
    assert files_under(root) == before, files_under(root) - before
    return caught.value


@pytest.mark.parametrize("attack", STATEMENT_ATTACKS)
def test_query_refuses(setup, attack):
    catalog, root = setup
    before = files_under(root)
    refused(lambda: catalog.sql(fill(attack, root)), root, before)
    still_works(catalog)


@pytest.mark.parametrize("attack", STATEMENT_ATTACKS)
def test_cli_query_refuses(setup, attack):
    catalog, root = setup
    before = files_under(root)
    result = runner.invoke(app, ["query", fill(attack, root), "--home", str(catalog.home)])
    assert result.exit_code != 0
    assert isinstance(result.exception, CoyoDbError), result.output
    assert "\n" not in str(result.exception).strip()
    assert files_under(root) == before
    ok = runner.invoke(
        app, ["query", "SELECT count(*) AS n FROM pairs", "-f", "csv", "--home", str(catalog.home)]
    )
    assert ok.exit_code == 0 and ok.stdout.splitlines() == ['"n"', "11"]


@pytest.mark.parametrize(
    "args",
    [
        ["query", "EXPLAIN ANALYZE COPY (SELECT 1) TO 'pwned.csv'"],
        ["query", "PRAGMA enable_profiling='json'; PRAGMA profiling_output='pwned.json'"],
        ["export", "--to", "out", "--where", WHERE_ATTACKS[0].format(out="pwned.csv")],
    ],
)
def test_cli_prints_one_line_without_traceback(setup, args):
    catalog, root = setup
    before = files_under(root)
    result = subprocess.run(
        [sys.executable, "-m", "coyo_db.cli.entry", *args, "--home", str(catalog.home)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert files_under(root) == before


@pytest.mark.parametrize("attack", WHERE_ATTACKS)
def test_export_where_refuses(setup, attack):
    from coyo_db.export.subset import export

    catalog, root = setup
    before = files_under(root)
    refused(lambda: export(catalog, root / "out", where=fill(attack, root)), root, before)
    still_works(catalog)
    assert export(catalog, root / "fine", where="id > 0").rows == 11


@pytest.mark.parametrize("attack", WHERE_ATTACKS[:3])
def test_cli_export_where_refuses(setup, attack):
    catalog, root = setup
    before = files_under(root)
    where = fill(attack, root)
    result = runner.invoke(
        app, ["export", "--to", "out", "--where", where, "--home", str(catalog.home)]
    )
    assert result.exit_code != 0 and isinstance(result.exception, CoyoDbError)
    assert files_under(root) == before


@pytest.mark.parametrize("attack", STATEMENT_ATTACKS)
def test_export_sql_file_refuses(setup, attack):
    from coyo_db.export.subset import export

    catalog, root = setup
    before = files_under(root)
    refused(lambda: export(catalog, root / "out", sql=fill(attack, root)), root, before)
    still_works(catalog)


@pytest.fixture
def manifest(setup):
    """A real export's manifest, to be edited."""
    from coyo_db.export.subset import export

    catalog, root = setup
    done = export(catalog, root / "exported", where="true")
    return catalog, root, json.loads(done.manifest_path.read_text())


def edited(root: Path, recorded: dict, **changes) -> Path:
    folder = root / "edited"
    folder.mkdir(exist_ok=True)
    path = folder / "_manifest.json"
    path.write_text(json.dumps({**recorded, **changes}))
    return path


@pytest.mark.parametrize("attack", STATEMENT_ATTACKS)
@pytest.mark.parametrize("to", [None, "again"])
def test_manifest_replay_refuses(manifest, attack, to):
    from coyo_db.export.replay import replay_export

    catalog, root, recorded = manifest
    sql = fill(attack, root)
    path = edited(root, recorded, sql=sql, selection={**recorded["selection"], "sql": sql})
    before = files_under(root)
    target = None if to is None else root / to
    refused(lambda: replay_export(catalog, path, target), root, before)
    still_works(catalog)


def test_manifest_exclusions_cannot_inject(manifest):
    from coyo_db.export.replay import replay_export

    catalog, root, recorded = manifest
    out = root / "pwned.out"
    evil = {
        "reason": "duplicates",
        "view": f"(SELECT 1 AS id); COPY (SELECT 1) TO '{out}'; SELECT * FROM (SELECT 1 AS id)",
        "present": True,
        "applied": True,
    }
    path = edited(root, recorded, exclusions=[evil])
    before = files_under(root)
    error = refused(lambda: replay_export(catalog, path), root, before)
    assert "unknown exclusion" in str(error)
    assert replay_export(catalog, root / "exported").same_ids


@pytest.fixture
def indexed(setup):
    """`setup` with a small flat vector index over the pairs' ids."""
    from coyo_db.search.vector_index import build_index

    catalog, root = setup
    ids = catalog.sql("SELECT id FROM pairs ORDER BY id")["id"].to_numpy()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(ids), 8)).astype(np.float16)
    name = tables.embeddings_name("effnet-lite0")
    catalog.ensure_table(name, schemas.embeddings_schema(8, None))
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float16()), 8)
    catalog.append(name, pa.table({"id": pa.array(ids, pa.int64()), "image_embedding": column}))
    build_index(catalog, "effnet-lite0", kind="flat")
    return catalog, root, ids


@pytest.mark.parametrize("attack", WHERE_ATTACKS)
def test_search_where_refuses(indexed, attack):
    from coyo_db.search.nearest import search

    catalog, root, ids = indexed
    before = files_under(root)
    refused(lambda: search(catalog, id=int(ids[0]), k=3, where=fill(attack, root)), root, before)
    still_works(catalog)
    assert len(search(catalog, id=int(ids[0]), k=3, where="id > 0").ids) == 3


@pytest.mark.parametrize("attack", WHERE_ATTACKS)
def test_audit_where_refuses(setup, attack):
    from coyo_db.audit.contamination import audit

    catalog, root = setup
    before = files_under(root)
    refused(lambda: audit(catalog, ["nope"], where=fill(attack, root)), root, before)
    still_works(catalog)


# ---- what still works on a restricted connection -----------------------------------------


def test_restricted_connection_has_the_switches_on(setup):
    catalog, _ = setup
    with catalog.connection(restricted=True) as con:
        for name, value in [*RESTRICTED_SETTINGS, ("lock_configuration", True)]:
            [(current,)] = con.execute(f"SELECT current_setting('{name}')").fetchall()
            assert current == value, name
    assert catalog.sql("SET threads = 2; SELECT current_setting('threads') AS t")["t"][0].as_py()
    assert set(ALLOWED_SETTINGS) == {"threads", "memory_limit"}


def test_lance_scans_time_travel_and_spills_still_work(setup, coyo_rows):
    catalog, _ = setup
    first = catalog.dataset("pairs").version
    catalog.append("pairs", coyo_table(coyo_rows))
    still_works(catalog, 22)
    assert (
        catalog.sql("SELECT count(*) AS n FROM pairs", versions={"pairs": first})["n"][0].as_py()
        == 11
    )
    # 1.1M groups of ~80-byte keys do not fit in 100 MB: the group-by spills to the temp folder
    big = (
        "SET threads = 2; SET memory_limit = '100MB';"
        "SELECT count(*) AS n FROM ("
        "  SELECT p.url || lpad(r.range::VARCHAR, 8, '0') AS s, any_value(r.range) AS k"
        "  FROM pairs AS p, range(100000) AS r GROUP BY s)"
    )
    assert catalog.sql(big)["n"][0].as_py() == 22 * 100_000 // 2  # each url is there twice
    with catalog.connection() as con, pytest.raises(duckdb.OutOfMemoryException):
        con.execute("SET temp_directory = ''")  # without spilling, the same query fails
        con.sql(big).fetchall()


def test_reading_files_is_refused_without_write_and_allowed_with_it(setup):
    catalog, root = setup
    path = root / "mine.parquet"
    with pytest.raises(QueryError, match=r"docs/security\.md"):
        catalog.sql(f"SELECT count(*) AS n FROM read_parquet('{path}')")
    assert (
        catalog.sql(f"SELECT count(*) AS n FROM read_parquet('{path}')", write=True)["n"][0].as_py()
        == 2
    )


def test_write_keeps_full_power(setup):
    catalog, root = setup
    target = root / "written.csv"
    catalog.sql(f"COPY (SELECT 42 AS a) TO '{target}'", write=True)
    assert target.read_text().splitlines() == ["a", "42"]
