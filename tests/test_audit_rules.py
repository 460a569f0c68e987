"""The audit's promises beyond finding copies: COYO's exact-pHash rule as a floor, groups of
near-identical references, the same rows whatever the batch size, selection or scan order, and
an audit killed midway that resumes where it was."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from coyo_db.audit.contamination import audit
from coyo_db.audit.decision import DEFAULT_POINT
from coyo_db.audit.refset_job import add_refset
from coyo_db.catalog import Catalog
from coyo_db.errors import InputError
from coyo_db.ingest.images import ingest_images
from tests.audit_helpers import _photo
from tests.test_atomic_rewrites import killed, tiny_descriptor

EVIDENCE = "id, refset, ref_id, method, score, hamming, cosine, inliers, coverage, flipped, layout"


def _logo() -> Image.Image:
    """A flat mark on white: a low-information image local features find little on."""
    img = Image.new("RGB", (240, 240), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.ellipse((60, 60, 180, 180), fill=(20, 60, 200))
    draw.rectangle((100, 20, 140, 220), fill=(230, 120, 20))
    return img


def _write_references(folder: Path) -> None:
    folder.mkdir(parents=True)
    astronaut = _photo("astronaut")
    astronaut.save(folder / "astronaut.jpg", quality=95)
    astronaut.resize((128, 128)).save(folder / "astronaut-small.jpg", quality=90)  # same picture
    _photo("coffee").save(folder / "coffee.jpg", quality=95)
    _logo().save(folder / "logo.png")
    Image.new("RGB", (200, 200), (250, 250, 250)).save(folder / "blank.png")


def _write_dataset(first: Path, second: Path) -> None:
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    _logo().save(first / "logo-copy.png")  # the same pixels again: an equal pHash
    _photo("astronaut").resize((180, 180)).save(first / "astronaut-copy.jpg", quality=60)
    _photo("camera").save(first / "camera.jpg", quality=90)
    ImageOps.mirror(_photo("coffee")).save(second / "coffee-flip.jpg", quality=85)
    Image.new("RGB", (220, 220), (250, 250, 250)).save(second / "blank-copy.png")
    _photo("coins").save(second / "coins.jpg", quality=90)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, Path]:
    root = tmp_path_factory.mktemp("rules")
    _write_references(root / "refs")
    _write_dataset(root / "data" / "a", root / "data" / "b")
    catalog = Catalog.init(root / "home")
    add_refset(catalog, "eval", root / "refs", workers=0)
    ingest_images(catalog, [root / "data"], workers=0)
    audit(catalog, ["eval"], workers=0)
    return catalog, root


def _rows(catalog: Catalog, table: str = "contamination_candidates", where: str = "") -> list:
    columns = EVIDENCE if table == "contamination_candidates" else EVIDENCE.removesuffix(", layout")
    query = f"SELECT {columns} FROM {table} {where} ORDER BY id, refset, ref_id"
    return catalog.sql(query).to_pylist()


def _by_member(catalog: Catalog) -> dict[str, list[dict]]:
    rows = catalog.sql(
        "SELECT i.member, c.ref_path, c.method, c.hit, c.hamming, c.ref_group "
        "FROM contamination_candidates c JOIN images i USING (id)"
    ).to_pylist()
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["member"], []).append(row)
    return out


def test_an_equal_phash_is_a_hit_even_for_a_plain_reference(setup) -> None:
    catalog, _ = setup
    low = catalog.sql("SELECT low_info FROM refset_images WHERE ref_path = 'logo.png'")
    assert low["low_info"].to_pylist() == [True]  # the rule held only for textured ones before
    rows = _by_member(catalog)["logo-copy.png"]
    (logo,) = [r for r in rows if r["ref_path"] == "logo.png"]
    assert (logo["hamming"], logo["method"], logo["hit"]) == (0, "phash_exact", True)


def test_a_blank_reference_is_a_candidate_never_a_hit(setup) -> None:
    catalog, _ = setup
    rows = _by_member(catalog)["blank-copy.png"]
    (blank,) = [r for r in rows if r["ref_path"] == "blank.png"]
    assert blank["hamming"] == 0 and not blank["hit"] and blank["method"] is None


def test_near_identical_references_form_a_group_and_hits_count_per_group(setup) -> None:
    catalog, _ = setup
    groups = catalog.sql("SELECT ref_paths, members FROM refset_groups").to_pylist()
    assert [(sorted(g["ref_paths"]), g["members"]) for g in groups] == [
        (["astronaut-small.jpg", "astronaut.jpg"], 2)
    ]
    refs = catalog.sql("SELECT ref_path, ref_id, ref_group FROM refset_images").to_pylist()
    group = {r["ref_path"]: r["ref_group"] for r in refs}
    ids = {r["ref_path"]: r["ref_id"] for r in refs}
    assert (
        group["astronaut.jpg"]
        == group["astronaut-small.jpg"]
        == min(ids["astronaut.jpg"], ids["astronaut-small.jpg"])
    )
    assert group["coffee.jpg"] == ids["coffee.jpg"]  # alone: its own group
    hits = [r for r in _by_member(catalog)["astronaut-copy.jpg"] if r["hit"]]
    assert {r["ref_group"] for r in hits} == {group["astronaut.jpg"]}
    summary = catalog.sql(
        "SELECT sum(groups_hit) AS g, sum(references_hit) AS r FROM contamination_summary"
    ).to_pylist()[0]
    assert summary["g"] < summary["r"]  # two references of one group, counted once


def test_the_same_images_give_the_same_rows_whatever_the_batch_selection_or_order(
    setup,
) -> None:
    catalog, root = setup
    everything = _rows(catalog)
    assert everything and any(r["method"] for r in everything)
    # a selection: the rows of the selected images, exactly as in the audit of all
    camera_and_copy = "member IN ('astronaut-copy.jpg', 'camera.jpg', 'coffee-flip.jpg')"
    # (from the descriptors the first audit stored: nothing is decoded again)
    summary = audit(catalog, ["eval"], where=camera_and_copy, batch_size=1, workers=0)
    assert "read descriptors" in summary.timings and summary.timings["infer"] == 0.0
    assert summary.images == 3
    selected = catalog.sql(f"SELECT id FROM images WHERE {camera_and_copy}")["id"].to_pylist()
    assert _rows(catalog) == [r for r in everything if r["id"] in selected]
    # the shards straight from disk, listed in the other order, in batches of two
    audit(
        catalog, ["eval"], paths=[root / "data" / "b", root / "data" / "a"], batch_size=2, workers=0
    )
    assert _rows(catalog) == everything


def test_a_mirrored_copy_is_found_on_its_plain_reference_and_verified_against_its_mirror(
    setup, tmp_path: Path
) -> None:
    """References are described once (not also mirrored): the flipped copy is still a
    candidate of its reference, and verification matches the reference's mirror image."""
    catalog, _ = setup
    shutil.copytree(catalog.home, tmp_path / "home")
    verified = Catalog(tmp_path / "home")
    # the descriptor rule off, so that the pair is verified rather than settled
    audit(verified, ["eval"], point=replace(DEFAULT_POINT, descriptor_cosine=1.01), workers=0)
    (row,) = verified.sql(
        "SELECT c.cosine, c.method, c.flipped, c.inliers FROM contamination_candidates c "
        "JOIN images i USING (id) WHERE i.member LIKE '%coffee-flip.jpg' "
        "AND c.ref_path = 'coffee.jpg'"
    ).to_pylist()
    assert row["cosine"] > 0.8 and row["method"] == "local"
    assert row["flipped"] is True and row["inliers"] >= 12


