"""The audit's decision: which candidate pairs are hits, by which method, at which thresholds.

In this order of evidence:

- ``local``: inliers >= ``min_inliers`` and coverage >= ``min_coverage`` (local features
  matched under one similarity transform, :mod:`coyo_db.audit.verify`); where the colour
  layouts were compared (a plain reference) and the inliers are fewer than ``local_alone``,
  the layouts must agree too (``min_layout_local``): grey local features match the same flat
  shape in other colours, with a few dozen inliers at most;
- ``phash_exact``: equal pHash, COYO's own rule, the audit's floor: it holds whatever the
  other evidence says, for every reference but a blank one (an empty frame);
- ``layout``: colour-layout similarity >= ``min_layout`` (:mod:`coyo_db.audit.layout`),
  computed for references whose local features are too few to decide (plain images);
- ``descriptor``: cosine >= ``descriptor_cosine``;
- ``phash_radius``: Hamming <= ``phash_radius``.

The last two are *loose* matching: they never fire for low-information images (reference or
dataset side, see :func:`coyo_db.audit.low_info.low_information`), which match half the web.
A blank reference is never hit: a copy of an empty frame shows nothing of a test set; its
candidates keep their evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coyo_db.errors import InputError

METHODS = ("local", "phash_exact", "layout", "descriptor", "phash_radius")


@dataclass(frozen=True)
class OperatingPoint:
    """Thresholds of the audit; :data:`DEFAULT_POINT` is tuned on the planted-copy benchmark's
    dev split (see docs/audit.md)."""

    knn: int = 5
    # a low-information image also takes the low-information references among its nearest
    # knn_low_info: smooth images crowd together in a CNN's descriptor space
    knn_low_info: int = 20
    candidate_cosine: float = 0.3
    # candidates found by the descriptor alone are verified from this cosine up (the default,
    # candidate_cosine, verifies them all); raise it with a discriminative descriptor
    verify_cosine: float = 0.3
    candidate_radius: int = 12
    min_inliers: int = 10
    min_coverage: float = 0.05
    min_layout: float = 0.85  # layout.LAYOUT_MIN_SIMILARITY, chosen on the plain dev split
    min_layout_local: float = 0.75  # a local match on a plain reference needs this layout...
    local_alone: int = 30  # ...unless it has this many inliers
    descriptor_cosine: float = 0.89
    phash_radius: int = 2

    def __post_init__(self) -> None:
        if not -1.0 <= self.verify_cosine <= 1.0:
            raise InputError(f"--verify-above must lie in [-1, 1], not {self.verify_cosine}")


DEFAULT_POINT = OperatingPoint()


def decide(
    hamming: np.ndarray,
    cosine: np.ndarray,
    inliers: np.ndarray,
    coverage: np.ndarray,
    low_info: np.ndarray,
    point: OperatingPoint = DEFAULT_POINT,
    *,
    blank: np.ndarray | None = None,
    layout: np.ndarray | None = None,
) -> tuple[list[str | None], np.ndarray]:
    """The method that makes each candidate pair a hit (None: not a hit) and its 0..1 score.

    `blank`: the reference is an empty frame; `layout`: the colour-layout similarity (NaN
    where it was not computed)."""
    n = len(hamming)
    usable = ~np.asarray(blank if blank is not None else np.zeros(n, bool), dtype=bool)
    loose = usable & ~np.asarray(low_info, dtype=bool)
    layout = np.full(n, np.nan, np.float32) if layout is None else np.asarray(layout, np.float32)
    layout_known = np.nan_to_num(layout, nan=-1.0)
    layout_agrees = (
        np.isnan(layout)
        | (layout_known >= point.min_layout_local)
        | (np.asarray(inliers) >= point.local_alone)
    )
    rules = [
        (
            "local",
            usable
            & (inliers >= point.min_inliers)
            & (coverage >= point.min_coverage)
            & layout_agrees,
            np.minimum(1.0, inliers / 100.0),
        ),
        ("phash_exact", usable & (hamming == 0), 1.0 - hamming / 64.0),
        ("layout", usable & (layout_known >= point.min_layout), layout_known),
        ("descriptor", loose & (cosine >= point.descriptor_cosine), cosine),
        ("phash_radius", loose & (hamming <= point.phash_radius), 1.0 - hamming / 64.0),
    ]
    method: list[str | None] = [None] * n
    score = np.zeros(n, dtype=np.float32)
    decided = np.zeros(n, dtype=bool)
    for name, mask, value in rules:
        new = mask & ~decided
        for i in np.flatnonzero(new):
            method[i] = name
        score[new] = np.asarray(value, dtype=np.float32)[new] if np.ndim(value) else value
        decided |= new
    # pairs that are no hit keep their best evidence as the score
    rest = ~decided
    best = np.maximum(cosine[rest], np.minimum(1.0, inliers[rest] / 100.0))
    score[rest] = np.maximum(best, np.maximum(layout_known[rest], 0.0))
    return method, score
