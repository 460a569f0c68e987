"""The centre a reference set's descriptors are compared around, from the references alone.

CNN descriptors share a large common component: unrelated photos score cosine 0.6-0.9 raw.
Removing a mean before the cosine spreads them out, so that one threshold separates copies
from unrelated images. The audit removes, for each reference set, the mean of that set's own
descriptors (plain and mirrored), shrunk towards a fixed *background* mean of the descriptor
model (:data:`BACKGROUND_PICTURES` procedural pictures, always the same) with the weight of
:data:`BACKGROUND_WEIGHT` descriptors: a large set is centred on itself, a set of five images
mostly on the background, and no set on a single image.

The centre depends on the set and the model only, never on the dataset images audited, so an
image is a hit or not whatever the batch size, ``--where``, scan order or engine. It is
recomputed from the stored descriptors when an audit loads a set (a mean: milliseconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from coyo_db.ingest.models.copy_descriptors import CopyDescriptor

BACKGROUND_PICTURES = 32
BACKGROUND_WEIGHT = 256.0
BACKGROUND_SEED = 20240601
_BACKGROUNDS: dict[str, np.ndarray] = {}  # model name -> its background mean


def refset_centre(descriptors: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The centre of a set from its (2N, D) descriptors (plain and mirrored) and the model's
    background mean: their mean, shrunk towards the background."""
    total = np.asarray(descriptors, np.float64).sum(axis=0)
    weight = BACKGROUND_WEIGHT
    centre = (total + weight * np.asarray(background, np.float64)) / (len(descriptors) + weight)
    return centre.astype(np.float32)


def background_mean(model: CopyDescriptor) -> np.ndarray:
    """The mean descriptor of the fixed procedural pictures and their mirror images, for
    `model` (computed once per model and process)."""
    from coyo_db.ingest.models.copy_descriptors import flip_pixels

    if model.name not in _BACKGROUNDS:
        pixels = background_pixels(model.preprocess.size)
        plain = np.asarray(model.describe(pixels), np.float64)
        mirror = np.asarray(model.describe(flip_pixels(pixels)), np.float64)
        _BACKGROUNDS[model.name] = np.concatenate([plain, mirror]).mean(axis=0).astype(np.float32)
    return _BACKGROUNDS[model.name]


def background_pixels(size: int) -> np.ndarray:
    """(BACKGROUND_PICTURES, size, size, 3) uint8: seeded procedural pictures (a noisy
    two-colour gradient with a few filled shapes), the same in every process."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(BACKGROUND_SEED)
    out = np.zeros((BACKGROUND_PICTURES, size, size, 3), np.uint8)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    for i in range(BACKGROUND_PICTURES):
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        pixels = (top * (1 - ramp) + bottom * ramp).repeat(size, axis=1)
        pixels += rng.normal(0, 6, pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = (int(v) for v in rng.integers(0, size, 2))
            width, height = (int(v) for v in rng.integers(size // 10, size // 2, 2))
            x1, y1 = x0 + width, y0 + height
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((x0, y0, x1, y1), fill=colour)
        out[i] = np.asarray(image)
    return out
