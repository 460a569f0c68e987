"""What every embedding model shares: imports that name the missing extra, the device, autocast,
uint8 pixels turned into a normalised batch on the device, safe checkpoint loading, and batch
norms folded into the convolutions before them for inference.

Pixels arrive as uint8 (N, H, W, 3), already resized by the decode workers to the model's
:class:`~coyo_db.ingest.image_types.Preprocess`. A permuted NHWC tensor is already laid out as
``channels_last``, so the conversion to float and the normalisation run on the device without
a copy to NCHW. Batches of another size are resized on the device (same crop / squash / pad
rules), which keeps the models usable outside the ingest pipeline.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from coyo_db.errors import InputError, MissingExtraError
from coyo_db.ingest.image_types import Preprocess

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def require(module: str, package: str | None = None, extra: str = "models") -> ModuleType:
    """Import `module`, or raise MissingExtraError naming the pip package and the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingExtraError(package or module, extra) from exc


def torch_module() -> ModuleType:
    return require("torch")


def cpu_threads(device: str, threads: int) -> None:
    """Give torch `threads` CPU threads when the models run on the CPU (a Ray actor shares its
    node with others); no-op for 0, for CUDA, and without torch."""
    if not threads or device.startswith("cuda"):
        return
    try:
        import torch
    except ModuleNotFoundError:  # scorers alone need no torch
        return
    torch.set_num_threads(threads)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else as given.

    Without torch installed (scorers need none) ``auto`` and ``cpu`` are ``cpu``.
    """
    if device in ("auto", "cpu"):
        try:
            import torch
        except ModuleNotFoundError:
            return "cpu"
    else:
        torch = torch_module()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: no CUDA device is visible")
    return device


def is_cuda(device: str | Any) -> bool:
    return str(device).startswith("cuda")


def autocast_dtype(device: str) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; None (full precision) on the CPU."""
    if not is_cuda(device):
        return None
    torch = torch_module()
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def inference(device: str) -> Iterator[None]:
    """inference_mode, plus autocast on CUDA."""
    torch = torch_module()
    dtype = autocast_dtype(device)
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast("cuda", dtype=dtype):
                yield


def move_module(module: torch.nn.Module, device: str) -> torch.nn.Module:
    """Put `module` on `device` in eval mode; convolutions get channels_last weights on CUDA."""
    torch = torch_module()
    module = module.to(device).eval()
    if is_cuda(device):
        module = module.to(memory_format=torch.channels_last)
    return module


def as_pixel_tensor(pixels: torch.Tensor | np.ndarray, device: str) -> torch.Tensor:
    """uint8 (N, H, W, 3) as a tensor on `device` (NumPy arrays are wrapped, not copied)."""
    torch = torch_module()
    if not isinstance(pixels, torch.Tensor):
        if not pixels.flags.writeable:  # torch refuses to wrap read-only memory
            pixels = pixels.copy()
        pixels = torch.from_numpy(pixels)
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise InputError(f"pixels must be (N, H, W, 3); got {tuple(pixels.shape)}")
    if pixels.dtype != torch.uint8:
        raise InputError(f"pixels must be uint8; got {pixels.dtype}")
    if pixels.device != torch.device(device):
        pixels = pixels.to(device, non_blocking=True)
    return pixels


