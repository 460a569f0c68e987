"""Candidates and their evidence for one batch of described dataset images.

1. **Candidates.** For each reference set, each image's copy descriptor, centred on the set's
   centre (:mod:`coyo_db.audit.centres`), is searched in the set's FAISS inner-product index of
   its references' descriptors; the :attr:`OperatingPoint.knn` nearest references at cosine >=
   ``candidate_cosine`` are candidates, and for a low-information image also the
   low-information references among its ``knn_low_info`` nearest (smooth images crowd
   together in a CNN's descriptor space: on the plain dev split 3% of copies of a plain
   reference had five other plain references nearer than their own). The descriptor is
   close to mirror-invariant (pooled features of a network trained on flipped images), so
   mirrored copies are found like the others. So are references whose pHash lies within
   ``candidate_radius`` bits of the image's (a FAISS binary index; equality is COYO's own
   rule).
2. **Verification**, only where the cheap evidence leaves the pair undecided: a pair that the
   pHash floor or the loose rules make a hit already, whose reference is blank, or that only
   the descriptor found at a cosine below ``verify_cosine``, is not verified (its ``inliers``
   and ``layout`` stay null). The others are matched with local
   features (RootSIFT + RANSAC similarity transform, against the reference and its mirror
   image; :mod:`coyo_db.audit.verify`); where the reference has too few features to decide
   (plain images), their colour layouts are compared too (:mod:`coyo_db.audit.layout`),
   whatever the local features found.
3. **Decision** (:func:`coyo_db.audit.decision.decide`).

Every step depends on the pair alone (RANSAC is seeded per pair), so an image's rows are the
same whatever batch it came in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from coyo_db.audit.decision import OperatingPoint, decide
from coyo_db.audit.faiss_codes import phash_bytes
from coyo_db.audit.references import References, reference_images
from coyo_db.catalog import tables

# A reference with fewer local features than this cannot be confirmed by them alone: its
# colour layout is compared as well.
FEW_FEATURES = 40
# Images of a batch verified at once (each pair's evidence depends on the pair alone, RANSAC
# seeded per pair in its own thread, so the rows do not depend on it).
VERIFY_THREADS = max(1, min(8, os.cpu_count() or 1))


@dataclass
class DescribedBatch:
    """Good dataset images of one batch with what the stage computed for them."""

    ids: np.ndarray  # int64
    shards: list[str]
    members: list[str]
    phash: np.ndarray  # uint64
    data: list[bytes | None]  # the encoded images, for verification (None: read on demand)
    descriptors: np.ndarray  # (N, D) as the model gives them, before centring
    low_info: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, wanted: Sequence[int]) -> None:
        """Read the encoded images of `wanted` positions that the batch does not hold (a
        batch of stored descriptors holds none) from their shards."""
        from coyo_db.ingest.image_fetch import fetch_images

        missing = [i for i in dict.fromkeys(wanted) if self.data[i] is None]
        if not missing:
            return
        locations = [(self.shards[i], self.members[i]) for i in missing]
        for fetched in fetch_images(locations):
            self.data[missing[fetched.index]] = fetched.data or None


@dataclass
class Pairs:
    """The candidate pairs of a batch: query and reference positions, how each was found,
    and the cosine of each."""

    query: np.ndarray  # int64, positions in the batch
    ref: np.ndarray  # int64, positions in References
    found_by: list[str]
    cosine: np.ndarray  # float32


def find_candidates(batch: DescribedBatch, refs: References, point: OperatingPoint) -> Pairs:
    """Every (image, reference) pair found by kNN or by pHash, with its cosine."""
    found: dict[tuple[int, int], str] = {}
    centred_by_set = []
    # plain images look deeper, for plain references only (below)
    k = max(point.knn, point.knn_low_info) if batch.low_info.any() else point.knn
    for entry in refs.sets:
        vectors = entry.centred(batch.descriptors)
        centred_by_set.append(vectors)
        sims, idx = entry.index.search(vectors, min(k, len(entry)))
        for qi in range(len(vectors)):
            for rank, (sim, j) in enumerate(zip(sims[qi], idx[qi], strict=True)):
                if j < 0 or sim < point.candidate_cosine:
                    continue
                r = entry.start + int(j)
                if rank < point.knn or (batch.low_info[qi] and refs.low_info[r]):
                    found[(qi, r)] = "knn"
    lims, _, labels = refs.binary.range_search(phash_bytes(batch.phash), point.candidate_radius + 1)
    for qi in range(len(batch)):
        for pos in range(lims[qi], lims[qi + 1]):
            key = (qi, int(labels[pos]))
            found[key] = "knn+phash" if found.get(key) == "knn" else "phash"
    keys = sorted(found)
    query = np.array([q for q, _ in keys], dtype=np.int64)
    ref = np.array([r for _, r in keys], dtype=np.int64)
    cosine = np.zeros(len(keys), np.float32)
    for s, entry in enumerate(refs.sets):
        mine = np.flatnonzero((ref >= entry.start) & (ref < entry.stop))
        if not len(mine):
            continue
        stored = entry.index.reconstruct_batch(ref[mine] - entry.start)
        cosine[mine] = np.einsum("ij,ij->i", centred_by_set[s][query[mine]], stored)
    return Pairs(query, ref, [found[k] for k in keys], cosine)


def match_batch(
    batch: DescribedBatch, refs: References, point: OperatingPoint, timings: dict[str, float]
) -> pa.Table:
    """Every candidate pair of `batch` with its evidence and decision, as candidate rows."""
    t0 = time.perf_counter()
    pairs = find_candidates(batch, refs, point)
    t1 = time.perf_counter()
    timings["search"] = timings.get("search", 0.0) + t1 - t0
    if not len(pairs.query):
        return tables.CONTAMINATION_CANDIDATES.empty()
    q_index, r_index = pairs.query, pairs.ref
    hamming = np.bitwise_count(batch.phash[q_index] ^ refs.phash[r_index]).astype(np.int32)
    low = batch.low_info[q_index] | refs.low_info[r_index]
    blank = refs.blank[r_index]
    # pairs the cheap evidence decides: a hit by the pHash floor or the loose rules, a blank
    # reference, or a pair only the descriptor found, below the verification floor; the rest
    # are verified
    loose = ~low & ((pairs.cosine >= point.descriptor_cosine) | (hamming <= point.phash_radius))
    by_phash = np.array(["phash" in how for how in pairs.found_by], dtype=bool)
    below_floor = ~by_phash & (pairs.cosine < point.verify_cosine)
    settled = blank | (hamming == 0) | loose | below_floor
    inliers, coverage, flipped, layout = verify_pairs(
        batch, refs, point, q_index, r_index, ~settled
    )
    timings["verify"] = timings.get("verify", 0.0) + time.perf_counter() - t1

    method, score = decide(
        hamming,
        pairs.cosine,
        np.nan_to_num(inliers, nan=0).astype(np.int32),
        np.nan_to_num(coverage, nan=0.0),
        low,
        point,
        blank=blank,
        layout=layout,
    )
    verified = ~settled
    return pa.table(
        {
            "id": pa.array(batch.ids[q_index], pa.int64()),
            "refset": pa.array(refs.refset[r_index].tolist(), pa.string()),
            "ref_id": pa.array(refs.ref_id[r_index], pa.int64()),
            "ref_path": pa.array(refs.ref_path[r_index].tolist(), pa.string()),
            "method": pa.array(method, pa.string()),
            "score": pa.array(score, pa.float32()),
            "hamming": pa.array(hamming, pa.int32()),
            "cosine": pa.array(pairs.cosine, pa.float32()),
            "inliers": pa.array(np.nan_to_num(inliers, nan=0), pa.int32(), mask=~verified),
            "coverage": pa.array(np.nan_to_num(coverage, nan=0), pa.float32(), mask=~verified),
            "flipped": pa.array(flipped, pa.bool_(), mask=~verified),
            "shard": pa.array([batch.shards[i] for i in q_index], pa.string()),
            "member": pa.array([batch.members[i] for i in q_index], pa.string()),
            "run_id": pa.array([""] * len(q_index), pa.string()),
            "found_by": pa.array(pairs.found_by, pa.string()),
            "low_info": pa.array(low, pa.bool_()),
            "hit": pa.array([m is not None for m in method], pa.bool_()),
            "ref_group": pa.array(refs.ref_group[r_index], pa.int64()),
            "layout": pa.array(layout, pa.float32(), mask=np.isnan(layout)),
        },
        schema=tables.CONTAMINATION_CANDIDATES.schema,
    )


def verify_pairs(
    batch: DescribedBatch,
    refs: References,
    point: OperatingPoint,
    q_index: np.ndarray,
    r_index: np.ndarray,
    wanted: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(inliers, coverage, flipped, layout similarity) of the `wanted` pairs; NaN elsewhere
    (and layout NaN where the reference has enough local features: only plain references'
    layouts are compared)."""
    from coyo_db.audit.layout import compare, layout_of
    from coyo_db.audit.verify import features, grey_image, verify

    n = len(q_index)
    inliers = np.full(n, np.nan, np.float64)
    coverage = np.full(n, np.nan, np.float64)
    layout = np.full(n, np.nan, np.float32)
    flipped = np.zeros(n, bool)
    todo = np.flatnonzero(wanted)
    if not len(todo):
        return inliers, coverage, flipped, layout
    cache = refs.features
    batch.load(q_index[todo].tolist())
    fetched = reference_images(refs, sorted(set(r_index[todo].tolist())))
    # the batch's reference features, pinned here: the shared LRU may drop them mid-batch
    pinned: dict[tuple[int, bool], Any] = {}

    def ref_features(ri: int, side: bool) -> Any:
        if (ri, side) not in pinned:
            pinned[(ri, side)] = cache.get(ri, lambda: fetched.grey(ri), side)
        return pinned[(ri, side)]

    def one_image(qi: int, positions: list[int]) -> None:
        """Verify every wanted pair of image `qi` (the positions are its own: no other
        thread writes them)."""
        data = batch.data[qi]
        query = features(grey_image(data) if data else None)
        query_layout: Any = None
        for p in positions:
            ri = int(r_index[p])
            side = False  # the reference as it is, then its mirror image if that fails
            best = verify(query, ref_features(ri, side), None)
            if best.inliers < point.min_inliers:
                other = verify(query, ref_features(ri, True), None)
                if other.inliers > best.inliers:
                    best, side = other, True
            inliers[p], coverage[p], flipped[p] = best.inliers, best.coverage, side
            # a plain reference's colour layout is compared whatever the local features
            # said: it confirms copies they cannot, and a local match without it is no copy
            # (the same shape in other colours)
            plain = len(ref_features(ri, False)) < FEW_FEATURES or refs.low_info[ri]
            if not plain:
                continue
            ref_layout = fetched.layout(ri)
            if query_layout is None and data:
                query_layout = layout_of(data) or False  # False: does not decode
            if ref_layout is not None and query_layout:
                verdict = compare(query_layout, ref_layout)
                layout[p] = verdict.similarity
                local = best.inliers >= point.min_inliers and best.coverage >= point.min_coverage
                if verdict.similarity >= point.min_layout and not local:
                    flipped[p] = verdict.flipped

    by_query: dict[int, list[int]] = {}
    for p in todo:
        by_query.setdefault(int(q_index[p]), []).append(int(p))
    threads = min(len(by_query), VERIFY_THREADS)
    if threads > 1:
        # SIFT, matching, decoding and layouts release the GIL: images verify side by side
        with ThreadPoolExecutor(threads, thread_name_prefix="verify") as pool:
            for done in [pool.submit(one_image, qi, ps) for qi, ps in by_query.items()]:
                done.result()
    else:
        for qi, positions in by_query.items():
            one_image(qi, positions)
    return inliers, coverage, flipped, layout
