"""Leak-free splits: source images grouped by near-duplicates, whole groups assigned to a split.

An image and every image within `threshold` cosine of it (transitively: connected components)
form one group; a group's split is a hash of its smallest id, so it does not depend on the
other groups. Train and eval therefore share no source image and no near-duplicate pair.

The pairs come from faiss range search, never all-pairs: exact (`IndexFlatIP`) up to
`EXACT_MAX_N` images, an inverted file (`IndexIVFFlat`, inner product on unit vectors) above.
faiss only proposes candidates (radius `threshold - _MARGIN`); every candidate's cosine is then
recomputed here in float64 and kept when >= threshold, so whether a pair counts never depends on
faiss's float arithmetic, its thread count or timing, and the IVF pairs are a subset of the
exact ones. faiss uses `faiss.omp_get_max_threads()` threads (set it with
`faiss.omp_set_num_threads`).

`leakage_report` re-checks finished samples with signals the grouping never saw: the content
id (SHA-256 of the source bytes) and a 64-bit perceptual hash (core/perceptual_hash.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EXACT_MAX_N = 20_000  # above this many images the inverted file replaces exact search
NPROBE = 16  # inverted lists visited per query (IVF path)
QUERY_BLOCK = 65_536  # queries per range search: bounds faiss's result buffers
_MARGIN = 1e-4  # candidate radius below the threshold: far above float32 error of a cosine
_TRAIN_PER_LIST = 40  # k-means training points per inverted list (faiss warns below 39)
_VERIFY_CHUNK = 1 << 20  # candidate pairs whose cosine is recomputed at once
_SPLITS = np.array(["train", "eval"])


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32, C-contiguous (all-zero rows stay zero). Rows that are
    unit already (the embedding nodes store them so) are returned as they are: no 10^6 x d copy."""
    x = np.ascontiguousarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.all(np.abs(norms - 1) < 1e-5):
        return x
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


VECTORS_PER_LIST = 512  # IVF list size, fixed: a query scans nprobe lists of it whatever N is