def normalise_pixels(
    pixels: torch.Tensor | np.ndarray,
    preprocess: Preprocess,
    mean: Sequence[float],
    std: Sequence[float],
    device: str,
) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, size, size) on `device`, ``(x/255 - mean) / std``.

    The result is NCHW in shape and channels_last in memory (a view of the NHWC input)."""
    torch = torch_module()
    x = as_pixel_tensor(pixels, device).permute(0, 3, 1, 2)
    x = x.float()
    if tuple(x.shape[-2:]) != (preprocess.size, preprocess.size):
        x = resize_batch(x, preprocess)
    scale = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    shift = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return (x - shift) / scale


def resize_batch(x: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Float (N, 3, H, W) in 0..255 resized the way the decode workers would, rounded to the
    uint8 grid so that it matches an image resized before it reached the model."""
    torch = torch_module()
    functional = torch.nn.functional
    size, mode = preprocess.size, preprocess.mode
    height, width = x.shape[-2:]
    if mode == "squash":
        target = (size, size)
    elif mode == "crop":  # torchvision's Resize(size): the longer side truncated, not rounded
        short = min(height, width)
        target = (max(size, int(size * height / short)), max(size, int(size * width / short)))
    else:
        scale = size / max(height, width)
        target = (max(1, round(height * scale)), max(1, round(width * scale)))
    x = functional.interpolate(
        x, size=target, mode=preprocess.resample, align_corners=False, antialias=True
    )
    x = x.clamp_(0, 255).round_()
    height, width = target
    if mode == "crop":
        top, left = (height - size) // 2, (width - size) // 2
        x = x[..., top : top + size, left : left + size]
    elif mode == "pad":
        top, left = (size - height) // 2, (size - width) // 2
        x = functional.pad(x, (left, size - width - left, top, size - height - top), value=0.0)
    return x


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length, as float32 (a zero row stays zero)."""
    torch = torch_module()
    return torch.nn.functional.normalize(x.float(), dim=-1)


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two (N, D) batches -> (N,) float32."""
    return (l2_normalise(a) * l2_normalise(b)).sum(dim=-1)


def is_checkpoint_path(argument: str) -> bool:
    """Whether a model argument names a file rather than a tag."""
    return (
        "/" in argument
        or "\\" in argument
        or argument.lower().endswith(CHECKPOINT_SUFFIXES)
        or Path(argument).exists()
    )


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a user's checkpoint, never unpickling arbitrary objects.

    ``.safetensors`` through safetensors; anything else through ``torch.load(weights_only=True)``.
    The file may hold the state dict itself or a dict with ``state_dict`` (or ``model``);
    ``module.`` prefixes (DataParallel / DDP) are stripped.
    """
    torch = torch_module()
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            safetensors_torch = require("safetensors.torch", "safetensors")
            checkpoint: Any = safetensors_torch.load_file(str(path), device="cpu")
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except MissingExtraError:
        raise
    except Exception as exc:  # a pickle with objects beyond tensors, a truncated file
        raise InputError(
            f"{path}: not a loadable weights file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})"
        ) from exc
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise InputError(f"{path}: holds no state dict")
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(f"{path}: holds no tensors")
    return {k.removeprefix("module."): v for k, v in tensors.items()}


def fold_batch_norms(module: torch.nn.Module) -> torch.nn.Module:
    """`module` (in eval mode, in place) with every batch norm that directly follows a
    convolution folded into that convolution's weights and bias.

    At inference a batch norm is a fixed per-channel affine map, so it can be computed by the
    convolution itself: on the CPU that removes a full pass over every activation map (a third
    of EfficientNet-Lite0's time). A norm with an activation attached (timm's
    ``BatchNormAct2d``) keeps its activation. Results agree with the unfolded network to float32
    rounding (~1e-6)."""
    torch = torch_module()
    names = list(module._modules)
    for position, name in enumerate(names):
        child = module._modules[name]
        before = module._modules[names[position - 1]] if position else None
        if (
            isinstance(child, torch.nn.BatchNorm2d)
            and isinstance(before, torch.nn.Conv2d)
            and child.running_var is not None
            and child.affine
        ):
            with torch.no_grad():
                scale = child.weight / torch.sqrt(child.running_var + child.eps)
                bias = child.bias - child.running_mean * scale
                if before.bias is not None:
                    bias = bias + before.bias * scale
                before.weight = torch.nn.Parameter(
                    before.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False
                )
                before.bias = torch.nn.Parameter(bias, requires_grad=False)
            # timm's BatchNormAct2d runs norm -> drop -> act; keep what follows the norm
            after = [getattr(child, part) for part in ("drop", "act") if hasattr(child, part)]
            module._modules[name] = torch.nn.Sequential(*after)
        elif child is not None:
            fold_batch_norms(child)
    return module.eval()
