"""Seeded K-Means with faiss or scikit-learn, plus chunked assignment.

`kmeans(x, k, params)` trains on a seeded subsample of at most k * max_points_per_centroid
points (faiss' own rule, made explicit so both backends see the same points) and then
assigns every point in chunks, so float16 inputs are only upcast a chunk at a time.

The backend is the one configured, never another: the two give different clusters, so a
missing faiss is an error (KMeansBackendError says how to fix it), not a quiet switch to
scikit-learn. The result names the backend that trained it (`KMeansResult.backend`).

Ties: a point whose nearest centroids are within TIE_TOL of each other goes to the one with
the lowest index, so float noise (another CPU, another BLAS kernel) does not pick it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mining.config import KMeansParams

_ASSIGN_CHUNK = 65536
# Floats closer than this (cosines; squared distances, relative to the scale of the terms
# they are computed from) count as equal wherever they decide a winner in mining/; the
# lower id wins. float32 dot products of unit vectors carry a few 1e-7 of noise.
TIE_TOL = 1e-5


class KMeansBackendError(RuntimeError):
    """The configured K-Means backend cannot run here."""


@dataclass
class KMeansResult:
    centroids: np.ndarray  # k x d float32 (unit rows when spherical)
    labels: np.ndarray  # n int64
    distances: np.ndarray  # n float32: squared L2 to own centroid (1 - cos)*2 on the sphere
    inertia: float  # sum of `distances`
    backend: str


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(params: KMeansParams) -> str:
    """The backend `kmeans` will use for these params: the configured one, or an error."""
    if params.backend == "faiss" and not have_faiss():
        raise KMeansBackendError(
            "K-Means backend 'faiss' is configured but faiss cannot be imported; install it "
            "(pip install faiss-cpu, a dependency of vicl) or set `backend: sklearn` under "
            "mine.kmeans / mine.dedup.kmeans to cluster with scikit-learn (different clusters)")
    return params.backend


def l2_normalise(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise unit norm in float32; zero rows stay zero."""
    x32 = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x32, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    if out is None:
        return x32 / norms
    np.divide(x32, norms, out=out, casting="unsafe")
    return out


def _training_sample(n: int, k: int, params: KMeansParams) -> np.ndarray | None:
    cap = k * params.max_points_per_centroid
    if n <= cap:
        return None
    rng = np.random.default_rng(params.seed)
    return np.sort(rng.choice(n, size=cap, replace=False))


def _train_faiss(train: np.ndarray, k: int, params: KMeansParams) -> np.ndarray:
    import faiss

    km = faiss.Kmeans(train.shape[1], k, niter=params.niter, nredo=params.nredo, seed=params.seed, spherical=params.spherical,
                      max_points_per_centroid=max(params.max_points_per_centroid, -(-train.shape[0] // k)),
                      min_points_per_centroid=1,
                      verbose=False)
    km.train(train)
    return np.asarray(km.centroids, dtype=np.float32)


def _train_sklearn(train: np.ndarray, k: int, params: KMeansParams) -> np.ndarray:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=params.nredo, max_iter=params.niter, random_state=params.seed)
    km.fit(train)
    centroids = km.cluster_centers_.astype(np.float32)
    return l2_normalise(centroids) if params.spherical else centroids


def assign(x: np.ndarray, centroids: np.ndarray, *, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row (chunked); returns labels and squared L2 distances.

    Centroids within TIE_TOL (relative to ||x||^2 + max ||c||^2) of the nearest count as
    tied, and the lowest centroid index among them wins.
    """
    n = x.shape[0]
    labels = np.empty(n, dtype=np.int64)
    dists = np.empty(n, dtype=np.float32)
    c_sq = (centroids.astype(np.float32) ** 2).sum(1)
    for s in range(0, n, _ASSIGN_CHUNK):
        chunk = np.asarray(x[s:s + _ASSIGN_CHUNK], dtype=np.float32)
        if spherical:
            chunk = l2_normalise(chunk)
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; argmin over c of (||c||^2 - 2 x.c)
        score = chunk @ centroids.T
        score *= -2.0
        score += c_sq
        x_sq = (chunk ** 2).sum(1)
        best = score.min(axis=1)
        tol = TIE_TOL * (x_sq + c_sq.max(initial=0.0))
        lab = np.argmax(score <= (best + tol)[:, None], axis=1)  # first centroid within tol
        labels[s:s + len(chunk)] = lab
        d = score[np.arange(len(chunk)), lab] + x_sq
        dists[s:s + len(chunk)] = np.maximum(d, 0.0)
    return labels, dists


def kmeans(x: np.ndarray, k: int, params: KMeansParams) -> KMeansResult:
    """Cluster the rows of x (float32 or float16) into k clusters; deterministic for a seed."""
    backend = resolve_backend(params)
    n = x.shape[0]
    if n == 0:
        return KMeansResult(np.zeros((0, x.shape[1]), np.float32), np.zeros(0, np.int64),
                            np.zeros(0, np.float32), 0.0, "none")
    k = max(1, min(k, n))
    idx = _training_sample(n, k, params)
    train = np.asarray(x if idx is None else x[idx], dtype=np.float32)
    if params.spherical:
        train = l2_normalise(train)
    train = np.ascontiguousarray(train)
    if k == 1:
        c = train.mean(0, keepdims=True)
        centroids = l2_normalise(c) if params.spherical else c.astype(np.float32)
    elif backend == "faiss":
        centroids = _train_faiss(train, k, params)
    else:
        centroids = _train_sklearn(train, k, params)
    del train
    labels, dists = assign(x, centroids, spherical=params.spherical)
    return KMeansResult(centroids, labels, dists, float(dists.sum(dtype=np.float64)), backend)


def cluster_segments(labels: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Stable order that groups rows by cluster, and (cluster, start, end) segments of it."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    if len(order) == 0:
        return order, []
    cuts = np.flatnonzero(np.diff(sorted_labels)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(order)]])
    return order, [(int(sorted_labels[s]), int(s), int(e)) for s, e in zip(starts, ends)]
