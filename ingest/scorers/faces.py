"""``faces``: how many faces an image shows. OpenCV's Haar cascade offline, SCRFD from a file.

``faces`` (column ``num_faces_opencv``, int32) runs the frontal-face Haar cascade that
``opencv-python-headless`` 4.x ships (``cv2.data.haarcascades``; OpenCV 5 no longer ships the
files) on the grey image, letterboxed to 512 on black by the decode workers. The parameters:

- ``scaleFactor=1.1``: the image pyramid steps by 10%, OpenCV's default and the usual choice
  (1.05 ran at half the speed and found faces in coins, gravel and cell tissue; 1.2 is twice
  as fast and coarser);
- ``minNeighbors=6``: a face must be found by 6 overlapping windows (with the tutorials' 5,
  gravel, grass, a clock and cell tissue had faces at 640);
- ``minSize=24``: the cascade's own window, 24 / 512 = 5% of an image's longer side; smaller
  faces are below what a Haar cascade reads reliably;
- 512 rather than 640: at 640 the same parameters found faces in gravel and cell tissue, and
  ran at two thirds of the speed. No histogram equalisation: it added false faces.

Measured on scikit-image's sample photos: one face on the astronaut, none on the coffee cup,
the cat, the rocket, textures and text; coin reliefs do read as faces. A 2-core CPU runs
10-17 images/s (the count runs one image at a time; OpenCV parallelises inside).

``faces:/path/cascade.xml`` runs another OpenCV cascade with the same parameters.

``faces-scrfd:/path/scrfd.onnx`` (column ``num_faces_scrfd``, int32) runs an InsightFace SCRFD
export (``det_10g.onnx``, ``scrfd_2.5g_bnkps.onnx``, ...) with ONNX Runtime and decodes it as
InsightFace does: RGB, ``(x - 127.5) / 128``, letterboxed to 640 (or the model's fixed size);
outputs are per-stride scores, then box distances, then (optionally) keypoints -- 6 or 9
outputs for strides 8/16/32 with 2 anchors per location, 10 or 15 for strides 8..128 with 1;
anchor centres on each stride's grid, boxes ``centre -/+ distance * stride``; detections scoring
at least 0.5, then NMS at IoU 0.4. The face count is what survives. :func:`decode_scrfd` holds
the decoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coyo_db.errors import InputError
from coyo_db.ingest.image_types import Preprocess
from coyo_db.ingest.registry import register
from coyo_db.ingest.scorers import common

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

HAAR_FILE = "haarcascade_frontalface_default.xml"
HAAR_SIZE = 512
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 6
MIN_SIZE = 24

SCRFD_SIZE = 640
SCRFD_MEAN = 127.5
SCRFD_STD = 128.0
SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.4


def shipped_cascade_path() -> Path:
    """OpenCV's frontal-face cascade, as opencv-python-headless 4.x ships it."""
    cv2 = common.require("cv2", "opencv-python-headless")
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / HAAR_FILE
    if not folder or not path.is_file():
        raise InputError(
            f"this OpenCV ({cv2.__version__}) does not ship {HAAR_FILE}: "
            "pip install 'opencv-python-headless>=4.8,<5'"
        )
    return path


