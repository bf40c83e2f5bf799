"""The sampler: tasks x splits -> in-context samples (which image fills which cell), seeded.

Pure functions over plain data (no I/O):
- `index`: {node type: set of image ids that hold it};
- `split_of`: {image id: "train" | "eval"} from pipelines/splits.py (near-duplicate groups);
- optional `groups` (near-duplicate group per image), `embeddings` (retrieved contexts),
  `categories` ({(node, image id): category} for same-category tasks), `captions`.

A sample has 1..3 rows (params `rows`), each a different source image holding every node of
the task's path (different near-duplicate groups where the pool allows); the query row is
last. Condition columns are shuffled by one permutation shared by all rows, the target
column stays last; the cell to generate is the query row's last cell, or with probability
`cloze_probability` a random cell of that row (`target_cell`).

Stable under growth (pipelines/ring.py): a task's queries are its eligible images in ring order
from the task's own starting place (cycling when it asks for more samples than it has images), a
query's contexts come from the few pool images that follow it on the ring, each sample's other
draws (rows, permutation, target, instruction) come from its own RNG stream keyed by (seed, split,
task, query, occurrence), and its key is the query's ring place. Adding images changes only the
samples next to them on the ring and the last query of a task's walk; adding a task changes no
other task's samples. A 2-column task with 2 rows is VIRAL's quadruplet (A, A', B, B'); the rows of
a task whose path holds a node with transform keys (synthetic edits) or categories share one key.
Edit quadruplets (mined and label-paired, pipelines/edit_quadruplets.py) become the task
`mined_edit`; the task mix (pipelines/task_mix.py) sets how many samples each task gets per split.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

import numpy as np

from pipelines import ring
from pipelines.edit_quadruplets import (draw, label_quadruplets, merge, mined_quadruplets, quadruplet_identity,
                                        quadruplet_sample)
from pipelines.instructions import build_instruction
from pipelines.sampling_params import SamplerParams
from pipelines.splits import split_of_group
from pipelines.task_mix import apply_budget, water_fill
from pipelines.tasks import Task, mined_task

EVAL_UNSEEN = "eval_unseen"  # split of the held-out tasks (unseen-task evaluation)
SPLITS = ("train", "eval", EVAL_UNSEEN)


def task_rng(seed: int, split: str, task: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{split}/{task}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _largest_remainder(weights: np.ndarray, total: int) -> list[int]:
    """Integer counts proportional to weights that sum exactly to total (ties by index)."""
    if weights.sum() <= 0:
        return [0] * len(weights)
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(int)
    rest = total - counts.sum()
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return counts.tolist()


def task_counts(tasks: list[Task], sizes: dict[str, int], params: SamplerParams) -> dict[str, int]:
    """Train samples per task: samples_per_task each (uniform), or the same total split by
    per-family weights (a family's weight shared by its tasks) or by size ** (1 / temperature)."""
    if params.task_weighting == "uniform":
        return {t.name: params.samples_per_task for t in tasks}
    if params.task_weighting == "family":
        per_family = defaultdict(int)
        for t in tasks:
            per_family[t.family] += 1
        w = np.array([params.family_weights.get(t.family, t.weight) / per_family[t.family] for t in tasks])
    else:
        w = np.array([float(sizes[t.name]) ** (1.0 / params.temperature) for t in tasks])
    return dict(zip([t.name for t in tasks], _largest_remainder(w, params.samples_per_task * len(tasks))))


def _category_node(task: Task, categories: dict) -> str:
    """The path node whose meta carries the category (the target first)."""
    for node in reversed(task.path):
        if any(k[0] == node for k in categories):
            return node
    return task.path[-1]


def _pick_contexts(query: int, candidates: np.ndarray, k: int, rng: np.random.Generator, params: SamplerParams,
                   group: np.ndarray, embeddings: np.ndarray | None, pool: np.ndarray) -> list[int]:
    """k context positions: not the query, preferring distinct near-duplicate groups. Random
    contexts are the first of `candidates` (the pool images that follow the query on the ring, in
    the query's seeded order: a bounded window, so a sample costs the same on 10^3 and 10^7 images,
    and an image added elsewhere on the ring never changes it); retrieved contexts are drawn from
    the query's nearest neighbours in `pool`."""
    if k == 0 or len(pool) <= 1:
        return []
    if params.context == "retrieved" and embeddings is not None:
        candidates = pool[pool != query]
        # similarity on a 1e-6 grid, ties by position (= by id): BLAS noise never decides the order
        sims = np.round((embeddings[candidates] @ embeddings[query]).astype(np.float64), 6)
        order = np.lexsort((candidates, -sims))
        ranked = candidates[order]
        others = ranked[group[ranked] != group[query]][:max(params.retrieval_pool, k)]
        candidates = others[rng.permutation(len(others))] if len(others) else candidates[rng.permutation(len(candidates))]
    else:
        candidates = candidates[candidates != query]  # in the query's own seeded order (_walk_task)
    used = {int(group[query])}
    picked: list[int] = []
    for i in candidates.tolist():  # first pass: one image per near-duplicate group
        if len(picked) < k and int(group[i]) not in used:
            picked.append(i)
            used.add(int(group[i]))
    query_group = int(group[query])
    for i in candidates.tolist():  # small pools: fill with any distinct image outside the query's group
        if len(picked) < k and i not in picked and int(group[i]) != query_group:  # (a near-duplicate or the
            picked.append(i)  # other view of the query's subject would show the answer)
    return picked


def context_window(k: int) -> int:
    """How many of the pool images that follow a query on the ring its k contexts are drawn from."""
    return 4 * k + 4


def draw_sample(task: Task, split: str, query: int, candidates: np.ndarray, pool: np.ndarray,
                rng: np.random.Generator, params: SamplerParams, *, ids, group: np.ndarray,
                embeddings: np.ndarray | None = None, captions: dict[str, str] | None = None) -> dict:
    """One sample of a task for `query` (an image position): contexts from `candidates` (the ring
    window after the query) or, retrieved, from `pool`; every other draw from `rng`, the sample's own."""
    row_counts = sorted(params.rows)
    rows = int(rng.choice(row_counts, p=np.array([params.rows[k] for k in row_counts])))
    contexts = _pick_contexts(query, candidates, min(rows, len(pool)) - 1, rng, params, group, embeddings, pool)
    image_ids = [ids[i] for i in contexts + [query]]
    rows = len(image_ids)
    perm = rng.permutation(len(task.path) - 1).tolist()
    columns = [task.path[i] for i in perm] + [task.path[-1]]
    cols = len(columns)
    target_col = int(rng.integers(cols)) if rng.random() < params.cloze_probability else cols - 1
    ip = params.instructions
    instruction = build_instruction(rows, columns, rng, caption=(captions or {}).get(image_ids[-1], ""),
                                    task_keep=ip.task_keep, content_keep=ip.content_keep, drop_all=ip.drop_all,
                                    phrases_file=ip.phrases_file)
    return {"split": split, "task": task.name, "family": task.family, "meta_task": task.meta_task,
            "semantic": task.semantic, "locality": task.locality, "columns": columns, "permutation": perm,
            "image_ids": image_ids, "source_ids": list(image_ids), "cell_nodes": [n for _ in image_ids for n in columns],
            "cell_ids": [i for i in image_ids for _ in columns], "target_row": rows - 1, "target_col": target_col,
            "instruction": instruction, "context_mode": params.context}


def _walk_task(task: Task, split: str, count: int, eligible: np.ndarray, pools: dict | None, places: np.ndarray,
               ring_order: np.ndarray, params: SamplerParams, **draw_kwargs) -> list[dict]:
    """`count` samples of one task in one split: its eligible positions walked in ring order from the
    task's starting place (occurrence c of a query when the walk goes round c times), each with the
    contexts that follow it on the ring within its pool. `ring_order`: every position in ring order
    (sorted once per sample run), so a task costs one pass over a mask, not a sort of its images."""
    mask = np.zeros(len(places), bool)
    mask[eligible] = True
    in_ring = ring_order[mask[ring_order]]
    first = int(np.searchsorted(places[in_ring], np.uint64(ring.digest64(f"{params.seed}/{split}/{task.name}/start"))))
    rings: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # keyed pool (shared arrays, by identity) -> ring order
    window = context_window(max(params.rows) - 1)
    out = []
    for j in range(count):
        step = (first + j) % len(in_ring)
        query, occurrence = int(in_ring[step]), j // len(in_ring)
        if pools is None:  # the pool is the task's own walk: the query's place in it is known
            pool, walked, at = eligible, in_ring, step
        else:
            pool = pools[query]
            if id(pool) not in rings:
                walked = ring.walk(pool, places[pool], 0)
                rings[id(pool)] = (walked, places[walked])
            walked, walked_places = rings[id(pool)]
            at = int(np.searchsorted(walked_places, places[query]))
            while walked[at] != query:  # equal places (a 64-bit tie): in position order after it
                at += 1
        n = len(walked)
        # the window after the query; a later occurrence of the query takes the next window along
        steps = (at + 1 + occurrence * window + np.arange(min(window, max(n - 1, 0)))) % max(n, 1)
        candidates = walked[steps] if n > 1 else walked[:0]
        # each query orders its window by a digest of (query, candidate): an image entering the
        # window changes the contexts only if it ranks among those picked
        candidates = candidates[np.lexsort((candidates, ring.pair_order(places[candidates], places[query])))]
        image_id = draw_kwargs["ids"][query]
        rng = task_rng(params.seed, split, f"{task.name}/{image_id}/{occurrence}")
        s = draw_sample(task, split, query, candidates, pool, rng, params, **draw_kwargs)
        s["key"] = sample_key(split, int(places[query]), f"{task.name}/{occurrence}")
        out.append(s)
    return out


def sample_key(split: str, query_place: int, what: str) -> str:
    """`<split>_<query's ring place, 16 hex><8 hex of what>`: samples sort by where their query sits on
    the ring (an added image's samples land beside those it changed), and a key never depends on
    how many samples came before it."""
    return f"{split}_{query_place:016x}{hashlib.sha256(what.encode()).hexdigest()[:8]}"


class _Ids:
    """Position -> id string, materialised only for the images a sample draws."""

    def __init__(self, ids):
        self.ids = ids

    def __getitem__(self, i: int) -> str:
        value = self.ids[int(i)]
        return value.as_py() if hasattr(value, "as_py") else value


def _from_plain(index: dict[str, set[str]], split_of, groups, embeddings):
    """The plain-dict forms (tests, small stores) as the catalog's compact ones: a NodeIndex and
    arrays aligned with its sorted ids."""
    import pyarrow as pa

    from pipelines.catalog import NodeIndex

    ids = sorted(set().union(*index.values())) if index else []
    pos = {i: k for k, i in enumerate(ids)}
    masks = {}
    for node, members in index.items():
        masks[node] = np.zeros(len(ids), bool)
        masks[node][[pos[i] for i in members]] = True
    if split_of is not None:
        split_of = np.array([split_of.get(i, "") for i in ids], dtype=object)
    if groups is not None:
        groups = np.array([pos.get(groups.get(i, i), k) for k, i in enumerate(ids)], np.int64)
    if embeddings is not None:
        dim = len(next(iter(embeddings.values())))
        embeddings = np.stack([embeddings.get(i, np.zeros(dim)) for i in ids]).astype(np.float32)
    return NodeIndex(pa.array(ids, pa.string()), pa.array([""] * len(ids), pa.string()), masks), split_of, groups, \
        embeddings


def eval_count(params) -> int:
    """Samples per task in an eval split: `eval_samples_per_task`, else samples_per_task x eval_fraction."""
    if params.eval_samples_per_task is not None:
        return params.eval_samples_per_task
    return max(1, round(params.samples_per_task * params.eval_fraction))


def _pool_keys(task: Task, categories: dict, transforms: dict, transform_nodes: set[str]):
    """The function image id -> the key all rows of a sample must share, or None when the task has
    none: its category (same-category tasks) and the transform key of each path node that has one
    (a synthetic edit's family and meaning: rows that flip along different axes are not one task)."""
    keyed = [n for n in task.path if n in transform_nodes]
    if not task.same_category and not keyed:
        return None
    cat_node = _category_node(task, categories) if task.same_category else None

    def key(image_id: str):
        parts = [categories.get((cat_node, image_id))] if cat_node else []
        parts += [transforms.get((n, image_id)) for n in keyed]
        return None if any(p is None for p in parts) else tuple(parts)
    return key


def _eligible(mask: np.ndarray, ids, key_of) -> tuple[np.ndarray, dict | None]:
    """(eligible positions, pool of each position) of one task in one split: with a key, only the
    positions that have one, each pooled with those of its key (one array per key, shared)."""
    eligible = np.nonzero(mask)[0]
    if key_of is None:
        return eligible, None
    by_key = defaultdict(list)
    for i in eligible.tolist():
        k = key_of(ids[i])
        if k is not None:
            by_key[k].append(i)
    pools = {}
    for members in by_key.values():
        pools.update(dict.fromkeys(members, np.array(members, np.int64)))
    return np.array(sorted(pools), np.int64), pools


def sample(index, tasks: list[Task], params, *, split_of=None, groups=None, embeddings=None,
           categories: dict[tuple[str, str], str] | None = None, captions: dict[str, str] | None = None,
           transforms: dict[tuple[str, str], str] | None = None, mined: list[dict] | None = None,
           labelled: list[dict] | None = None) -> list[dict]:
    """Samples of every task and split (the graph tasks' and the edit quadruplets', `mined_edit`), in
    key order (`sample_key`: by the query's place on the ring).

    `index`: the catalog's NodeIndex, or {node: set of ids}; `split_of`, `groups`, `embeddings`:
    arrays aligned with the index's sorted ids (or the dict forms). `transforms`: {(node, image id):
    transform key} of nodes whose rows must share one; `mined`: the mine stage's task-vector
    quadruplets; `labelled`: its pairs of known transformation (pipelines/edit_quadruplets.py).
    Counts per split come from the task mix (pipelines/task_mix.py): samples_per_task in train,
    eval_count() in eval, the edit budget over both."""
    from pipelines.catalog import NodeIndex

    if not isinstance(index, NodeIndex):
        index, split_of, groups, embeddings = _from_plain(index, split_of, groups, embeddings)
    n = len(index)
    split_arr = split_of if split_of is not None else np.array(
        [split_of_group(i, params.eval_fraction, params.seed) for i in index.ids.to_pylist()], dtype=object)
    group = groups if groups is not None else np.arange(n, dtype=np.int64)  # no grouping: each image alone
    categories, transforms = categories or {}, transforms or {}
    transform_nodes = {node for node, _ in transforms}
    ids = _Ids(index.ids)
    places = ring.places(index.ids, params.seed)
    ring_order = np.lexsort((np.arange(n), places))  # every position in ring order, ties by position
    heldout = set(params.heldout_tasks) | {t.name for t in tasks if t.family in params.heldout_families}
    eligible_of = {}
    for t in tasks:
        mask = np.ones(n, bool)
        for node in t.path:
            mask &= index.has(node)
        eligible_of[t.name] = mask
    is_train = split_arr == "train"
    seen = [t for t in tasks if t.name not in heldout]
    train_counts = task_counts(seen, {t.name: int((eligible_of[t.name] & is_train).sum()) for t in seen}, params)
    n_eval = eval_count(params)
    edits = _edit_candidates(index, split_arr, group, params, mined, labelled)
    mined_name = mined_task().name
    budget = params.edit_budget
    plan, out = {}, []
    for split in SPLITS:
        if split != "train" and params.eval_fraction == 0:
            continue
        image_split = split_arr == ("eval" if split == EVAL_UNSEEN else split)
        drawable, desired = {}, {}
        for task in tasks:
            if (task.name in heldout) != (split == EVAL_UNSEEN):
                continue
            key_of = _pool_keys(task, categories, transforms, transform_nodes)
            eligible, pools = _eligible(eligible_of[task.name] & image_split, ids, key_of)
            count = train_counts.get(task.name, 0) if split == "train" else n_eval
            if len(eligible) and count:
                drawable[task.name] = (task, eligible, pools, key_of)
                desired[task.name] = count
        per_sub = params.samples_per_task if split == "train" else n_eval
        for sub, rows in _edit_split(edits, split, mined_name in heldout).items():
            desired[f"{mined_name}/{sub}"] = min(len(rows), per_sub)
        families = {name: drawable[name][0].family if name in drawable else mined_task().family for name in desired}
        counts = apply_budget(desired, {n for n, f in families.items() if f in budget.families}, budget.max_share)
        if params.mined_max_samples is not None:
            capped = water_fill({k: c for k, c in counts.items() if k not in drawable}, params.mined_max_samples)
            counts.update(capped)
        plan[split] = counts
        for name, (task, eligible, pools, key_of) in drawable.items():
            for s in _walk_task(task, split, counts[name], eligible, pools, places, ring_order, params, ids=ids,
                                group=group,
                                embeddings=embeddings, captions=captions):
                if key_of is not None:  # the key every row shares: what admitted the sample
                    s["scores"] = json.dumps({"pool_key": [str(k) for k in key_of(s["image_ids"][-1])]},
                                             sort_keys=True)
                out.append(s)
    for split, counts in plan.items():
        for sub, rows in sorted(_edit_split(edits, split, mined_name in heldout).items()):
            name = f"{mined_name}/{sub}"
            for r in draw(rows, counts.get(name, 0), f"{params.seed}/{split}/{name}"):
                identity = quadruplet_identity(r)
                s = quadruplet_sample(r, split, task_rng(params.seed, split, f"{name}/{identity}"), params)
                s["key"] = sample_key(split, ring.place(r["source_image_a"], params.seed), f"{name}/{identity}")
                out.append(s)
    return sorted_by_key(out)


def _edit_candidates(index, split_arr: np.ndarray, group: np.ndarray, params, mined,
                     labelled) -> dict[str, dict[str, list[dict]]]:
    """{split: {sub-task: quadruplet rows}} of the mined and the labelled edit pairs."""
    if not mined and not labelled:
        return {}

    # the split and group of every source image, looked up in one search (not one per pair)
    sources = sorted({p["source_image"] for p in labelled or []}
                     | {r[f"source_image_{side}"] for r in mined or [] for side in "ab"})
    positions = index.positions(sources).tolist()
    split_by = {i: str(split_arr[k]) if k >= 0 else split_of(i, params.eval_fraction, params.seed)
                for i, k in zip(sources, positions)}
    group_by = {i: int(group[k]) if k >= 0 else i for i, k in zip(sources, positions)}  # outside: a group of its own
    return merge(label_quadruplets(labelled or [], split_by.__getitem__, params.seed, group_by.__getitem__),
                 mined_quadruplets(mined or [], split_by.__getitem__))


def _edit_split(edits: dict, split: str, heldout: bool) -> dict[str, list[dict]]:
    """The edit sub-tasks a split draws from: held out, they move from eval to eval_unseen."""
    if heldout:
        return edits.get("eval", {}) if split == EVAL_UNSEEN else {}
    return {} if split == EVAL_UNSEEN else edits.get(split, {})


def sorted_by_key(samples: list[dict]) -> list[dict]:
    """The samples in key order; two samples with one key would be one sample twice (a bug)."""
    samples = sorted(samples, key=lambda s: s["key"])
    for a, b in zip(samples, samples[1:]):
        if a["key"] == b["key"]:
            raise AssertionError(f"two samples share the key {a['key']}: {a['task']} and {b['task']}")
    return samples


def split_of(image_id: str, eval_fraction: float, seed: int) -> str:
    """Per-image split of an id outside the store's near-duplicate grouping (a group of one)."""
    return split_of_group(image_id, eval_fraction, seed)
