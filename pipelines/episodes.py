"""Personalization episodes (ICPT, seed 002): K concepts, M reference images of each, a query.

Pure functions over plain data (no I/O). A concept is a subject record (pipelines/subjects.py:
a Subjects200K pair, or any record of several views of one subject) that passes the subject
quality filter; its images are its views. An episode of a split:
- draws one query concept among the split's concepts with at least M + 1 images and K - 1 more
  among those with at least M (no two concepts share an image), in a seeded order: concept k is
  labelled `<c{k}>` and named by its description item;
- takes M reference images of each concept and, as the query, one image of the query concept
  that is not among its references;
- writes the LVLM text: a question naming every concept and its reference images, asking which
  of them the query shows, its answer, and one yes/no question per concept.
A concept belongs to a split only when every one of its images is in that split (the sample
stage keeps a record's images in one split); a subject whose views the splits separate is left
out of every episode and counted, so no subject crosses splits. Each split draws from its own
RNG stream (seed, split), so the train episodes do not change when the eval count does.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from pipelines.sampling_params import EpisodeParams
from pipelines.subjects import Subject

EPISODES_FILE = "episodes.parquet"
EPISODE_SCHEMA = pa.schema([
    ("key", pa.string()), ("split", pa.string()),
    ("concept_labels", pa.list_(pa.string())), ("concept_names", pa.list_(pa.string())),
    ("concept_records", pa.list_(pa.string())), ("reference_ids", pa.list_(pa.list_(pa.string()))),
    ("query_ids", pa.list_(pa.string())), ("query_concepts", pa.list_(pa.string())),
    ("question", pa.string()), ("answer", pa.string()),
    ("qa", pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string())]))),
])


def concept_label(k: int) -> str:
    return f"<c{k}>"


def split_subjects(subjects: list[Subject], split_of: dict[str, str]) -> tuple[dict[str, list[Subject]], int]:
    """({split: its subjects, by record id}, subjects whose images lie in several splits or none)."""
    out: dict[str, list[Subject]] = {}
    crossing = 0
    for s in sorted(subjects, key=lambda s: s.record):
        splits = {split_of.get(v) for v in s.views}
        if len(splits) != 1 or None in splits:
            crossing += 1
            continue
        out.setdefault(splits.pop(), []).append(s)
    return out, crossing


def _rng(seed: int, split: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{split}/episodes".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _text(labels: list[str], names: list[str], m: int, query_labels: list[str]) -> tuple[str, str, list[dict]]:
    def named(label: str, name: str) -> str:
        return f"{label} ({name})" if name else label

    parts = []
    for k, (label, name) in enumerate(zip(labels, names)):
        first = k * m + 1
        where = f"image {first}" if m == 1 else f"images {first}-{first + m - 1}"
        parts.append(f"{where} show{'s' if m == 1 else ''} {named(label, name)}")
    question = (f"The first {len(labels) * m} images show {len(labels)} concepts: {'; '.join(parts)}. "
                f"Which of these concepts appear in the last image?")
    by_label = dict(zip(labels, names))
    answer = ", ".join(named(q, by_label[q]) for q in query_labels) + "."
    qa = [{"question": f"Is {label} in the last image?", "answer": "yes" if label in query_labels else "no"}
          for label in labels]
    return question, answer, qa


def draw_episodes(subjects: list[Subject], split_of: dict[str, str], params: EpisodeParams) -> tuple[list[dict], dict]:
    """(episodes in split then draw order, keyed `<split>_ep<9 digits>`; summary counts)."""
    by_split, crossing = split_subjects(subjects, split_of)
    k, m = params.k, params.m
    episodes: list[dict] = []
    summary = {"episodes": {}, "concepts": {}, "subjects_across_splits": crossing, "short": {}}
    for split in ("train", "eval"):
        pool = by_split.get(split, [])
        images = [list(s.views) for s in pool]
        query_ok = np.array([len(set(v)) > m for v in images], bool)
        ref_ok = np.array([len(set(v)) >= m for v in images], bool)
        summary["concepts"][split] = len(pool)
        want = params.count.get(split, 0)
        if want and (not query_ok.any() or ref_ok.sum() < k):
            summary["short"][split] = (f"{int(ref_ok.sum())} concepts with {m} image(s) and "
                                       f"{int(query_ok.sum())} with {m + 1}: an episode needs {k}, one of them "
                                       f"with {m + 1}")
            want = 0
        rng = _rng(params.seed, split)
        made = 0
        for _ in range(want):
            episode = _draw_one(pool, images, query_ok, ref_ok, k, m, rng)
            if episode is None:
                continue
            episode.update(key=f"{split}_ep{made:09d}", split=split)
            episodes.append(episode)
            made += 1
        summary["episodes"][split] = made
    return episodes, summary


def _draw_one(pool, images, query_ok, ref_ok, k: int, m: int, rng: np.random.Generator) -> dict | None:
    q = int(rng.choice(np.flatnonzero(query_ok)))
    chosen, used = [q], set(images[q])
    for i in rng.permutation(np.flatnonzero(ref_ok)).tolist():
        if len(chosen) == k:
            break
        if i != q and not used & set(images[i]):
            chosen.append(int(i))
            used |= set(images[i])
    if len(chosen) < k:
        return None  # the concepts share images: too few disjoint ones
    order = rng.permutation(k).tolist()  # where the query concept sits among the labels
    concepts = [chosen[j] for j in order]
    labels = [concept_label(j) for j in range(k)]
    references, query_ids = [], []
    for c in concepts:
        views = sorted(set(images[c]))
        picked = [views[j] for j in sorted(rng.choice(len(views), size=m + (c == q), replace=False).tolist())]
        if c == q:
            query_ids = [picked.pop(int(rng.integers(len(picked))))]
        references.append(picked)
    query_labels = [labels[concepts.index(q)]]
    names = [pool[c].name for c in concepts]
    question, answer, qa = _text(labels, names, m, query_labels)
    return {"concept_labels": labels, "concept_names": names, "concept_records": [pool[c].record for c in concepts],
            "reference_ids": references, "query_ids": query_ids, "query_concepts": query_labels,
            "question": question, "answer": answer, "qa": qa}


def episodes_table(episodes: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(episodes, schema=EPISODE_SCHEMA)
