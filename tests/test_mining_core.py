"""Mining core on small constructed vectors whose right answers are known."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import mining  # noqa: F401  (installs the torchvision fallback first)
from mining.config import ClusterCount, DedupParams, FilterParams, KMeansParams, MineParams, NeighbourParams
from mining.filters import dual_filter
from mining.kmeans import TIE_TOL, KMeansBackendError, assign, cluster_segments, kmeans, l2_normalise
from mining.neighbours import _topk_in_cluster, find_candidates
from mining.quadruplets import mine
from mining.semdedup import _cluster_order, exact_copies, semdedup
from mining.task_vectors import task_vectors


def _unit(rng, n, d):
    return l2_normalise(rng.standard_normal((n, d)).astype(np.float32))


def _families(n_fam=4, per_fam=12, d=48, seed=0, dup_sources=0):
    """Pairs of n_fam edit families: edited = source + the family's direction (+ noise)."""
    rng = np.random.default_rng(seed)
    directions = _unit(rng, n_fam, d) * 1.5
    n = n_fam * per_fam
    family = np.repeat(np.arange(n_fam), per_fam)
    src = _unit(rng, n, d)
    edited = l2_normalise(src + directions[family] + 0.05 * rng.standard_normal((n, d)).astype(np.float32))
    text_base = _unit(rng, n_fam, 16)
    text = l2_normalise(text_base[family] + 0.1 * rng.standard_normal((n, 16)).astype(np.float32))
    pairs = {
        "pair_id": [f"p{i:03d}" for i in range(n)],
        "source_id": [f"s{i:03d}" for i in range(n)],
        "edited_id": [f"e{i:03d}" for i in range(n)],
        "instruction": [f"family {f} instruction" for f in family],
    }
    return pairs, src, edited, text, family


# ---- cluster count ---------------------------------------------------------------------

def test_cluster_count_function():
    cc = ClusterCount(c=1.0, k_min=4, k_max=100)
    assert cc.k_for(0) == 0
    assert cc.k_for(3) == 3  # never more clusters than points
    assert cc.k_for(10) == 4  # round(sqrt(10)) = 3 -> raised to k_min
    assert cc.k_for(400) == 20
    assert cc.k_for(1_000_000) == 100  # capped at k_max
    assert ClusterCount(c=2.0, k_min=1, k_max=10_000).k_for(10_000) == 200


# ---- K-Means -----------------------------------------------------------------------------

def _blobs(seed=1, k=5, per=40, d=16):
    rng = np.random.default_rng(seed)
    centres = _unit(rng, k, d)
    x = l2_normalise(np.repeat(centres, per, axis=0) + 0.05 * rng.standard_normal((k * per, d)).astype(np.float32))
    return x, np.repeat(np.arange(k), per)


def _same_partition(a, b):
    # same partition up to relabelling: a bijection between labels
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_kmeans_recovers_planted_clusters(backend):
    x, truth = _blobs()
    res = kmeans(x, 5, KMeansParams(backend=backend, seed=3, nredo=5))
    assert res.backend == backend
    assert _same_partition(res.labels, truth)
    assert np.allclose(np.linalg.norm(res.centroids, axis=1), 1.0, atol=1e-4)  # spherical
    again = kmeans(x, 5, KMeansParams(backend=backend, seed=3, nredo=5))
    assert np.array_equal(res.labels, again.labels) and np.allclose(res.centroids, again.centroids)


def test_kmeans_float16_input_and_segments():
    x, truth = _blobs()
    res = kmeans(x.astype(np.float16), 5, KMeansParams(seed=0, max_points_per_centroid=20, nredo=5))  # subsampled training
    assert _same_partition(res.labels, truth)
    order, segs = cluster_segments(res.labels)
    assert sum(e - s for _, s, e in segs) == len(x)
    for c, s, e in segs:
        assert (res.labels[order[s:e]] == c).all() and np.all(np.diff(order[s:e]) > 0)


def test_kmeans_missing_faiss_is_an_error_not_a_silent_switch(monkeypatch):
    import mining.kmeans as km

    x, truth = _blobs()
    monkeypatch.setattr(km, "have_faiss", lambda: False)
    with pytest.raises(KMeansBackendError, match="faiss"):
        kmeans(x, 5, KMeansParams(backend="faiss"))
    with pytest.raises(KMeansBackendError):
        semdedup(x, DedupParams())
    res = kmeans(x, 5, KMeansParams(backend="sklearn", seed=3, nredo=5))  # chosen knowingly
    assert res.backend == "sklearn" and _same_partition(res.labels, truth)
    assert semdedup(x, DedupParams(kmeans=KMeansParams(backend="sklearn"))).kmeans_backend == "sklearn"


