"""``nsfw``: NudeNet's detector (the ONNX model in the ``nudenet`` wheel), one score per image.

NudeNet 3 is a YOLOv8 detector over 18 body-part classes (:data:`LABELS`, in its output order).
Its ``NudeDetector.detect`` pads an image to a square (black), resizes it to 320 x 320, feeds
it scaled to 0..1 (NCHW float32), and reads one (4 + 18, anchors) output per image: box centre
and size, then one sigmoid score per class. An anchor becomes a detection of its
highest-scoring class when that score is at least 0.2 (then class-agnostic NMS). The model
takes RGB, as YOLOv8 trains and as NudeDetector passes an RGB array on; on an image file it
reads itself, nudenet 3.4 swaps channels twice and OpenCV's BGR reaches the model, which then
reads faces less surely (scikit-image's astronaut: FACE_FEMALE 0.82 from RGB; 0.74, with
FACE_MALE 0.45, from BGR). Here it gets RGB.

Here the decode workers letterbox to 320 (:attr:`NudeNetScorer.preprocess`), the whole batch
runs in one ONNX Runtime call, and the score is

    nsfw_nudenet = max over anchors whose highest-scoring class is an exposed class
                   (:data:`EXPOSED`) of that class score; 0.0 when there is none,

a float32 in [0, 1]: the confidence of NudeNet's most confident exposed-class detection, with
no 0.2 floor (below 0.2 NudeDetector would report nothing; threshold as you need). NMS is left
out: it never drops the most confident box, and being class-agnostic it could only let a
covered or face box hide an exposed one. :func:`exposed_scores` holds this mapping.

``nsfw:/path/model.onnx`` runs another NudeNet export (say the 640m model from NudeNet's
releases); its input size is read from the model when fixed, else 320. The LAION CLIP-based
NSFW head is the ``nsfw-clip`` scorer (:mod:`coyo_db.ingest.scorers.heads`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coyo_db.errors import InputError
from coyo_db.ingest.image_types import Preprocess
from coyo_db.ingest.registry import register
from coyo_db.ingest.scorers import common

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

MODEL_FILE = "320n.onnx"
INPUT_SIZE = 320
COLUMN = "nsfw_nudenet"
# NudeNet 3's classes, in the order of its output rows 4..21 (nudenet/nudenet.py).
LABELS = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
# The classes that make an image NSFW (male breasts, bellies, feet and armpits do not).
EXPOSED = (
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_EXPOSED",
    "BUTTOCKS_EXPOSED",
)
DETECTION_THRESHOLD = 0.2  # NudeDetector's: an anchor below it is no detection


def shipped_model_path() -> Path:
    """The detector inside the ``nudenet`` package."""
    nudenet = common.require("nudenet")
    path = Path(nudenet.__file__).parent / MODEL_FILE
    if not path.is_file():
        raise InputError(f"nudenet is installed but lacks {path}")
    return path


def exposed_scores(outputs: np.ndarray, classes: tuple[str, ...] = EXPOSED) -> np.ndarray:
    """Raw detector outputs (N, 4 + len(LABELS), anchors) -> (N,) float32 NSFW scores.

    Per anchor, its best class and that class's score (NudeNet's reading of an anchor); the
    image's score is the highest such score among anchors whose best class is in `classes`."""
    import numpy as np

    if outputs.ndim != 3 or outputs.shape[1] != 4 + len(LABELS):
        raise InputError(
            f"expected NudeNet outputs of shape (N, {4 + len(LABELS)}, anchors); "
            f"got {tuple(outputs.shape)}"
        )
    class_scores = outputs[:, 4:, :]  # (N, classes, anchors)
    best = class_scores.argmax(axis=1)  # (N, anchors)
    best_score = class_scores.max(axis=1)
    wanted = np.isin(best, [LABELS.index(name) for name in classes])
    scores = np.where(wanted, best_score, 0.0).max(axis=1, initial=0.0)
    return np.clip(scores, 0.0, 1.0).astype(np.float32)


def class_scores(outputs: np.ndarray) -> np.ndarray:
    """Raw detector outputs -> (N, len(LABELS)): per class, its best detection's score (0 when
    no anchor reads as that class)."""
    import numpy as np

    scores = outputs[:, 4:, :]
    best = scores.argmax(axis=1)[:, None, :] == np.arange(len(LABELS))[None, :, None]
    return np.where(best, scores, 0.0).max(axis=2).astype(np.float32)


class NudeNetScorer:
    """An ImageScorer: NudeNet's ONNX detector, batched, mapped to one score per image."""

    def __init__(self, model_path: str | Path | None = None, name: str = "nsfw") -> None:
        self.name = name
        self.columns = {COLUMN: "float32"}
        path = Path(model_path) if model_path is not None else shipped_model_path()
        self.session = common.onnx_session(path, "nsfw")
        outputs = self.session.get_outputs()
        if len(outputs) != 1 or len(self.session.get_inputs()) != 1:
            raise InputError(f"{path}: not a NudeNet detector (one input, one output expected)")
        self.input_name = self.session.get_inputs()[0].name
        size = common.fixed_input_size(self.session, INPUT_SIZE)
        self.preprocess = Preprocess(size, "pad", "bilinear")

    def raw_outputs(self, pixels: Any) -> np.ndarray:
        """(N, H, W, 3) uint8 -> the detector's (N, 22, anchors) float32 outputs."""
        import numpy as np

        batch = common.pixel_batch(pixels, self.preprocess)
        if len(batch) == 0:
            return np.zeros((0, 4 + len(LABELS), 0), dtype=np.float32)
        x = batch.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1.0 / 255.0)
        (outputs,) = self.session.run(None, {self.input_name: x})
        if outputs.ndim != 3 or outputs.shape[1] != 4 + len(LABELS):
            raise InputError(
                f"{self.name}: the model's output {tuple(outputs.shape)} is not NudeNet's "
                f"(N, {4 + len(LABELS)}, anchors)"
            )
        return outputs

    def score_images(self, pixels: Any) -> dict[str, np.ndarray]:
        """(N, H, W, 3) uint8 -> {"nsfw_nudenet": (N,) float32 in [0, 1]}."""
        return {COLUMN: exposed_scores(self.raw_outputs(pixels))}


@register("nsfw", "scorer")
def load_nsfw(checkpoint: str | None) -> NudeNetScorer:
    """``nsfw`` (NudeNet's shipped 320n model) or ``nsfw:/path/nudenet-export.onnx``."""
    if checkpoint is None:
        return NudeNetScorer()
    return NudeNetScorer(checkpoint, name=f"nsfw:{checkpoint}")