def test_a_verification_floor_leaves_pairs_only_the_descriptor_found_unverified(
    setup, tmp_path: Path
) -> None:
    catalog, _ = setup
    shutil.copytree(catalog.home, tmp_path / "home")
    floored = Catalog(tmp_path / "home")
    floor = 0.45
    audit(floored, ["eval"], point=replace(DEFAULT_POINT, verify_cosine=floor), workers=0)
    query = (
        "SELECT i.member, c.ref_path, c.found_by, c.inliers, c.hit, c.method, c.cosine "
        "FROM contamination_candidates c JOIN images i USING (id)"
    )
    before = {(r["member"], r["ref_path"]): r for r in catalog.sql(query).to_pylist()}
    after = {(r["member"], r["ref_path"]): r for r in floored.sql(query).to_pylist()}
    assert before.keys() == after.keys()  # the same candidates, less verification
    skipped = kept = 0
    for key, row in after.items():
        if row["found_by"] == "knn" and row["cosine"] < floor:
            skipped += before[key]["inliers"] is not None
            assert row["inliers"] is None and not row["hit"]
        else:
            kept += row["inliers"] is not None
            assert (row["inliers"], row["method"]) == (
                before[key]["inliers"],
                before[key]["method"],
            )
    assert skipped and kept  # the floor fell between verified pairs
    assert after[("logo-copy.png", "logo.png")]["hit"]  # the pHash floor holds
    with pytest.raises(InputError, match="verify-above"):
        replace(DEFAULT_POINT, verify_cosine=2.0)