def ivf_nlist(n: int) -> int:
    """Inverted lists for n vectors: n / VECTORS_PER_LIST, so each query scans the same number of
    vectors at any corpus size and grouping grows linearly (with ~4 sqrt(n) lists a query scans
    ~sqrt(n) vectors, and the cost grows as n^1.5). At least 1, never more than n / 39 (k-means
    needs about 39 training points per centroid)."""
    return max(1, min(n // VECTORS_PER_LIST, n // 39))


def _build_index(x: np.ndarray, exact: bool, nprobe: int, seed: int):
    import faiss

    n, d = x.shape
    if exact:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = ivf_nlist(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.spherical = True  # centroids on the unit sphere, like the data
        take = min(n, _TRAIN_PER_LIST * nlist)
        rows = np.sort(np.random.default_rng(seed).choice(n, take, replace=False)) if take < n else slice(None)
        index.train(x[rows])
        index.nprobe = min(nprobe, nlist)
    index.add(x)
    return index


def _verified(x: np.ndarray, a: np.ndarray, b: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the candidate pairs whose float64 cosine is >= threshold."""
    keep = np.empty(len(a), bool)
    for s in range(0, len(a), _VERIFY_CHUNK):
        e = s + _VERIFY_CHUNK
        keep[s:e] = np.einsum("ij,ij->i", x[a[s:e]], x[b[s:e]], dtype=np.float64) >= threshold
    return keep


def _pair_blocks(emb: np.ndarray, threshold: float, *, exact: bool | None, exact_max_n: int, nprobe: int,
                 seed: int, block: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(i, j) arrays with i < j and cosine >= threshold, one query block at a time (a pair may
    come from both of its ends' blocks; each block's pairs are unique and sorted)."""
    x = unit_rows(emb)
    n = len(x)
    if n < 2:
        return
    use_exact = n <= exact_max_n if exact is None else exact
    index = _build_index(x, use_exact, nprobe, seed)
    order = None
    if not use_exact:  # queries in the order of their own list: neighbouring queries probe the same
        _, own = index.quantizer.search(x, 1)  # lists, which then stay in cache (10^6 x 128 is 512 MB)
        order = np.argsort(own[:, 0], kind="stable").astype(np.int64)
    for start in range(0, n, block):
        rows = order[start:start + block] if order is not None else np.arange(start, min(n, start + block),
                                                                               dtype=np.int64)
        lims, _, found = index.range_search(x[rows], threshold - _MARGIN)
        query = np.repeat(rows, np.diff(lims.astype(np.int64)))
        found = found.astype(np.int64, copy=False)
        a, b = np.minimum(query, found), np.maximum(query, found)
        keep = a != b
        a, b = a[keep], b[keep]
        keep = _verified(x, a, b, threshold)
        key = np.unique(a[keep] * n + b[keep])
        yield key // n, key % n


def near_duplicate_pairs(emb: np.ndarray, threshold: float, *, exact: bool | None = None,
                         exact_max_n: int = EXACT_MAX_N, nprobe: int = NPROBE, seed: int = 0,
                         block: int = QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j) with cosine >= threshold, sorted, as two int64 arrays.

    `exact=None` searches exactly up to `exact_max_n` rows and through the inverted file above;
    True or False forces one path (the benchmark compares them)."""
    blocks = list(_pair_blocks(emb, threshold, exact=exact, exact_max_n=exact_max_n, nprobe=nprobe,
                               seed=seed, block=block))
    if not blocks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    n = len(emb)
    key = np.unique(np.concatenate([a * n + b for a, b in blocks]))
    return key // n, key % n


def _smallest_member(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of n nodes, the smallest node of its connected component under edges (a, b)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), bool), (a, b)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=True, connection="weak")
    _, first = np.unique(labels, return_index=True)  # first occurrence = smallest index
    return first[labels].astype(np.int64)


def _string_array(values) -> pa.Array:
    """Arrow strings (compact: offsets + bytes) from a list, numpy array or Arrow array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    return pa.array(values if isinstance(values, np.ndarray) else list(values), pa.string())


def _check_sorted_ids(ids: Sequence[str], n: int) -> None:
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} embeddings")
    arr = _string_array(ids)
    if n > 1 and not pc.all(pc.less(arr.slice(0, n - 1), arr.slice(1))).as_py():
        raise ValueError("image ids must be sorted and unique (the group id is the smallest id)")


def near_duplicate_groups(ids: Sequence[str], emb: np.ndarray, threshold: float, *, exact: bool | None = None,
                          exact_max_n: int = EXACT_MAX_N, nprobe: int = NPROBE, seed: int = 0,
                          block: int = QUERY_BLOCK) -> np.ndarray:
    """group[i] = index of the smallest id in i's connected component of pairs with cosine >= threshold.

    `ids` sorted and unique, `emb` (N, d) aligned with them; search options as near_duplicate_pairs.
    Edges are folded into a spanning forest whenever they outgrow N, so memory stays O(N + block
    results) even when a large group yields a quadratic number of pairs."""
    n = len(emb)
    _check_sorted_ids(ids, n)
    rep = np.arange(n, dtype=np.int64)
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    for a, b in _pair_blocks(emb, threshold, exact=exact, exact_max_n=exact_max_n, nprobe=nprobe, seed=seed,
                             block=block):
        pending.append((a, b))
        if sum(len(p[0]) for p in pending) > n:
            rep, pending = _fold(rep, pending), []
    return _fold(rep, pending) if pending else rep


def _fold(rep: np.ndarray, pending: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Smallest member per node after adding `pending` edges to the forest i -> rep[i]."""
    joined = np.flatnonzero(rep != np.arange(len(rep)))
    a = np.concatenate([joined] + [p[0] for p in pending])
    b = np.concatenate([rep[joined]] + [p[1] for p in pending])
    return _smallest_member(len(rep), a, b)


def merge_groups(group: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The groups joined along links (a[k], b[k]) (index pairs: the images of one record), so a
    record's images, and every near-duplicate of any of them, share one group and one split."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    return _fold(np.asarray(group, np.int64), [(a, b)]) if len(a) else np.asarray(group, np.int64)


def separate_hash_near_duplicates(ids: Sequence[str], group: np.ndarray, has_hash: np.ndarray, codes: np.ndarray,
                                  max_hamming: int, eval_fraction: float, seed: int,
                                  max_rounds: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(groups, splits) such that no eval image's dHash64 is within `max_hamming` bits of a train
    image's: what the leakage report re-checks. Each round splits the groups, finds every eval image
    with such a train neighbour (the report's exact multi-hash search, eval images only: a tenth of
    a full all-pairs search) and joins the two groups; a joined group may move split, so rounds
    repeat until none is found (near-duplicate edges are rare: one or two rounds in practice)."""
    group = np.asarray(group, np.int64)
    for _ in range(max_rounds):
        splits = assign_splits(ids, group, eval_fraction, seed)
        train = np.flatnonzero(has_hash & (splits == "train"))
        held = np.flatnonzero(has_hash & (splits != "train"))
        found, nearest = codes_nearest(codes[train], codes[held], max_hamming)
        if not found.any():
            return group, splits
        group = _fold(group, [(held[found], train[nearest[found]])])
    raise RuntimeError(f"dHash near-duplicates still cross the splits after {max_rounds} rounds")


def split_of_group(group_id: str, eval_fraction: float, seed: int) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}/{group_id}".encode()).digest()[:8], "little") / 2**64
    return "eval" if h < eval_fraction else "train"


def assign_splits(ids: Sequence[str], group: np.ndarray, eval_fraction: float, seed: int) -> np.ndarray:
    """Split name ("train" | "eval") per image: the seeded hash of its group's representative id,
    so constant within a group and independent of every other group."""
    group = np.asarray(group, np.int64)
    if len(group) != len(ids):
        raise ValueError(f"{len(group)} groups for {len(ids)} ids")
    reps, inverse = np.unique(group, return_inverse=True)
    rep_ids = _string_array(ids).take(pa.array(reps)).to_pylist()
    is_eval = np.fromiter((split_of_group(i, eval_fraction, seed) == "eval" for i in rep_ids), bool,
                          count=len(reps))
    return _SPLITS[is_eval.astype(np.int64)][inverse.reshape(-1)]


def hash_code_matrix(codes) -> np.ndarray:
    """(N, 8) uint8 from an (N, 8) array or an Arrow column of 8-byte binary values."""
    if isinstance(codes, pa.ChunkedArray):
        codes = codes.combine_chunks()
    if isinstance(codes, pa.Array):
        values = codes.to_pylist()
        if any(v is None or len(v) != 8 for v in values):
            raise ValueError("every hash code must be 8 bytes")
        codes = np.frombuffer(b"".join(values), np.uint8).reshape(-1, 8)
    codes = np.ascontiguousarray(codes, np.uint8)
    if codes.ndim != 2 or codes.shape[1] != 8:
        raise ValueError(f"hash codes must be (N, 8) uint8, got {codes.shape}")
    return codes


def _as_u64(codes: np.ndarray) -> np.ndarray:
    return hash_code_matrix(codes).view(">u8").reshape(-1)  # big-endian: the same bit order as the bytes


def codes_within(reference: np.ndarray, queries: np.ndarray, max_hamming: int) -> np.ndarray:
    """Mask over `queries` ((M, 8) uint8): some `reference` code is within max_hamming bits."""
    return codes_nearest(reference, queries, max_hamming)[0]


def codes_nearest(reference: np.ndarray, queries: np.ndarray, max_hamming: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask over `queries`: some `reference` code is within max_hamming bits, and the row of the
    nearest such reference code, -1 where none).

    faiss IndexBinaryMultiHash with 4 tables of 16 bits probes each table up to
    max_hamming // 4 flipped bits; by pigeonhole a code within max_hamming differs from the
    query in at most that many bits of one table, so the search is exact. Reference codes are
    deduplicated first (flat images all hash to one code); ties go to the first row of a code."""
    import faiss

    ref, first = np.unique(_as_u64(reference), return_index=True) if len(reference) else (np.zeros(0, np.uint64),
                                                                                           np.zeros(0, np.int64))
    out, nearest = np.zeros(len(queries), bool), np.full(len(queries), -1, np.int64)
    if len(ref) == 0 or len(queries) == 0:
        return out, nearest
    index = faiss.IndexBinaryMultiHash(64, 4, 16)
    index.nflip = max_hamming // 4
    index.add(np.ascontiguousarray(ref.astype(">u8").view(np.uint8).reshape(-1, 8)))
    q = np.ascontiguousarray(queries, np.uint8)
    for s in range(0, len(q), QUERY_BLOCK):
        dist, found = index.search(q[s:s + QUERY_BLOCK], 1)
        hit = (found[:, 0] >= 0) & (dist[:, 0] <= max_hamming)
        out[s:s + QUERY_BLOCK] = hit
        nearest[s:s + QUERY_BLOCK][hit] = first[found[hit, 0]]
    return out, nearest


def _flatten(sample_images) -> tuple[pa.Array, np.ndarray, int]:
    """(every sample's image ids in one array, the sample each belongs to, number of samples)."""
    if isinstance(sample_images, pa.ChunkedArray):
        sample_images = sample_images.combine_chunks()
    lists = sample_images if isinstance(sample_images, pa.Array) else pa.array(
        [list(s) for s in sample_images], pa.list_(pa.string()))
    counts = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return lists.flatten(), np.repeat(np.arange(len(lists)), counts), len(lists)


def _rows_in(values: pa.Array, ids: pa.Array) -> np.ndarray:
    """Row of each value in `ids`, -1 where absent."""
    return pc.index_in(values, value_set=ids).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def leakage_report(split, sample_images, keys, hash_ids, hash_codes, *, grouping: str,
                   max_hamming: int = 6, subject_of: dict[str, str] | None = None) -> dict:
    """Eval samples (every split but train) that show a train sample's image, or an image whose
    dHash64 is within `max_hamming` bits of a train image's, re-checked without the embedder
    that built the groups.

    split, keys: one per sample; sample_images: each sample's source image ids (lists, or an
    Arrow list<string> column); hash_ids: unique image ids, hash_codes: their dHash64 codes,
    (N, 8) uint8 or an Arrow column of 8-byte values; grouping: what built the groups (named in
    `method`). The two counts are disjoint: a sample sharing an image is not counted again as
    near. Everything is held in Arrow/NumPy columns (10^6 images, 5 x 10^5 samples: ~0.2 GB
    peak on top of the inputs, benchmarks/near_duplicates.py --measure leakage).

    subject_of: {image id: subject record id} (pipelines/subjects.py); given, the report also counts
    the subjects whose images appear in samples of more than one split (must be 0)."""
    split = np.asarray(split.to_pylist() if isinstance(split, (pa.Array, pa.ChunkedArray)) else split, dtype=str)
    n_samples = len(split)
    flat, owner, n_lists = _flatten(sample_images)
    if n_lists != n_samples or len(keys) != n_samples:
        raise ValueError("split, sample_images and keys must have one entry per sample")
    hash_ids, codes = _string_array(hash_ids), hash_code_matrix(hash_codes)
    if len(hash_ids) != len(codes) or len(pc.unique(hash_ids)) != len(hash_ids):
        raise ValueError("hash_ids must be unique and aligned with hash_codes")
    is_eval = split != "train"
    in_train = ~is_eval[owner]
    train_ids = pc.unique(flat.filter(pa.array(in_train)))
    eval_flat, eval_owner = flat.filter(pa.array(~in_train)), owner[~in_train]
    shared = _rows_in(eval_flat, train_ids) >= 0
    sharing = np.zeros(n_samples, bool)
    sharing[eval_owner[shared]] = True
    # near check: distinct eval images that are not train images, against every train image
    unseen = eval_flat.filter(pa.array(~shared))
    eval_new = pc.unique(unseen)
    train_rows, eval_rows = _rows_in(train_ids, hash_ids), _rows_in(eval_new, hash_ids)
    near_image = np.zeros(len(eval_new), bool)
    near_image[eval_rows >= 0] = codes_within(codes[train_rows[train_rows >= 0]], codes[eval_rows[eval_rows >= 0]],
                                              max_hamming)
    near = np.zeros(n_samples, bool)
    near[eval_owner[~shared][near_image[_rows_in(unseen, eval_new)]]] = True
    near &= ~sharing
    leaking = np.flatnonzero(is_eval & (sharing | near))
    # held-out samples (eval, eval_unseen) all draw eval images: a subject leaks when train shows it too
    subjects = {} if subject_of is None else shared_subjects(np.where(is_eval, "eval", "train")[owner], flat,
                                                              subject_of)
    return {**subjects,
        "method": f"content id (SHA-256 of the source bytes) equality + dHash64 Hamming <= {max_hamming} "
                  f"(faiss IndexBinaryMultiHash, exact); groups were built from {grouping}",
        "max_hamming": max_hamming,
        "eval_samples_checked": int(is_eval.sum()),
        "train_images": len(train_ids),
        "train_images_without_hash": int((train_rows < 0).sum()),
        "eval_images_without_hash": int((eval_rows < 0).sum()),
        "eval_samples_sharing_an_image_with_train": int(sharing.sum()),
        "eval_samples_with_near_duplicate_in_train": int(near.sum()),
        "leaking_keys": sorted(_string_array(keys).take(pa.array(leaking, pa.int64())).to_pylist())[:20],
    }


def shared_subjects(image_split, images, subject_of: dict[str, str]) -> dict:
    """Subjects (records of several views of one subject) shown in more than one split: each
    (split, image) pair is mapped to its subject, and a subject with two splits is shared."""
    subjects = pa.array([subject_of.get(i) for i in _string_array(images).to_pylist()], pa.string())
    pairs = pa.table({"subject": subjects, "split": pa.array(np.asarray(image_split).tolist(), pa.string())})
    pairs = pairs.filter(pc.is_valid(pairs["subject"])).group_by(["subject", "split"]).aggregate([])
    per_subject = pairs.group_by("subject").aggregate([("split", "count")])
    shared = per_subject.filter(pc.greater(per_subject["split_count"], 1))["subject"].to_pylist()
    return {"subjects_checked": per_subject.num_rows, "subjects_shared_across_splits": len(shared),
            "shared_subjects": sorted(shared)[:20]}


def sample_image_ids(sample: dict) -> list[str]:
    """Every store image a sample shows: its rows' images and every cell's image (a mined quadruplet's
    edited images are store images of their own)."""
    return sorted(set(sample.get("source_ids") or sample["image_ids"]) | set(sample.get("cell_ids") or ()))
