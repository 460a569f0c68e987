"""Labelers: models that give each image a probability per class of a taxonomy.

Three kinds, registered by name in :mod:`coyo_db.ingest.registry` (role ``labeler``) and chosen
by the model spec, which also becomes `labels.model`:

- ``effnet-lite0`` (or ``effnet-lite0:/weights.pth``): the shipped EfficientNet-Lite0 and its
  ImageNet-1k head; offline.
- ``timm:ARCH:/path/checkpoint``: any timm classifier from a local checkpoint (an ImageNet-21k
  EfficientNetV2 as COYO used, ``timm:tf_efficientnetv2_m.in21k:/ckpt/model.safetensors``).
  Its class order comes from a class file (``classes=``: one wnid or class name per output, in
  output order) or, for ImageNet heads, from timm's own synset lists (picked by the number of
  outputs: 1000, 11221, 11821, 12000, 21841, 21843).
- ``open_clip:ARCH:TAG|PATH``: zero-shot over the taxonomy's class names with prompt templates;
  the class text embeddings are cached per model and taxonomy (see :class:`ZeroShot`).

A classifier's classes are mapped onto the taxonomy by wnid (or by name when the taxonomy has
no wnids): :attr:`Labeler.class_map` holds, per model output, the taxonomy index or -1. So
``effnet-lite0`` labels into ``imagenet-1k`` as it is, and into ``imagenet-21k`` through the
wnids (999 of its 1,000 classes are 21k synsets). Top-k runs over the mapped classes only.

Probabilities: softmax over the model's outputs (``activation="sigmoid"`` for multi-label heads
such as COYO's, whose per-class probabilities need not sum to 1); zero-shot uses the softmax
of CLIP's scaled cosine similarities.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from coyo_db.errors import InputError
from coyo_db.ingest.image_types import Preprocess
from coyo_db.ingest.models import common
from coyo_db.ingest.models.class_lists import IMAGENET1K, IMAGENET21K, class_wnids
from coyo_db.ingest.registry import build, load_model, register, table_slug

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Activation = Literal["softmax", "sigmoid"]
TEMPLATE_SETS = ("simple", "openai")
# timm's synset lists by the number of classes a head has (timm.data.ImageNetInfo subsets).
_TIMM_SUBSETS = {
    1000: "imagenet-1k",
    11221: "imagenet-21k-miil",
    11821: "imagenet-12k",
    12000: "imagenet-12k",
    21841: "imagenet-22k",
    21843: "imagenet-21k-goog",
}


class Labeler:
    """A model, its preprocessing, and the map from its outputs to taxonomy indices."""

    name: str  # the model spec; stored as labels.model
    preprocess: Preprocess
    class_map: np.ndarray  # (C,) int32: taxonomy index of each output, -1 where none
    device: str = "cpu"

    def to(self, device: str) -> None:
        raise NotImplementedError

    def probabilities(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, C) float32 probabilities over the model's outputs."""
        raise NotImplementedError

    def top_k(self, pixels: torch.Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most probable taxonomy classes per image, best first: (N, k') int32 indices
        and (N, k') float32 probabilities, k' = min(k, mapped classes)."""
        torch = common.torch_module()
        probs = self.probabilities(pixels).float()
        mapped = torch.as_tensor(self.class_map >= 0, device=probs.device)
        probs = torch.where(mapped, probs, torch.full_like(probs, -1.0))
        k = min(int(k), int(mapped.sum()))
        values, positions = probs.topk(k, dim=1, largest=True, sorted=True)
        index = self.class_map[positions.cpu().numpy()]
        return index.astype(np.int32), values.cpu().numpy().astype(np.float32)


def map_classes(keys: list[str], taxonomy: pa.Table, what: str) -> np.ndarray:
    """Taxonomy index per class key (a wnid, else a class name), -1 where the taxonomy has none.

    Raises InputError when no key maps at all (a class file for another taxonomy)."""
    wnids = taxonomy.column("wnid").to_pylist()
    names = taxonomy.column("name").to_pylist()
    indices = taxonomy.column("index").to_pylist()
    by_wnid = {w: i for w, i in zip(wnids, indices, strict=True) if w}
    by_name = {n: i for n, i in zip(names, indices, strict=True)}
    out = np.full(len(keys), -1, np.int32)
    taken: set[int] = set()
    for position, key in enumerate(keys):
        index = by_wnid.get(key, by_name.get(key, -1))
        if index >= 0 and index not in taken:  # a class met twice counts once
            out[position] = index
            taken.add(index)
    if not taken:
        raise InputError(
            f"{what}: none of its {len(keys)} classes is a class of the taxonomy "
            f"(e.g. {keys[:2]}); give a class file of wnids or names that the taxonomy has"
        )
    missing = int((out < 0).sum())
    if missing:
        log.info("%s: %d of %d classes have no taxonomy class; ignored", what, missing, len(keys))
    return out


def read_class_keys(path: str | Path) -> list[str]:
    """One class key (wnid or name) per line, in the model's output order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"class file not found: {path}")
    keys = [line.strip() for line in path.read_text("utf-8").splitlines()]
    keys = [k.split("\t")[0] for k in keys if k and not k.startswith("#")]
    if not keys:
        raise InputError(f"{path}: holds no classes (one wnid or class name a line)")
    return keys


def _activate(logits: torch.Tensor, activation: Activation) -> torch.Tensor:
    return logits.float().sigmoid() if activation == "sigmoid" else logits.float().softmax(dim=-1)


# ---- classifiers ------------------------------------------------------------------------------


class EffNetLabeler(Labeler):
    """EfficientNet-Lite0's ImageNet-1k head (any registry model with ``logits()`` over the
    ImageNet-1k classes works the same way)."""

    def __init__(self, model: Any, spec: str, taxonomy: pa.Table, activation: Activation):
        self.model = model
        self.name = spec
        self.preprocess = model.preprocess
        self.activation = activation
        self.class_map = map_classes(class_wnids(IMAGENET1K), taxonomy, spec)

    def to(self, device: str) -> None:
        self.model.to(device)
        self.device = self.model.device

    def probabilities(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        return _activate(self.model.logits(pixels), self.activation)


class TimmClassifier(Labeler):
    """A timm classifier built offline and loaded from a local checkpoint."""

    def __init__(
        self,
        argument: str | None,
        spec: str,
        taxonomy: pa.Table,
        *,
        classes: str | Path | None,
        activation: Activation,
    ) -> None:
        timm = common.require("timm")
        arch, _, weights = (argument or "").partition(":")
        if not arch or not weights:
            raise InputError(
                f"{spec}: expected timm:ARCH:/path/to/checkpoint, e.g. "
                "timm:tf_efficientnetv2_m.in21k:/ckpt/model.safetensors"
            )
        if not timm.is_model(arch.split(".")[0]):
            raise InputError(f"{spec}: unknown timm architecture {arch!r} (see timm.list_models())")
        config = timm.models.get_pretrained_cfg(arch, allow_unregistered=True)
        head = getattr(config, "classifier", None) or "classifier"
        state = common.load_state_dict_file(weights)
        weight = state.get(f"{head}.weight")
        if weight is None or weight.ndim != 2:
            raise InputError(f"{spec}: the checkpoint has no {head}.weight (not a classifier?)")
        net = timm.create_model(arch, pretrained=False, num_classes=int(weight.shape[0]))
        result = net.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            sample = ", ".join([*result.missing_keys[:3], *result.unexpected_keys[:3]])
            raise InputError(f"{spec}: checkpoint does not fit {arch} ({sample})")
        self.net = net.eval()
        self.name = spec
        self.activation = activation
        config = timm.data.resolve_data_config({}, model=net)
        size = config["input_size"][-1]
        resample = "bilinear" if config.get("interpolation") == "bilinear" else "bicubic"
        # timm's eval transform resizes to size / crop_pct then crops the centre; the decoders
        # crop the centred square of the shorter side at `size` (crop_pct 1.0), or squash
        # when the model was trained so (crop_mode "squash", as the in21k EfficientNetV2s).
        mode = "squash" if config.get("crop_mode") == "squash" else "crop"
        self.preprocess = Preprocess(int(size), mode, resample)  # type: ignore[arg-type]
        self.mean, self.std = tuple(config["mean"]), tuple(config["std"])
        keys = read_class_keys(classes) if classes else _timm_class_keys(timm, net, spec)
        if len(keys) != net.num_classes:
            raise InputError(
                f"{spec}: the class file lists {len(keys)} classes, the model has "
                f"{net.num_classes} outputs"
            )
        self.class_map = map_classes(keys, taxonomy, spec)

    def to(self, device: str) -> None:
        self.device = common.resolve_device(device)
        self.net = common.move_module(self.net, self.device)

    def probabilities(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = common.normalise_pixels(pixels, self.preprocess, self.mean, self.std, self.device)
        with common.inference(self.device):
            logits = self.net(x)
        return _activate(logits, self.activation)


def _timm_class_keys(timm: Any, net: Any, spec: str) -> list[str]:
    subset = _TIMM_SUBSETS.get(net.num_classes)
    if subset is None:
        raise InputError(
            f"{spec}: {net.num_classes} outputs match none of timm's ImageNet class lists; "
            "pass a class file (one wnid or class name per output, in order)"
        )
    info = timm.data.ImageNetInfo(subset)
    return [info.index_to_label_name(i) for i in range(info.num_classes())]


# ---- zero-shot --------------------------------------------------------------------------------


def template_strings(templates: str | None) -> list[str]:
    """Prompt templates with ``{}`` for the class name: ``simple`` (open_clip's 7, the default),
    ``openai`` (CLIP's 80), a file of one template a line, or one literal template."""
    choice = templates or "simple"
    if choice in TEMPLATE_SETS:
        from open_clip import zero_shot_metadata as meta

        found = (
            meta.SIMPLE_IMAGENET_TEMPLATES if choice == "simple" else meta.OPENAI_IMAGENET_TEMPLATES
        )
        return [template("{}") for template in found]
    path = Path(choice).expanduser()
    if "{}" not in choice and path.is_file():
        lines = [line.strip() for line in path.read_text("utf-8").splitlines()]
        found = [line for line in lines if line and not line.startswith("#")]
    else:
        found = [choice]
    bad = [t for t in found if t.count("{}") != 1]
    if not found or bad:
        raise InputError(
            f"templates {choice!r}: each template needs exactly one '{{}}' for the class name "
            f"(e.g. 'a photo of a {{}}.'), or use {' / '.join(TEMPLATE_SETS)}"
        )
    return found


def prompt_names(taxonomy_name: str, taxonomy: pa.Table) -> list[str]:
    """The class names prompts use: ImageNet-21k's first lemma ("dog" of "dog, domestic dog,
    Canis familiaris"), other taxonomies' names as they are."""
    names = taxonomy.column("name").to_pylist()
    if taxonomy_name == IMAGENET21K:
        return [name.split(", ")[0] for name in names]
    return names


class ZeroShot(Labeler):
    """CLIP zero-shot: cosine of the image embedding with each class's mean prompt embedding.

    The class embeddings are cached in `cache_dir` as
    ``<model slug>__<taxonomy>__<key>.npy``, key = a hash of the model spec, a sample of its
    weights, the class names and the templates: a changed list or other weights miss the cache.
    """

    def __init__(
        self,
        model: Any,
        spec: str,
        taxonomy_name: str,
        taxonomy: pa.Table,
        *,
        templates: str | None,
        cache_dir: Path | None,
    ) -> None:
        if not hasattr(model, "embed_texts") or not hasattr(model, "embed_images"):
            raise InputError(f"{spec}: zero-shot needs a model with image and text towers")
        self.model = model
        self.name = spec
        self.preprocess = model.preprocess
        self.taxonomy_name = taxonomy_name
        self.names = prompt_names(taxonomy_name, taxonomy)
        self.templates = template_strings(templates)
        self.cache_dir = cache_dir
        self.class_map = np.asarray(taxonomy.column("index").to_numpy(), np.int32)
        self._classes: np.ndarray | None = None
        self._tensor: torch.Tensor | None = None

    def to(self, device: str) -> None:
        self.model.to(device)
        self.device = self.model.device
        self._tensor = None

    @property
    def cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256()
        for part in (self.name, _weights_sample(self.model.model), *self.templates, "\0"):
            digest.update(part.encode() + b"\0")
        for name in self.names:
            digest.update(name.encode() + b"\0")
        slug = table_slug(self.name)
        return self.cache_dir / f"{slug}__{self.taxonomy_name}__{digest.hexdigest()[:16]}.npy"

    def use_class_embeddings(self, vectors: np.ndarray) -> None:
        """Take class embeddings computed elsewhere (a Ray actor gets the driver's, so every
        process labels with the same vectors)."""
        self._classes = np.asarray(vectors, np.float32)
        self._tensor = None

    def class_embeddings(self) -> np.ndarray:
        """(classes, dim) float32, L2-normalised: the mean of each class's prompt embeddings."""
        if self._classes is not None:
            return self._classes
        path = self.cache_path
        if path is not None and path.is_file():
            self._classes = np.load(path)
            log.info("%s: class embeddings from the cache %s", self.name, path)
            return self._classes
        texts = [t.format(name) for name in self.names for t in self.templates]
        log.info(
            "%s: embedding %d prompts (%d classes x %d templates)",
            self.name,
            len(texts),
            len(self.names),
            len(self.templates),
        )
        vectors = self.model.embed_texts(texts).float().cpu().numpy()
        vectors = vectors.reshape(len(self.names), len(self.templates), -1).mean(axis=1)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self._classes = vectors.astype(np.float32)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial.npy")
            np.save(partial, self._classes)
            partial.replace(path)  # a killed run never leaves half a cache file
        return self._classes

    def probabilities(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        torch = common.torch_module()
        if self._tensor is None:
            self._tensor = torch.from_numpy(self.class_embeddings()).to(self.model.device)
        images = self.model.embed_images(pixels).float()
        scale = float(self.model.model.logit_scale.detach().exp())
        return (scale * images @ self._tensor.T).softmax(dim=-1)


def _weights_sample(module: Any) -> str:
    """A cheap fingerprint of a module's weights: a hash of the first and last tensors."""
    digest = hashlib.sha256()
    parameters = list(module.parameters())
    for tensor in [*parameters[:2], *parameters[-2:]]:
        values = tensor.detach().float().flatten()[:4096].cpu().numpy()
        digest.update(values.tobytes())
    return digest.hexdigest()[:16]


# ---- registered by name -----------------------------------------------------------------------
# A labeler's factory gets the spec's argument and the options load_labeler passes on.


@register("effnet-lite0", "labeler")
def load_effnet_labeler(
    argument: str | None,
    *,
    spec: str,
    taxonomy: pa.Table,
    classes: str | Path | None = None,
    templates: str | None = None,
    activation: Activation = "softmax",
    **_: Any,
) -> Labeler:
    """``effnet-lite0[:/weights.pth]``: EfficientNet-Lite0's ImageNet-1k head (offline)."""
    if templates:
        raise InputError("--templates is for zero-shot (open_clip:...) models")
    if classes:
        raise InputError("--classes is for timm:ARCH:/checkpoint classifiers")
    model = load_model(spec)
    if not hasattr(model, "logits") or getattr(model, "num_classes", 0) != 1000:
        raise InputError(f"{spec} has no ImageNet-1k head to label with")
    return EffNetLabeler(model, spec, taxonomy, activation)


@register("timm", "labeler")
def load_timm_labeler(
    argument: str | None,
    *,
    spec: str,
    taxonomy: pa.Table,
    classes: str | Path | None = None,
    templates: str | None = None,
    activation: Activation = "softmax",
    **_: Any,
) -> Labeler:
    """``timm:ARCH:/checkpoint``: a timm classifier from a local checkpoint (--classes FILE)."""
    if templates:
        raise InputError("--templates is for zero-shot (open_clip:...) models")
    return TimmClassifier(argument, spec, taxonomy, classes=classes, activation=activation)


@register("open_clip", "labeler")
def load_zero_shot_labeler(
    argument: str | None,
    *,
    spec: str,
    taxonomy_name: str,
    taxonomy: pa.Table,
    classes: str | Path | None = None,
    templates: str | None = None,
    cache_dir: Path | None = None,
    **_: Any,
) -> Labeler:
    """``open_clip:ARCH:TAG|PATH``: CLIP zero-shot over the taxonomy's class names."""
    if classes:
        raise InputError("--classes is for classifiers; zero-shot uses the taxonomy's names")
    model = load_model(spec)
    return ZeroShot(model, spec, taxonomy_name, taxonomy, templates=templates, cache_dir=cache_dir)


def load_labeler(
    spec: str,
    taxonomy_name: str,
    taxonomy: pa.Table,
    *,
    classes: str | Path | None = None,
    templates: str | None = None,
    activation: Activation = "softmax",
    cache_dir: Path | None = None,
) -> Labeler:
    """The labeler for model `spec` over `taxonomy` (its rows in index order), on the CPU."""
    if activation not in ("softmax", "sigmoid"):
        raise InputError(f"--activation must be softmax or sigmoid, not {activation!r}")
    return build(
        "labeler",
        spec,
        spec=spec,
        taxonomy_name=taxonomy_name,
        taxonomy=taxonomy,
        classes=classes,
        templates=templates,
        activation=activation,
        cache_dir=cache_dir,
    )