def test_a_killed_audit_resumes_with_the_units_it_had_not_finished(tmp_path: Path) -> None:
    descriptor = f"torchscript:{tiny_descriptor(tmp_path / 'tiny.pt')}@32"
    _write_references(tmp_path / "refs")
    _write_dataset(tmp_path / "data" / "a", tmp_path / "data" / "b")
    results = []
    for name, crash in (("clean", ""), ("killed", "ledger.after_table_commit:1")):
        catalog = Catalog.init(tmp_path / name)
        add_refset(catalog, "eval", tmp_path / "refs", descriptor=descriptor, workers=0)
        if crash:
            script = (
                "import sys\n"
                "from coyo_db.audit.contamination import audit\n"
                "from coyo_db.catalog import Catalog\n"
                "audit(Catalog(sys.argv[1]), ['eval'], descriptor=sys.argv[2],\n"
                "      paths=[sys.argv[3]], workers=0)\n"
            )
            killed(["-c", script, str(catalog.home), descriptor, str(tmp_path / "data")], crash)
            assert _rows(catalog, "contamination") == []  # the hits come at the end
            assert _rows(catalog)  # the first unit's candidates are in
        summary = audit(
            catalog, ["eval"], descriptor=descriptor, paths=[tmp_path / "data"], workers=0
        )
        assert summary.inputs_skipped == (1 if crash else 0)
        results.append((_rows(catalog), _rows(catalog, "contamination"), summary.hits))
    assert results[0] == results[1]
    assert results[0][2] > 0


def test_a_catalog_from_before_groups_gets_the_new_columns(tmp_path: Path) -> None:
    import pyarrow as pa

    from coyo_db.catalog import lance_tables, tables

    uri = tmp_path / "contamination.lance"
    old = pa.schema([f for f in tables.CONTAMINATION.schema if f.name != "ref_group"])
    lance_tables.append(uri, old.empty_table())
    dataset = lance_tables.create_empty(uri, tables.CONTAMINATION.schema)
    assert dataset.schema == tables.CONTAMINATION.schema
    np.testing.assert_equal(dataset.count_rows(), 0)
    shutil.rmtree(uri)


def _count_reference_reads(monkeypatch) -> list[int]:
    """The references whose images the audit reads from their shards, as it reads them."""
    from coyo_db.audit import references

    read: list[int] = []
    real_fetch = references._fetch
    monkeypatch.setattr(
        references, "_fetch", lambda refs, wanted: read.extend(wanted) or real_fetch(refs, wanted)
    )
    return read


def _audit_afresh(home: Path) -> Catalog:
    """Audit ``eval`` in `home` as if for the first time, its stored features kept."""
    for table in ("contamination_candidates", "contamination", "ledger"):
        shutil.rmtree(home / "tables" / f"{table}.lance", ignore_errors=True)
    catalog = Catalog(home)
    audit(catalog, ["eval"], workers=0)
    return catalog


def test_reference_features_are_kept_and_reused_exactly(setup, tmp_path, monkeypatch) -> None:
    """The first audit stores the references' SIFT features; an audit in a fresh home that
    reads them gives the same rows without computing any or reading any reference image; a
    damaged file is computed again."""
    from coyo_db.audit import verify
    from coyo_db.audit.feature_store import FOLDER

    catalog, _ = setup
    files = sorted((catalog.home / FOLDER).rglob("*.sift"))
    assert files and all(f.stat().st_size > 0 for f in files)
    before = _rows(catalog)
    home = tmp_path / "home"
    shutil.copytree(catalog.home, home)
    computed: list[int] = []
    real = verify.sift_of
    monkeypatch.setattr(verify, "sift_of", lambda grey: computed.append(1) or real(grey))
    read = _count_reference_reads(monkeypatch)

    stale = home / FOLDER / "0123456789abcdef01234567"  # a replaced set's, an older version's
    stale.mkdir()
    (stale / "1-p.sift").write_bytes(b"old")
    assert _rows(_audit_afresh(home)) == before
    assert read == []  # every reference from the store
    assert not stale.exists() and sorted((home / FOLDER).rglob("*.sift"))
    dataset_side = len(computed)  # the dataset images' own features (never stored)
    damaged = sorted((home / FOLDER).rglob("*.sift"))[0]
    damaged.write_bytes(b"not an npz")
    computed.clear()
    assert _rows(_audit_afresh(home)) == before
    assert len(computed) == dataset_side + 1  # the damaged reference, once, rewritten
    assert damaged.read_bytes()[:4] == b"CSFT"
    assert len(read) == 1  # the damaged reference's image, once