class HaarFaces:
    """An ImageScorer: the number of frontal faces OpenCV's Haar cascade finds."""

    def __init__(self, cascade: str | Path | None = None, name: str = "faces") -> None:
        cv2 = common.require("cv2", "opencv-python-headless")
        path = Path(cascade).expanduser() if cascade is not None else shipped_cascade_path()
        if not path.is_file():
            raise InputError(f"faces: cascade file not found: {path}")
        try:
            self.classifier = cv2.CascadeClassifier(str(path))
            loaded = not self.classifier.empty()
        except Exception:  # cv2.error on malformed XML
            loaded = False
        if not loaded:
            raise InputError(f"{path}: not an OpenCV cascade classifier (XML) file")
        self.name = name
        self.columns = {"num_faces_opencv": "int32"}
        self.preprocess = Preprocess(HAAR_SIZE, "pad", "bilinear")

    def detect(self, image: np.ndarray) -> np.ndarray:
        """One (H, W, 3) uint8 RGB image -> (faces, 4) int boxes (x, y, w, h)."""
        import numpy as np

        cv2 = common.require("cv2", "opencv-python-headless")
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes = self.classifier.detectMultiScale(
            grey,
            scaleFactor=SCALE_FACTOR,
            minNeighbors=MIN_NEIGHBORS,
            minSize=(MIN_SIZE, MIN_SIZE),
        )
        return np.asarray(boxes, dtype=np.int32).reshape(-1, 4)

    def score_images(self, pixels: Any) -> dict[str, np.ndarray]:
        """(N, H, W, 3) uint8 -> {"num_faces_opencv": (N,) int32}."""
        import numpy as np

        batch = common.pixel_batch(pixels, self.preprocess)
        # OpenCV runs one image at a time (it parallelises inside detectMultiScale).
        counts = [len(self.detect(image)) for image in batch]
        return {"num_faces_opencv": np.asarray(counts, dtype=np.int32)}


@dataclass(frozen=True)
class ScrfdLayout:
    """How an SCRFD export lays out its outputs."""

    strides: tuple[int, ...]
    anchors: int
    keypoints: bool

    @classmethod
    def from_output_count(cls, count: int) -> ScrfdLayout | None:
        """InsightFace's rule: 6 / 9 outputs -> strides 8, 16, 32 with 2 anchors; 10 / 15 ->
        strides 8..128 with 1 anchor; 9 and 15 carry keypoints."""
        if count in (6, 9):
            return cls((8, 16, 32), 2, count == 9)
        if count in (10, 15):
            return cls((8, 16, 32, 64, 128), 1, count == 15)
        return None


def anchor_centres(height: int, width: int, stride: int, anchors: int) -> np.ndarray:
    """(height/stride * width/stride * anchors, 2) float32 (x, y) centres, row-major, each
    location's anchors adjacent (InsightFace's order)."""
    import numpy as np

    rows, cols = height // stride, width // stride
    ys, xs = np.mgrid[:rows, :cols]
    centres = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
    return np.repeat(centres, anchors, axis=0) if anchors > 1 else centres


