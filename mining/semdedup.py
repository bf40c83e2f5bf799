"""SemDeDup near-duplicate removal (the rule NeMo Curator implements).

1. L2-normalise the embeddings; 2. K-Means them; 3. inside each cluster order the members
by distance to the centroid; 4. give each member its highest cosine to any member earlier
in that order; 5. drop it when that is >= 1 - eps.

Which member of a duplicate group is kept: the FIRST in the order. With keep="farthest"
(default, SemDeDup's) members are ordered by decreasing distance to the centroid, so the
least prototypical member of a group survives; keep="closest" keeps the most typical.
Ties in distance are broken by input position, so the earliest input row wins: the
result does not depend on anything but the inputs and the seed.
Scores are always computed and returned, also when nothing is dropped (enabled=False),
so eps can be tuned afterwards without re-running.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mining.config import DedupParams
from mining.kmeans import cluster_segments, kmeans, l2_normalise


@dataclass
class DedupResult:
    keep: np.ndarray  # n bool
    max_sim: np.ndarray  # n float32: max cosine to an earlier member of the cluster (-1 for the first)
    duplicate_of: np.ndarray  # n int64: the row index that max is reached with (-1 for none)
    cluster: np.ndarray  # n int64
    rank_in_cluster: np.ndarray  # n int64: position in the cluster's order (0 = kept first)


def earlier_max_cosine(x: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For unit rows in their cluster order: each row's max cosine to any earlier row, and which.

    Works in row blocks so a cluster of m rows needs block x m floats, not m x m.
    """
    m = x.shape[0]
    best = np.full(m, -1.0, dtype=np.float32)
    arg = np.full(m, -1, dtype=np.int64)
    for s in range(1, m, block):
        e = min(m, s + block)
        sims = x[s:e] @ x[:e].T  # rows s..e-1 against 0..e-1
        # keep only strictly earlier columns: column j < row i
        rows = np.arange(s, e)[:, None]
        sims[np.arange(e)[None, :] >= rows] = -np.inf
        a = np.argmax(sims, axis=1)
        arg[s:e] = a
        best[s:e] = sims[np.arange(e - s), a]
    return best, arg


def semdedup(embeddings: np.ndarray, params: DedupParams) -> DedupResult:
    """Mark near-duplicates among the rows of `embeddings` (n x d, any scale, f32/f16)."""
    n = embeddings.shape[0]
    k = params.kmeans.clusters.k_for(n)
    km_params = params.kmeans.model_copy(update={"spherical": True})
    km = kmeans(embeddings, k, km_params)
    max_sim = np.full(n, -1.0, dtype=np.float32)
    dup_of = np.full(n, -1, dtype=np.int64)
    rank = np.zeros(n, dtype=np.int64)
    order, segments = cluster_segments(km.labels)
    for _, s, e in segments:
        members = order[s:e]  # ascending input index (stable sort)
        d = km.distances[members]
        # stable sort on (-d) or (d): equal distances keep input order
        key = -d if params.keep == "farthest" else d
        members = members[np.argsort(key, kind="stable")]
        x = l2_normalise(embeddings[members])
        best, arg = earlier_max_cosine(x)
        max_sim[members] = best
        dup_of[members] = np.where(arg >= 0, members[np.maximum(arg, 0)], -1)
        rank[members] = np.arange(len(members))
    threshold = 1.0 - params.eps
    dropped = (max_sim >= threshold) if params.enabled else np.zeros(n, dtype=bool)
    return DedupResult(~dropped, max_sim, dup_of, km.labels, rank)
