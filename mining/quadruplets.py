"""The pure end-to-end mining: embeddings in, a table of quadruplets (A, A', B, B') out.

Steps (VIRAL's open-domain mining, SemDeDup added in front):
1. SemDeDup over the DISTINCT source images; a pair whose source is dropped as a
   near-duplicate of another source is dropped (pairs sharing one source id all stay);
2. task vectors delta = E(A') - E(A) of the remaining pairs;
3. K-Means over delta, k a function of N (ClusterCount);
4. inside each cluster, each pair's top-k cosine neighbours on delta -> candidates;
5. quality gates and dual filter: a candidate whose two pairs share an image, or whose task
   vectors are near zero (a no-op edit, A' = A), is dropped before VIRAL's visual
   de-duplication and instruction agreement; every score and the reason a candidate was
   dropped are kept (`reason` in the candidates table, counts in stats).
No randomness beyond the K-Means seed; the output is sorted and reproducible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.config import MineParams
from mining.filters import DROP_REASONS, dual_filter, pair_delta_norms
from mining.kmeans import kmeans
from mining.neighbours import find_candidates
from mining.semdedup import semdedup
from mining.task_vectors import task_vectors

REQUIRED_COLUMNS = ("pair_id", "source_id", "edited_id", "instruction")

QUADRUPLET_SCHEMA = pa.schema([
    ("pair_id_a", pa.string()), ("pair_id_b", pa.string()),
    ("source_id_a", pa.string()), ("edited_id_a", pa.string()),
    ("source_id_b", pa.string()), ("edited_id_b", pa.string()),
    ("instruction_a", pa.string()), ("instruction_b", pa.string()),
    ("cluster", pa.int64()), ("cos_delta", pa.float32()),
    ("cos_visual", pa.float32()), ("cos_text", pa.float32()),
])
CANDIDATE_SCHEMA = pa.schema(list(QUADRUPLET_SCHEMA) + [
    pa.field("delta_norm_a", pa.float32()), pa.field("delta_norm_b", pa.float32()),
    pa.field("pass_distinct", pa.bool_()), pa.field("pass_task_vector", pa.bool_()),
    pa.field("pass_visual", pa.bool_()), pa.field("pass_text", pa.bool_()),
    pa.field("pass_instruction", pa.bool_()),  # no instruction conflict (written even when the check is off)
    pa.field("reason", pa.string()),  # null when kept; else mining.filters.DROP_REASONS
])
DEDUP_SCHEMA = pa.schema([
    ("source_id", pa.string()), ("kept", pa.bool_()), ("max_sim", pa.float32()),
    ("duplicate_of", pa.string()), ("cluster", pa.int64()), ("rank_in_cluster", pa.int64()),
])


@dataclass
class MineResult:
    quadruplets: pa.Table  # QUADRUPLET_SCHEMA: candidates that passed both filters
    candidates: pa.Table  # CANDIDATE_SCHEMA: every candidate with its scores and filter outcomes
    dedup: pa.Table  # DEDUP_SCHEMA: one row per distinct source image
    stats: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per step (benchmarks only)


def _column(pairs: pa.Table | dict, name: str) -> pa.Array:
    col = pairs[name]
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not isinstance(col, pa.Array):
        col = pa.array(list(col), type=pa.string())
    return col.cast(pa.string())


def _take(values: pa.Array, idx: np.ndarray) -> pa.Array:
    return values.take(pa.array(idx, type=pa.int64()))  # arrow take: no Python strings at scale


def mine(pairs: pa.Table | dict, source_emb: np.ndarray, edited_emb: np.ndarray, text_emb: np.ndarray,
         params: MineParams, *, overwrite_edited: bool = False) -> MineResult:
    """Mine quadruplets from n pairs; row i of each embedding array belongs to pair i.

    `pairs` has the columns pair_id, source_id, edited_id, instruction (a pyarrow table or a
    dict of sequences). Embeddings may be float32 or float16. With overwrite_edited=True the
    task vectors are written into `edited_emb` (saves one n x d array on big corpora).
    """
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    pair_id, source_id, edited_id, instruction = (_column(pairs, c) for c in REQUIRED_COLUMNS)
    n = len(pair_id)
    for name, arr in (("source_emb", source_emb), ("edited_emb", edited_emb), ("text_emb", text_emb)):
        if arr.shape[0] != n:
            raise ValueError(f"{name} has {arr.shape[0]} rows for {n} pairs")

    # 1. SemDeDup over distinct sources (the first row of each source id carries its embedding);
    # source groups are numbered in order of first appearance
    src_group = source_id.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)
    groups, first_row = np.unique(src_group, return_index=True)
    n_sources = len(groups)
    all_distinct = n_sources == n
    src_rows = np.arange(n) if all_distinct else first_row
    dd = semdedup(source_emb if all_distinct else source_emb[src_rows], params.dedup)
    dedup_table = pa.table({
        "source_id": _take(source_id, src_rows),
        "kept": pa.array(dd.keep),
        "max_sim": pa.array(dd.max_sim, type=pa.float32()),
        "duplicate_of": pc.if_else(pa.array(dd.duplicate_of >= 0),
                                   _take(source_id, src_rows[np.maximum(dd.duplicate_of, 0)]),
                                   pa.scalar(None, pa.string())),
        "cluster": pa.array(dd.cluster), "rank_in_cluster": pa.array(dd.rank_in_cluster),
    }, schema=DEDUP_SCHEMA)
    # dd rows follow src_rows: row order when every source is distinct, else group order
    source_kept = dd.keep if all_distinct else dd.keep[src_group]
    rows = np.flatnonzero(source_kept)
    seconds["semdedup"] = time.perf_counter() - tick

    # 2. task vectors of the kept pairs (raw norms first: the in-place variant overwrites edited_emb)
    tick = time.perf_counter()
    delta_norm = pair_delta_norms(source_emb, edited_emb)
    delta = task_vectors(source_emb, edited_emb, params.task_vectors.normalisation, rows=rows,
                         dtype=edited_emb.dtype, out=edited_emb if overwrite_edited else None)
    seconds["task_vectors"] = time.perf_counter() - tick

    # 3. K-Means over the task vectors
    tick = time.perf_counter()
    k_tasks = params.kmeans.clusters.k_for(len(rows))
    km = kmeans(delta, k_tasks, params.kmeans)
    seconds["kmeans"] = time.perf_counter() - tick

    # 4. in-cluster neighbours (indices local to `rows`, mapped back to pair rows)
    tick = time.perf_counter()
    cand = find_candidates(delta, km.labels, src_group[rows], params.neighbours)
    a, b = rows[cand.a], rows[cand.b]
    seconds["neighbours"] = time.perf_counter() - tick

    # 5. quality gates and dual filter
    tick = time.perf_counter()
    src_a, ed_a, src_b, ed_b = (_take(source_id, a), _take(edited_id, a), _take(source_id, b), _take(edited_id, b))
    shared = pc.or_(pc.or_(pc.equal(src_a, src_b), pc.equal(ed_a, ed_b)),
                    pc.or_(pc.equal(src_a, ed_b), pc.equal(ed_a, src_b)))
    shared = pc.fill_null(shared, False).to_numpy(zero_copy_only=False).astype(bool)
    scores = dual_filter(source_emb, text_emb, a, b, params.filters, shared_image=shared, delta_norm=delta_norm,
                         instructions=instruction)
    reasons = scores.reasons()
    candidates = pa.table({
        "pair_id_a": _take(pair_id, a), "pair_id_b": _take(pair_id, b),
        "source_id_a": src_a, "edited_id_a": ed_a, "source_id_b": src_b, "edited_id_b": ed_b,
        "instruction_a": _take(instruction, a), "instruction_b": _take(instruction, b),
        "cluster": pa.array(cand.cluster), "cos_delta": pa.array(cand.cos_delta, type=pa.float32()),
        "cos_visual": pa.array(scores.cos_visual), "cos_text": pa.array(scores.cos_text),
        "delta_norm_a": pa.array(delta_norm[a]), "delta_norm_b": pa.array(delta_norm[b]),
        "pass_distinct": pa.array(scores.pass_distinct), "pass_task_vector": pa.array(scores.pass_task_vector),
        "pass_visual": pa.array(scores.pass_visual), "pass_text": pa.array(scores.pass_text),
        "pass_instruction": pa.array(scores.pass_instruction),
        "reason": pa.array(reasons, type=pa.string()),
    }, schema=CANDIDATE_SCHEMA)
    keep = scores.keep
    quadruplets = candidates.filter(pa.array(keep)).select(QUADRUPLET_SCHEMA.names)
    seconds["filter"] = time.perf_counter() - tick

    stats = {
        "n_pairs": n, "n_sources": int(n_sources), "n_sources_dropped": int((~dd.keep).sum()),
        "n_pairs_after_dedup": int(len(rows)), "k_dedup": int(params.dedup.kmeans.clusters.k_for(len(src_rows))),
        "k_tasks": int(k_tasks), "n_candidates": int(len(cand)),
        "n_pass_visual": int(scores.pass_visual.sum()), "n_pass_text": int(scores.pass_text.sum()),
        "n_quadruplets": int(keep.sum()),
        **{f"n_dropped_{r}": sum(1 for x in reasons if x == r) for r in DROP_REASONS},
    }
    return MineResult(quadruplets, candidates, dedup_table, stats, seconds)
