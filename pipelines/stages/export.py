"""Export: samples table -> WebDataset shards, failures table and manifest under `paths.out`.

Shard j of a split holds samples [j*S, (j+1)*S) in key order; each is one Ray Data task
that reads only the node rows it needs and writes its tar atomically. Finished shards are
skipped on a re-run, so a killed export resumes and ends byte-identical to an
uninterrupted one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.manifest import build_manifest
from pipelines.params import Params
from pipelines.shards import assemble, write_tar
from pipelines.stages.annotate import node_sources, online_nodes, plan, render_online
from pipelines.store import NodeStore, clean_temp_files, read_rows, write_json, write_table


def shard_path(out: Path, split: str, index: int) -> Path:
    return out / "shards" / split / f"{split}-{index:05d}.tar"


def write_shard(item: dict) -> dict:
    """Ray Data map function: assemble and write one shard from plain data (paths, ids)."""
    samples = json.loads(item["samples"])
    locations = json.loads(item["locations"])  # [node, image_id, part path]
    online = json.loads(item["online"])  # node -> [annotator, params json]
    by_part: dict[tuple[str, str], list[str]] = defaultdict(list)
    for node, image_id, path in locations:
        by_part[(path, node)].append(image_id)
    cells = {}
    for (path, node), ids in sorted(by_part.items()):
        for image_id, row in read_rows(path, ids, node).items():
            cells[(node, image_id)] = row["data"]
    for s in samples:
        for node in s["columns"]:
            if node in online:
                for image_id in s["image_ids"]:
                    if (node, image_id) not in cells:
                        cells[(node, image_id)] = render_online(*online[node], cells[("image", image_id)],
                                                                image_id, node, tuple(item["plugins"]))
    encoded = [assemble(s, cells, item["cell_size"]) for s in samples]
    size = write_tar(encoded, item["path"], mtime=item["mtime"])
    return {"path": item["path"], "samples": len(encoded), "bytes": size}


def plan_shards(params: Params, store: NodeStore) -> list[dict]:
    samples = pq.read_table(store.samples_path).to_pylist()
    index = store.node_index(node_sources(plan(params, store), store))
    where = {(n, i): p for i, n, p in zip(index["image_id"].to_pylist(), index["node_type"].to_pylist(),
                                          index["path"].to_pylist())}
    online = online_nodes(params)
    out = Path(params.paths.out).absolute()
    items = []
    for split in ("train", "eval"):
        split_samples = [s for s in samples if s["split"] == split]
        size = params.export.shard_size
        for j in range(0, len(split_samples), size):
            chunk = split_samples[j:j + size]
            needed = sorted({(n, i) for s in chunk for n in s["columns"] if n not in online for i in s["image_ids"]}
                            | {("image", i) for s in chunk for i in s["image_ids"]})
            items.append({"path": str(shard_path(out, split, j // size)), "samples": json.dumps(chunk),
                          "locations": json.dumps([[n, i, where[(n, i)]] for n, i in needed]),
                          "online": json.dumps(online), "plugins": params.annotate.plugins,
                          "cell_size": params.export.cell_size, "mtime": params.export.mtime})
    return items


def run_export(params: Params, store: NodeStore, progress=None) -> dict:
    import ray.data

    out = Path(params.paths.out).absolute()
    items = plan_shards(params, store)
    expected = {item["path"] for item in items}
    shards_dir = out / "shards"
    clean_temp_files(shards_dir)
    for stale in sorted(shards_dir.glob("*/*.tar")):  # shards of an earlier, larger sampling
        if str(stale) not in expected:
            stale.unlink()
    pending = [item for item in items if not Path(item["path"]).exists()]
    if pending:
        ds = ray.data.from_items(pending, override_num_blocks=len(pending)).map(write_shard)
        rows = ds.iter_rows()
        for _ in (progress(rows, total=len(pending), desc="export shards") if progress else rows):
            pass
    failures = store.failures()
    write_table(failures, out / "failures.parquet")
    manifest = build_manifest(params, store, out)
    write_json(manifest, out / "manifest.json")
    return {"shards": len(items), "written": len(pending), "samples": manifest["counts"]["samples"],
            "failures": failures.num_rows}
