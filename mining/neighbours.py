"""Candidate quadruplets: cosine nearest neighbours of every pair's task vector inside its cluster.

Exact search, but only inside a K-Means cluster: with k ~ sqrt(N) clusters the cost is
about N^1.5 * d instead of N^2 * d (all-pairs over 200k vectors already takes minutes on
two cores). A pair is never matched with itself (nor, by default, with another edit of
the same source image); the unordered candidate {i, j} is emitted once, as i < j.

Ties: cosines are ranked on a grid of TIE_TOL, and neighbours in the same grid step by
their position in the cluster (ascending input row), so which neighbour makes the top k is
never decided by float noise. When a pair is found from both sides, the score of the side
met first (lower cluster, then lower row) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mining.config import NeighbourParams
from mining.kmeans import TIE_TOL, cluster_segments, l2_normalise


@dataclass
class Candidates:
    a: np.ndarray  # int64 row index of the first pair (a < b)
    b: np.ndarray  # int64 row index of the second pair
    cos_delta: np.ndarray  # float32 cosine of their task vectors
    cluster: np.ndarray  # int64 cluster both belong to

    def __len__(self) -> int:
        return len(self.a)


_NO_MATCH_STEP = -(2**31)  # below every cosine's grid step


def _rank_keys(sims: np.ndarray) -> np.ndarray:
    """Distinct int64 keys, larger = nearer: cosine grid step (TIE_TOL) first, then lower column."""
    m = sims.shape[1]
    finite = np.isfinite(sims)
    step = np.where(finite, np.floor(np.where(finite, sims, 0.0) / TIE_TOL), _NO_MATCH_STEP).astype(np.int64)
    return step * np.int64(m) + np.arange(m - 1, -1, -1, dtype=np.int64)[None, :]


def _topk_in_cluster(x: np.ndarray, groups: np.ndarray, top_k: int, exclude_same_source: bool,
                     block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local (row, col, sim) of each row's top_k cosine neighbours among the other rows."""
    m = x.shape[0]
    kk = min(top_k, m - 1)
    if kk <= 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    rows_out, cols_out, sims_out = [], [], []
    for s in range(0, m, block):
        e = min(m, s + block)
        sims = x[s:e] @ x.T
        local = np.arange(s, e)
        if exclude_same_source:
            sims[groups[s:e, None] == groups[None, :]] = -np.inf
        sims[np.arange(e - s), local] = -np.inf  # never the pair itself
        if kk < m - 1:
            part = np.argpartition(-_rank_keys(sims), kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(m), (e - s, m)).copy()
            part = part[part != local[:, None]].reshape(e - s, m - 1)
        vals = np.take_along_axis(sims, part, axis=1)
        rows = np.repeat(local, part.shape[1])
        cols = part.ravel()
        vals = vals.ravel()
        ok = np.isfinite(vals)
        rows_out.append(rows[ok])
        cols_out.append(cols[ok])
        sims_out.append(vals[ok])
    return np.concatenate(rows_out), np.concatenate(cols_out), np.concatenate(sims_out).astype(np.float32)


def find_candidates(delta: np.ndarray, labels: np.ndarray, source_group: np.ndarray,
                    params: NeighbourParams) -> Candidates:
    """Candidate pairs of rows of `delta` from their in-cluster top-k cosine neighbours.

    `labels` is each row's cluster, `source_group` an int id of its source image (rows with
    equal ids share a source). Output is sorted by (a, b), with each unordered pair once.
    """
    n = delta.shape[0]
    order, segments = cluster_segments(labels)
    a_parts, b_parts, s_parts, c_parts = [], [], [], []
    for cluster, s, e in segments:
        members = order[s:e]
        if len(members) < 2:
            continue
        x = l2_normalise(delta[members])
        r, c, v = _topk_in_cluster(x, source_group[members], params.top_k, params.exclude_same_source,
                                   params.block_size)
        gi, gj = members[r], members[c]
        a_parts.append(np.minimum(gi, gj))
        b_parts.append(np.maximum(gi, gj))
        s_parts.append(v)
        c_parts.append(np.full(len(v), cluster, dtype=np.int64))
    if not a_parts:
        z = np.zeros(0, np.int64)
        return Candidates(z, z, np.zeros(0, np.float32), z)
    a = np.concatenate(a_parts)
    b = np.concatenate(b_parts)
    sims = np.concatenate(s_parts)
    clusters = np.concatenate(c_parts)
    key = a * np.int64(n) + b
    uniq, first = np.unique(key, return_index=True)  # sorted by (a, b); first occurrence wins
    keep = first[sims[first] >= params.min_cos_delta] if params.min_cos_delta > -1 else first
    keep = np.sort(keep, kind="stable")
    # re-sort the kept rows by their key so the output order is (a, b)
    keep = keep[np.argsort(key[keep], kind="stable")]
    return Candidates(a[keep], b[keep], sims[keep], clusters[keep])