def decode_scrfd(
    outputs: list[np.ndarray],
    layout: ScrfdLayout,
    input_size: tuple[int, int],
    score_threshold: float = SCORE_THRESHOLD,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batched SCRFD outputs (each (N, locations * anchors, C)) -> per image (boxes (M, 4) as
    x1, y1, x2, y2 in input pixels, scores (M,)) of the detections at `score_threshold`,
    before NMS."""
    import numpy as np

    height, width = input_size
    levels = len(layout.strides)
    if len(outputs) < 2 * levels:
        raise InputError(f"SCRFD: {len(outputs)} outputs, {2 * levels} or more expected")
    batch = outputs[0].shape[0]
    boxes: list[list[np.ndarray]] = [[] for _ in range(batch)]
    scores: list[list[np.ndarray]] = [[] for _ in range(batch)]
    for level, stride in enumerate(layout.strides):
        centres = anchor_centres(height, width, stride, layout.anchors)
        score = outputs[level].reshape(batch, -1)
        distance = outputs[level + levels].reshape(batch, -1, 4)
        if score.shape[1] != len(centres) or distance.shape[1] != len(centres):
            raise InputError(
                f"SCRFD: stride {stride} output holds {score.shape[1]} scores and "
                f"{distance.shape[1]} boxes; a {width} x {height} input gives {len(centres)} "
                "anchors (not an SCRFD layout)"
            )
        distance = distance * np.float32(stride)
        level_boxes = np.concatenate(
            [centres[None] - distance[..., :2], centres[None] + distance[..., 2:]], axis=-1
        )
        keep = score >= score_threshold
        for image in np.flatnonzero(keep.any(axis=1)):
            boxes[image].append(level_boxes[image][keep[image]])
            scores[image].append(score[image][keep[image]])
    return [
        (
            np.concatenate(b).astype(np.float32) if b else np.zeros((0, 4), np.float32),
            np.concatenate(s).astype(np.float32) if s else np.zeros(0, np.float32),
        )
        for b, s in zip(boxes, scores, strict=True)
    ]


def count_after_nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_THRESHOLD
) -> int:
    """How many of `boxes` (x1, y1, x2, y2) survive greedy NMS at `iou_threshold`."""
    if len(boxes) <= 1:
        return len(boxes)
    cv2 = common.require("cv2", "opencv-python-headless")
    xywh = boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    kept = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou_threshold)
    return len(kept)


class ScrfdFaces:
    """An ImageScorer: the number of faces an InsightFace SCRFD ONNX model finds."""

    def __init__(self, model_path: str | Path, name: str = "faces-scrfd") -> None:
        self.name = name
        self.columns = {"num_faces_scrfd": "int32"}
        path = Path(model_path).expanduser()
        self.session = common.onnx_session(path, "faces-scrfd")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        layout = ScrfdLayout.from_output_count(len(outputs))
        if len(inputs) != 1 or layout is None:
            raise InputError(
                f"{path}: not an SCRFD model (one input and 6, 9, 10 or 15 outputs expected; "
                f"it has {len(inputs)} and {len(outputs)})"
            )
        self.layout = layout
        self.input_name = inputs[0].name
        size = common.fixed_input_size(self.session, SCRFD_SIZE)
        self.preprocess = Preprocess(size, "pad", "bilinear")
        batch_dim = inputs[0].shape[0] if len(inputs[0].shape) == 4 else 1
        # Most exports fix batch 1 and drop the batch axis from their outputs (InsightFace's
        # "batched" flag); those run one image per call.
        self.batched = batch_dim != 1 and len(outputs[0].shape) == 3

    def raw_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """(N, size, size, 3) uint8 -> the model's outputs, each with a leading batch axis."""
        import numpy as np

        x = batch.transpose(0, 3, 1, 2).astype(np.float32)
        x = (x - np.float32(SCRFD_MEAN)) * np.float32(1.0 / SCRFD_STD)
        if self.batched:
            return self.session.run(None, {self.input_name: x})
        per_image = [self.session.run(None, {self.input_name: x[i : i + 1]}) for i in range(len(x))]
        return [
            np.stack([outs[k].reshape(-1, outs[k].shape[-1]) for outs in per_image])
            for k in range(len(per_image[0]))
        ]

    def score_images(self, pixels: Any) -> dict[str, np.ndarray]:
        """(N, H, W, 3) uint8 -> {"num_faces_scrfd": (N,) int32}."""
        import numpy as np

        batch = common.pixel_batch(pixels, self.preprocess)
        if len(batch) == 0:
            return {"num_faces_scrfd": np.zeros(0, dtype=np.int32)}
        size = self.preprocess.size
        detections = decode_scrfd(self.raw_outputs(batch), self.layout, (size, size))
        counts = [count_after_nms(boxes, scores) for boxes, scores in detections]
        return {"num_faces_scrfd": np.asarray(counts, dtype=np.int32)}


@register("faces", "scorer")
def load_faces(checkpoint: str | None) -> HaarFaces:
    """``faces`` (OpenCV's shipped frontal-face cascade) or ``faces:/path/cascade.xml``."""
    if checkpoint is None:
        return HaarFaces()
    return HaarFaces(checkpoint, name=f"faces:{checkpoint}")


@register("faces-scrfd", "scorer")
def load_faces_scrfd(checkpoint: str | None) -> ScrfdFaces:
    """``faces-scrfd:/path/scrfd.onnx``: an InsightFace SCRFD export."""
    if checkpoint is None:
        raise InputError(
            "faces-scrfd needs a model file: --scores faces-scrfd:/path/det_10g.onnx "
            "(InsightFace's SCRFD); 'faces' runs OpenCV's shipped cascade"
        )
    return ScrfdFaces(checkpoint, name=f"faces-scrfd:{checkpoint}")
