"""Task vectors: delta = E(A') - E(A), the embedding-space direction of an edit (VIRAL).

Normalisation (TaskVectorParams.normalisation):
- "l2": delta / ||delta||, so only the direction of the edit counts (cosine geometry);
- "center_l2": subtract the mean delta of the corpus first, then l2. Every edit in a
  corpus shares a component (re-encoding, the editor's colour cast); removing it leaves
  what tells edits apart;
- "none": the raw difference (its magnitude then weighs in K-Means).
Inputs are per-image embeddings, each L2-normalised by its embedder.
"""

from __future__ import annotations

import numpy as np

from mining.kmeans import l2_normalise

_CHUNK = 65536


def task_vectors(source: np.ndarray, edited: np.ndarray, normalisation: str = "center_l2",
                 *, rows: np.ndarray | None = None, dtype: np.dtype | type = np.float32,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Return task vectors of `rows` (default all) in `dtype`; chunked, so float16 inputs stay cheap.

    `out` may be `edited` itself to compute in place (saves one n x d array at scale): with
    increasing `rows`, row p is written only after every read of a row >= p is done.
    """
    if source.shape != edited.shape:
        raise ValueError(f"source {source.shape} and edited {edited.shape} embeddings differ in shape")
    if rows is None:
        rows = np.arange(source.shape[0])
    elif len(rows) > 1 and np.any(np.diff(rows) <= 0):
        raise ValueError("rows must be strictly increasing")
    n = len(rows)
    result = out[:n] if out is not None else np.empty((n, source.shape[1]), dtype=dtype)
    mean = None
    if normalisation == "center_l2":
        acc = np.zeros(source.shape[1], dtype=np.float64)
        for s in range(0, n, _CHUNK):
            r = rows[s:s + _CHUNK]
            acc += (edited[r].astype(np.float32) - source[r].astype(np.float32)).sum(0)
        mean = (acc / max(n, 1)).astype(np.float32)
    elif normalisation not in ("l2", "none"):
        raise ValueError(f"unknown task-vector normalisation {normalisation!r} (l2, center_l2, none)")
    for s in range(0, n, _CHUNK):
        r = rows[s:s + _CHUNK]
        d = edited[r].astype(np.float32) - source[r].astype(np.float32)
        if mean is not None:
            d -= mean
        if normalisation != "none":
            d = l2_normalise(d)
        result[s:s + _CHUNK] = d
    return result
