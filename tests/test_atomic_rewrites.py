"""Rewrites are atomic: a rerun that replaces a method's, an audit's, a refset's or a taxonomy's
rows commits each table once, so a process killed at any point leaves the old rows or the new
ones, never neither, and a normal rerun then leaves every row once.

The rewrites run in child processes killed at the crash points of :mod:`coyo_db.faults`:
``rewrite.after_stage`` (the new rows written, not committed) and ``rewrite.after_commit``.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from coyo_db import faults
from coyo_db.catalog import Catalog, lance_tables
from coyo_db.errors import CatalogError

ROOT = Path(__file__).resolve().parents[1]
STAGE, COMMIT = "rewrite.after_stage", "rewrite.after_commit"


def child(args: list[str], crash: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in a child process, killed at the crash point `crash` if given."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(faults.ENV, None)
    if crash:
        env[faults.ENV] = crash
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


def killed(args: list[str], crash: str) -> None:
    result = child(args, crash)
    assert result.returncode == faults.EXIT_CODE, result.stderr[-3000:]


# ---- lance_tables.replace ----------------------------------------------------------------------

SCHEMA = pa.schema([("key", pa.string()), ("value", pa.int64())])


def rows(key: str, values: list[int]) -> pa.Table:
    return pa.table({"key": [key] * len(values), "value": values}, schema=SCHEMA)


def content(uri: Path) -> list[tuple[str, int]]:
    table = lance_tables.open_dataset(uri).to_table()
    return sorted(zip(table["key"].to_pylist(), table["value"].to_pylist(), strict=True))


@pytest.fixture
def table_uri(tmp_path: Path) -> Path:
    """Three fragments: all `a`; `a` and `b`; all `c`."""
    uri = tmp_path / "t.lance"
    lance_tables.append(uri, rows("a", [1, 2]))
    lance_tables.append(uri, pa.concat_tables([rows("a", [3]), rows("b", [4, 5])]))
    lance_tables.append(uri, rows("c", [6]))
    return uri


OLD = [("a", 1), ("a", 2), ("a", 3), ("b", 4), ("b", 5), ("c", 6)]
NEW = [("a", 7), ("a", 8), ("b", 4), ("b", 5), ("c", 6)]


def test_replace_is_one_commit_over_whole_and_partial_fragments(table_uri: Path) -> None:
    before = lance_tables.open_dataset(table_uri).version
    new = rows("a", [7, 8])
    dataset = lance_tables.replace(
        table_uri, "key = 'a'", new.to_batches(), SCHEMA, {"run_id": "r1"}
    )
    assert dataset.version == before + 1
    assert content(table_uri) == NEW
    # the fragment of `a` rows is dropped, the mixed one gets a deletion vector
    fragments = {f.fragment_id: f.metadata for f in dataset.get_fragments()}
    assert sorted(fragments) == [1, 2, 3]
    assert fragments[1].deletion_file is not None and fragments[2].deletion_file is None
    versions = list(lance_tables.committed_properties(table_uri, before))
    assert versions == [(before + 1, {"run_id": "r1"})]


def test_replace_commits_only_what_there_is_to_do(table_uri: Path, tmp_path: Path) -> None:
    version = lance_tables.open_dataset(table_uri).version
    assert lance_tables.replace(table_uri, "key = 'z'", [], SCHEMA).version == version
    assert lance_tables.replace(table_uri, "key = 'b'", [], SCHEMA).version == version + 1
    assert content(table_uri) == [("a", 1), ("a", 2), ("a", 3), ("c", 6)]
    quoted = "key = " + lance_tables.sql_string("it's")
    lance_tables.replace(table_uri, quoted, rows("it's", [9]).to_batches(), SCHEMA)
    lance_tables.replace(table_uri, quoted, rows("it's", [10]).to_batches(), SCHEMA)
    assert content(table_uri) == [("a", 1), ("a", 2), ("a", 3), ("c", 6), ("it's", 10)]
    fresh = tmp_path / "fresh.lance"
    lance_tables.replace(fresh, "key = 'a'", rows("a", [1]).to_batches(), SCHEMA)
    assert content(fresh) == [("a", 1)]


def test_a_concurrent_rewrite_of_the_same_rows_makes_this_one_fail(
    table_uri: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done: list[str] = []

    def meanwhile(name: str) -> None:
        if name == STAGE and not done:
            done.append(name)
            lance_tables.replace(table_uri, "key = 'a'", rows("a", [9]).to_batches(), SCHEMA)

    monkeypatch.setattr(faults, "point", meanwhile)
    with pytest.raises(CatalogError, match="another writer"):
        lance_tables.replace(table_uri, "key = 'a'", rows("a", [7]).to_batches(), SCHEMA)
    assert content(table_uri) == [("a", 9), ("b", 4), ("b", 5), ("c", 6)]


REPLACE = """
import sys
import pyarrow as pa
from coyo_db.catalog import lance_tables
schema = pa.schema([("key", pa.string()), ("value", pa.int64())])
new = pa.table({"key": ["a", "a"], "value": [7, 8]}, schema=schema)
lance_tables.replace(sys.argv[1], "key = 'a'", new.to_batches(), schema)
"""


@pytest.mark.parametrize(("point", "expected"), [(STAGE, OLD), (COMMIT, NEW)])
def test_a_killed_replace_leaves_the_old_rows_or_the_new(
    table_uri: Path, point: str, expected: list[tuple[str, int]]
) -> None:
    killed(["-c", REPLACE, str(table_uri)], point)
    assert content(table_uri) == expected


# ---- dedup -------------------------------------------------------------------------------------


def groups(catalog: Catalog, method: str) -> list[dict]:
    query = f"SELECT id, group_id, keeper, keep_rule FROM dup_groups WHERE method = '{method}'"
    return catalog.sql(query + " ORDER BY id").to_pylist()


def test_a_killed_dedup_rerun_keeps_the_old_groups_or_the_new(tmp_path: Path) -> None:
    from coyo_db.dedup.groups import dedup_phash
    from coyo_db.synth.metadata import synth_table

    catalog = Catalog.init(tmp_path / "home")
    catalog.append("pairs", synth_table(2_000, seed=3))
    dedup_phash(catalog, 0)
    exact = groups(catalog, "phash_pairs_r0")
    dedup_phash(catalog, 4, keep="lowest-id")
    old = groups(catalog, "phash_pairs_r4")
    unique = catalog.sql("SELECT count(*) AS n FROM pairs_unique")["n"][0].as_py()
    assert old and unique < 2_000
    cli = ["-m", "coyo_db.cli.entry", "dedup", "phash", "--radius", "4", "--keep", "highest-clip"]
    cli += ["--home", str(catalog.home)]

    killed(cli, STAGE)
    assert groups(catalog, "phash_pairs_r4") == old
    assert catalog.sql("SELECT count(*) AS n FROM pairs_unique")["n"][0].as_py() == unique

    killed(cli, COMMIT)
    new = groups(catalog, "phash_pairs_r4")
    assert {g["keep_rule"] for g in new} == {"highest-clip"}
    assert [g["id"] for g in new] == [g["id"] for g in old]  # same members, each once

    dedup_phash(catalog, 4, keep="highest-clip")
    assert groups(catalog, "phash_pairs_r4") == new
    assert groups(catalog, "phash_pairs_r0") == exact


# ---- taxonomies --------------------------------------------------------------------------------

ENSURE = """
import sys
from coyo_db.catalog import Catalog
from coyo_db.labels.taxonomy import ensure_taxonomy
ensure_taxonomy(Catalog(sys.argv[1]), "imagenet-1k")
"""


def classes(catalog: Catalog) -> dict[str, list[int]]:
    table = catalog.dataset("taxonomies").to_table(columns=["taxonomy", "index"])
    out: dict[str, list[int]] = {}
    for name, index in zip(table["taxonomy"].to_pylist(), table["index"].to_pylist(), strict=True):
        out.setdefault(name, []).append(index)
    return {name: sorted(indices) for name, indices in out.items()}


def test_a_killed_taxonomy_rewrite_keeps_the_old_build_or_the_new(tmp_path: Path) -> None:
    from coyo_db.ingest.models.class_lists import load_taxonomy
    from coyo_db.labels.taxonomy import add_taxonomy, ensure_taxonomy

    catalog = Catalog.init(tmp_path / "home")
    catalog.append("taxonomies", load_taxonomy("imagenet-1k").slice(0, 10))  # another build
    (tmp_path / "mine.txt").write_text("cat\ndog\n")
    add_taxonomy(catalog, "mine", tmp_path / "mine.txt")
    old = {"imagenet-1k": list(range(10)), "mine": [0, 1]}
    assert classes(catalog) == old

    killed(["-c", ENSURE, str(catalog.home)], STAGE)
    assert classes(catalog) == old
    killed(["-c", ENSURE, str(catalog.home)], COMMIT)
    new = {"imagenet-1k": list(range(1000)), "mine": [0, 1]}
    assert classes(catalog) == new
    assert ensure_taxonomy(catalog, "imagenet-1k") == 0
    assert classes(catalog) == new


TREE = """
import sys
from coyo_db.catalog import Catalog
from coyo_db.labels.taxonomy import ingest_tree
ingest_tree(Catalog(sys.argv[1]), sys.argv[2])
"""


def edges(catalog: Catalog) -> list[tuple[str, str]]:
    table = catalog.dataset("taxonomy_tree").to_table()
    pairs = zip(table["parent_wnid"].to_pylist(), table["child_wnid"].to_pylist(), strict=True)
    return sorted(pairs)


def test_a_killed_tree_rewrite_keeps_the_old_tree_or_the_new(tmp_path: Path) -> None:
    from coyo_db.labels.taxonomy import ingest_tree

    a, b, c = "n00001740", "n00002137", "n00002452"
    catalog = Catalog.init(tmp_path / "home")
    first, second = tmp_path / "first.pickle", tmp_path / "second.pickle"
    first.write_bytes(pickle.dumps({a: [b, c]}, protocol=4))
    second.write_bytes(pickle.dumps({a: [b], b: [c]}, protocol=4))
    ingest_tree(catalog, first)
    killed(["-c", TREE, str(catalog.home), str(second)], STAGE)
    assert edges(catalog) == [(a, b), (a, c)]
    killed(["-c", TREE, str(catalog.home), str(second)], COMMIT)
    assert edges(catalog) == [(a, b), (b, c)]
    assert ingest_tree(catalog, second) == 0


# ---- refsets and the audit ---------------------------------------------------------------------

# A refset replaced over one descriptor table commits: its `refsets` row deleted, its
# descriptors, its images, its `refsets` row written.
REFSET_COMMITS = 4
REFSET = """
import sys
from coyo_db.audit.refset_job import add_refset
from coyo_db.catalog import Catalog
name, path, descriptor, replace = sys.argv[2:]
add_refset(Catalog(sys.argv[1]), name, path, descriptor=descriptor, replace=replace == "1",
           workers=0)
