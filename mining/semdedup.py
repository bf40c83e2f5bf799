"""SemDeDup near-duplicate removal (the rule NeMo Curator implements).

1. L2-normalise the embeddings; 2. K-Means them; 3. inside each cluster order the members
by distance to the centroid; 4. give each member its highest cosine to any member earlier
in that order; 5. drop it when that is >= 1 - eps.

Which member of a duplicate group is kept: the FIRST in the order. With keep="farthest"
(default, SemDeDup's) members are ordered by decreasing distance to the centroid, so the
least prototypical member of a group survives; keep="closest" keeps the most typical.

Ties are decided by input position (the id), never by float noise, so the same inputs
give the same result on every CPU and BLAS:
- exact copies (bit-identical embedding rows) share the cluster and distance of their
  first row, and the first row (lowest index) is kept; each later copy gets max_sim 1.0
  and duplicate_of = that first row;
- distances are compared on a grid of TIE_TOL (squared distance on the unit sphere):
  members in the same grid step are in input order;
- a member whose best earlier match is reached by several members within TIE_TOL names
  the earliest of them in the order as `duplicate_of`;
- a cosine within TIE_TOL below 1 - eps still counts as reaching it (eps=0: exact copies
  up to float noise).
Scores are always computed and returned, also when nothing is dropped (enabled=False),
so eps can be tuned afterwards without re-running.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mining.config import DedupParams
from mining.kmeans import TIE_TOL, cluster_segments, kmeans, l2_normalise

_HASH_CHUNK = 65536


@dataclass
class DedupResult:
    keep: np.ndarray  # n bool
    max_sim: np.ndarray  # n float32: max cosine to an earlier member of the cluster (-1 for the first)
    duplicate_of: np.ndarray  # n int64: the row index that max is reached with (-1 for none)
    cluster: np.ndarray  # n int64
    rank_in_cluster: np.ndarray  # n int64: position in the cluster's order (0 = kept first)
    kmeans_backend: str = ""  # the K-Means backend that clustered the rows


def _row_hashes(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes (linear in its 8-byte words, wrapping); chunked."""
    n = x.shape[0]
    row_bytes = x.dtype.itemsize * int(np.prod(x.shape[1:], dtype=np.int64))
    words = -(-row_bytes // 8)
    mult = np.random.default_rng(0x5EED).integers(1, 2**63, size=words, dtype=np.uint64) | np.uint64(1)
    out = np.empty(n, dtype=np.uint64)
    for s in range(0, n, _HASH_CHUNK):
        raw = np.ascontiguousarray(x[s:s + _HASH_CHUNK]).view(np.uint8).reshape(-1, row_bytes)
        if row_bytes % 8:
            raw = np.concatenate([raw, np.zeros((len(raw), words * 8 - row_bytes), np.uint8)], axis=1)
        out[s:s + len(raw)] = (raw.view(np.uint64) * mult).sum(axis=1, dtype=np.uint64)
    return out


def _same_bytes(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = len(a)
    return (np.ascontiguousarray(x[a]).view(np.uint8).reshape(n, -1)
            == np.ascontiguousarray(x[b]).view(np.uint8).reshape(n, -1)).all(axis=1)


def exact_copies(x: np.ndarray) -> np.ndarray:
    """first[i]: the lowest row index whose bytes equal row i's (i itself when none is lower)."""
    n = x.shape[0]
    first = np.arange(n, dtype=np.int64)
    if n < 2:
        return first
    h = _row_hashes(x)
    order = np.argsort(h, kind="stable")  # equal hashes stay in index order
    hs = h[order]
    starts = np.flatnonzero(np.concatenate([[True], hs[1:] != hs[:-1]]))
    group_start = np.repeat(starts, np.diff(np.concatenate([starts, [n]])))
    head = order[group_start]  # lowest index of each row's hash group
    cand = np.flatnonzero(head != order)
    if len(cand) == 0:
        return first
    same = _same_bytes(x, order[cand], head[cand])
    first[order[cand[same]]] = head[cand[same]]
    # hash collisions (rows of one hash group that differ from its head): settle them exactly
    ends = np.concatenate([starts[1:], [n]])
    for g in np.unique(np.searchsorted(starts, group_start[cand[~same]])):
        heads: list[int] = []
        for i in order[starts[g]:ends[g]]:  # ascending index
            match = next((j for j in heads if _same_bytes(x, np.array([i]), np.array([j]))[0]), int(i))
            if match == i:
                heads.append(int(i))
            first[i] = match
    return first


def earlier_max_cosine(x: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For unit rows in their cluster order: each row's max cosine to any earlier row, and which.

    Of the earlier rows within TIE_TOL of that max, the earliest is named. Works in row
    blocks so a cluster of m rows needs block x m floats, not m x m.
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
        top = sims.max(axis=1)
        arg[s:e] = np.argmax(sims >= (top - TIE_TOL)[:, None], axis=1)
        best[s:e] = top
    return best, arg


def _cluster_order(members: np.ndarray, dist: np.ndarray, keep: str) -> np.ndarray:
    """Members (ascending index) in SemDeDup order: distance on a TIE_TOL grid, then index."""
    step = np.floor(dist.astype(np.float64) / TIE_TOL).astype(np.int64)
    key = -step if keep == "farthest" else step
    return members[np.argsort(key, kind="stable")]


def semdedup(embeddings: np.ndarray, params: DedupParams) -> DedupResult:
    """Mark near-duplicates among the rows of `embeddings` (n x d, any scale, f32/f16)."""
    n = embeddings.shape[0]
    k = params.kmeans.clusters.k_for(n)
    km_params = params.kmeans.model_copy(update={"spherical": True})
    km = kmeans(embeddings, k, km_params)
    first = exact_copies(embeddings)
    labels = km.labels[first]  # a copy goes where its first row goes, whatever the float noise
    dist = km.distances[first]
    max_sim = np.full(n, -1.0, dtype=np.float32)
    dup_of = np.full(n, -1, dtype=np.int64)
    rank = np.zeros(n, dtype=np.int64)
    position = np.zeros(n, dtype=np.int64)
    order, segments = cluster_segments(labels)
    for _, s, e in segments:
        members = _cluster_order(order[s:e], dist[order[s:e]], params.keep)  # order[s:e] ascends
        x = l2_normalise(embeddings[members])
        best, arg = earlier_max_cosine(x)
        # an exact copy: its first row is earlier in the order (same grid step, lower index)
        copy = first[members] != members
        position[members] = np.arange(len(members))
        best[copy] = 1.0
        arg[copy] = position[first[members[copy]]]
        max_sim[members] = best
        dup_of[members] = np.where(arg >= 0, members[np.maximum(arg, 0)], -1)
        rank[members] = np.arange(len(members))
    threshold = 1.0 - params.eps - TIE_TOL
    dropped = (max_sim >= threshold) if params.enabled else np.zeros(n, dtype=bool)
    return DedupResult(~dropped, max_sim, dup_of, labels, rank, km.backend)
