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
`cloze_probability` a random cell of that row (`target_cell`). Each (split, task) has its own
RNG stream from (seed, split, task), so adding a task never changes another task's samples.
A 2-column task with 2 rows is VIRAL's quadruplet (A, A', B, B'); mined quadruplets from the
mining stage become the task `mined_edit` (`mined_samples`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from pipelines.instructions import build_instruction
from pipelines.sampling_params import SamplerParams
from pipelines.splits import split_of_group
from pipelines.tasks import Task, enumerate_tasks, load_families, mined_task

EVAL_UNSEEN = "eval_unseen"  # split of the held-out tasks (unseen-task evaluation)
SPLITS = ("train", "eval", EVAL_UNSEEN)


def auto_tasks(nodes, params: SamplerParams | None = None) -> list[Task]:
    """Every task of the (built-in + extra) families over the present node types."""
    params = params or SamplerParams()
    families = load_families(params.extra_task_families)
    if params.families is not None:
        families = [f for f in families if f.name in params.families]
    return enumerate_tasks(families, nodes)


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


def _pick_contexts(query: str, pool: list[str], k: int, rng: np.random.Generator, params: SamplerParams,
                   groups: dict[str, str], embeddings: dict | None) -> list[str]:
    """k context images from pool: not the query, preferring distinct near-duplicate groups."""
    candidates = [i for i in pool if i != query]
    if k == 0 or not candidates:
        return []
    if params.context == "retrieved" and embeddings is not None and query in embeddings:
        q = embeddings[query]
        sims = np.array([float(embeddings[i] @ q) if i in embeddings else -2.0 for i in candidates])
        order = sorted(range(len(candidates)), key=lambda j: (-sims[j], candidates[j]))
        others = [candidates[j] for j in order if groups.get(candidates[j]) != groups.get(query)]
        near = others[:max(params.retrieval_pool, k)]
        candidates = [near[j] for j in rng.permutation(len(near))] if near else candidates
    else:
        candidates = [candidates[j] for j in rng.permutation(len(candidates))]
    used = {groups.get(query, query)}
    picked = []
    for i in candidates:  # first pass: one image per near-duplicate group
        if len(picked) < k and groups.get(i, i) not in used:
            picked.append(i)
            used.add(groups.get(i, i))
    for i in candidates:  # small pools: fill with any distinct image
        if len(picked) < k and i not in picked:
            picked.append(i)
    return picked


def draw_sample(task: Task, split: str, eligible: list[str], rng: np.random.Generator, params: SamplerParams, *,
                groups: dict[str, str], embeddings: dict | None = None, pools: dict[str, list[str]] | None = None,
                captions: dict[str, str] | None = None) -> dict:
    """One sample of a task from its eligible images (sorted). `pools`: same-category pools."""
    row_counts = sorted(params.rows)
    rows = int(rng.choice(row_counts, p=np.array([params.rows[k] for k in row_counts])))
    query = eligible[int(rng.integers(len(eligible)))]
    pool = pools[query] if pools is not None else eligible
    contexts = _pick_contexts(query, pool, min(rows, len(pool)) - 1, rng, params, groups, embeddings)
    image_ids = contexts + [query]
    rows = len(image_ids)
    perm = rng.permutation(len(task.path) - 1).tolist()
    columns = [task.path[i] for i in perm] + [task.path[-1]]
    cols = len(columns)
    target_col = int(rng.integers(cols)) if rng.random() < params.cloze_probability else cols - 1
    ip = params.instructions
    instruction = build_instruction(rows, columns, rng, caption=(captions or {}).get(query, ""),
                                    task_keep=ip.task_keep, content_keep=ip.content_keep, drop_all=ip.drop_all,
                                    phrases_file=ip.phrases_file)
    return {"split": split, "task": task.name, "family": task.family, "meta_task": task.meta_task,
            "semantic": task.semantic, "locality": task.locality, "columns": columns, "permutation": perm,
            "image_ids": image_ids, "source_ids": list(image_ids), "cell_nodes": [n for _ in image_ids for n in columns],
            "cell_ids": [i for i in image_ids for _ in columns], "target_row": rows - 1, "target_col": target_col,
            "instruction": instruction, "context_mode": params.context}


def _default_split_of(ids, params: SamplerParams) -> dict[str, str]:
    return {i: split_of_group(i, params.eval_fraction, params.seed) for i in ids}


def sample(index: dict[str, set[str]], tasks: list[Task], params, *, split_of: dict[str, str] | None = None,
           groups: dict[str, str] | None = None, embeddings: dict | None = None,
           categories: dict[tuple[str, str], str] | None = None, captions: dict[str, str] | None = None,
           mined: list[dict] | None = None) -> list[dict]:
    """Samples of every task and split, keyed `<split>_<9 digits>` in generation order."""
    all_ids = sorted(set().union(*index.values())) if index else []
    split_of = split_of if split_of is not None else _default_split_of(all_ids, params)
    groups = groups or {}
    categories = categories or {}
    heldout = set(params.heldout_tasks) | {t.name for t in tasks if t.family in params.heldout_families}
    eligible_of = {t.name: sorted(set.intersection(*(index.get(n, set()) for n in t.path))) for t in tasks}
    seen = [t for t in tasks if t.name not in heldout]
    counts = task_counts(seen, {t.name: len([i for i in eligible_of[t.name] if split_of.get(i) == "train"])
                                for t in seen}, params)
    n_eval = max(1, round(params.samples_per_task * params.eval_fraction))
    out = []
    for split in SPLITS:
        if split != "train" and params.eval_fraction == 0:
            continue
        for task in tasks:
            if (task.name in heldout) != (split == EVAL_UNSEEN):
                continue
            image_split = "eval" if split == EVAL_UNSEEN else split
            eligible = [i for i in eligible_of[task.name] if split_of.get(i) == image_split]
            pools = None
            if task.same_category:
                node = _category_node(task, categories)
                by_cat = defaultdict(list)
                for i in eligible:
                    if categories.get((node, i)):
                        by_cat[categories[(node, i)]].append(i)
                eligible = sorted(i for ids in by_cat.values() for i in ids)
                pools = {i: ids for ids in by_cat.values() for i in ids}
            n = counts.get(task.name, 0) if split == "train" else n_eval
            if not eligible or n == 0:
                continue
            rng = task_rng(params.seed, split, task.name)
            for _ in range(n):
                out.append(draw_sample(task, split, eligible, rng, params, groups=groups, embeddings=embeddings,
                                       pools=pools, captions=captions))
    if mined:
        out.extend(mined_samples(mined, split_of, params))
    return assign_keys(out)


def assign_keys(samples: list[dict]) -> list[dict]:
    counters: dict[str, int] = defaultdict(int)
    for s in samples:
        s["key"] = f"{s['split']}_{counters[s['split']]:09d}"
        counters[s["split"]] += 1
    return samples


def split_of(image_id: str, eval_fraction: float, seed: int) -> str:
    """Per-image split of an id outside the store's near-duplicate grouping (a group of one)."""
    return split_of_group(image_id, eval_fraction, seed)




def mined_samples(rows: list[dict], split_of_map: dict[str, str], params) -> list[dict]:
    """Quadruplets of the mining stage as samples of the task `mined_edit`.

    `rows`: mining's quadruplet table rows (pair_id_a, pair_id_b, source_id_a, source_id_b,
    instruction_a, instruction_b: mining.quadruplets.QUADRUPLET_SCHEMA). The store holds each pair as
    nodes `mined_source` (A) / `mined_edit` (A') under its pair id. Row 0 is the exemplar pair
    B -> B', row 1 the query A -> A'; the target is A'. Both source images must be in one
    split (`split_of_map`, near-duplicate grouped; ids outside it: per-id hash), else the
    quadruplet is skipped. Per split, a seeded draw (table order kept) of at most
    `mined_max_samples` quadruplets, by default as many as any other task gets: task
    diversity over volume (VisRel).
    """
    per_split: dict[str, list[dict]] = defaultdict(list)
    task = mined_task()
    columns = list(task.path)
    for r in rows:
        sources = [r["source_id_b"], r["source_id_a"]]
        splits = {split_of_map.get(i) or split_of(i, params.eval_fraction, params.seed) for i in sources}
        if len(splits) == 1 and not (params.eval_fraction == 0 and splits != {"train"}):
            per_split[splits.pop()].append({**r, "_sources": sources})
    default_cap = {"train": params.samples_per_task,
                   "eval": max(1, round(params.samples_per_task * params.eval_fraction))}
    out = []
    for split in sorted(per_split, key=lambda name: SPLITS.index(name) if name in SPLITS else len(SPLITS)):
        candidates = per_split[split]
        cap = params.mined_max_samples or default_cap.get(split, params.samples_per_task)
        rng = task_rng(params.seed, split, task.name)
        if len(candidates) > cap:
            candidates = [candidates[i] for i in sorted(rng.choice(len(candidates), size=cap, replace=False))]
        for r in candidates:
            text = r.get("instruction_a") or r.get("instruction_b") or ""
            ip = params.instructions
            instruction = build_instruction(2, columns, rng, task_keep=ip.task_keep, content_keep=0.0,
                                            drop_all=ip.drop_all, phrases_file=ip.phrases_file,
                                            task_text=f"Each row applies the same edit: {text}" if text else "")
            ids = [r["pair_id_b"], r["pair_id_a"]]
            out.append({"split": split, "task": task.name, "family": task.family, "meta_task": task.meta_task,
                        "semantic": task.semantic, "locality": task.locality, "columns": columns,
                        "permutation": [0], "image_ids": ids, "source_ids": r["_sources"],
                        "cell_nodes": columns * 2, "cell_ids": [i for i in ids for _ in columns],
                        "target_row": 1, "target_col": 1, "instruction": instruction, "context_mode": "mined"})
    return out