"""
AUDIT = """
import sys
from coyo_db.audit.contamination import audit
from coyo_db.audit.decision import OperatingPoint
from coyo_db.catalog import Catalog
audit(Catalog(sys.argv[1]), ["mini"], descriptor=sys.argv[2], paths=[sys.argv[3]],
      point=OperatingPoint(knn=int(sys.argv[4])), workers=0)
"""


class Setup:
    """A catalog with refset `mini` audited once, a tiny TorchScript descriptor, two reference
    folders (`refs`: five images, `refs2`: two others) and a two-image dataset folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.descriptor = f"torchscript:{tiny_descriptor(root / 'tiny.pt')}@32"
        self.refs, self.refs2, self.data = root / "refs", root / "refs2", root / "data"
        self.catalog = Catalog.init(root / "home")

    def add_refset(self, name: str, path: Path, replace: bool = False, crash: str = "") -> None:
        """`refset add` here, or in a child process killed at `crash`."""
        from coyo_db.audit.refset_job import add_refset

        if not crash:
            add_refset(
                self.catalog, name, path, descriptor=self.descriptor, replace=replace, workers=0
            )
            return
        args = [str(self.catalog.home), name, str(path), self.descriptor, "1" if replace else "0"]
        killed(["-c", REFSET, *args], crash)

    def audit(self, crash: str = "", knn: int = 1) -> None:
        """`audit --refset mini` of the dataset folder here, or in a child killed at `crash`."""
        from coyo_db.audit.contamination import audit
        from coyo_db.audit.decision import OperatingPoint

        if not crash:
            paths, point = [self.data], OperatingPoint(knn=knn)
            audit(
                self.catalog,
                ["mini"],
                descriptor=self.descriptor,
                paths=paths,
                point=point,
                workers=0,
            )
            return
        args = [str(self.catalog.home), self.descriptor, str(self.data), str(knn)]
        killed(["-c", AUDIT, *args], crash)


