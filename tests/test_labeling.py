"""`coyo-db label`: top-k labels from effnet-lite0, timm classifiers and CLIP zero-shot over the
ingested images, resumable per shard, with unreadable images quarantined."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

from PIL import Image
from skimage import data as skimage_data
from typer.testing import CliRunner

from coyo_db.catalog import Catalog
from coyo_db.catalog.ledger import Ledger
from coyo_db.errors import CatalogError, InputError
from coyo_db.ingest.images import ingest_images
from coyo_db.ingest.models import classifiers
from coyo_db.labels.label_stage import LabelStage, label_batch, labels_batch
from coyo_db.labels.labeling import label_images
from coyo_db.labels.taxonomy import (
    IMAGENET1K,
    IMAGENET21K,
    add_taxonomy,
    load_taxonomy,
    resolve_taxonomy,
)
from coyo_db.synth.images import write_image_shards

ESPRESSO = 967
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
TEDDY = 850
IDS = list(range(500, 506))


@pytest.fixture
def images(tmp_path: Path) -> Catalog:
    """A catalog with 6 synthetic images ingested from two webdataset shards of 3."""
    catalog = Catalog(tmp_path / "home", create=True)
    shards, _ = write_image_shards(tmp_path / "shards", IDS, per_shard=3, seed=4)
    ingest_images(catalog, shards, workers=0)
    return catalog


def labels_rows(catalog: Catalog, taxonomy: str | None = None) -> list[dict]:
    where = f"WHERE taxonomy = '{taxonomy}'" if taxonomy else ""
    return catalog.sql(f"SELECT * FROM labels {where} ORDER BY id, taxonomy").to_pylist()


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def tiny_clip() -> str:
    """A registered open_clip architecture small enough for tests (random weights)."""
    open_clip = pytest.importorskip("open_clip")
    name = "coyo-tiny-clip"
    if name not in open_clip.list_models():
        config = {
            "embed_dim": 32,
            "vision_cfg": {
                "image_size": 32,
                "layers": 1,
                "width": 32,
                "patch_size": 16,
                "head_width": 16,
            },
            "text_cfg": {
                "context_length": 77,
                "vocab_size": 49408,
                "width": 32,
                "heads": 2,
                "layers": 1,
            },
        }
        import tempfile

        path = Path(tempfile.mkdtemp()) / f"{name}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)
    return f"open_clip:{name}:random"


# ---- the job ----------------------------------------------------------------------------------


def test_effnet_labels_every_image_in_coyo_labeled_format(images):
    summary = label_images(images, "effnet-lite0", IMAGENET1K, top_k=5, workers=0)
    assert (summary.rows_read, summary.rows_written, summary.rows_quarantined) == (6, 6, 0)
    assert (summary.inputs_seen, summary.inputs_done) == (2, 2)
    assert "labels (effnet-lite0 over imagenet-1k, top-5): 2 of 2 shards" in summary.line()
    rows = labels_rows(images)
    assert [r["id"] for r in rows] == IDS
    for row in rows:
        assert (row["taxonomy"], row["model"]) == (IMAGENET1K, "effnet-lite0")
        assert len(row["labels"]) == len(set(row["labels"])) == 5
        assert all(0 <= label < 1000 for label in row["labels"])
        probs = row["label_probs"]
        assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
    named = images.sql("SELECT count(*) AS n, count(name) AS named FROM labels_long")
    assert named.to_pylist() == [{"n": 30, "named": 30}]
    run = images.sql("SELECT * FROM runs WHERE command = 'label'").to_pylist()
    assert run[0]["status"] == "ok" and run[0]["rows_written"] == 6
    assert images.has_table("taxonomy_tree")  # the hierarchy comes with synset labels


def test_imagenet21k_labels_are_the_same_classes_through_wnids(images):
    label_images(images, "effnet-lite0", IMAGENET1K, top_k=4, workers=0)
    label_images(images, "effnet-lite0", IMAGENET21K, top_k=4, workers=0)
    one_k = load_taxonomy(IMAGENET1K)["wnid"].to_pylist()
    twenty_one_k = load_taxonomy(IMAGENET21K)["wnid"].to_pylist()
    a, b = labels_rows(images, IMAGENET1K), labels_rows(images, IMAGENET21K)
    for row_1k, row_21k in zip(a, b, strict=True):
        wnids_1k = [one_k[i] for i in row_1k["labels"] if one_k[i] != "n04399382"]
        assert [twenty_one_k[i] for i in row_21k["labels"]][: len(wnids_1k)] == wnids_1k[:4]
        assert row_21k["label_probs"][0] == pytest.approx(row_1k["label_probs"][0])


def test_a_rerun_labels_nothing_and_another_top_k_adds_no_duplicates(images):
    label_images(images, "effnet-lite0", IMAGENET1K, top_k=3, workers=0)
    again = label_images(images, "effnet-lite0", IMAGENET1K, top_k=3, workers=0)
    assert (again.inputs_skipped, again.rows_read, again.rows_written) == (2, 0, 0)
    assert "2 done before (skipped)" in again.line()
    more = label_images(images, "effnet-lite0", IMAGENET1K, top_k=8, workers=0)
    assert (more.inputs_skipped, more.rows_written) == (2, 0)  # done for this model
    assert images.sql("SELECT count(*) AS n FROM labels")["n"][0].as_py() == 6


def test_images_labeled_by_other_means_are_not_labeled_again(images):
    rows = labels_batch(
        np.array(IDS[:2]),
        np.array([[1, 2], [3, 4]]),
        np.array([[0.6, 0.3]] * 2),
        IMAGENET1K,
        "effnet-lite0",
    )
    images.append("labels", pa.Table.from_batches([rows]))
    summary = label_images(images, "effnet-lite0", IMAGENET1K, top_k=2, workers=0)
    assert (summary.already_labeled, summary.rows_read, summary.rows_written) == (2, 4, 4)
    assert [r["id"] for r in labels_rows(images)] == IDS


def test_a_killed_run_resumes_with_every_row_once(images, monkeypatch):
    real = LabelStage.__call__
    calls = []

    def killed_on_the_second_shard(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(LabelStage, "__call__", killed_on_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        label_images(images, "effnet-lite0", IMAGENET1K, top_k=2, workers=0)
    assert len(labels_rows(images)) == 3
    monkeypatch.setattr(LabelStage, "__call__", real)
    summary = label_images(images, "effnet-lite0", IMAGENET1K, top_k=2, workers=0)
    assert (summary.inputs_skipped, summary.rows_written) == (1, 3)
    assert [r["id"] for r in labels_rows(images)] == IDS
    statuses = images.sql("SELECT status FROM runs WHERE command = 'label' ORDER BY started_at")
    assert statuses["status"].to_pylist() == ["interrupted", "ok"]


def test_a_run_killed_after_the_commit_is_recognised_as_done(images, monkeypatch):
    real = Ledger._write

    def killed(self, entries):  # type: ignore[no-untyped-def]
        if self.table_name == "labels":
            raise KeyboardInterrupt
        return real(self, entries)

    monkeypatch.setattr(Ledger, "_write", killed)
    with pytest.raises(KeyboardInterrupt):
        label_images(images, "effnet-lite0", IMAGENET1K, top_k=2, workers=0)
    monkeypatch.setattr(Ledger, "_write", real)
    summary = label_images(images, "effnet-lite0", IMAGENET1K, top_k=2, workers=0)
    assert summary.rows_written == 3  # the first shard's commit was found in the history
    assert [r["id"] for r in labels_rows(images)] == IDS


def test_unreadable_images_are_quarantined_once(images, tmp_path):
    (tmp_path / "shards" / "00001.tar").unlink()
    summary = label_images(images, "effnet-lite0", IMAGENET1K, top_k=2, workers=1)
    assert (summary.rows_read, summary.rows_written, summary.rows_quarantined) == (6, 3, 3)
    assert summary.quarantine_reasons == {"shard no longer exists": 3}
    bad = images.sql("SELECT * FROM quarantine WHERE table_name = 'labels' ORDER BY id")
    assert bad["id"].to_pylist() == IDS[3:]
    record = json.loads(bad["record"][0].as_py())
    assert (record["model"], record["taxonomy"]) == ("effnet-lite0", IMAGENET1K)
    again = label_images(images, "effnet-lite0", IMAGENET1K, top_k=2, workers=0)
    assert again.inputs_skipped == 2
    assert images.dataset("quarantine").count_rows(filter="table_name = 'labels'") == 3


def test_label_batch_on_real_photos_and_a_broken_image():
    taxonomy = load_taxonomy(IMAGENET1K)
    labeler = classifiers.load_labeler("effnet-lite0", IMAGENET1K, taxonomy)
    labeler.to("cpu")
    photos = [png(skimage_data.coffee()), png(skimage_data.chelsea()), b"\xff\xd8\xff broken"]
    result = label_batch(labeler, np.array([7, 8, 9]), photos, top_k=5, taxonomy=IMAGENET1K)
    rows = result.labels.to_pylist()
    assert [r["id"] for r in rows] == [7, 8]
    assert rows[0]["labels"][0] == ESPRESSO
    assert rows[1]["labels"][0] in CATS
    assert result.bad_ids.tolist() == [9]
    assert result.bad_reasons[0].startswith(("corrupt image", "truncated", "unrecognised"))


# ---- zero-shot and timm -----------------------------------------------------------------------


def test_zero_shot_over_a_users_class_list(images, tmp_path):
    spec = tiny_clip()
    classes = tmp_path / "pets.txt"
    classes.write_text("# my classes\ncat\ndog\nn04399382\tteddy bear\n\n")
    summary = label_images(images, spec, str(classes), top_k=5, workers=0)
    assert summary.rows_written == 6 and summary.taxonomy == "pets"
    rows = labels_rows(images, "pets")
    for row in rows:
        assert row["model"] == spec
        assert sorted(row["labels"]) == [0, 1, 2]  # k = min(5, 3 classes)
        assert sum(row["label_probs"]) == pytest.approx(1.0, abs=1e-5)  # softmax over 3
        assert row["label_probs"] == sorted(row["label_probs"], reverse=True)
    names = images.sql("SELECT DISTINCT name, wnid FROM labels_long WHERE taxonomy = 'pets'")
    assert sorted(names["name"].to_pylist()) == ["cat", "dog", "teddy bear"]
    assert sorted(names["wnid"].to_pylist(), key=str) == sorted([None, None, "n04399382"], key=str)
    cached = list((images.home / "cache" / "zeroshot").glob("*__pets__*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape == (3, 32)


def test_zero_shot_class_embeddings_are_cached_per_model_and_class_list(tmp_path, monkeypatch):
    from coyo_db.ingest.registry import load_model

    spec = tiny_clip()
    model = load_model(spec)
    taxonomy = load_taxonomy(IMAGENET1K)
    first = classifiers.ZeroShot(
        model, spec, IMAGENET1K, taxonomy, templates="a photo of a {}.", cache_dir=tmp_path
    )
    vectors = first.class_embeddings()
    assert vectors.shape == (1000, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    def no_text(texts):  # type: ignore[no-untyped-def]
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(model, "embed_texts", no_text)
    second = classifiers.ZeroShot(
        model, spec, IMAGENET1K, taxonomy, templates="a photo of a {}.", cache_dir=tmp_path
    )
    assert np.array_equal(second.class_embeddings(), vectors)
    other = classifiers.ZeroShot(
        model, spec, IMAGENET1K, taxonomy, templates="a {} in the wild.", cache_dir=tmp_path
    )
    with pytest.raises(AssertionError, match="cache"):
        other.class_embeddings()  # other templates: another cache entry
    other.use_class_embeddings(vectors)  # another process's vectors, taken as they are
    assert np.array_equal(other.class_embeddings(), vectors)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    second.to("cpu")
    index, probs = second.top_k(pixels, 50)
    assert index.shape == probs.shape == (3, 50) and index.dtype == np.int32
    assert (index >= 0).all() and (index < 1000).all()


def test_templates(tmp_path):
    pytest.importorskip("open_clip")
    assert len(classifiers.template_strings(None)) == 7
    assert len(classifiers.template_strings("openai")) == 80
    assert classifiers.template_strings("a photo of a {}.") == ["a photo of a {}."]
    path = tmp_path / "templates.txt"
    path.write_text("a {}.\n# comment\nart of the {}.\n")
    assert classifiers.template_strings(str(path)) == ["a {}.", "art of the {}."]
    with pytest.raises(InputError, match=r"exactly one '\{\}'"):
        classifiers.template_strings("no placeholder")
    names = classifiers.prompt_names(IMAGENET21K, load_taxonomy(IMAGENET21K))
    assert names[2167] == "dog"  # "dog, domestic dog, Canis familiaris"


def test_a_timm_classifier_from_a_checkpoint_with_a_class_file(tmp_path):
    import timm
    import torch

    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=4)
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"state_dict": net.state_dict()}, checkpoint)
    classes = tmp_path / "classes.txt"
    classes.write_text("n02084071\ntabby cat\nn04399382\nnot a class\n")
    taxonomy = load_taxonomy(IMAGENET1K)
    spec = f"timm:test_efficientnet:{checkpoint}"
    labeler = classifiers.load_labeler(spec, IMAGENET1K, taxonomy, classes=str(classes))
    assert labeler.class_map.tolist() == [-1, 281, TEDDY, -1]  # 'dog' is no 1k class
    labeler.to("cpu")
    pixels = np.random.default_rng(1).integers(0, 256, (2, 200, 240, 3), dtype=np.uint8)
    index, probs = labeler.top_k(pixels, 50)
    assert index.shape == (2, 2) and set(index.ravel()) <= {281, TEDDY}
    expected = labeler.probabilities(pixels)[:, [1, 2]].numpy()
    assert np.allclose(np.sort(probs, axis=1), np.sort(expected, axis=1))

    with pytest.raises(InputError, match="4 outputs"):
        three = tmp_path / "three.txt"
        three.write_text("a\nb\ntabby cat\n")
        classifiers.load_labeler(spec, IMAGENET1K, taxonomy, classes=str(three))


def test_a_timm_imagenet_head_needs_no_class_file(tmp_path):
    import timm
    import torch

    net = timm.create_model("test_efficientnet", pretrained=False)
    checkpoint = tmp_path / "in1k.pth"
    torch.save(net.state_dict(), checkpoint)
    labeler = classifiers.load_labeler(
        f"timm:test_efficientnet:{checkpoint}", IMAGENET21K, load_taxonomy(IMAGENET21K)
    )
    assert (labeler.class_map >= 0).sum() == 999  # all of ImageNet-1k but the teddy bear
    assert labeler.preprocess.size == 160


def test_mistakes_are_input_errors(images, tmp_path):
    with pytest.raises(InputError, match="unknown taxonomy"):
        label_images(images, "effnet-lite0", "imagenet-5k", workers=0)
    with pytest.raises(InputError, match="top-k"):
        label_images(images, "effnet-lite0", IMAGENET1K, top_k=0)
    with pytest.raises(InputError, match="--classes is for timm"):
        label_images(images, "effnet-lite0", IMAGENET1K, classes="x.txt")
    with pytest.raises(InputError, match="--templates is for zero-shot"):
        label_images(images, "effnet-lite0", IMAGENET1K, templates="a {}")
    with pytest.raises(InputError, match="expected timm:ARCH"):
        label_images(images, "timm:resnet18", IMAGENET1K)
    with pytest.raises(CatalogError, match="no images"):
        label_images(Catalog(tmp_path / "empty", create=True), "effnet-lite0", IMAGENET1K)


def test_labelers_come_from_the_model_registry():
    from coyo_db.ingest import registry
    from coyo_db.ingest.models import class_lists

    assert registry.registered("labeler")["labeler"] == ["effnet-lite0", "open_clip", "timm"]
    spec = "open_clip:ViT-B-32:/ckpt/b32.pt"  # the same spec as --embed and audit --model
    assert registry.resolve("labeler", spec).entry.factory is classifiers.load_zero_shot_labeler
    taxonomy = load_taxonomy(IMAGENET1K)
    with pytest.raises(
        InputError, match="unknown labeler 'minilm'; known: effnet-lite0, open_clip, timm"
    ):
        classifiers.load_labeler("minilm", IMAGENET1K, taxonomy)
    with pytest.raises(InputError, match="--classes is for classifiers"):
        classifiers.load_labeler(spec, IMAGENET1K, taxonomy, classes="x.txt")
    with pytest.raises(InputError, match="--activation must be softmax or sigmoid"):
        classifiers.load_labeler("effnet-lite0", IMAGENET1K, taxonomy, activation="relu")
    # the shipped class lists live in ingest (labelers need them); labels re-exports them
    assert (IMAGENET1K, IMAGENET21K) == (class_lists.IMAGENET1K, class_lists.IMAGENET21K)
    assert load_taxonomy is class_lists.load_taxonomy


def test_user_taxonomies(catalog, tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("red car\nblue car\n")
    assert add_taxonomy(catalog, "cars", path) == 2
    assert add_taxonomy(catalog, "cars", path) == 0
    name, table = resolve_taxonomy(catalog, "cars")
    assert (name, table["name"].to_pylist()) == ("cars", ["red car", "blue car"])
    path.write_text("red car\n")
    with pytest.raises(InputError, match="already exists with other classes"):
        add_taxonomy(catalog, "cars", path)
    with pytest.raises(InputError, match="shipped taxonomy"):
        add_taxonomy(catalog, IMAGENET1K, path)
    path.write_text("a\nb\na\n")
    with pytest.raises(Exception, match="more than once"):
        add_taxonomy(catalog, "dupes", path)


# ---- the command line -------------------------------------------------------------------------


def test_cli_label_and_taxonomy_commands(images, tmp_path):
    from coyo_db.cli.app import app

    home = str(images.home)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "label",
            "-m",
            "effnet-lite0",
            "-t",
            IMAGENET1K,
            "-k",
            "3",
            "--workers",
            "0",
            "--home",
            home,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "labels (effnet-lite0 over imagenet-1k, top-3): 2 of 2 shards labeled" in result.output
    classes = tmp_path / "c.txt"
    classes.write_text("one\ntwo\n")
    result = runner.invoke(app, ["taxonomy", "add", "mine", str(classes), "--home", home])
    assert result.exit_code == 0 and "2 classes written" in result.output
    result = runner.invoke(app, ["taxonomy", "list", "--home", home])
    assert "mine" in result.output and "imagenet-21k" in result.output


def test_the_cli_module_does_not_import_torch():
    code = (
        "import sys, coyo_db.cli.app, coyo_db.cli.label_cmds\n"
        "heavy = {'torch', 'open_clip', 'timm', 'duckdb', 'lance'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_demo_step_labels_the_images_and_selects_by_hierarchy(images, tmp_path):
    from coyo_db.synth.demo_labels import MIN_PROB, SYNSET, run_labels_demo

    lines: list[str] = []
    result = run_labels_demo(images, tmp_path, seed=0, emit=lines.append)
    assert (result.labeled, result.quarantined) == (6, 0)
    under = images.sql(
        f"SELECT count(*) AS n FROM labels_under('{SYNSET}', {MIN_PROB}) "
        "WHERE model = 'effnet-lite0'"
    )
    assert result.under_synset == under["n"][0].as_py()
    assert result.coyo_labeled_under == 0  # this catalog holds no COYO-Labeled rows
    assert any("labels_under" in line for line in lines)
