"""VIRAL's dual filter on candidate quadruplets (A, A', B, B').

- visual de-duplication: drop when cos(E(A), E(B)) > tau_visual (the two sources are so
  alike that the query would leak the answer);
- instruction agreement: keep only when cos(T(instr_A), T(instr_B)) >= tau_text;
- instruction conflicts (after it): drop when the two instruction texts name one attribute with no
  value in common (horizontal vs vertical flip, add vs remove, red vs blue), which the text
  cosine scores as alike (mining/instruction_conflicts.py; FilterParams.drop_instruction_conflicts).
Two quality gates come first (issue 18):
- distinct pairs: drop when the two pairs share an image (the same source, or one pair's
  edited image is the other's source): the "context" would show the query itself;
- real edits: drop when either pair's raw task vector ||E(A') - E(A)|| (unit-norm image
  embeddings) is below `min_task_vector_norm` (default MIN_TASK_VECTOR_NORM = 0.02): A' = A, a
  no-op edit. With the weight-free embedder a JPEG re-encode moves an image by 0.006-0.05 and
  the smallest synthetic edits by >= 0.08; exact no-ops (a hue rotation of a grey photo) by 0.
Every score is computed for every candidate and returned, kept or not, with the first reason
that dropped it (DROP_REASONS order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mining.config import FilterParams
from mining.instruction_conflicts import instruction_conflicts
from mining.kmeans import l2_normalise

_CHUNK = 65536
MIN_TASK_VECTOR_NORM = 0.02
# Why a candidate was dropped, in the order the checks are reported.
DROP_REASONS = ("shared_image", "near_zero_task_vector", "visual_duplicate", "text_disagrees",
                "instructions_conflict")


@dataclass
class FilterScores:
    cos_visual: np.ndarray  # float32
    cos_text: np.ndarray  # float32
    pass_visual: np.ndarray  # bool
    pass_text: np.ndarray  # bool
    pass_distinct: np.ndarray | None = None  # bool: the two pairs share no image
    pass_task_vector: np.ndarray | None = None  # bool: both pairs are real edits
    pass_instruction: np.ndarray | None = None  # bool: the two instructions do not conflict
    drop_instruction_conflicts: bool = True  # False: pass_instruction is reported, drops nothing

    def _checks(self) -> list[np.ndarray]:
        n = len(self.cos_visual)
        distinct = self.pass_distinct if self.pass_distinct is not None else np.ones(n, bool)
        moved = self.pass_task_vector if self.pass_task_vector is not None else np.ones(n, bool)
        agree = self.pass_instruction if self.pass_instruction is not None and self.drop_instruction_conflicts \
            else np.ones(n, bool)
        return [distinct, moved, self.pass_visual, self.pass_text, agree]  # DROP_REASONS order

    @property
    def keep(self) -> np.ndarray:
        return np.logical_and.reduce(self._checks())

    def reasons(self) -> list[str | None]:
        """The first failed check of each candidate (None: kept)."""
        checks = np.stack(self._checks())  # len(DROP_REASONS) x n
        first = np.argmin(checks, axis=0)
        return [None if ok else DROP_REASONS[k] for ok, k in zip(checks.all(axis=0).tolist(), first.tolist())]


def min_task_vector_norm(params: FilterParams) -> float:
    """The no-op threshold (FilterParams.min_task_vector_norm)."""
    return float(params.min_task_vector_norm)


def pair_delta_norms(source_emb: np.ndarray, edited_emb: np.ndarray) -> np.ndarray:
    """||l2(E(A')) - l2(E(A))|| of every pair, float32, in chunks (0 for an edit that changed nothing)."""
    out = np.empty(source_emb.shape[0], dtype=np.float32)
    for s in range(0, len(out), _CHUNK):
        d = l2_normalise(edited_emb[s:s + _CHUNK]).astype(np.float32) - \
            l2_normalise(source_emb[s:s + _CHUNK]).astype(np.float32)
        out[s:s + _CHUNK] = np.linalg.norm(d, axis=1)
    return out


def rowwise_cosine(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(x[a[i]], x[b[i]]) for every i, in chunks (x may be float16)."""
    out = np.empty(len(a), dtype=np.float32)
    for s in range(0, len(a), _CHUNK):
        xa = l2_normalise(x[a[s:s + _CHUNK]])
        xb = l2_normalise(x[b[s:s + _CHUNK]])
        out[s:s + _CHUNK] = np.einsum("ij,ij->i", xa, xb)
    return out


def dual_filter(source_emb: np.ndarray, text_emb: np.ndarray, a: np.ndarray, b: np.ndarray,
                params: FilterParams, *, shared_image: np.ndarray | None = None,
                delta_norm: np.ndarray | None = None, instructions=None) -> FilterScores:
    """Scores and outcomes of candidates (a[i], b[i]). `shared_image[i]`: the two pairs share an
    image; `delta_norm`: every pair's raw task-vector norm (pair_delta_norms); `instructions`:
    every pair's instruction text (list or pyarrow string array; None: no conflict check)."""
    cos_visual = rowwise_cosine(source_emb, a, b)
    cos_text = rowwise_cosine(text_emb, a, b)
    moved = None
    if delta_norm is not None:
        limit = min_task_vector_norm(params)
        moved = (delta_norm[a] >= limit) & (delta_norm[b] >= limit)
    distinct = None if shared_image is None else ~np.asarray(shared_image, dtype=bool)
    agree = None if instructions is None else \
        ~instruction_conflicts(instructions, a, b, params.conflict_number_ratio, params.conflict_on_disjoint_slots)
    return FilterScores(cos_visual, cos_text, cos_visual <= params.tau_visual, cos_text >= params.tau_text,
                        distinct, moved, agree, params.drop_instruction_conflicts)