def test_a_plain_references_layout_is_kept_and_reused(tmp_path, monkeypatch) -> None:
    """A plain reference's colour layout, compared with a copy the pHash does not catch, is
    stored by the first audit and read by the next, which reads no reference image; a
    damaged one is computed again."""
    from coyo_db.audit.feature_store import FOLDER

    (tmp_path / "refs").mkdir()
    _logo().save(tmp_path / "refs" / "logo.png")
    (tmp_path / "data").mkdir()
    crop = _logo().crop((12, 12, 228, 228)).resize((300, 300))
    crop.save(tmp_path / "data" / "logo-crop.jpg", quality=80)
    catalog = Catalog.init(tmp_path / "home")
    add_refset(catalog, "eval", tmp_path / "refs", workers=0)
    ingest_images(catalog, [tmp_path / "data"], workers=0)
    audit(catalog, ["eval"], workers=0)
    before = _rows(catalog)
    assert before[0]["hamming"] > 0 and before[0]["layout"] is not None
    (stored,) = (catalog.home / FOLDER).rglob("*-l.bin")
    read = _count_reference_reads(monkeypatch)
    assert _rows(_audit_afresh(catalog.home)) == before
    assert read == []
    stored.write_bytes(b"not a layout")
    assert _rows(_audit_afresh(catalog.home)) == before
    assert len(read) == 1 and stored.read_bytes()[:4] == b"CLAY"


def test_a_plain_image_takes_plain_references_beyond_the_knn_nearest() -> None:
    import faiss

    from coyo_db.audit.candidates import DescribedBatch, find_candidates
    from coyo_db.audit.faiss_codes import phash_bytes
    from coyo_db.audit.references import References, RefsetIndex

    rng = np.random.default_rng(0)
    n, dim = 12, 16
    query = rng.normal(size=dim).astype(np.float32)
    # reference r lies at cosine falling with r from the query: rank r in its search
    mix = np.linspace(0.1, 0.9, n, dtype=np.float32)[:, None]
    vectors = (1 - mix) * query + mix * rng.normal(size=(n, dim)).astype(np.float32)
    entry = RefsetIndex("set", 0, n, np.zeros(dim, np.float32), faiss.IndexFlatIP(dim))
    entry.index.add(entry.centred(vectors))
    low_refs = np.zeros(n, bool)
    low_refs[[1, 8]] = True  # plain references at ranks 1 and 8
    binary = faiss.IndexBinaryFlat(64)
    binary.add(phash_bytes(np.zeros(n, np.uint64) | np.uint64(0xFFFF)))
    refs = References(
        refset=np.array(["set"] * n, dtype=object),
        ref_id=np.arange(n),
        ref_path=np.array([f"r{i}" for i in range(n)], dtype=object),
        shard=[""] * n,
        member=[""] * n,
        phash=np.zeros(n, np.uint64),
        low_info=low_refs,
        blank=np.zeros(n, bool),
        ref_group=np.arange(n),
        sets=[entry],
        binary=binary,
    )

    def candidates(low: bool) -> set[int]:
        batch = DescribedBatch(
            ids=np.array([1]),
            shards=[""],
            members=[""],
            phash=np.array([0xFFFF_0000_0000_0000], np.uint64),
            data=[None],
            descriptors=query[None, :],
            low_info=np.array([low]),
        )
        point = replace(DEFAULT_POINT, knn=3, knn_low_info=10, candidate_cosine=-1.0)
        return set(find_candidates(batch, refs, point).ref.tolist())

    assert candidates(low=False) == {0, 1, 2}
    assert candidates(low=True) == {0, 1, 2, 8}  # rank 8 is plain; 9-11 lie beyond 10
