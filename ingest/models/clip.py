"""open_clip models: one object that embeds images and captions in a shared space.

Specs are ``open_clip:ARCH:TAG|PATH`` (the same in every command: embeddings, copy descriptors,
zero-shot labels) with ARCH an open_clip architecture (``ViT-B-32``, ``ViT-L-14``, ...; see
``open_clip.list_models()``) and after it one of

- a pretrained tag (``laion2b_s34b_b79k``, ``openai``, ...): from the hub's local cache, else
  fetched from the hub by open_clip; offline and uncached this fails at once with one line
  asking for a local checkpoint (:mod:`coyo_db.ingest.models.hub`);
- a local checkpoint (``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors``): a state dict, or a dict
  holding one under ``state_dict``, read without unpickling objects;
- ``random``: random weights, for speed benchmarks and tests.

OpenAI's weights were trained with QuickGELU: load a local copy of them under the
``-quickgelu`` architecture (``open_clip:ViT-B-32-quickgelu:/ckpt/openai.pt``).

Images are preprocessed as the model's preprocess config says (size, mean/std, interpolation,
resize mode): the decode workers resize (:class:`Preprocess`) and the device normalises.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from coyo_db.errors import InputError
from coyo_db.ingest.image_types import Preprocess
from coyo_db.ingest.models import common
from coyo_db.ingest.registry import register

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

RANDOM = "random"
_RESIZE_MODES = {"shortest": "crop", "squash": "squash", "longest": "pad"}


def _open_clip() -> Any:
    return common.require("open_clip", "open_clip_torch")


def preprocess_from_config(config: dict[str, Any], what: str) -> Preprocess:
    """The decode-side Preprocess for an open_clip preprocess config."""
    size = config.get("size", 224)
    if isinstance(size, list | tuple):
        if len(set(size)) != 1:
            raise InputError(f"{what}: non-square input {tuple(size)} is not supported")
        size = size[0]
    mode = _RESIZE_MODES.get(config.get("resize_mode", "shortest"))
    if mode is None:
        raise InputError(f"{what}: unsupported resize mode {config.get('resize_mode')!r}")
    resample = "bilinear" if config.get("interpolation") == "bilinear" else "bicubic"
    return Preprocess(int(size), mode, resample)  # type: ignore[arg-type]


class OpenClip:
    """An open_clip model as both an ImageEmbedder and a TextEmbedder."""

    def __init__(self, model: Any, tokenizer: Any, name: str, text_batch_size: int = 1024) -> None:
        open_clip = _open_clip()
        self.name = name
        self.device = "cpu"
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.text_batch_size = text_batch_size
        config = open_clip.get_model_preprocess_cfg(model)
        self.preprocess = preprocess_from_config(config, name)
        self.mean = tuple(float(v) for v in config.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(float(v) for v in config.get("std", open_clip.OPENAI_DATASET_STD))
        self.dim = int(model.visual.output_dim)

    def to(self, device: str) -> None:
        self.device = common.resolve_device(device)
        self.model = common.move_module(self.model, self.device)

    def image_input(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> the normalised float batch the image tower takes."""
        return common.normalise_pixels(pixels, self.preprocess, self.mean, self.std, self.device)

    def embed_images(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, dim) float32, L2-normalised."""
        with common.inference(self.device):
            return common.l2_normalise(self.model.encode_image(self.image_input(pixels)))

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """N captions -> (N, dim) float32, L2-normalised (tokenised, truncated to the context)."""
        torch = common.torch_module()
        texts = list(texts)
        parts = []
        with common.inference(self.device):
            for start in range(0, len(texts), self.text_batch_size):
                tokens = self.tokenizer(texts[start : start + self.text_batch_size])
                parts.append(self.model.encode_text(tokens.to(self.device)).float())
        if not parts:
            return torch.zeros((0, self.dim), dtype=torch.float32, device=self.device)
        return common.l2_normalise(torch.cat(parts))

    @staticmethod
    def similarity(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Row-wise cosine similarity of paired image and text embeddings -> (N,)."""
        return common.cosine_rows(image_embeddings, text_embeddings)


