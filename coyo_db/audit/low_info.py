"""Low-information images: blank, near-uniform, masks, flat shapes and smooth images.

Such images match half the web by pHash and by global descriptors; reference sets flag them
(`refset_images.low_info`) and the audit keeps them out of its loose matching.
"""

from __future__ import annotations

import numpy as np

# Thresholds, on the descriptor's pixels (a few hundred pixels a side).
UNIFORM_STD = 8.0  # grey-level standard deviation below this: blank or near-uniform
BLANK_SHARE = 0.9  # one colour (16 levels a channel) over this share: a blank with a mark
DOMINANT_SHARE = 0.6  # a background over this share, and flat pixels on it: cut-out or mask
FEW_COLOURS = 8  # at most this many colours (8 levels a channel) over 99% of the pixels
BLANK_STD = 3.0  # grey-level standard deviation below this, and no mark: blank
MARK_LEVELS = 8.0  # a pixel this far from the median grey level is part of a mark
MARK_SHARE = 0.001  # marks on this share of the pixels: not an empty frame (a faint logo)
BLANK_REASON = "blank"  # no audit hit can be about a blank image
STEP = 6  # grey levels between neighbouring pixels that make an edge or texture
SMOOTH_SHARE = 0.05  # under this share of such pixels: smooth (gradients, renders, flat art)


def low_information(pixels: np.ndarray) -> str | None:
    """Why an (H, W, 3) uint8 image carries too little to match safely, or None.

    Flagged: blank images (:data:`BLANK_REASON`: an empty frame, which no audit hit can be
    about: almost even, and no mark on :data:`MARK_SHARE` of it), near-uniform ones (a faint
    or tiny mark), one colour over :data:`BLANK_SHARE` of the image
    (a blank frame with a small mark), a handful of colours over 99% of the pixels (masks, flat
    icons), a flat shape on one colour (a silhouette or mask cut out on a background: the
    background over :data:`DOMINANT_SHARE` and the rest flat), and smooth images (fewer than
    :data:`SMOOTH_SHARE` of the pixels on an edge or texture: gradients, renders, products on
    white; the threshold separates the plain references of the audit benchmark's dev split
    from all but its smoothest photographs). A detailed figure cut out on white is not flagged.
    """
    rgb = pixels.reshape(-1, 3)
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    spread = float(grey.std())
    if spread < BLANK_STD and _marked_share(grey) < MARK_SHARE:
        return BLANK_REASON
    if spread < UNIFORM_STD:
        return "near-uniform"
    q16 = (rgb >> 4).astype(np.int32)
    codes = (q16[:, 0] << 8) | (q16[:, 1] << 4) | q16[:, 2]
    counts = np.bincount(codes, minlength=4096)
    dominant = int(counts.argmax())
    share = counts[dominant] / len(codes)
    if share >= BLANK_SHARE:
        return f"one colour over {100 * share:.0f}% of the image"
    q8 = ((rgb >> 5).astype(np.int32) * np.array([64, 8, 1])).sum(axis=1)
    covering = _colours_covering(q8, 0.99)
    if covering <= FEW_COLOURS:
        return f"{covering} colours"
    if share >= DOMINANT_SHARE:
        rest = codes != dominant
        rest_grey = grey[rest]
        if _colours_covering(q8[rest], 0.95) <= FEW_COLOURS or float(rest_grey.std()) < 12:
            return "a flat shape on one colour (cut-out or mask)"
    if pixels.ndim == 3 and _textured_share(grey.reshape(pixels.shape[:2])) < SMOOTH_SHARE:
        return "smooth (little texture)"
    return None


def _marked_share(grey: np.ndarray) -> float:
    """The share of pixels more than :data:`MARK_LEVELS` from the median grey level: a mark,
    however faint or small, on an otherwise even frame (JPEG noise stays within a few levels)."""
    return float((np.abs(grey - np.median(grey)) > MARK_LEVELS).mean())


def _textured_share(grey: np.ndarray) -> float:
    """The share of pixels that differ from a neighbour by more than :data:`STEP` levels."""
    dx = np.abs(np.diff(grey, axis=1))[:-1, :]
    dy = np.abs(np.diff(grey, axis=0))[:, :-1]
    return float((np.maximum(dx, dy) > STEP).mean()) if dx.size else 0.0


def _colours_covering(codes: np.ndarray, share: float) -> int:
    """How many of the most frequent codes cover `share` of `codes`."""
    if len(codes) == 0:
        return 0
    counts = np.sort(np.bincount(codes))[::-1]
    return int(np.searchsorted(np.cumsum(counts), share * len(codes)) + 1)
