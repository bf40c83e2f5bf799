"""Export: samples table -> WebDataset shard sets, failures table, leakage report and manifest under `paths.out`.

Shard sets (uniform fields within each):
  shards/<split>/<split>-NNNNN.tar                 grid layout: json + grid.png (the trainer's)
  shards_seq/<split>/<R>x<C>/<split>-NNNNN.tar     sequence layout: json + r<i>c<j>.png, one set per shape
Shard j of a set holds its samples [j*S, (j+1)*S) in key order; each is one Ray Data task
that reads only the node rows it needs and writes its tar atomically. Finished shards are
skipped on a re-run, so a killed export resumes and ends byte-identical to an
uninterrupted one. `export.graph200k` adds the Graph200K-compatible folder export.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.layouts import shape_set
from pipelines.manifest import build_manifest
from pipelines.params import Params
from pipelines.sampling import SPLITS
from pipelines.sampling_params import ExportParams
from pipelines.shards import CellCache, assemble, cell_refs, write_tar
from pipelines.stages.annotate import node_sources, online_nodes, plan, render_online
from pipelines.store import NodeStore, clean_temp_files, read_rows, write_json, write_table


def shard_path(out: Path, split: str, index: int, layout: str = "grid", shape: str = "") -> Path:
    if layout == "grid":
        return out / "shards" / split / f"{split}-{index:05d}.tar"
    return out / "shards_seq" / split / shape / f"{split}-{index:05d}.tar"


def load_cells(samples: list[dict], locations: list, online: dict, plugins: tuple[str, ...]) -> dict:
    """(node, image id) -> encoded bytes for every cell of the samples (online nodes rendered)."""
    by_part: dict[tuple[str, str], list[str]] = defaultdict(list)
    for node, image_id, path in locations:
        by_part[(path, node)].append(image_id)
    cells = {}
    for (path, node), ids in sorted(by_part.items()):
        for image_id, row in read_rows(path, ids, node).items():
            cells[(node, image_id)] = row["data"]
    for s in samples:
        for node, image_id in cell_refs(s):
            if node in online and (node, image_id) not in cells:
                cells[(node, image_id)] = render_online(*online[node], cells[("image", image_id)], image_id, node,
                                                        plugins)
    return cells


def write_shard(item: dict) -> dict:
    """Ray Data map function: assemble and write one shard from plain data (paths, ids)."""
    samples = json.loads(item["samples"])
    export = ExportParams.model_validate_json(item["export"])
    cells = load_cells(samples, json.loads(item["locations"]), json.loads(item["online"]), tuple(item["plugins"]))
    cache = CellCache(cells, export.png_compress_level)  # cells shared by samples of this shard: fitted once
    encoded = [assemble(s, cache, export, item["layout"]) for s in samples]
    size = write_tar(encoded, item["path"], mtime=export.mtime)
    return {"path": item["path"], "samples": len(encoded), "bytes": size}


def node_locations(params: Params, store: NodeStore) -> dict[tuple[str, str], str]:
    index = store.node_index(node_sources(plan(params, store), store))
    return {(n, i): p for i, n, p in zip(index["image_id"].to_pylist(), index["node_type"].to_pylist(),
                                         index["path"].to_pylist())}


def shard_sets(samples: list[dict], export: ExportParams) -> list[tuple[str, str, str, list[dict]]]:
    """(layout, split, shape, samples in key order) of every shard set."""
    sets = []
    order = {name: k for k, name in enumerate(SPLITS)}  # train first: its shards are written first
    for split in sorted({s["split"] for s in samples}, key=lambda name: (order.get(name, len(order)), name)):
        split_samples = sorted((s for s in samples if s["split"] == split), key=lambda s: s["key"])
        sets.append(("grid", split, "", split_samples))
        if "sequence" in export.layouts:
            by_shape = defaultdict(list)
            for s in split_samples:
                by_shape[shape_set(len(s["image_ids"]), len(s["columns"]))].append(s)
            sets.extend(("sequence", split, shape, chunk) for shape, chunk in sorted(by_shape.items()))
    return sets


def plan_shards(params: Params, store: NodeStore) -> list[dict]:
    samples = pq.read_table(store.samples_path).to_pylist()
    export = params.export
    where = node_locations(params, store)
    online = online_nodes(params)
    out = Path(params.paths.out).absolute()
    items = []
    for layout, split, shape, set_samples in shard_sets(samples, export):
        size = export.shard_size
        for j in range(0, len(set_samples), size):
            chunk = set_samples[j:j + size]
            needed = sorted({ref for s in chunk for ref in cell_refs(s) if ref[0] not in online}
                            | {("image", i) for s in chunk for n, i in cell_refs(s) if n in online})
            items.append({"path": str(shard_path(out, split, j // size, layout, shape)), "layout": layout,
                          "samples": json.dumps(chunk), "locations": json.dumps([[n, i, where[(n, i)]]
                                                                                 for n, i in needed]),
                          "online": json.dumps(online), "plugins": params.annotate.plugins,
                          "export": export.model_dump_json()})
    return items


def item_digest(item: dict) -> str:
    return hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()


def run_export(params: Params, store: NodeStore, progress=None) -> dict:
    import ray.data

    out = Path(params.paths.out).absolute()
    export = params.export
    items = plan_shards(params, store)
    expected = {item["path"] for item in items}
    for folder, pattern in ((out / "shards", "*/*.tar"), (out / "shards_seq", "*/*/*.tar")):
        clean_temp_files(folder)
        for stale in sorted(folder.glob(pattern)):  # shards of an earlier, larger sampling
            if str(stale) not in expected:
                stale.unlink()
    # A finished shard is kept only if it was planned from the same inputs: a changed sampling,
    # export param or node part rewrites it (same file name, new content).
    plan_file = out / "shards_plan.json"
    old_plan = json.loads(plan_file.read_text()) if plan_file.exists() else {}
    new_plan = {item["path"]: item_digest(item) for item in items}
    for path, digest in new_plan.items():
        if Path(path).exists() and old_plan.get(path) != digest:
            Path(path).unlink()
    write_json(new_plan, plan_file)
    pending = [item for item in items if not Path(item["path"]).exists()]
    if pending:
        ds = ray.data.from_items(pending, override_num_blocks=len(pending)).map(write_shard)
        rows = ds.iter_rows()
        for _ in (progress(rows, total=len(pending), desc="export shards") if progress else rows):
            pass
    failures = store.failures()
    write_table(failures, out / "failures.parquet")
    leakage = store.samples_path.parent / "leakage.json"
    if leakage.exists():
        shutil.copyfile(leakage, out / "leakage.json")
    graph200k = None
    if export.graph200k:
        from pipelines.graph200k_export import export_graph200k

        graph200k = export_graph200k(params, store, out / "graph200k")
    manifest = build_manifest(params, store, out)
    write_json(manifest, out / "manifest.json")
    return {"shards": len(items), "written": len(pending), "samples": manifest["counts"]["samples"],
            "failures": failures.num_rows, **({"graph200k_rows": graph200k["rows"]} if graph200k else {})}
