"""Leak-free splits: near-duplicate groups (exact and IVF search), group-level splits, and a
leakage report that re-checks with content ids and dHash64 instead of the grouping embedder."""

import io
import itertools

import faiss
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from core.perceptual_hash import dhash64, hamming
from pipelines.splits import (assign_splits, codes_within, leakage_report, near_duplicate_groups,
                              near_duplicate_pairs, split_of_group, unit_rows)

THRESHOLD = 0.95
GROUPING = "colour_gradient_stats cosine >= 0.95"


def _near_duplicate(rgb: np.ndarray, k: int) -> np.ndarray:
    """A re-encoded, slightly brightened and resized copy: the same photo to a person."""
    im = Image.fromarray(np.clip(rgb.astype(np.int16) + 4 + k, 0, 255).astype(np.uint8))
    im = im.resize((im.width - 3, im.height - 2), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=75)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.fixture(scope="module")
def corpus():
    """20 distinct photo crops (skimage) and a near-duplicate of each, with the weight-free
    embedding and the dHash64 of every image."""
    import skimage.data

    from mining.embed import ColourGradientStats

    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket(),
              np.stack([skimage.data.camera()] * 3, -1)]
    originals = []
    for p in photos:  # 4 distinct quadrant crops of each photo
        h, w = p.shape[0] // 2, p.shape[1] // 2
        originals += [p[y:y + h, x:x + w] for y in (0, h) for x in (0, w)]
    images, planted = {}, []
    for k, rgb in enumerate(originals):
        images[f"orig{k:02d}"] = rgb
        images[f"dup{k:02d}"] = _near_duplicate(rgb, k % 3)
        planted.append((f"orig{k:02d}", f"dup{k:02d}"))
    embedder = ColourGradientStats(96)
    ids = sorted(images)
    emb = np.stack([embedder.embed_one(images[i]) for i in ids])
    codes = np.stack([np.frombuffer(dhash64(images[i]), np.uint8) for i in ids])
    return ids, emb, codes, planted


def _clustered(n: int, d: int, seed: int, dup_fraction: float = 0.1):
    """Unit vectors around n // 20 centres (within-cluster cosine ~0.6) with planted chains of
    near-duplicates (cosine ~0.97 to their source)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((max(1, n // 20), d)))
    x = unit_rows(centres[rng.integers(0, len(centres), n)] + 0.8 * rng.standard_normal((n, d)) / np.sqrt(d))
    dups = rng.choice(n, int(n * dup_fraction), replace=False)
    for i in dups:  # sequential, so a duplicate of a duplicate makes a chain
        x[i] = unit_rows((x[rng.integers(0, n)] + 0.25 * rng.standard_normal(d) / np.sqrt(d))[None])[0]
    return x


def _samples(ids, split_of_image, n: int, seed: int):
    """Two-row samples, each drawn from one split's images (what the sampler does)."""
    rng = np.random.default_rng(seed)
    split, images = [], []
    for s in ("train", "eval"):
        pool = [i for i, sp in zip(ids, split_of_image) if sp == s]
        for _ in range(n):
            split.append(s)
            images.append(sorted(rng.choice(pool, 2, replace=False).tolist()))
    keys = [f"{s}_{k:09d}" for k, s in enumerate(split)]
    return np.array(split), images, keys


def test_planted_near_duplicates_are_grouped_distinct_photos_are_not(corpus):
    ids, emb, _, planted = corpus
    group = near_duplicate_groups(ids, emb, THRESHOLD)
    row = {i: k for k, i in enumerate(ids)}
    assert group.dtype == np.int64
    assert all(group[row[a]] == group[row[b]] for a, b in planted)
    assert len(np.unique(group)) >= 15  # 20 distinct crops; a few similar quadrants may merge
    # the group id is the smallest index (= smallest id) of the component
    assert np.all(group <= np.arange(len(ids))) and np.array_equal(group[group], group)


