"""Candidates and their evidence for one batch of described dataset images.

1. **Candidates.** Each image's copy descriptor is searched in the references' FAISS
   inner-product index (plain and mirrored descriptors: flip-aware); the
   :attr:`OperatingPoint.knn` nearest references at cosine >= ``candidate_cosine`` are
   candidates. So are references whose pHash lies within ``candidate_radius`` bits of the
   image's (a FAISS binary index; exact equality is COYO's own rule).
2. **Verification.** Every candidate pair is matched with local features (RootSIFT + RANSAC
   similarity transform, against the reference and its mirror image;
   :mod:`coyo_db.audit.verify`), giving inliers and the share of the reference they cover.
3. **Decision** (:func:`coyo_db.audit.decision.decide`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from coyo_db.audit.decision import OperatingPoint, decide
from coyo_db.audit.references import References, phash_bytes, reference_greys
from coyo_db.catalog import tables


@dataclass
class DescribedBatch:
    """Good dataset images of one batch with what the stage computed for them."""

    ids: np.ndarray  # int64
    shards: list[str]
    members: list[str]
    phash: np.ndarray  # uint64
    data: list[bytes | None]  # the encoded images (local features are computed on them)
    descriptors: np.ndarray  # (N, D) as the model gives them, before centring
    low_info: np.ndarray  # bool

    @classmethod
    def concat(cls, batches: list[DescribedBatch]) -> DescribedBatch:
        return cls(
            ids=np.concatenate([b.ids for b in batches]),
            shards=[s for b in batches for s in b.shards],
            members=[m for b in batches for m in b.members],
            phash=np.concatenate([b.phash for b in batches]),
            data=[d for b in batches for d in b.data],
            descriptors=np.concatenate([b.descriptors for b in batches]),
            low_info=np.concatenate([b.low_info for b in batches]),
        )


def match_batch(
    batch: DescribedBatch, refs: References, point: OperatingPoint, timings: dict[str, float]
) -> pa.Table:
    """Every candidate pair of `batch` with its evidence and decision, as candidate rows."""
    from coyo_db.audit.verify import features, grey_image, verify

    t0 = time.perf_counter()
    if refs.index is None:
        refs.build_index(batch.descriptors)
    vectors = refs.centre(batch.descriptors)
    n = len(refs)
    k = min(point.knn * 2, 2 * n)
    sims, idx = refs.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    # pair -> found by; the plain and mirrored entry of one reference fold into one pair
    pairs: dict[tuple[int, int], str] = {}
    for qi in range(len(vectors)):
        seen = 0
        for sim, j in zip(sims[qi], idx[qi], strict=True):
            if j < 0 or seen >= point.knn:
                break
            key = (qi, int(j % n))
            if key in pairs:
                continue
            seen += 1
            if sim >= point.candidate_cosine:
                pairs[key] = "knn"
    lims, _, labels = refs.binary.range_search(phash_bytes(batch.phash), point.candidate_radius + 1)
    for qi in range(len(vectors)):
        for pos in range(lims[qi], lims[qi + 1]):
            key = (qi, int(labels[pos]))
            pairs[key] = "knn+phash" if pairs.get(key) == "knn" else "phash"
    t1 = time.perf_counter()
    timings["search"] = timings.get("search", 0.0) + t1 - t0
    if not pairs:
        return tables.CONTAMINATION_CANDIDATES.empty()

    keys = sorted(pairs)
    q_index = np.array([q for q, _ in keys])
    r_index = np.array([r for _, r in keys])
    # cosines and Hamming distances for every pair, whichever stage found it
    plain_vecs = refs.index.reconstruct_batch(r_index.astype(np.int64))
    mirror_vecs = refs.index.reconstruct_batch((r_index + n).astype(np.int64))
    cos_plain = np.einsum("ij,ij->i", vectors[q_index], plain_vecs)
    cos_mirror = np.einsum("ij,ij->i", vectors[q_index], mirror_vecs)
    cosine = np.maximum(cos_plain, cos_mirror)
    flip_hint = cos_mirror > cos_plain
    hamming = np.bitwise_count(batch.phash[q_index] ^ refs.phash[r_index]).astype(np.int32)

    greys = reference_greys(refs, r_index.tolist())
    cache = refs.features
    # the batch's reference features, pinned here: the shared LRU may drop them mid-batch
    pinned: dict[tuple[int, bool], Any] = {}
    for ri in set(r_index.tolist()):
        for side in (False, True):
            if (ri, side) in cache:
                pinned[(ri, side)] = cache.get(ri, None, side)

    def ref_features(ri: int, side: bool) -> Any:
        if (ri, side) not in pinned:
            pinned[(ri, side)] = cache.get(ri, greys.get(ri), side)
        return pinned[(ri, side)]

    query_features: dict[int, Any] = {}
    inliers = np.zeros(len(keys), dtype=np.int32)
    coverage = np.zeros(len(keys), dtype=np.float32)
    flipped = np.zeros(len(keys), dtype=bool)
    for p, (qi, ri) in enumerate(keys):
        if qi not in query_features:
            query_features[qi] = features(grey_image(batch.data[qi]))
        side = bool(flip_hint[p])  # try the orientation the descriptor prefers first
        best = verify(query_features[qi], ref_features(ri, side), None)
        if best.inliers < point.min_inliers:
            other = verify(query_features[qi], ref_features(ri, not side), None)
            if other.inliers > best.inliers:
                best, side = other, not side
        inliers[p], coverage[p] = best.inliers, best.coverage
        flipped[p] = side
    timings["verify"] = timings.get("verify", 0.0) + time.perf_counter() - t1

    low = batch.low_info[q_index] | refs.low_info[r_index]
    method, score = decide(hamming, cosine, inliers, coverage, low, point)
    return pa.table(
        {
            "id": pa.array(batch.ids[q_index], pa.int64()),
            "refset": pa.array(refs.refset[r_index].tolist(), pa.string()),
            "ref_id": pa.array(refs.ref_id[r_index], pa.int64()),
            "ref_path": pa.array(refs.ref_path[r_index].tolist(), pa.string()),
            "method": pa.array(method, pa.string()),
            "score": pa.array(score, pa.float32()),
            "hamming": pa.array(hamming, pa.int32()),
            "cosine": pa.array(cosine.astype(np.float32), pa.float32()),
            "inliers": pa.array(inliers, pa.int32()),
            "coverage": pa.array(coverage, pa.float32()),
            "flipped": pa.array(flipped, pa.bool_()),
            "shard": pa.array([batch.shards[i] for i in q_index], pa.string()),
            "member": pa.array([batch.members[i] for i in q_index], pa.string()),
            "run_id": pa.array([""] * len(keys), pa.string()),
            "found_by": pa.array([pairs[key] for key in keys], pa.string()),
            "low_info": pa.array(low, pa.bool_()),
            "hit": pa.array([m is not None for m in method], pa.bool_()),
        },
        schema=tables.CONTAMINATION_CANDIDATES.schema,
    )
