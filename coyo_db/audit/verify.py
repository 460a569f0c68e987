"""Copy verification with local features: tells a copy from a look-alike.

Two images are a copy when many local features (RootSIFT on the image scaled to at most
:data:`MAX_SIDE` pixels, contrast-equalised with CLAHE) match under one similarity transform
(scale, rotation, translation: what resizing, cropping, padding and re-encoding do), found by RANSAC
(``cv2.estimateAffinePartial2D``). A look-alike (another photo of the same landmark, another
galaxy, the same breed of cat) shares a few features at most, and never under one transform.

Flips: SIFT is not mirror-invariant, so a flipped copy is verified against the mirror image of
the reference's features (computed once per reference, on demand).

Evidence returned per pair: ``inliers`` (matches consistent with the transform), ``coverage``
(the share of the reference's area spanned by the inliers' convex hull: a shared logo or caption
covers little of it, a copy most of it), ``scale`` and ``flipped``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from coyo_db.lru import Lru

if TYPE_CHECKING:
    import cv2  # noqa: F401

    from coyo_db.audit.feature_store import FeatureStore

MAX_SIDE = 512
MIN_SIDE = 384  # smaller images are upscaled to this long side before SIFT
N_FEATURES = 1500
RATIO = 0.8  # Lowe's ratio test
CLAHE_CLIP = 3.0
RANSAC_PIXELS = 6.0  # reprojection error, at MAX_SIDE
MIN_SCALE, MAX_SCALE = 0.15, 8.0
RANSAC_SEED = 12345


@dataclass(frozen=True)
class Features:
    """Keypoint coordinates (N, 2), RootSIFT descriptors (N, 128) and the image size (w, h)."""

    points: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.points)


@dataclass(frozen=True)
class Verdict:
    inliers: int
    coverage: float
    scale: float
    flipped: bool


NO_MATCH = Verdict(0, 0.0, 0.0, False)


def _cv2():  # type: ignore[no-untyped-def]
    from coyo_db.ingest.models.common import require

    return require("cv2", "opencv-python-headless", "scores")


def grey_image(data: bytes, max_side: int = MAX_SIDE) -> np.ndarray | None:
    """Encoded image -> uint8 grey (H, W), EXIF-oriented, at most `max_side` a side."""
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", (max_side, max_side))
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                canvas = Image.new("RGB", img.size, (255, 255, 255))
                canvas.paste(rgba, mask=rgba.getchannel("A"))
                img = canvas
            img = img.convert("L")
            img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            if max(img.size) < MIN_SIDE:  # small copies: too few keypoints at their own size
                scale = MIN_SIDE / max(img.size)
                size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
                img = img.resize(size, Image.Resampling.BICUBIC)
            return np.asarray(img)
    except Exception:  # an unreadable image verifies nothing
        return None


def features(grey: np.ndarray | None) -> Features:
    """RootSIFT features of a grey image (empty when it has none)."""
    return root_sift(*sift_of(grey))


def sift_of(grey: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Keypoint coordinates (N, 2), OpenCV's SIFT descriptors (N, 128; whole numbers 0-255 as
    float32) and the size (w, h) of a grey image."""
    if grey is None or grey.size == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), (0, 0)
    cv2 = _cv2()
    # local contrast equalisation: dark photos (night sky, low-key scenes) and smooth
    # gradients give SIFT almost no keypoints otherwise, and brightness changes matter less
    grey = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=(8, 8)).apply(grey)
    sift = cv2.SIFT_create(nfeatures=N_FEATURES)
    keypoints, desc = sift.detectAndCompute(grey, None)
    size = (int(grey.shape[1]), int(grey.shape[0]))
    if desc is None or not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), size
    points = np.array([k.pt for k in keypoints], dtype=np.float32)
    return points, desc, size


def root_sift(points: np.ndarray, sift: np.ndarray, size: tuple[int, int]) -> Features:
    """:class:`Features` from SIFT descriptors: L1-normalised, square-rooted (RootSIFT)."""
    if not len(sift):
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), size)
    desc = np.asarray(sift, dtype=np.float32)
    desc = desc / (np.abs(desc).sum(axis=1, keepdims=True) + 1e-7)
    return Features(np.asarray(points, np.float32), np.sqrt(desc).astype(np.float32), size)


def features_of(data: bytes | None) -> Features:
    return features(grey_image(data) if data else None)