def test_exact_pairs_are_all_pairs_and_ivf_finds_the_same_on_a_moderate_set():
    x = _clustered(4000, 32, seed=3)
    brute = np.nonzero(np.triu(x.astype(np.float64) @ x.T.astype(np.float64) >= THRESHOLD, 1))
    exact = near_duplicate_pairs(x, THRESHOLD, exact=True, block=1000)
    assert len(exact[0]) > 200
    assert np.array_equal(exact[0], brute[0]) and np.array_equal(exact[1], brute[1])
    ivf = near_duplicate_pairs(x, THRESHOLD, exact_max_n=1000, nprobe=8)  # N above the switch: IVF
    assert np.array_equal(ivf[0], exact[0]) and np.array_equal(ivf[1], exact[1])
    # one probe misses some pairs, and what it finds is exactly verified (a subset of exact)
    one = near_duplicate_pairs(x, THRESHOLD, exact=False, nprobe=1)
    exact_keys, one_keys = set(zip(*map(np.ndarray.tolist, exact))), set(zip(*map(np.ndarray.tolist, one)))
    assert one_keys < exact_keys
    ids = [f"img{i:06d}" for i in range(len(x))]
    assert np.array_equal(near_duplicate_groups(ids, x, THRESHOLD, exact_max_n=1000, nprobe=8, block=512),
                          near_duplicate_groups(ids, x, THRESHOLD))


def test_groups_are_connected_components_whatever_the_blocks():
    x = _clustered(3000, 16, seed=5, dup_fraction=0.3)
    a, b = near_duplicate_pairs(x, THRESHOLD, exact=True)
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse import coo_matrix

    _, labels = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(len(x),) * 2), directed=False)
    ids = [f"{i:05d}" for i in range(len(x))]
    # tiny blocks force the edge folding into the forest many times
    group = near_duplicate_groups(ids, x, THRESHOLD, block=37)
    assert len(np.unique(group)) == labels.max() + 1 < len(x) - 100
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab)
        assert np.all(group[members] == members.min())


def test_grouping_is_deterministic_across_runs_and_thread_counts():
    x = _clustered(3000, 32, seed=7)
    ids = np.array([f"{i:05d}" for i in range(len(x))])
    before = faiss.omp_get_max_threads()
    try:
        runs = []
        for threads in (1, 2, 2):
            faiss.omp_set_num_threads(threads)
            runs.append((near_duplicate_groups(ids, x, THRESHOLD, exact=False, nprobe=4),
                         near_duplicate_groups(ids, x, THRESHOLD, exact=True)))
    finally:
        faiss.omp_set_num_threads(before)
    for ivf, exact in runs[1:]:
        assert np.array_equal(ivf, runs[0][0]) and np.array_equal(exact, runs[0][1])


def test_ids_must_be_sorted_and_aligned(corpus):
    ids, emb, _, _ = corpus
    with pytest.raises(ValueError, match="sorted"):
        near_duplicate_groups(ids[::-1], emb, THRESHOLD)
    with pytest.raises(ValueError, match="ids for"):
        near_duplicate_groups(ids[:-1], emb, THRESHOLD)
    assert len(near_duplicate_groups([], np.zeros((0, 8), np.float32), THRESHOLD)) == 0
    assert near_duplicate_groups(["a"], np.ones((1, 8), np.float32), THRESHOLD).tolist() == [0]


def test_splits_are_constant_within_groups_and_a_hash_of_the_representative():
    x = _clustered(5000, 16, seed=11, dup_fraction=0.3)
    ids = [f"{i:05d}" for i in range(len(x))]
    group = near_duplicate_groups(ids, x, THRESHOLD)
    split = assign_splits(ids, group, 0.3, seed=4)
    assert set(split.tolist()) == {"train", "eval"}
    for g in np.unique(group):
        members = split[group == g]
        assert np.all(members == members[0]) and members[0] == split_of_group(ids[g], 0.3, 4)
    assert 0.25 < np.mean(split[np.unique(group)] == "eval") < 0.35
    assert not np.array_equal(split, assign_splits(ids, group, 0.3, seed=5))


