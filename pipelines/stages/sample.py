"""Sample: node store -> splits, samples table and leakage report.

1. node index of the store (+ online nodes, rendered at export from the image);
2. tasks: the task families enumerated over the node types present (or the explicit list);
3. a weight-free embedding of every source image (mining's ColourGradientStats) ->
   near-duplicate groups -> group-level train/eval split (pipelines/splits.py);
4. the sampler (pipelines/sampling.py), plus the mine stage's quadruplets as `mined_edit`;
5. written: samples/samples.parquet, samples/splits.parquet, samples/leakage.json.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.params import Params
from pipelines.sampling import assign_keys, auto_tasks, mined_samples, sample
from pipelines.sampling_params import SamplerParams
from pipelines.splits import assign_splits, leakage_report, near_duplicate_groups
from pipelines.stages.annotate import node_sources, online_nodes, plan
from pipelines.node_types import MINED_EDIT, MINED_SOURCE
from pipelines.store import NodeStore, read_rows, write_json, write_table
from pipelines.tasks import Task, explicit_task

_INSTRUCTION = pa.struct([("layout", pa.string()), ("task", pa.string()), ("content", pa.string()),
                          ("text", pa.string())])
SAMPLES_SCHEMA = pa.schema([
    ("key", pa.string()), ("split", pa.string()), ("task", pa.string()), ("family", pa.string()),
    ("meta_task", pa.string()), ("semantic", pa.string()), ("locality", pa.string()),
    ("columns", pa.list_(pa.string())), ("permutation", pa.list_(pa.int64())),
    ("image_ids", pa.list_(pa.string())), ("source_ids", pa.list_(pa.string())),
    ("cell_nodes", pa.list_(pa.string())), ("cell_ids", pa.list_(pa.string())),
    ("target_row", pa.int64()), ("target_col", pa.int64()), ("instruction", _INSTRUCTION),
    ("context_mode", pa.string()),
])
SPLITS_SCHEMA = pa.schema([("image_id", pa.string()), ("group", pa.string()), ("split", pa.string())])


def samples_dir(store: NodeStore):
    return store.samples_path.parent


def index_by_node(params: Params, store: NodeStore) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """({node: image ids}, {node: part paths}) of the store's ok rows, online nodes added."""
    index = store.node_index(node_sources(plan(params, store), store))
    out: dict[str, set[str]] = {}
    parts: dict[str, set[str]] = {}
    for image_id, node, path in zip(index["image_id"].to_pylist(), index["node_type"].to_pylist(),
                                    index["path"].to_pylist()):
        out.setdefault(node, set()).add(image_id)
        parts.setdefault(node, set()).add(path)
    for node in online_nodes(params):  # rendered at export time from the image itself
        out[node] = set(out.get("image", set()))
    return out, {n: sorted(p) for n, p in parts.items()}


def configured_tasks(params: Params, nodes=None, store: NodeStore | None = None) -> list[Task]:
    sp = params.sample
    if sp.tasks != "auto":
        return [explicit_task(t.name, t.path, t.family) for t in sp.tasks]
    if nodes is None:
        nodes = index_by_node(params, store)[0] if store is not None else _produced(params)
    return auto_tasks(nodes, sp)


def _produced(params: Params) -> list[str]:
    from pipelines.params import produced_nodes

    return list(produced_nodes(params))


def node_meta(parts: list[str], node: str) -> dict[str, dict]:
    """image id -> parsed meta of one node type."""
    out = {}
    for path in parts:
        t = pq.read_table(path, columns=["image_id", "node_type", "meta", "error"])
        for r in t.to_pylist():
            if r["node_type"] == node and r["error"] is None:
                out[r["image_id"]] = json.loads(r["meta"] or "{}")
    return out


def image_embeddings(parts: list[str], ids: set[str], size: int) -> tuple[list[str], np.ndarray]:
    """Weight-free embeddings (colour/gradient statistics) of the stored source images."""
    from mining.embed import ColourGradientStats

    from pipelines.images import decode_rgb

    embedder = ColourGradientStats(size)
    out_ids, vecs = [], []
    for path in parts:
        for image_id, row in sorted(read_rows(path, ids, "image").items()):
            out_ids.append(image_id)
            vecs.append(embedder.embed_one(decode_rgb(row["data"])))
    order = np.argsort(out_ids, kind="stable")
    return [out_ids[i] for i in order], (np.stack(vecs)[order] if vecs else np.zeros((0, 1), np.float32))


def _mined_rows(store: NodeStore, index: dict[str, set[str]], sp: SamplerParams) -> list[dict]:
    from pathlib import Path

    path = Path(sp.mined_quadruplets) if sp.mined_quadruplets else store.root / "mined" / "quadruplets.parquet"
    if not path.exists():
        return []
    have = index.get(MINED_SOURCE, set()) & index.get(MINED_EDIT, set())
    return [r for r in pq.read_table(path).to_pylist() if r["pair_id_a"] in have and r["pair_id_b"] in have]


def run_sample(params: Params, store: NodeStore) -> dict:
    sp = params.sample
    index, parts = index_by_node(params, store)
    tasks = configured_tasks(params, nodes=index)
    image_ids = index.get("image", set())
    ids, emb = image_embeddings(parts.get("image", []), image_ids, sp.embedding_size)
    groups = near_duplicate_groups(ids, emb, sp.near_duplicate_threshold)
    split_of = assign_splits(groups, sp.eval_fraction, sp.seed)
    categories = {}
    for node in sorted({n for t in tasks if t.same_category for n in t.path} & set(parts)):
        categories.update({(node, i): m.get("category") for i, m in node_meta(parts[node], node).items()})
    captions = {i: m.get("text", "") for i, m in node_meta(parts.get("caption", []), "caption").items()}
    samples = sample(index, tasks, sp, split_of=split_of, groups=groups,
                     embeddings=dict(zip(ids, emb)) if sp.context == "retrieved" else None,
                     categories=categories, captions=captions)
    mined = mined_samples(_mined_rows(store, index, sp), split_of, sp)
    samples = assign_keys(samples + mined)
    write_table(pa.Table.from_pylist(samples, schema=SAMPLES_SCHEMA), store.samples_path)
    write_table(pa.Table.from_pylist([{"image_id": i, "group": groups[i], "split": split_of[i]} for i in ids],
                                     schema=SPLITS_SCHEMA), samples_dir(store) / "splits.parquet")
    leakage = leakage_report(samples, ids, emb, sp.near_duplicate_threshold)
    write_json(leakage, samples_dir(store) / "leakage.json")
    per_task: dict[str, int] = {}
    for s in samples:
        per_task[s["task"]] = per_task.get(s["task"], 0) + 1
    empty = [t.name for t in tasks if t.name not in per_task]
    return {"samples": len(samples), "tasks": len(per_task), "tasks_enumerated": len(tasks),
            "tasks_without_samples": empty, "near_duplicate_groups": len(set(groups.values())),
            "leaking_eval_samples": leakage["eval_samples_with_near_duplicate_in_train"]
            + leakage["eval_samples_sharing_an_image_with_train"], "per_task": per_task}
