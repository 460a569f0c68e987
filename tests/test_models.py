"""Embedding models: EfficientNet-Lite0 (shipped ImageNet weights), MiniLM (shipped), open_clip
(random weights and checkpoints saved here). Everything runs offline on the CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
skimage_data = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

from coyo_db.errors import InputError, MissingExtraError  # noqa: E402
from coyo_db.ingest import registry  # noqa: E402
from coyo_db.ingest.image_types import ImageEmbedder, Preprocess, TextEmbedder  # noqa: E402
from coyo_db.ingest.models import (  # noqa: E402
    classifiers,
    clip,
    common,
    copy_descriptors,
    effnet,
    minilm,
)

MODEL_MODULES = (
    "coyo_db.ingest.models.effnet",
    "coyo_db.ingest.models.minilm",
    "coyo_db.ingest.models.clip",
    "coyo_db.ingest.models.copy_descriptors",
    "coyo_db.ingest.models.classifiers",
    "coyo_db.ingest.models.class_lists",
)
ESPRESSO = 967  # ImageNet-1k class index
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CLIP_ARCH = "ViT-S-32"  # the smallest plain CLIP ViT: 63M parameters, 384-d
CLIP_SPEC = f"open_clip:{CLIP_ARCH}:random"


def decoded(image: np.ndarray, size: int) -> np.ndarray:
    """What a decode worker hands a ``crop`` model: shorter side to `size` (bicubic, PIL, the
    longer side truncated as torchvision does), centre crop."""
    pil = Image.fromarray(image)
    width, height = pil.size
    short = min(width, height)
    new = (max(size, int(size * width / short)), max(size, int(size * height / short)))
    pil = pil.resize(new, Image.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)))


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [skimage_data.coffee(), skimage_data.chelsea(), skimage_data.astronaut()]


@pytest.fixture(scope="module")
def no_network():
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model tried to reach the network")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="module")
def effnet_model(no_network) -> effnet.EffNetLite0:
    return registry.load_model("effnet-lite0")


@pytest.fixture(scope="module")
def clip_model() -> clip.OpenClip:
    torch.manual_seed(0)
    return registry.load_model(CLIP_SPEC)


@pytest.fixture(scope="module")
def minilm_model(no_network) -> minilm.MiniLM:
    return registry.load_model("minilm")


# ---- EfficientNet-Lite0 ------------------------------------------------------------------------


def test_effnet_labels_the_coffee_photo_espresso(effnet_model, photos):
    pixels = np.stack([decoded(p, effnet_model.preprocess.size) for p in photos[:2]])
    probs = effnet_model.classify(pixels)
    assert probs.shape == (2, 1000)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2), atol=1e-5)
    assert probs[0].argmax().item() == ESPRESSO
    assert probs[0, ESPRESSO] > 0.5
    assert set(probs[1].topk(3).indices.tolist()) & CATS  # the cat photo is some cat


def test_effnet_embeddings_are_unit_deterministic_and_one_pass(effnet_model, photos):
    assert isinstance(effnet_model, ImageEmbedder)
    pixels = torch.from_numpy(np.stack([decoded(p, 224) for p in photos]))
    first, second = effnet_model.embed_images(pixels), effnet_model.embed_images(pixels)
    assert first.shape == (3, 1280) and first.dtype == torch.float32
    assert torch.allclose(first.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(first, second)
    assert (first @ first.T - torch.eye(3)).abs().max() > 0.05  # distinct photos differ
    vectors, probs = effnet_model.embed_and_classify(pixels)
    assert torch.allclose(vectors, first, atol=1e-5)
    assert torch.allclose(probs, effnet_model.classify(pixels), atol=1e-6)


def test_effnet_batch_norms_are_folded_and_change_nothing(effnet_model, photos):
    """The loaded network has no batch norm left; an unfolded copy with the same weights gives
    the same features and logits to float32 rounding."""
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in effnet_model.net.modules())
    timm = common.require("timm")
    plain = timm.create_model(effnet.TIMM_ARCH, pretrained=False)
    state = common.load_state_dict_file(effnet.shipped_weights_path())
    plain.load_state_dict(effnet.map_by_order(state, plain.state_dict(), "shipped"))
    plain.eval()
    pixels = np.stack([decoded(p, 224) for p in photos])
    x = effnet_model._input(pixels)
    with torch.inference_mode():
        for net in (plain, effnet_model.net):
            assert torch.allclose(net(x), plain(x), atol=1e-4)
    # a conv with a bias and a bare batch norm fold too
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=True), torch.nn.BatchNorm2d(4))
    conv[1].running_mean.uniform_(-1, 1), conv[1].running_var.uniform_(0.5, 2)
    conv[1].weight.data.uniform_(0.5, 2), conv[1].bias.data.uniform_(-1, 1)
    conv.eval()
    with torch.inference_mode():
        expected = conv(x[:1])
    folded = common.fold_batch_norms(conv)
    assert not isinstance(folded[1], torch.nn.BatchNorm2d)
    with torch.inference_mode():
        assert torch.allclose(folded(x[:1]), expected, atol=1e-5)


def test_effnet_resizes_other_sizes_on_the_device(effnet_model, photos):
    """A full-size photo, resized on the device, embeds like the decoder's 224 crop."""
    full = effnet_model.embed_images(torch.from_numpy(photos[0][None].copy()))
    cropped = effnet_model.embed_images(decoded(photos[0], 224)[None])
    assert (full * cropped).sum().item() > 0.99


