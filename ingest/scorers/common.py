"""What the scorers share: imports that name the ``scores`` extra, pixel batches checked and
fitted to a :class:`Preprocess`, ONNX sessions that fail with one clear line, and the
``checkpoint@embedder`` argument of heads over embeddings.

Pixels arrive as uint8 (N, H, W, 3) RGB, already resized by the decode workers to the scorer's
:class:`Preprocess`. Batches of another size (a scorer used outside the pipeline) are resized
here with OpenCV, following the same crop / squash / pad rules.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from coyo_db.errors import InputError
from coyo_db.ingest.image_types import Preprocess
from coyo_db.ingest.models.common import require as _require

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# Where ONNX Runtime has them, GPUs first; the CPU always works.
_PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def require(module: str, package: str | None = None) -> ModuleType:
    """Import `module`, or raise MissingExtraError naming the package and the ``scores`` extra."""
    return _require(module, package, extra="scores")


def pixel_batch(pixels: Any, preprocess: Preprocess) -> np.ndarray:
    """uint8 (N, H, W, 3) as a C-contiguous NumPy array of (N, size, size, 3).

    Accepts NumPy arrays and (CPU or GPU) torch tensors; other sizes are resized per
    `preprocess`, as the decode workers would have done."""
    import numpy as np

    if not isinstance(pixels, np.ndarray):
        is_tensor = hasattr(pixels, "detach")
        pixels = pixels.detach().cpu().numpy() if is_tensor else np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise InputError(f"pixels must be (N, H, W, 3); got {tuple(pixels.shape)}")
    if pixels.dtype != np.uint8:
        raise InputError(f"pixels must be uint8; got {pixels.dtype}")
    size = preprocess.size
    if pixels.shape[1:3] != (size, size):
        pixels = np.stack([fit_image(image, preprocess) for image in pixels])
    return np.ascontiguousarray(pixels)


def fit_image(image: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """One (H, W, 3) uint8 image resized to (size, size, 3) the way `preprocess` says."""
    import numpy as np

    cv2 = require("cv2", "opencv-python-headless")
    size, mode = preprocess.size, preprocess.mode
    height, width = image.shape[:2]
    if mode == "squash":
        target = (size, size)
    elif mode == "crop":
        short = min(height, width)
        target = (max(size, int(size * height / short)), max(size, int(size * width / short)))
    else:
        scale = size / max(height, width)
        target = (max(1, round(height * scale)), max(1, round(width * scale)))
    shrinking = target[0] < height or target[1] < width
    if shrinking:
        interpolation = cv2.INTER_AREA
    elif preprocess.resample == "bicubic":
        interpolation = cv2.INTER_CUBIC
    else:
        interpolation = cv2.INTER_LINEAR
    resized = cv2.resize(image, (target[1], target[0]), interpolation=interpolation)
    height, width = target
    if mode == "crop":
        top, left = (height - size) // 2, (width - size) // 2
        return resized[top : top + size, left : left + size]
    if mode == "pad":
        out = np.zeros((size, size, 3), dtype=np.uint8)
        top, left = (size - height) // 2, (size - width) // 2
        out[top : top + height, left : left + width] = resized
        return out
    return resized


def onnx_session(path: str | Path, what: str) -> Any:
    """An ONNX Runtime session for `path`; a missing or unreadable file is an InputError."""
    ort = require("onnxruntime")
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{what}: model file not found: {path}")
    available = set(ort.get_available_providers())
    providers = [p for p in _PREFERRED_PROVIDERS if p in available] or None
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not an ONNX model that onnxruntime can load ({detail})") from exc
    log.debug("%s: loaded %s on %s", what, path, session.get_providers())
    return session


def fixed_input_size(session: Any, default: int) -> int:
    """The square input size an ONNX model fixes in its first input's shape, else `default`."""
    shape = session.get_inputs()[0].shape
    height, width = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
    if isinstance(height, int) and isinstance(width, int) and height > 0:
        if height != width:
            raise InputError(f"expected a square model input; this one is {height} x {width}")
        return height
    return default


def split_head_argument(argument: str | None, default_embedder: str) -> tuple[str | None, str]:
    """``/path/head.pth@open_clip:ViT-B-32:openai`` -> (path, embedder).

    Without ``@`` the embedder is `default_embedder`. The split is at the first ``@`` that
    leaves an existing file on its left (a path may hold ``@`` itself), else at the first ``@``;
    an argument naming an existing file as a whole is all path."""
    if argument is None:
        return None, default_embedder
    if "@" not in argument or Path(argument).expanduser().exists():
        return argument, default_embedder
    cuts = [i for i, char in enumerate(argument) if char == "@"]
    cut = next((i for i in cuts if Path(argument[:i]).expanduser().is_file()), cuts[0])
    path, embedder = argument[:cut].strip(), argument[cut + 1 :].strip()
    if not path or not embedder:
        raise InputError(f"{argument!r}: expected CHECKPOINT or CHECKPOINT@MODEL")
    return path, embedder
