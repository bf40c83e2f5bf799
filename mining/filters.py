"""VIRAL's dual filter on candidate quadruplets (A, A', B, B').

- visual de-duplication: drop when cos(E(A), E(B)) > tau_visual (the two sources are so
  alike that the query would leak the answer);
- instruction agreement: keep only when cos(T(instr_A), T(instr_B)) >= tau_text.
Both scores are computed for every candidate and returned, kept or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mining.config import FilterParams
from mining.kmeans import l2_normalise

_CHUNK = 65536


@dataclass
class FilterScores:
    cos_visual: np.ndarray  # float32
    cos_text: np.ndarray  # float32
    pass_visual: np.ndarray  # bool
    pass_text: np.ndarray  # bool

    @property
    def keep(self) -> np.ndarray:
        return self.pass_visual & self.pass_text


def rowwise_cosine(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(x[a[i]], x[b[i]]) for every i, in chunks (x may be float16)."""
    out = np.empty(len(a), dtype=np.float32)
    for s in range(0, len(a), _CHUNK):
        xa = l2_normalise(x[a[s:s + _CHUNK]])
        xb = l2_normalise(x[b[s:s + _CHUNK]])
        out[s:s + _CHUNK] = np.einsum("ij,ij->i", xa, xb)
    return out


def dual_filter(source_emb: np.ndarray, text_emb: np.ndarray, a: np.ndarray, b: np.ndarray,
                params: FilterParams) -> FilterScores:
    cos_visual = rowwise_cosine(source_emb, a, b)
    cos_text = rowwise_cosine(text_emb, a, b)
    return FilterScores(cos_visual, cos_text, cos_visual <= params.tau_visual, cos_text >= params.tau_text)