def match(query: Features, ref: Features) -> tuple[int, float, float]:
    """(inliers, coverage of the reference, scale) of the best similarity transform."""
    if len(query) < 3 or len(ref) < 3:
        return 0, 0.0, 0.0
    cv2 = _cv2()
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs = matcher.knnMatch(query.descriptors, ref.descriptors, k=2)
    good = [
        m
        for m, *rest in (p for p in pairs if p)
        if not rest or m.distance < RATIO * rest[0].distance
    ]
    if len(good) < 3:
        return 0, 0.0, 0.0
    src = query.points[[m.queryIdx for m in good]]
    dst = ref.points[[m.trainIdx for m in good]]
    scale_px = max(ref.size) / MAX_SIDE if max(ref.size) else 1.0
    # RANSAC samples at random: seeded for each pair, so a pair's evidence does not depend on
    # the pairs verified before it (batch size, order, engine)
    cv2.setRNGSeed(RANSAC_SEED)
    model, mask = cv2.estimateAffinePartial2D(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=RANSAC_PIXELS * max(scale_px, 0.25),
        maxIters=2000,
        confidence=0.99,
    )
    if model is None or mask is None:
        return 0, 0.0, 0.0
    scale = float(np.hypot(model[0, 0], model[1, 0]))
    if not MIN_SCALE <= scale <= MAX_SCALE:
        return 0, 0.0, scale
    inlier = mask.ravel().astype(bool)
    # one keypoint of the reference matched many times is one piece of evidence, not many
    count = len(np.unique(np.asarray([m.trainIdx for m in good])[inlier]))
    coverage = 0.0
    if count >= 3:
        hull = cv2.convexHull(dst[inlier].reshape(-1, 1, 2))
        area = float(ref.size[0] * ref.size[1]) or 1.0
        coverage = float(cv2.contourArea(hull)) / area
    return int(count), coverage, scale


class ReferenceFeatures:
    """Features of references (and of their mirror images), computed once, least recently used
    dropped beyond `capacity`; with a `store`, also kept on disk for later audits
    (:mod:`coyo_db.audit.feature_store`), `names` giving each key's (registration key,
    ref_id) there."""

    def __init__(
        self,
        capacity: int = 1024,
        store: FeatureStore | None = None,
        names: Callable[[object], tuple[str, int]] | None = None,
    ) -> None:
        self.store, self.names = store, names
        # shared by verification threads; features are computed outside its lock (two
        # threads may compute the same reference's: the same values, the same stored bytes)
        self._cache = Lru(capacity)

    def get(self, key: object, grey: Callable[[], np.ndarray | None], flipped: bool) -> Features:
        """The features of reference `key`; `grey()` gives its grey image, called only when
        they are neither in memory nor stored."""
        slot = (key, flipped)
        cached = self._cache.get(slot)
        if cached is not None:
            return cached
        name = self.names(key) if self.store is not None and self.names is not None else None
        stored = self.store.load(*name, flipped) if name is not None else None
        if stored is not None:
            value = root_sift(*stored)
        else:
            plain = grey()
            image = plain[:, ::-1].copy() if (flipped and plain is not None) else plain
            points, sift, size = sift_of(image)
            value = root_sift(points, sift, size)
            if name is not None and plain is not None:
                as_bytes = np.asarray(sift, np.uint8)
                if np.array_equal(sift, as_bytes):  # stored only where the bytes are exact
                    self.store.save(*name, flipped, points, as_bytes, size)
        self._cache.put(slot, value)
        return value

    def __contains__(self, slot: tuple[object, bool]) -> bool:
        """Whether `slot` = (key, flipped) is available without the reference's image."""
        if slot in self._cache:
            return True
        if self.store is None or self.names is None:
            return False
        return self.store.has(*self.names(slot[0]), slot[1])


def verify(
    query: Features,
    ref_plain: Features,
    ref_mirror: Features | None,
    *,
    flip_first: bool = False,
) -> Verdict:
    """The better of matching the query against the reference and its mirror image.

    `ref_mirror` None skips the mirror (the caller tries it only when the plain match fails).
    """
    order = (
        [(ref_mirror, True), (ref_plain, False)]
        if flip_first
        else [
            (ref_plain, False),
            (ref_mirror, True),
        ]
    )
    best = NO_MATCH
    for ref, flipped in order:
        if ref is None:
            continue
        inliers, coverage, scale = match(query, ref)
        if inliers > best.inliers:
            best = Verdict(inliers, coverage, scale, flipped)
    return best