def tiny_descriptor(path: Path) -> Path:
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean(dim=(2, 3))

    with warnings.catch_warnings():  # torch.jit is deprecated; the loader reads TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(Tiny()).save(str(path))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    from tests.audit_helpers import write_dataset, write_references

    pytest.importorskip("torch")
    here = Setup(tmp_path_factory.mktemp("atomic"))
    photos = write_references(here.refs)
    here.refs2.mkdir()
    for name in ("coffee", "rocket"):
        shutil.copy(here.refs / f"{name}.jpg", here.refs2 / f"{name}-2.jpg")
    write_dataset(here.root / "all", photos)
    here.data.mkdir()
    for name in ("copy-resize.jpg", "camera.jpg"):
        shutil.copy(here.root / "all" / name, here.data / name)
    here.add_refset("mini", here.refs)
    here.audit()
    return here


def refset_state(catalog: Catalog, name: str) -> dict[str, list]:
    where = f"WHERE refset = '{name}'"
    (descriptors,) = [t for t in catalog.table_names() if t.startswith("refset_descriptors__")]
    return {
        "registered": catalog.sql(f"SELECT path, images FROM refsets {where}").to_pylist(),
        "images": catalog.sql(
            f"SELECT ref_id, ref_path FROM refset_images {where} ORDER BY ref_id"
        ).to_pylist(),
        "descriptors": catalog.sql(f"SELECT ref_id FROM {descriptors} {where} ORDER BY ref_id")[
            "ref_id"
        ].to_pylist(),
    }


