"""The audit's decision: which candidate pairs are hits, by which method, at which thresholds.

In this order of evidence: ``local`` (inliers >= ``min_inliers`` and coverage >=
``min_coverage``), ``phash_exact`` (equal pHash), ``descriptor`` (cosine >=
``descriptor_cosine``), ``phash_radius`` (Hamming <= ``phash_radius``). The pHash and descriptor
rules are *loose* matching: they never fire for low-information images (reference or dataset
side, see :func:`coyo_db.audit.low_info.low_information`), which match half the web.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("local", "phash_exact", "descriptor", "phash_radius")


@dataclass(frozen=True)
class OperatingPoint:
    """Thresholds of the audit; :data:`DEFAULT_POINT` is tuned on the planted-copy benchmark's
    dev split (see docs/audit.md)."""

    knn: int = 5
    candidate_cosine: float = 0.3
    candidate_radius: int = 12
    min_inliers: int = 10
    min_coverage: float = 0.05
    descriptor_cosine: float = 0.89
    phash_radius: int = 2


DEFAULT_POINT = OperatingPoint()


def decide(
    hamming: np.ndarray,
    cosine: np.ndarray,
    inliers: np.ndarray,
    coverage: np.ndarray,
    low_info: np.ndarray,
    point: OperatingPoint = DEFAULT_POINT,
) -> tuple[list[str | None], np.ndarray]:
    """The method that makes each candidate pair a hit (None: not a hit) and its 0..1 score."""
    loose = ~np.asarray(low_info, dtype=bool)
    rules = [
        (
            "local",
            (inliers >= point.min_inliers) & (coverage >= point.min_coverage),
            np.minimum(1.0, inliers / 100.0),
        ),
        ("phash_exact", loose & (hamming == 0), 1.0 - hamming / 64.0),
        ("descriptor", loose & (cosine >= point.descriptor_cosine), cosine),
        ("phash_radius", loose & (hamming <= point.phash_radius), 1.0 - hamming / 64.0),
    ]
    method: list[str | None] = [None] * len(hamming)
    score = np.zeros(len(hamming), dtype=np.float32)
    decided = np.zeros(len(hamming), dtype=bool)
    for name, mask, value in rules:
        new = mask & ~decided
        for i in np.flatnonzero(new):
            method[i] = name
        score[new] = np.asarray(value, dtype=np.float32)[new] if np.ndim(value) else value
        decided |= new
    # pairs that are no hit keep their best evidence as the score
    rest = ~decided
    score[rest] = np.maximum(cosine[rest], np.minimum(1.0, inliers[rest] / 100.0))
    return method, score