def test_assign_ties_go_to_the_lowest_centroid_index():
    e = np.eye(4, dtype=np.float32)
    x = l2_normalise(np.array([[1.0, 1.0, 0.0, 0.0]], dtype=np.float32))
    # centroid 1 is nearer than centroid 0 by float noise only
    nudged = l2_normalise(np.array([[1e-7, 1.0, 0.0, 0.0]], dtype=np.float32))[0]
    for centroids in (np.stack([e[0], nudged, e[3]]), np.stack([nudged, e[0], e[3]])):
        labels, dists = assign(x, centroids, spherical=True)
        assert labels.tolist() == [0]
        assert np.isclose(dists[0], 2 - np.sqrt(2), atol=1e-5)
    far = np.stack([e[3], e[0], e[1]])
    assert assign(x, far, spherical=True)[0].tolist() == [1]  # a real tie: lowest index of the two
    clear = np.stack([e[0], l2_normalise(np.array([[0.9, 1.0, 0.0, 0.0]], dtype=np.float32))[0]])
    assert assign(x, clear, spherical=True)[0].tolist() == [1]  # clearly nearer wins


# ---- SemDeDup ---------------------------------------------------------------------------

def _with_duplicates():
    rng = np.random.default_rng(7)
    base = _unit(rng, 30, 24)
    # near-duplicates of rows 3 and 11, and an exact duplicate of row 20
    dup3 = l2_normalise(base[3:4] + 0.002 * rng.standard_normal((1, 24)).astype(np.float32))
    dup11 = l2_normalise(base[11:12] + 0.002 * rng.standard_normal((1, 24)).astype(np.float32))
    x = np.concatenate([base, dup3, dup11, base[20:21]])  # rows 30, 31, 32
    return x, [(3, 30), (11, 31), (20, 32)]


@pytest.mark.parametrize("keep", ["farthest", "closest"])
def test_semdedup_drops_planted_duplicates_and_keeps_documented_member(keep):
    x, groups = _with_duplicates()
    one_cluster = KMeansParams(clusters=ClusterCount(c=1.0, k_min=1, k_max=1))
    res = semdedup(x, DedupParams(eps=0.01, keep=keep, kmeans=one_cluster))
    assert (~res.keep).sum() == 3
    centroid = l2_normalise(x.mean(0, keepdims=True))[0]
    dist = 1 - l2_normalise(x) @ centroid
    for i, j in groups:
        if np.isclose(dist[i], dist[j], atol=1e-7):
            expected = min(i, j)  # equal distance: the earlier input row is kept
        elif keep == "farthest":
            expected = i if dist[i] > dist[j] else j
        else:
            expected = i if dist[i] < dist[j] else j
        other = j if expected == i else i
        assert res.keep[expected] and not res.keep[other]
        assert res.duplicate_of[other] == expected
        assert res.max_sim[other] >= 0.99
    assert res.keep[[k for k in range(30) if k not in (3, 11, 20)]].all()


def test_semdedup_scores_written_when_disabled_and_eps_zero():
    x, _ = _with_duplicates()
    on = semdedup(x, DedupParams(eps=0.01))
    off = semdedup(x, DedupParams(eps=0.01, enabled=False))
    assert off.keep.all()
    assert np.array_equal(on.max_sim, off.max_sim)
    assert (off.max_sim >= 0.99).sum() == 3
    for eps in (0.0, 1e-6):
        exact_only = semdedup(x, DedupParams(eps=eps))
        # only the exact copy of row 20, and always the later row (32), whatever the float noise
        assert np.flatnonzero(~exact_only.keep).tolist() == [32]
        assert exact_only.duplicate_of[32] == 20 and exact_only.max_sim[32] == 1.0


def _with_copy(first: int, second: int, of: int, n: int = 30, d: int = 24, seed: int = 5):
    """n random rows, with row `of` placed at `first` and an exact copy of it at `second`."""
    base = _unit(np.random.default_rng(seed), n, d)
    rows = [base[i] for i in range(n) if i != of]
    for pos in sorted((first, second)):
        rows.insert(pos, base[of])
    return np.stack(rows)