def test_split_of_a_group_does_not_depend_on_other_images(corpus):
    ids, emb, _, _ = corpus
    group = near_duplicate_groups(ids, emb, THRESHOLD)
    full = assign_splits(ids, group, 0.3, 0)
    keep = [k for k, i in enumerate(ids) if i.endswith(("0", "2", "4", "6", "8"))]
    half = [ids[k] for k in keep]
    part = assign_splits(half, near_duplicate_groups(half, emb[keep], THRESHOLD), 0.3, 0)
    # groups whose smallest member survives keep their split
    survivors = set(keep)
    assert all(part[p] == full[k] for p, k in enumerate(keep) if group[k] in survivors)


def test_dhash_keeps_near_duplicates_close_and_distinct_photos_apart(corpus):
    ids, _, codes, planted = corpus
    row = {i: k for k, i in enumerate(ids)}
    as_bytes = [c.tobytes() for c in codes]
    assert all(len(c) == 8 for c in as_bytes)
    assert max(hamming(as_bytes[row[a]], as_bytes[row[b]]) for a, b in planted) <= 3
    originals = [as_bytes[row[a]] for a, _ in planted]
    assert min(hamming(p, q) for p, q in itertools.combinations(originals, 2)) > 6
    flat = np.full((40, 50, 3), 128, np.uint8)
    assert dhash64(flat) == bytes(8) and dhash64(flat[..., 0]) == bytes(8)
    ramp = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (40, 1))
    assert dhash64(ramp) == b"\xff" * 8 == dhash64(np.stack([ramp] * 3, -1))
    with pytest.raises(ValueError):
        dhash64(np.zeros((4, 4, 3), np.float32))


def test_binary_search_within_hamming_matches_brute_force():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (600, 8), dtype=np.uint8)
    for k in range(300):  # near copies of reference codes at 0..10 flipped bits
        bits = np.unpackbits(ref[rng.integers(0, len(ref))])
        bits[rng.choice(64, k % 11, replace=False)] ^= 1
        queries[k] = np.packbits(bits)
    dist = np.unpackbits(queries[:, None, :] ^ ref[None, :, :], axis=2).sum(2).min(1)
    for r in (0, 3, 6, 9):
        assert np.array_equal(codes_within(ref, queries, r), dist <= r), r
    assert not codes_within(ref[:0], queries, 6).any()


def test_hash_near_duplicates_never_cross_the_splits():
    from pipelines.splits import separate_hash_near_duplicates

    rng = np.random.default_rng(3)
    n = 1200
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    for k in range(0, 600, 3):  # chains of near copies at 0..9 flipped bits: copies of copies
        for c in (1, 2):
            bits = np.unpackbits(codes[k + c - 1])
            bits[rng.choice(64, (k + c) % 10, replace=False)] ^= 1
            codes[k + c] = np.packbits(bits)
    codes[800:830] = codes[800]  # flat images: one code
    has = np.ones(n, bool)
    has[900] = False  # an image without a hash joins nothing
    codes[900] = codes[0]
    ids = [f"img{k:05d}" for k in range(n)]
    group = np.arange(n)
    group[[1000, 1001]] = 1000  # an embedding group stays together
    merged, splits = separate_hash_near_duplicates(ids, group, has, codes, 6, eval_fraction=0.3, seed=0)
    dist = np.unpackbits(codes[:, None, :] ^ codes[None, :, :], axis=2).sum(2)
    near = (dist <= 6) & has[:, None] & has[None, :]
    train = splits == "train"
    assert not near[np.ix_(~train, train)].any()  # what the leakage report re-checks
    assert (splits == "eval").sum() > 100 and merged[1000] == merged[1001] and merged[900] == 900
    assert np.array_equal(splits, assign_splits(ids, merged, 0.3, 0))
    assert len(set(splits[800:830])) == 1
    again = separate_hash_near_duplicates(ids, group, has, codes, 6, eval_fraction=0.3, seed=0)
    assert np.array_equal(again[0], merged) and np.array_equal(again[1], splits)