def test_effnet_refuses_a_checkpoint_that_does_not_pair_up(tmp_path):
    state = torch.load(effnet.shipped_weights_path(), weights_only=True)
    keys = list(state)
    swapped = dict(state)
    swapped[keys[0]], swapped[keys[-1]] = state[keys[-1]], state[keys[0]]  # shapes now clash
    path = tmp_path / "swapped.pth"
    torch.save(swapped, path)
    with pytest.raises(InputError, match="does not pair"):
        registry.load_model(f"effnet-lite0:{path}")
    torch.save({k: state[k] for k in keys[:-2]}, path)
    with pytest.raises(InputError, match="not an EfficientNet-Lite0"):
        registry.load_model(f"effnet-lite0:{path}")


# ---- open_clip ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", [CLIP_ARCH, "RN50"])
def test_open_clip_matches_its_own_preprocessing(arch, photos):
    """uint8 NHWC through embed_images == PIL -> open_clip's transform -> encode_image."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    torch.manual_seed(0)
    clip_model = registry.load_model(f"open_clip:{arch}:random")
    assert isinstance(clip_model, ImageEmbedder) and isinstance(clip_model, TextEmbedder)
    assert clip_model.preprocess == Preprocess(224, "crop", "bicubic")
    config = open_clip.get_model_preprocess_cfg(clip_model.model)
    transform = image_transform_v2(PreprocessCfg(**config), is_train=False)
    batch = torch.stack([transform(Image.fromarray(p)) for p in photos])
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(clip_model.model.encode_image(batch), dim=-1)

    ours = clip_model.embed_images(np.stack([decoded(p, 224) for p in photos]))
    assert ours.shape == (3, clip_model.dim) and ours.dtype == torch.float32
    assert (ours * reference).sum(dim=1).min().item() > 0.999
    resized = torch.cat([clip_model.embed_images(p[None].copy()) for p in photos[:2]])
    assert (resized * reference[:2]).sum(dim=1).min().item() > 0.99


def test_open_clip_texts_and_similarity(clip_model, photos):
    captions = ["a cup of coffee", "a cat on a chair", ""]
    texts = clip_model.embed_texts(captions)
    assert clip_model.dim == 384
    assert texts.shape == (3, 384) and texts.dtype == torch.float32
    assert torch.allclose(texts.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(texts, clip_model.embed_texts(captions))
    assert clip_model.embed_texts([]).shape == (0, 384)
    images = clip_model.embed_images(np.stack([decoded(p, 224) for p in photos]))
    similarity = clip_model.similarity(images, texts)
    assert torch.allclose(similarity, (images @ texts.T).diagonal(), atol=1e-5)


@pytest.mark.parametrize("form", ["pt_wrapped", "safetensors"])
def test_open_clip_checkpoint_path_gives_the_same_embeddings(clip_model, photos, tmp_path, form):
    state = clip_model.model.state_dict()
    if form == "pt_wrapped":  # a DDP training checkpoint: {"state_dict": {"module.x": ...}}
        path = tmp_path / "epoch_1.pt"
        torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = registry.load_model(f"open_clip:{CLIP_ARCH}:{path}")
    assert loaded.name == f"open_clip:{CLIP_ARCH}:{path}"
    pixels = np.stack([decoded(p, 224) for p in photos[:2]])
    assert torch.allclose(loaded.embed_images(pixels), clip_model.embed_images(pixels), atol=1e-5)
    captions = ["a cup of coffee", "a cat"]
    assert torch.allclose(loaded.embed_texts(captions), clip_model.embed_texts(captions), atol=1e-5)


class _Payload:
    """Something a restricted unpickler must refuse."""


def test_open_clip_checkpoint_errors_are_clear(clip_model, tmp_path):
    state = clip_model.model.state_dict()
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("visual.")}, partial)
    with pytest.raises(InputError, match="does not fit"):
        clip.load_open_clip(f"{CLIP_ARCH}:{partial}")
    hostile = tmp_path / "hostile.pt"
    torch.save({"state_dict": state, "extra": _Payload()}, hostile)
    with pytest.raises(InputError, match="not a loadable weights file"):
        clip.load_open_clip(f"{CLIP_ARCH}:{hostile}")
    with pytest.raises(InputError, match="checkpoint not found"):
        clip.load_open_clip(f"{CLIP_ARCH}:{tmp_path / 'missing.pt'}")


def test_open_clip_spec_errors():
    with pytest.raises(InputError, match=r"expected open_clip:ARCH:TAG\|PATH"):
        registry.load_model("open_clip:ViT-B-32")
    with pytest.raises(InputError, match="unknown open_clip architecture"):
        registry.load_model("open_clip:ViT-Nope-1:random")
    with pytest.raises(InputError, match="pretrained tag of ViT-B-32"):
        registry.load_model("open_clip:ViT-B-32:no_such_tag")


def test_open_clip_pretrained_tag_offline_says_to_pass_a_checkpoint(monkeypatch):
    import open_clip.pretrained as pretrained

    from coyo_db.ingest.models import hub

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(pretrained, "download_pretrained_from_hf", offline)
    monkeypatch.setattr(pretrained, "download_pretrained_from_url", offline)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=0: False)  # offline
    with pytest.raises(InputError, match="local checkpoint") as error:
        registry.load_model("open_clip:ViT-B-32:laion2b_s34b_b79k")
    assert "open_clip:ViT-B-32:/path/to/checkpoint.pt" in str(error.value)


# ---- MiniLM ------------------------------------------------------------------------------------


def test_minilm_similar_captions_are_closer(minilm_model):
    assert isinstance(minilm_model, TextEmbedder)
    captions = [
        "a cat sleeping on a sofa",
        "a kitten asleep on the couch",
        "quarterly earnings of the bank fell",
        "",
    ]
    vectors = minilm_model.embed_texts(captions)
    assert vectors.shape == (4, 384) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(4), atol=1e-5)
    similar = (vectors[0] @ vectors[1]).item()
    assert similar > 0.6
    assert similar > (vectors[0] @ vectors[2]).item() + 0.3
    assert torch.equal(vectors, minilm_model.embed_texts(captions))
    assert minilm_model.embed_texts([]).shape == (0, 384)


def test_minilm_loading_restores_the_environment(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    with minilm.offline_hub():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in os.environ
    assert os.environ["TRANSFORMERS_OFFLINE"] == "0"
    with pytest.raises(InputError, match="no argument"):
        registry.load_model("minilm:something")


# ---- registry and shared pieces ----------------------------------------------------------------


def test_every_role_resolves_through_the_one_registry():
    found = registry.registered()
    assert list(found) == ["embedder", "descriptor", "labeler", "scorer"]
    assert found["embedder"] == ["effnet-lite0", "minilm", "open_clip"]
    assert found["descriptor"] == ["effnet-lite0", "isc", "open_clip", "torchscript"]
    assert found["labeler"] == ["effnet-lite0", "open_clip", "timm"]
    assert {"nsfw", "faces", "language", "profanity", "aesthetic"} <= set(found["scorer"])
    assert registry.model_families() == found["embedder"]
    assert registry.scorer_names() == found["scorer"]
    assert registry.registered("labeler") == {"labeler": found["labeler"]}
    # one name, one syntax, a factory per role
    spec = f"open_clip:{CLIP_ARCH}:/ckpt/b32.pt"
    for role in ("embedder", "descriptor", "labeler"):
        resolved = registry.resolve(role, spec)
        assert (resolved.entry.name, resolved.argument) == (
            "open_clip",
            f"{CLIP_ARCH}:/ckpt/b32.pt",
        )
        assert resolved.spec == spec and resolved.entry.role == role
    assert registry.resolve("embedder", spec).entry.factory is clip.load_open_clip_embedder
    assert registry.resolve("descriptor", spec).entry.factory is (
        copy_descriptors.load_clip_descriptor
    )
    assert registry.resolve("labeler", spec).entry.factory is classifiers.load_zero_shot_labeler
    summaries = {(e.role, e.name): e.summary for e in registry.entries()}
    assert summaries[("descriptor", "isc")].startswith("``isc:PATH``")
    assert all(summaries.values()), "every factory documents its spec in its first line"


def test_split_spec_and_table_slug():
    assert registry.split_spec("minilm") == ("minilm", None)
    assert registry.split_spec(" effnet-lite0: ") == ("effnet-lite0", None)
    assert registry.split_spec("open_clip:ViT-B-32:/a/b.pt") == ("open_clip", "ViT-B-32:/a/b.pt")
    assert registry.table_slug("open_clip:ViT-B-32:/ckpt/b32.pt") == "open_clip_vit_b_32_b32"
    assert copy_descriptors.descriptor_slug("effnet-lite0") == "effnet_lite0"


class Tiny:
    """What a test-registered model builds: its role, argument and options."""

    def __init__(self, role: str, argument: str | None, **options: object) -> None:
        self.role, self.argument, self.options = role, argument, options
        self.name = "tiny" if argument is None else f"tiny:{argument}"


@pytest.fixture
def tiny_everywhere():
    """A model `tiny` registered in all four roles (one factory each), forgotten afterwards."""
    for role in registry.ROLES:
        registry.register("tiny", role, aliases=("mini",))(
            lambda argument, _role=role, **options: Tiny(_role, argument, **options)
        )
    yield
    registry.unregister("tiny")


def test_a_registered_model_works_the_same_way_in_every_role(tiny_everywhere):
    from coyo_db.ingest.models.class_lists import IMAGENET1K

    for role in registry.ROLES:
        assert "tiny" in registry.registered(role)[role]
    model = registry.load_model("tiny:a")
    assert (model.role, model.argument) == ("embedder", "a")
    scorer = registry.load_scorer("tiny")
    assert (scorer.role, scorer.argument) == ("scorer", None)
    descriptor = copy_descriptors.load_descriptor("mini:/x.pt")  # through the alias
    assert (descriptor.role, descriptor.argument, descriptor.name) == (
        "descriptor",
        "/x.pt",
        "tiny:/x.pt",
    )
    labeler = classifiers.load_labeler("tiny:b", IMAGENET1K, None, templates="a {}.")
    assert (labeler.role, labeler.argument) == ("labeler", "b")
    assert labeler.options["spec"] == "tiny:b" and labeler.options["templates"] == "a {}."
    registry.unregister("tiny", "scorer")
    with pytest.raises(InputError, match="unknown scorer 'tiny'"):
        registry.load_scorer("tiny")
    assert registry.load_model("mini").role == "embedder"  # other roles keep it


def test_register_refuses_what_it_cannot_name():
    with pytest.raises(ValueError, match="at least one role"):
        registry.register("x")
    with pytest.raises(ValueError, match="unknown role 'embedding'"):
        registry.register("x", "embedding")
    with pytest.raises(ValueError, match="no ':'"):
        registry.register("x:y", "scorer")


@pytest.mark.parametrize(
    ("load", "spec", "message"),
    [
        (
            registry.load_model,
            "nope",
            "unknown model 'nope'; known: effnet-lite0, minilm, open_clip",
        ),
        (
            copy_descriptors.load_descriptor,
            "nope:/x",
            "unknown descriptor 'nope:/x'; known: effnet-lite0, isc, open_clip, torchscript",
        ),
        (registry.load_scorer, "nope", "unknown scorer 'nope'; known: aesthetic, faces,"),
        (
            lambda spec: classifiers.load_labeler(spec, "imagenet-1k", None),
            "minilm",
            "unknown labeler 'minilm'; known: effnet-lite0, open_clip, timm",
        ),
        (registry.load_model, "clip:ViT-B-32:random", "unknown model 'clip:ViT-B-32:random'"),
    ],
)
def test_unknown_specs_are_input_errors_naming_what_is_known(load, spec, message):
    with pytest.raises(InputError) as error:
        load(spec)
    assert str(error.value).startswith(message)


def test_the_clip_descriptor_is_named_like_every_other_open_clip_model(caplog):
    spec = f"open_clip:{CLIP_ARCH}:random"
    with caplog.at_level("WARNING", logger="coyo_db.ingest.registry"):
        resolved = registry.resolve("descriptor", f"clip:{CLIP_ARCH}:random")
    assert resolved.spec == spec and resolved.entry.name == "open_clip"
    [record] = caplog.records
    assert "deprecated" in record.getMessage() and "\n" not in record.getMessage()
    assert repr(spec) in record.getMessage()

    torch.manual_seed(0)
    descriptor = copy_descriptors.load_descriptor(f"clip:{CLIP_ARCH}:random")
    assert descriptor.name == spec  # the catalog stores the canonical name
    assert copy_descriptors.descriptor_slug(descriptor.name) == "open_clip_vit_s_32_random"
    assert isinstance(descriptor, copy_descriptors.CopyDescriptor)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    out = descriptor.describe(pixels)
    assert out.shape == (2, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert descriptor.describe(pixels[:0]).shape == (0, 384)


def test_model_modules_import_without_torch():
    """Registering models must stay cheap: help texts list them without importing torch."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODEL_MODULES)
        + "from coyo_db.ingest import registry\n"
        + "registry.load_builtins()\n"
        + "assert registry.registered()['descriptor']\n"
        + "heavy = {'torch', 'open_clip', 'timm', 'sentence_transformers', 'faiss', 'cv2'}\n"
        + "heavy &= set(sys.modules)\n"
        + "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)