class Stopped(BaseException):
    """Raised at a crash point in this process."""


def stop_at(wanted: str) -> Callable[[str], None]:
    def point(name: str) -> None:
        if name == wanted:
            raise Stopped(name)

    return point


def test_a_killed_refset_replace_keeps_the_old_set_or_the_new(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coyo_db.audit.refsets import refset_names

    catalog = setup.catalog
    setup.add_refset("swap", setup.refs)
    old = refset_state(catalog, "swap")
    assert old["registered"] == [{"path": str(setup.refs), "images": 5}]
    assert old["descriptors"] == list(range(5))

    setup.add_refset("swap", setup.refs2, replace=True, crash=STAGE)
    assert refset_state(catalog, "swap") == old

    setup.add_refset("swap", setup.refs2, replace=True, crash=f"{COMMIT}:{REFSET_COMMITS}")
    new = refset_state(catalog, "swap")
    assert new["registered"] == [{"path": str(setup.refs2), "images": 2}]
    assert [r["ref_path"] for r in new["images"]] == ["coffee-2.jpg", "rocket-2.jpg"]
    assert new["descriptors"] == [0, 1]

    # stopped between two tables (here, not killed: the tables end up the same), the set is
    # unregistered; adding it again repairs it
    with monkeypatch.context() as patch, pytest.raises(Stopped):
        patch.setattr(faults, "point", stop_at(COMMIT))
        setup.add_refset("swap", setup.refs, replace=True)
    assert refset_names(catalog) == ["mini"]
    setup.add_refset("swap", setup.refs)
    assert refset_state(catalog, "swap") == old
    assert refset_names(catalog) == ["mini", "swap"]


def audit_rows(catalog: Catalog, table: str) -> tuple[set[str], list[tuple]]:
    """(run ids, sorted (id, refset, ref_id, method)) of `table`'s rows."""
    rows = catalog.sql(f"SELECT id, refset, ref_id, method, run_id FROM {table}").to_pylist()
    keys = sorted((r["id"], r["refset"], r["ref_id"], r["method"] or "") for r in rows)
    return {r["run_id"] for r in rows}, keys


def test_a_killed_audit_rerun_keeps_the_old_hits_or_the_new(setup: Setup) -> None:
    """An audit with other settings (another operating point: another audit) killed at each
    of its commits: `contamination` holds the old hits or the new, and the audit run again
    finishes from where it was, each candidate once."""
    catalog = setup.catalog
    names = ("contamination_candidates", "contamination")
    old = {name: audit_rows(catalog, name) for name in names}
    assert all(len(run_ids) == 1 and keys for run_ids, keys in old.values())
    assert old["contamination"][0] == old["contamination_candidates"][0]

    setup.audit(crash="ledger.after_table_commit", knn=2)  # the only unit committed
    assert audit_rows(catalog, "contamination") == old["contamination"]
    run_ids, _ = audit_rows(catalog, "contamination_candidates")
    assert len(run_ids) == 2  # the old candidates beside the new until the audit ends

    setup.audit(crash=f"{COMMIT}:1", knn=2)  # the unit is done; old candidates deleted
    assert audit_rows(catalog, "contamination") == old["contamination"]
    new_runs, new_keys = audit_rows(catalog, "contamination_candidates")
    assert len(new_runs) == 1 and not new_runs & old["contamination_candidates"][0]

    setup.audit(knn=2)
    final = {name: audit_rows(catalog, name) for name in names}
    assert final["contamination_candidates"] == (new_runs, new_keys)
    hit_keys = catalog.sql(
        "SELECT id, refset, ref_id, method FROM contamination_candidates WHERE hit"
    ).to_pylist()
    assert final["contamination"][1] == sorted(
        (r["id"], r["refset"], r["ref_id"], r["method"]) for r in hit_keys
    )
    assert len(set(final["contamination_candidates"][1])) == len(new_keys)  # each row once