def _check_arch(open_clip: Any, arch: str) -> None:
    if arch not in open_clip.list_models():
        raise InputError(
            f"unknown open_clip architecture {arch!r} (see open_clip.list_models(); "
            "e.g. ViT-B-32, ViT-L-14)"
        )


def _tokenizer(open_clip: Any, arch: str, spec: str) -> Any:
    try:
        return open_clip.get_tokenizer(arch)
    except OSError as exc:  # HF-text architectures fetch their tokenizer from the hub
        raise InputError(f"{spec}: cannot load the tokenizer offline ({exc})") from exc


def _from_pretrained_tag(open_clip: Any, arch: str, tag: str, spec: str) -> Any:
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        known = ", ".join(tags) or "none"
        raise InputError(
            f"{spec}: {tag!r} is neither a checkpoint file nor a pretrained tag of {arch} "
            f"(tags: {known}; or pass a local checkpoint path, or 'random')"
        )
    from coyo_db.ingest.models.hub import HubUnreachable, cached_or_online

    try:
        return cached_or_online(lambda: open_clip.create_model(arch, pretrained=tag))
    except HubUnreachable as exc:
        raise InputError(
            f"{spec}: the pretrained weights {tag!r} are {exc}; pass a local checkpoint "
            f"instead: open_clip:{arch}:/path/to/checkpoint.pt"
        ) from None
    except (OSError, RuntimeError) as exc:  # a bad download
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"{spec}: could not get the pretrained weights {tag!r} ({reason}); without network "
            f"access pass a local checkpoint instead: open_clip:{arch}:/path/to/checkpoint.pt"
        ) from exc


def load_checkpoint_into(model: Any, state: dict[str, torch.Tensor], spec: str) -> None:
    """Load a user's open_clip state dict into `model`, strictly, with a clear error."""
    open_clip_model = common.require("open_clip.model", "open_clip_torch")
    # The same adjustments open_clip makes for its own checkpoints: old text-tower layout,
    # a positional embedding for another input size, a scalar logit scale.
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = open_clip_model.convert_to_custom_text_state_dict(state)
    scale = state.get("logit_scale")
    if scale is not None and scale.ndim != model.logit_scale.ndim:
        state["logit_scale"] = scale.reshape(model.logit_scale.shape)
    open_clip_model.resize_pos_embed(state, model)
    result = model.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
    if result.missing_keys or unexpected:
        sample = ", ".join([*result.missing_keys[:3], *unexpected[:3]])
        raise InputError(
            f"{spec}: checkpoint does not fit this architecture "
            f"({len(result.missing_keys)} missing, {len(unexpected)} unexpected keys: {sample})"
        )


def load_open_clip(argument: str | None, spec: str | None = None) -> OpenClip:
    """The model for ``open_clip:ARCH:TAG|PATH`` (`argument` is ``ARCH:TAG|PATH``)."""
    spec = spec or f"open_clip:{argument or ''}"
    arch, _, weights = (argument or "").partition(":")
    arch, weights = arch.strip(), weights.strip()
    if not arch or not weights:
        raise InputError(
            f"{spec}: expected open_clip:ARCH:TAG|PATH, e.g. open_clip:ViT-B-32:laion2b_s34b_b79k, "
            "open_clip:ViT-B-32:/path/to/checkpoint.pt or open_clip:ViT-B-32:random"
        )
    open_clip = _open_clip()
    _check_arch(open_clip, arch)
    if weights == RANDOM:
        model = open_clip.create_model(arch, pretrained=None)
    elif common.is_checkpoint_path(weights):
        state = common.load_state_dict_file(weights)  # read (and refuse) before building
        model = open_clip.create_model(arch, pretrained=None)
        load_checkpoint_into(model, state, spec)
        log.debug("%s: loaded %d tensors", spec, len(state))
    else:
        model = _from_pretrained_tag(open_clip, arch, weights, spec)
    return OpenClip(model, _tokenizer(open_clip, arch, spec), spec)


@register("open_clip", "embedder")
def load_open_clip_embedder(argument: str | None) -> Any:
    """``open_clip:ARCH:TAG|PATH|random``: an open_clip model (image and text towers)."""
    return load_open_clip(argument)
