"""Sample: node index of the store -> samples table (which images fill which cells of which task)."""

from __future__ import annotations

import json

import pyarrow as pa

from pipelines.params import Params, produced_nodes
from pipelines.sampling import Task, auto_tasks, sample
from pipelines.stages.annotate import node_sources, online_nodes, plan
from pipelines.store import NodeStore, write_table

SAMPLES_SCHEMA = pa.schema([("key", pa.string()), ("split", pa.string()), ("task", pa.string()),
                            ("family", pa.string()), ("columns", pa.list_(pa.string())),
                            ("image_ids", pa.list_(pa.string()))])


def configured_tasks(params: Params) -> list[Task]:
    if params.sample.tasks == "auto":
        return auto_tasks(list(produced_nodes(params)))
    return [Task(t.name, tuple(t.path), t.family) for t in params.sample.tasks]


def index_by_node(params: Params, store: NodeStore) -> dict[str, set[str]]:
    index = store.node_index(node_sources(plan(params, store), store))
    out: dict[str, set[str]] = {}
    for image_id, node in zip(index["image_id"].to_pylist(), index["node_type"].to_pylist()):
        out.setdefault(node, set()).add(image_id)
    for node in online_nodes(params):  # rendered at export time from the image itself
        out[node] = set(out.get("image", set()))
    return out


def run_sample(params: Params, store: NodeStore) -> dict:
    tasks = configured_tasks(params)
    samples = sample(index_by_node(params, store), tasks, params.sample)
    write_table(pa.Table.from_pylist(samples, schema=SAMPLES_SCHEMA), store.samples_path)
    per_task: dict[str, int] = {}
    for s in samples:
        per_task[s["task"]] = per_task.get(s["task"], 0) + 1
    empty = [t.name for t in tasks if t.name not in per_task]
    return {"samples": len(samples), "tasks": len(per_task), "tasks_without_samples": empty,
            "per_task": json.loads(json.dumps(per_task))}