def test_device_resize_modes_and_pixel_checks():
    image = torch.full((1, 20, 40, 3), 200, dtype=torch.uint8)
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    pad = common.normalise_pixels(image, Preprocess(10, "pad"), mean, std, "cpu")
    assert pad.shape == (1, 3, 10, 10)
    assert pad[..., :2, :].abs().max() == 0 and pad[..., -2:, :].abs().max() == 0  # black bars
    assert torch.allclose(pad[..., 3:7, :], torch.full((1, 3, 4, 10), 200 / 255))
    squash = common.normalise_pixels(image, Preprocess(10, "squash"), mean, std, "cpu")
    crop = common.normalise_pixels(image, Preprocess(10, "crop"), mean, std, "cpu")
    assert squash.shape == crop.shape == (1, 3, 10, 10)
    assert torch.allclose(crop, torch.full_like(crop, 200 / 255))
    with pytest.raises(InputError, match="uint8"):
        common.normalise_pixels(image.float(), Preprocess(10), mean, std, "cpu")
    with pytest.raises(InputError, match=r"\(N, H, W, 3\)"):
        common.normalise_pixels(image[0], Preprocess(10), mean, std, "cpu")


def test_a_missing_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(MissingExtraError, match=r"'timm'.*pip install 'coyo-db\[models\]'"):
        registry.load_model("effnet-lite0")