@pytest.mark.parametrize("keep", ["farthest", "closest"])
@pytest.mark.parametrize("positions", [(4, 27), (0, 30), (15, 16)])
@pytest.mark.parametrize("reverse", [False, True])
def test_semdedup_exact_copies_decided_by_id_in_both_orders(keep, positions, reverse):
    x = _with_copy(*positions, of=9)
    lo, hi = positions
    if reverse:  # every row in the opposite order: the other copy is now the lower id
        x, lo, hi = x[::-1].copy(), len(x) - 1 - hi, len(x) - 1 - lo
    assert np.array_equal(x[lo], x[hi])
    for kmeans_params in (KMeansParams(clusters=ClusterCount(k_min=1, k_max=1)), KMeansParams()):
        for eps in (0.0, 0.01):
            res = semdedup(x, DedupParams(eps=eps, keep=keep, kmeans=kmeans_params))
            assert res.keep[lo] and not res.keep[hi], (eps, kmeans_params)
            assert res.duplicate_of[hi] == lo and res.max_sim[hi] == 1.0
            assert res.cluster[hi] == res.cluster[lo] and res.rank_in_cluster[hi] > res.rank_in_cluster[lo]
            assert res.keep.sum() == len(x) - 1


def test_semdedup_exact_copies_immune_to_float_noise(monkeypatch):
    """Distances that differ by float noise between copies (another CPU) change nothing."""
    import mining.semdedup as sd

    x = _with_copy(3, 20, of=7)
    x = np.concatenate([x, x[3:4], x[20:21]])  # copies 3, 20, 31, 32 of one row
    clean = semdedup(x, DedupParams(eps=0.0))
    real = sd.kmeans
    for seed in range(4):
        rng = np.random.default_rng(seed)

        def noisy(*args, **kwargs):
            km = real(*args, **kwargs)
            km.distances = km.distances + rng.uniform(-3e-7, 3e-7, size=len(km.distances)).astype(np.float32)
            return km

        monkeypatch.setattr(sd, "kmeans", noisy)
        res = semdedup(x, DedupParams(eps=0.0))
        assert np.array_equal(res.keep, clean.keep) and np.array_equal(res.duplicate_of, clean.duplicate_of)
        assert np.flatnonzero(~res.keep).tolist() == [20, 31, 32]
        assert (res.duplicate_of[[20, 31, 32]] == 3).all()


def test_semdedup_equal_distances_ordered_by_id_on_a_tolerance_grid():
    members = np.array([2, 5, 8, 11])
    # 5 and 8 differ by float noise only (same TIE_TOL grid step), 11 is clearly farther
    dist = np.array([0.25, 0.500004 + 3 * TIE_TOL / 100, 0.500004, 0.9], dtype=np.float64)
    assert _cluster_order(members, dist, "farthest").tolist() == [11, 5, 8, 2]
    assert _cluster_order(members, dist, "closest").tolist() == [2, 5, 8, 11]
    swapped = np.array([0.25, 0.500004, 0.500004 + 3 * TIE_TOL / 100, 0.9])
    assert _cluster_order(members, swapped, "farthest").tolist() == [11, 5, 8, 2]


def test_exact_copies_bytes_and_hash_collisions(monkeypatch):
    import mining.semdedup as sd

    x = np.random.default_rng(0).standard_normal((9, 5)).astype(np.float16)  # 10-byte rows: padded words
    x[6] = x[2]
    x[8] = x[2]
    x[4] = x[1]
    want = [0, 1, 2, 3, 1, 5, 2, 7, 2]
    assert exact_copies(x).tolist() == want
    monkeypatch.setattr(sd, "_row_hashes", lambda a: np.zeros(len(a), np.uint64))  # every row collides
    assert exact_copies(x).tolist() == want


# ---- task vectors -------------------------------------------------------------------------

