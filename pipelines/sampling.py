"""The minimal sampler: tasks are paths of node types, samples are rows of distinct source images.

Pure functions over an index {node type: set of image ids}; no I/O. Splits are decided
per source image (a hash of the id), so no image is in both train and eval.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pipelines.node_types import NODE_TYPES
from pipelines.params import SampleParams


@dataclass(frozen=True)
class Task:
    name: str
    path: tuple[str, ...]  # conditions..., target
    family: str


_FAMILY_OF_GROUP = {"condition": "conditional_generation", "degradation": "restoration",
                    "restoration_source": "restoration", "edit": "editing", "viral": "dense_prediction"}


def auto_tasks(nodes: list[str]) -> list[Task]:
    """Conditions both ways (generation and dense prediction), degradations -> image
    (restoration), image -> synthetic edit (editing), other image-like nodes -> image."""
    tasks = []
    for node in sorted(nodes):
        kind = NODE_TYPES.get(node)
        if node == "image" or kind is None or kind.stored_as == "json":
            continue
        if kind.group == "synthetic_edit":
            tasks.append(Task(f"image_to_{node}", ("image", node), "editing"))
            continue
        tasks.append(Task(f"{node}_to_image", (node, "image"), _FAMILY_OF_GROUP.get(kind.group, "generation")))
        if kind.group == "condition":
            tasks.append(Task(f"image_to_{node}", ("image", node), "dense_prediction"))
    return tasks


def split_of(image_id: str, eval_fraction: float, seed: int) -> str:
    """Deterministic per-image split from a hash, independent of the set of other images."""
    h = int.from_bytes(hashlib.sha256(f"{seed}/{image_id}".encode()).digest()[:8], "little") / 2**64
    return "eval" if h < eval_fraction else "train"


def _task_rng(seed: int, split: str, task: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{split}/{task}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sample(index: dict[str, set[str]], tasks: list[Task], params: SampleParams) -> list[dict]:
    """Samples for every task and split: rows of distinct images holding every node of the path.

    Each task has its own RNG stream, so adding a task never changes another task's samples.
    """
    row_counts = sorted(params.rows)
    row_probs = np.array([params.rows[k] for k in row_counts])
    out = []
    for split in ("train", "eval"):
        n_per_task = params.samples_per_task if split == "train" else max(1, round(params.samples_per_task *
                                                                                     params.eval_fraction))
        if split == "eval" and params.eval_fraction == 0:
            continue
        for task in tasks:
            eligible = sorted(set.intersection(*(index.get(n, set()) for n in task.path)))
            eligible = [i for i in eligible if split_of(i, params.eval_fraction, params.seed) == split]
            if not eligible:
                continue
            rng = _task_rng(params.seed, split, task.name)
            for _ in range(n_per_task):
                rows = int(rng.choice(row_counts, p=row_probs))
                rows = min(rows, len(eligible))
                picked = rng.choice(len(eligible), size=rows, replace=False)
                out.append({"split": split, "task": task.name, "family": task.family, "columns": list(task.path),
                            "image_ids": [eligible[i] for i in picked]})
    counters = {"train": 0, "eval": 0}
    for s in out:
        s["key"] = f"{s['split']}_{counters[s['split']]:09d}"
        counters[s["split"]] += 1
    return out
