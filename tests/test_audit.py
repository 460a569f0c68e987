"""The contamination audit: planted copies found with evidence, look-alikes and blanks not,
re-runs replace one refset's rows, removal list, views, descriptor loaders, lazy CLI imports."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from coyo_db.audit import contamination as audit_mod
from coyo_db.audit.decision import decide
from coyo_db.audit.removal import write_removal_list
from coyo_db.catalog import Catalog, tables
from coyo_db.errors import InputError
from tests import audit_helpers

audited = audit_helpers.audited  # the setup shared with the other audit tests, once a session


def _hits(catalog: Catalog) -> dict[str, list[dict]]:
    rows = catalog.sql(
        "SELECT i.member, c.* EXCLUDE (member) FROM contamination c JOIN images i USING (id)"
    ).to_pylist()
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["member"], []).append(row)
    return out


def test_planted_copies_found_with_evidence(audited) -> None:
    catalog, truth = audited
    hits = _hits(catalog)
    expected = {name: ref for name, ref in truth.items() if ref}
    assert {name: [h["ref_path"] for h in rows] for name, rows in hits.items()} == {
        name: [ref] for name, ref in expected.items()
    }
    flip = hits["copy-flip.jpg"][0]
    # settled by the descriptor already, or verified with local features
    assert flip["method"] in ("descriptor", "local")
    # verified: matched the reference's mirror image; decided by the descriptor: not verified
    if flip["method"] == "local":
        assert flip["flipped"] is True and flip["inliers"] >= 12
    else:
        assert flip["flipped"] is None and flip["inliers"] is None
    for rows in hits.values():
        row = rows[0]
        assert row["refset"] == "mini" and 0.0 < row["score"] <= 1.0
        assert row["cosine"] is not None and row["hamming"] is not None
    schema = catalog.dataset("contamination").schema
    for name, kind in (
        ("id", "int64"),
        ("refset", "string"),
        ("ref_path", "string"),
        ("method", "string"),
        ("score", "float"),
        ("hamming", "int32"),
        ("cosine", "float"),
        ("inliers", "int32"),
    ):
        assert str(schema.field(name).type) == kind


def test_blank_and_unrelated_are_candidates_not_hits(audited) -> None:
    catalog, _ = audited
    rows = catalog.sql(
        "SELECT i.member, c.ref_path, c.hit, c.low_info, c.hamming "
        "FROM contamination_candidates c JOIN images i USING (id)"
    ).to_pylist()
    blank = [r for r in rows if r["member"] == "near-blank.jpg" and r["ref_path"] == "blank.png"]
    assert blank and blank[0]["low_info"] and not blank[0]["hit"]
    assert not any(r["hit"] for r in rows if r["member"] in ("camera.jpg", "coins.jpg"))


def test_views_and_removal_list(audited, tmp_path: Path) -> None:
    catalog, truth = audited
    summary = catalog.sql("SELECT * FROM contamination_summary").to_pylist()
    assert sum(r["images"] for r in summary) == sum(1 for ref in truth.values() if ref)
    ids = catalog.sql("SELECT id FROM contaminated_ids ORDER BY id")["id"].to_pylist()
    assert ids == sorted(catalog.sql("SELECT DISTINCT id FROM contamination")["id"].to_pylist())
    count = write_removal_list(catalog, tmp_path / "removal.parquet")
    table = pq.read_table(tmp_path / "removal.parquet")
    assert count == len(ids) and sorted(table["id"].to_pylist()) == ids
    assert all(reason.startswith("copy of mini:") for reason in table["reason"].to_pylist())


def test_rerun_replaces_only_its_refset(audited, tmp_path: Path) -> None:
    import pyarrow as pa

    catalog, _ = audited
    before = catalog.sql("SELECT count(*) AS n FROM contamination")["n"][0].as_py()
    other = catalog.dataset("contamination").to_table().slice(0, 1)
    other = other.set_column(1, "refset", pa.array(["other"], pa.string()))
    catalog.append("contamination", other)
    catalog.replace("contamination", "refset = 'mini'", tables.CONTAMINATION.empty())
    left = catalog.sql("SELECT refset, count(*) AS n FROM contamination GROUP BY 1").to_pylist()
    assert left == [{"refset": "other", "n": 1}]
    # the same audit again: every unit is done, its hits are written again from its candidates
    summary = audit_mod.audit(catalog, ["mini"], workers=0)
    assert summary.inputs_skipped >= 1 and summary.images == 0
    rows = catalog.sql("SELECT refset, count(*) AS n FROM contamination GROUP BY 1").to_pylist()
    counts = {r["refset"]: r["n"] for r in rows}
    assert counts == {"mini": before, "other": 1}
    assert summary.hits == before


def test_audit_from_paths(audited, tmp_path: Path) -> None:
    catalog, truth = audited
    data = Path(catalog.sql("SELECT shard FROM images LIMIT 1")["shard"][0].as_py())
    summary = audit_mod.audit(catalog, ["mini"], paths=[data], workers=0)
    assert summary.images == len(truth)
    assert summary.contaminated == sum(1 for ref in truth.values() if ref)


def test_decide_rules() -> None:
    hamming = np.array([0, 0, 2, 30, 30, 30])
    cosine = np.array([0.5, 0.99, 0.5, 0.99, 0.5, 0.5], dtype=np.float32)
    inliers = np.array([0, 0, 0, 0, 80, 80])
    coverage = np.array([0, 0, 0, 0, 0.5, 0.01], dtype=np.float32)
    low = np.array([False, True, False, False, True, False])
    method, score = decide(hamming, cosine, inliers, coverage, low)
    # an equal pHash is a hit whatever else: COYO's own rule is the floor
    assert method == ["phash_exact", "phash_exact", "phash_radius", "descriptor", "local", None]
    assert score[0] == 1.0 and score[4] == pytest.approx(0.8)
    blank = np.array([False, True, False, False, False, False])
    layout = np.array([np.nan, np.nan, np.nan, np.nan, np.nan, 0.95], dtype=np.float32)
    method, score = decide(hamming, cosine, inliers, coverage, low, blank=blank, layout=layout)
    assert method == ["phash_exact", None, "phash_radius", "descriptor", "local", "layout"]
    assert score[5] == pytest.approx(0.95)
    # a local match of a few dozen inliers on a plain reference (its layout compared) needs
    # the layouts to agree; more inliers stand alone
    coverage[5] = 0.5
    inliers[5] = 20
    for value, expected in ((0.5, None), (0.8, "local"), (np.nan, "local")):
        layout[5] = value
        method, _ = decide(hamming, cosine, inliers, coverage, low, blank=blank, layout=layout)
        assert method[5] == expected
    inliers[5], layout[5] = 30, 0.0
    method, _ = decide(hamming, cosine, inliers, coverage, low, blank=blank, layout=layout)
    assert method[5] == "local"


def test_unknown_refset(audited) -> None:
    catalog, _ = audited
    with pytest.raises(InputError, match="no refset"):
        audit_mod.audit(catalog, ["nope"], workers=0)
    with pytest.raises(InputError):
        audit_mod.audit(catalog, [], workers=0)


def test_torchscript_and_isc_loaders(tmp_path: Path) -> None:
    import timm
    import torch

    from coyo_db.ingest.models.copy_descriptors import IscDescriptor, load_descriptor

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean(dim=(2, 3))

    path = tmp_path / "tiny.torchscript.pt"
    with warnings.catch_warnings():  # torch.jit is deprecated; SSCD's files are TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(Tiny()).save(str(path))
    model = load_descriptor(f"torchscript:{path}@32")
    pixels = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    out = model.describe(pixels)
    assert out.shape == (3, 8) and model.dim == 8 and model.preprocess.size == 32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)

    # an ISCNet checkpoint: timm features, fc without bias, batch norm; DataParallel prefixes
    backbone = timm.create_model("test_efficientnet", pretrained=False, features_only=True)
    channels = backbone.feature_info.channels()[-1]
    net = torch.nn.Module()
    net.backbone = backbone
    net.fc = torch.nn.Linear(channels, 16, bias=False)
    net.bn = torch.nn.BatchNorm1d(16)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    ckpt = tmp_path / "isc.pth.tar"
    torch.save({"state_dict": state, "epoch": 3}, ckpt)
    isc = IscDescriptor(ckpt, arch="test_efficientnet", size=64)
    out = isc.describe(pixels)
    assert out.shape == (3, 16) and isc.dim == 16
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    torch.save({"state_dict": {"fc.weight": torch.zeros(4, 3)}}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="not an ISCNet"):
        IscDescriptor(tmp_path / "bad.pth", arch="test_efficientnet", size=64)
    with pytest.raises(InputError, match="not a TorchScript"):
        load_descriptor(f"torchscript:{tmp_path / 'bad.pth'}")
    with pytest.raises(InputError, match="unknown descriptor 'nope:/x'; known: effnet-lite0, isc"):
        load_descriptor("nope:/x")
    with pytest.raises(InputError, match="needs a checkpoint path: isc:/path"):
        load_descriptor("isc")
    sscd = load_descriptor(f"sscd:{path}@32")  # an alias of torchscript
    assert sscd.name == f"torchscript:{path}" and sscd.dim == 8


def test_cli_module_imports_stay_light() -> None:
    code = (
        "import sys, coyo_db.cli.audit_cmds, coyo_db.cli.app; "
        "heavy = [m for m in ('torch', 'faiss', 'cv2', 'timm') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_audit_run_again_after_another_of_its_set_finds_its_hits_again(
    audited, tmp_path: Path
) -> None:
    """Audit A, then B of the same set at another point (whose finish deletes A's candidates),
    then A again: A's ledger rows name units whose candidates are gone, so they are audited
    again, not skipped; A's hits come back exactly."""
    import shutil
    from dataclasses import replace

    from coyo_db.audit.decision import DEFAULT_POINT

    source, _ = audited
    shutil.copytree(source.home, tmp_path / "home")
    catalog = Catalog(tmp_path / "home")
    query = "SELECT id, ref_id, method FROM contamination ORDER BY ALL"
    first = catalog.sql(query).to_pylist()
    assert first
    audit_mod.audit(catalog, ["mini"], workers=0, point=replace(DEFAULT_POINT, min_inliers=11))
    again = audit_mod.audit(catalog, ["mini"], workers=0)
    assert again.images > 0 and again.inputs_skipped == 0
    assert catalog.sql(query).to_pylist() == first
    once_more = audit_mod.audit(catalog, ["mini"], workers=0)  # nothing between: all skipped
    assert once_more.images == 0 and once_more.inputs_skipped >= 1
    assert catalog.sql(query).to_pylist() == first


def test_a_finish_killed_before_its_ledger_row_still_counts(audited, tmp_path: Path) -> None:
    """Audit B of the same set is killed right after its finish deleted A's candidates,
    before writing its ledger row: the ledger recovers the finish from its commit, so A run
    again audits its units again and finds its hits."""
    import shutil

    from tests.test_atomic_rewrites import COMMIT, killed

    source, _ = audited
    shutil.copytree(source.home, tmp_path / "home")
    catalog = Catalog(tmp_path / "home")
    query = "SELECT id, ref_id, method FROM contamination ORDER BY ALL"
    first = catalog.sql(query).to_pylist()
    script = (
        "import sys\n"
        "from dataclasses import replace\n"
        "from coyo_db.audit.contamination import audit\n"
        "from coyo_db.audit.decision import DEFAULT_POINT\n"
        "from coyo_db.catalog import Catalog\n"
        "audit(Catalog(sys.argv[1]), ['mini'], workers=0,\n"
        "      point=replace(DEFAULT_POINT, min_inliers=11))\n"
    )
    finishes = "SELECT count(*) AS n FROM ledger WHERE fingerprint LIKE 'finish-%'"
    recorded = catalog.sql(finishes)["n"][0].as_py()
    killed(["-c", script, str(catalog.home)], f"{COMMIT}:1")
    assert catalog.sql(finishes)["n"][0].as_py() == recorded  # killed before its ledger row
    again = audit_mod.audit(catalog, ["mini"], workers=0)
    assert again.images > 0 and again.inputs_skipped == 0
    assert catalog.sql(query).to_pylist() == first
    # B's finish, recovered from its commit, and A's own
    assert catalog.sql(finishes)["n"][0].as_py() == recorded + 2