def test_leakage_report_is_zero_for_group_splits(corpus):
    ids, emb, codes, _ = corpus
    split = assign_splits(ids, near_duplicate_groups(ids, emb, THRESHOLD), 0.3, seed=1)
    s, images, keys = _samples(ids, split, 40, seed=0)
    report = leakage_report(s, images, keys, np.array(ids), codes, grouping=GROUPING)
    assert report["eval_samples_checked"] == 40 and report["train_images"] > 0
    assert report["eval_samples_sharing_an_image_with_train"] == 0
    assert report["eval_samples_with_near_duplicate_in_train"] == 0
    assert report["leaking_keys"] == [] and report["eval_images_without_hash"] == 0
    assert GROUPING in report["method"] and "dHash64 Hamming <= 6" in report["method"]


def test_leakage_report_finds_a_planted_shared_image_and_a_near_duplicate(corpus):
    ids, emb, codes, planted = corpus
    split = assign_splits(ids, near_duplicate_groups(ids, emb, THRESHOLD), 0.3, seed=1)
    s, images, keys = _samples(ids, split, 40, seed=0)
    train_image = images[1][0]
    eval_rows = np.flatnonzero(s == "eval")
    images[eval_rows[3]] = [train_image, images[eval_rows[3]][1]]  # the same image in eval
    a, b = next((a, b) for a, b in planted if split[ids.index(a)] == "train" and train_image not in (a, b))
    images = [[a if i == b else i for i in row] for row in images]  # train samples show a, never b...
    images[eval_rows[7]] = [b, images[eval_rows[7]][1]]  # ...and an eval sample shows b, a's near-duplicate
    images[0] = [a, images[0][1]]
    s[eval_rows[9]] = "eval_unseen"  # held-out splits are checked too
    images[eval_rows[9]] = [a]
    report = leakage_report(s, images, keys, np.array(ids), codes, grouping=GROUPING)
    assert report["eval_samples_sharing_an_image_with_train"] == 2
    assert report["eval_samples_with_near_duplicate_in_train"] == 1
    assert report["leaking_keys"] == sorted(keys[i] for i in eval_rows[[3, 7, 9]])
    # the near check uses the hash, not the embedding: a naive per-image split (no groups) leaks
    naive = assign_splits(ids, np.arange(len(ids)), 0.5, seed=3)
    assert any(naive[ids.index(a)] != naive[ids.index(b)] for a, b in planted)
    s2, images2, keys2 = _samples(ids, naive, 200, seed=1)
    # Arrow columns as the samples table and the hash node store them
    leaky = leakage_report(pa.array(s2), pa.array(images2), pa.array(keys2), pa.array(ids),
                           pa.array([c.tobytes() for c in codes], pa.binary()), grouping=GROUPING)
    assert leaky == leakage_report(s2, images2, keys2, np.array(ids), codes, grouping=GROUPING)
    assert leaky["eval_samples_with_near_duplicate_in_train"] > 0
    assert leaky["eval_samples_sharing_an_image_with_train"] == 0
    # images without a stored hash are counted, not silently passed
    missing = leakage_report(s2, images2, keys2, np.array(ids[1:]), codes[1:], grouping=GROUPING)
    assert missing["eval_images_without_hash"] + missing["train_images_without_hash"] == 1


def test_leakage_report_is_deterministic_and_checks_its_inputs(corpus):
    ids, emb, codes, _ = corpus
    split = assign_splits(ids, np.arange(len(ids)), 0.5, seed=3)
    s, images, keys = _samples(ids, split, 50, seed=2)
    one = leakage_report(s, images, keys, np.array(ids), codes, grouping=GROUPING)
    order = np.random.default_rng(0).permutation(len(ids))  # hash table in another order
    two = leakage_report(s, images, keys, np.array(ids)[order], codes[order], grouping=GROUPING)
    assert one == two
    with pytest.raises(ValueError):
        leakage_report(s[:-1], images, keys, np.array(ids), codes, grouping=GROUPING)
    with pytest.raises(ValueError):
        leakage_report(s, images, keys, np.array(ids + ids[:1]), np.vstack([codes, codes[:1]]), grouping=GROUPING)