def test_task_vectors_normalisations_and_in_place():
    pairs, src, edited, _, _ = _families()
    raw = task_vectors(src, edited, "none")
    assert np.allclose(raw, edited - src, atol=1e-6)
    unit = task_vectors(src, edited, "l2")
    assert np.allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
    centred = task_vectors(src, edited, "center_l2")
    expected = l2_normalise((edited - src) - (edited - src).mean(0))
    assert np.allclose(centred, expected, atol=1e-5)
    rows = np.array([1, 4, 5, 20])
    buf = edited.copy()
    in_place = task_vectors(src, buf, "center_l2", rows=rows, out=buf)
    assert np.allclose(in_place, task_vectors(src, edited, "center_l2", rows=rows), atol=1e-6)
    with pytest.raises(ValueError):
        task_vectors(src, edited, "bogus")


# ---- neighbours -----------------------------------------------------------------------------

def test_neighbours_no_self_each_unordered_once_within_family():
    _, src, edited, _, family = _families()
    delta = task_vectors(src, edited, "l2")
    km = kmeans(delta, 4, KMeansParams(seed=0, nredo=5))
    assert _same_partition(km.labels, family)
    groups = np.arange(len(delta))
    cand = find_candidates(delta, km.labels, groups, NeighbourParams(top_k=3))
    assert len(cand) > 0
    assert (cand.a < cand.b).all()  # no self-match, canonical order
    keys = list(zip(cand.a.tolist(), cand.b.tolist()))
    assert len(keys) == len(set(keys)) and keys == sorted(keys)
    assert (family[cand.a] == family[cand.b]).all()
    # every pair got its top-3 partners: each row appears at least 3 times
    counts = np.bincount(np.concatenate([cand.a, cand.b]), minlength=len(delta))
    assert (counts >= 3).all()
    expect = np.einsum("ij,ij->i", delta[cand.a], delta[cand.b])
    assert np.allclose(cand.cos_delta, expect, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_neighbours_equal_cosines_pick_lowest_rows(reverse):
    """A query whose neighbours tie (up to float noise) takes the lowest rows, in any order."""
    d = 12
    rng = np.random.default_rng(3)
    q = np.eye(d, dtype=np.float32)[0]
    cands = np.stack([0.8 * q + 0.6 * np.eye(d, dtype=np.float32)[j] for j in range(1, 7)])
    cands += rng.uniform(-1e-7, 1e-7, cands.shape).astype(np.float32)  # noise breaks the exact tie
    x = l2_normalise(np.concatenate([q[None], cands[::-1] if reverse else cands]))
    r, c, v = _topk_in_cluster(x, np.arange(len(x)), 2, False, block=4)
    picked = sorted(c[r == 0].tolist())
    assert picked == [1, 2]  # rows 1 and 2 whatever candidate sits there
    assert np.allclose(v[r == 0], 0.8, atol=1e-5)


def test_neighbours_exclude_same_source_and_min_cos():
    # rows 0,1 share a source and are each other's nearest neighbours; 2 is a bit farther
    delta = l2_normalise(np.array([[1, 0, 0], [1, 0.01, 0], [1, 0.3, 0], [0, 0, 1]], np.float32))
    labels = np.zeros(4, np.int64)
    groups = np.array([0, 0, 1, 2])
    cand = find_candidates(delta, labels, groups, NeighbourParams(top_k=1))
    pairs = set(zip(cand.a.tolist(), cand.b.tolist()))
    assert (0, 1) not in pairs and (0, 2) in pairs and (1, 2) in pairs
    allowed = find_candidates(delta, labels, groups, NeighbourParams(top_k=1, exclude_same_source=False))
    assert (0, 1) in set(zip(allowed.a.tolist(), allowed.b.tolist()))
    strict = find_candidates(delta, labels, groups, NeighbourParams(top_k=1, min_cos_delta=0.5))
    assert all(3 not in p for p in zip(strict.a.tolist(), strict.b.tolist()))  # row 3 is orthogonal


# ---- dual filter ------------------------------------------------------------------------------

def test_dual_filter_outcomes():
    src = l2_normalise(np.array([[1, 0], [1, 0.05], [0, 1], [1, 1]], np.float32))
    text = l2_normalise(np.array([[1, 0], [1, 0.1], [0, 1], [1, 0.2]], np.float32))
    a = np.array([0, 0, 0])
    b = np.array([1, 2, 3])
    s = dual_filter(src, text, a, b, FilterParams(tau_visual=0.95, tau_text=0.9))
    assert s.pass_visual.tolist() == [False, True, True]  # 0~1 visually near-identical
    assert s.pass_text.tolist() == [True, False, True]  # 0 vs 2 instructions disagree
    assert s.keep.tolist() == [False, False, True]
    assert np.allclose(s.cos_visual, [np.cos(np.arctan(0.05)), 0, np.cos(np.pi / 4)], atol=1e-5)


# ---- end to end ----------------------------------------------------------------------------------

def _params(**kw):
    p = MineParams(kmeans=KMeansParams(clusters=ClusterCount(c=0.6, k_min=2), nredo=5),
                   neighbours=NeighbourParams(top_k=2), filters=FilterParams(tau_visual=0.9, tau_text=0.5))
    return p.model_copy(update=kw)


def test_mine_end_to_end_precision_and_determinism():
    pairs, src, edited, text, family = _families(n_fam=4, per_fam=15, seed=5)
    res = mine(pairs, src, edited, text, _params())
    q = res.quadruplets
    assert q.num_rows > 0 and res.stats["n_quadruplets"] == q.num_rows
    fam = {p: f for p, f in zip(pairs["pair_id"], family)}
    assert all(fam[a] == fam[b] for a, b in zip(q["pair_id_a"].to_pylist(), q["pair_id_b"].to_pylist()))
    assert all(pa_ != pb for pa_, pb in zip(q["pair_id_a"].to_pylist(), q["pair_id_b"].to_pylist()))
    assert res.candidates.num_rows >= q.num_rows
    assert res.dedup.num_rows == 60 and res.dedup["kept"].to_pylist() == [True] * 60
    assert set(q.column_names) >= {"cos_delta", "cos_visual", "cos_text", "cluster", "instruction_a"}
    again = mine(pairs, src.copy(), edited.copy(), text.copy(), _params())
    assert again.quadruplets.equals(q) and again.candidates.equals(res.candidates)


def test_mine_dedup_drops_pairs_of_duplicate_sources_and_shared_sources_stay():
    pairs, src, edited, text, _ = _families(n_fam=3, per_fam=10, seed=2)
    # pair 5's source is a re-encoded copy of pair 4's source (different id, same pixels);
    # pairs 7 and 8 share one source id (two edits of one image): both must stay
    src[5] = src[4]
    pairs["source_id"][8] = pairs["source_id"][7]
    src[8] = src[7]
    res = mine(pairs, src, edited, text, _params())
    kept = dict(zip(res.dedup["source_id"].to_pylist(), res.dedup["kept"].to_pylist()))
    assert res.dedup.num_rows == 29
    assert kept["s004"] != kept["s005"]  # exactly one of the pair of duplicates survives
    assert kept["s004"]  # equal distance to the centroid -> the earlier input row is kept
    assert res.stats["n_pairs_after_dedup"] == 29
    used = set(res.candidates["pair_id_a"].to_pylist()) | set(res.candidates["pair_id_b"].to_pylist())
    assert "p005" not in used
    cand = list(zip(res.candidates["pair_id_a"].to_pylist(), res.candidates["pair_id_b"].to_pylist()))
    assert ("p007", "p008") not in cand  # never two edits of one source


def test_mine_float16_and_overwrite_match_float32():
    pairs, src, edited, text, _ = _families(seed=9)
    ref = mine(pairs, src, edited, text, _params())
    e16 = edited.astype(np.float16)
    half = mine(pairs, src.astype(np.float16), e16, text.astype(np.float16), _params(), overwrite_edited=True)
    ka = set(zip(ref.quadruplets["pair_id_a"].to_pylist(), ref.quadruplets["pair_id_b"].to_pylist()))
    kb = set(zip(half.quadruplets["pair_id_a"].to_pylist(), half.quadruplets["pair_id_b"].to_pylist()))
    assert len(ka & kb) >= 0.9 * max(len(ka), 1)


def test_mine_rejects_misaligned_inputs():
    pairs, src, edited, text, _ = _families()
    with pytest.raises(ValueError, match="text_emb"):
        mine(pairs, src, edited, text[:-1], _params())
    with pytest.raises(Exception):
        MineParams(filters={"tau_visual": 0.9, "tau_txt": 0.3})  # unknown key is an error


def test_mine_accepts_arrow_table():
    pairs, src, edited, text, _ = _families(seed=4)
    table = pa.table(pairs)
    assert mine(table, src, edited, text, _params()).quadruplets.equals(
        mine(pairs, src, edited, text, _params()).quadruplets)
