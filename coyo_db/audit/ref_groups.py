"""Groups of near-identical references within one reference set.

Evaluation sets hold near-duplicates of their own: the same picture at two sizes, a photo and
its re-encoded copy, a logo moved a little. A dataset image copying one of them copies them
all, so the audit and its report count hits per group (`refset_images.ref_group`, the
smallest ref_id of the group; a reference alone is its own group).

Two references are linked when

- their pHashes differ by at most :data:`GROUP_RADIUS` bits and neither is blank
  (blank: every empty frame has the same pHash), or
- their copy descriptors, centred on the set's centre (:mod:`coyo_db.audit.centres`), have
  cosine >= :data:`GROUP_COSINE` among each one's :data:`GROUP_KNN` nearest, and neither is
  low-information (plain images look alike to descriptors without being the same).

Groups are the connected components of the links (union-find), so they do not depend on the
order the references were read in.
"""

from __future__ import annotations

import numpy as np

GROUP_RADIUS = 4
GROUP_COSINE = 0.9
GROUP_KNN = 5


def reference_groups(
    phash: np.ndarray,
    descriptors: np.ndarray,
    centre: np.ndarray,
    low_info: np.ndarray,
    blank: np.ndarray,
) -> np.ndarray:
    """(N,) int64: each reference's group, the smallest ref_id (position) in it.

    `phash` (N,) uint64; `descriptors` (N, D) as the model gives them (plain images only);
    `centre` (D,) the set's centre; `low_info` and `blank` (N,) bool.
    """
    from coyo_db.audit.faiss_codes import faiss, phash_bytes

    n = len(phash)
    parent = np.arange(n, dtype=np.int64)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    def link(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    if n < 2:
        return parent
    hashable = np.flatnonzero(~np.asarray(blank, bool))
    if len(hashable) > 1:
        index = faiss().IndexBinaryFlat(64)
        codes = phash_bytes(np.asarray(phash, np.uint64)[hashable])
        index.add(codes)
        lims, _, labels = index.range_search(codes, GROUP_RADIUS + 1)
        for qi in range(len(hashable)):
            for pos in range(lims[qi], lims[qi + 1]):
                link(int(hashable[qi]), int(hashable[labels[pos]]))
    textured = np.flatnonzero(~np.asarray(low_info, bool))
    if len(textured) > 1:
        vectors = np.asarray(descriptors, np.float32)[textured] - centre
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        vectors = np.ascontiguousarray(vectors, np.float32)
        index = faiss().IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        sims, idx = index.search(vectors, min(GROUP_KNN + 1, len(textured)))
        for qi in range(len(textured)):
            for sim, j in zip(sims[qi], idx[qi], strict=True):
                if j >= 0 and j != qi and sim >= GROUP_COSINE:
                    link(int(textured[qi]), int(textured[j]))
    return np.array([root(i) for i in range(n)], dtype=np.int64)
