"""Leak-free splits: source images grouped by near-duplicates, whole groups assigned to a split.

An image and every image within `threshold` cosine of it (transitively: connected components)
form one group; a group's split is a hash of its smallest id, so it does not depend on the
other groups. Train and eval therefore share no source image and no near-duplicate pair.
`leakage_report` re-checks that on the finished samples, independently of the grouping.
"""

from __future__ import annotations

import hashlib

import numpy as np

BLOCK = 2048  # rows of the cosine matrix computed at once (memory ~ BLOCK x N floats)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def near_duplicate_pairs(emb: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Index pairs (i < j) with cosine >= threshold, blockwise."""
    x = _unit(emb)
    pairs = []
    for start in range(0, len(x), BLOCK):
        sims = x[start:start + BLOCK] @ x.T
        ii, jj = np.nonzero(sims >= threshold)
        ii = ii + start
        keep = ii < jj
        pairs.extend(zip(ii[keep].tolist(), jj[keep].tolist()))
    return pairs


def near_duplicate_groups(ids: list[str], emb: np.ndarray, threshold: float) -> dict[str, str]:
    """image id -> group id (the smallest id of its connected component of near-duplicates)."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    ids = [ids[i] for i in order]
    emb = np.asarray(emb)[order]
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in near_duplicate_pairs(emb, threshold):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)  # the root is the smallest index = smallest id
    return {ids[i]: ids[find(i)] for i in range(len(ids))}


def split_of_group(group_id: str, eval_fraction: float, seed: int) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}/{group_id}".encode()).digest()[:8], "little") / 2**64
    return "eval" if h < eval_fraction else "train"


def assign_splits(groups: dict[str, str], eval_fraction: float, seed: int) -> dict[str, str]:
    """image id -> "train" | "eval", constant within a near-duplicate group."""
    return {i: split_of_group(g, eval_fraction, seed) for i, g in groups.items()}


def leakage_report(samples: list[dict], ids: list[str], emb: np.ndarray, threshold: float) -> dict:
    """Eval samples (any split but train) with a source image equal to, or within `threshold`
    cosine of, a source image used by a train sample. Both counts must be 0."""
    row = {i: k for k, i in enumerate(ids)}
    x = _unit(emb)
    train_ids = sorted({i for s in samples if s["split"] == "train" for i in sample_image_ids(s)})
    train = x[[row[i] for i in train_ids]] if train_ids else np.zeros((0, x.shape[1]), np.float32)
    shared, near, checked = 0, 0, 0
    examples = []
    train_set = set(train_ids)
    for s in samples:
        if s["split"] == "train":
            continue
        checked += 1
        own = sample_image_ids(s)
        if train_set & set(own):
            shared += 1
            examples.append(s["key"])
            continue
        known = [row[i] for i in own if i in row]
        if len(train) and known and float((x[known] @ train.T).max()) >= threshold:
            near += 1
            examples.append(s["key"])
    return {"eval_samples_checked": checked, "train_images": len(train_ids), "threshold": threshold,
            "eval_samples_sharing_an_image_with_train": shared,
            "eval_samples_with_near_duplicate_in_train": near, "leaking_keys": examples[:20]}


def sample_image_ids(sample: dict) -> list[str]:
    """Every source image a sample shows (mined quadruplets: the pairs' source images)."""
    return sorted(set(sample.get("source_ids") or sample["image_ids"]))
