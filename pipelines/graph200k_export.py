"""Graph200K-compatible export: `<split>/<node>/<i>_<node>.jpg` and one `data.json` (anchors.md §1.1).

One row per source image (the centre of its graph), in image-id order within its split
(`i` is that position). Row schema, as Graph200K's export script writes it:
  {"quality_assessment": ..., "description": ..., "collection": ..., "condition": {node: path, ...},
   "target": path}
- `condition` holds every image-like node of the image (materialised and online ones),
  except the edit and style nodes, which sit at the top level in Graph200K's forms:
  FillEdit / DepthEdit: {"image_path": [...], "description", "name"};
  InstantStyle / ReduxStyle: {"image_path": [...], "style_path": [...]}.
- `target` (vicl's addition) is the photo itself, written as node `image`.
- `description` is the caption node's text when present, `quality_assessment` the image meta's
  "quality_assessment" when present (else null); rows whose objectConsistency is below
  `min_object_consistency` are dropped, as in Graph200K.
Paths are relative to the export root. Files are written atomically and skipped when present,
so a re-run resumes; `data.json` is rewritten last.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from pipelines.images import decode_rgb
from pipelines.node_types import NODE_TYPES
from pipelines.store import NodeStore, read_rows, write_bytes, write_json

EDIT_NODES = ("FillEdit", "DepthEdit")
STYLE_NODES = ("InstantStyle", "ReduxStyle")
MIN_OBJECT_CONSISTENCY = 3


def jpeg_bytes(data: bytes, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(decode_rgb(data)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def graph200k_row(image_id: str, paths: dict[str, str], metas: dict[str, dict], collection: str) -> dict | None:
    """One data.json row from the node paths of one image, or None when quality drops it."""
    quality = metas.get("image", {}).get("quality_assessment")
    if isinstance(quality, dict) and quality.get("objectConsistency", MIN_OBJECT_CONSISTENCY) < MIN_OBJECT_CONSISTENCY:
        return None
    row = {"quality_assessment": quality, "description": metas.get("caption", {}).get("text", ""),
           "collection": collection, "condition": {}, "target": paths["image"], "image_id": image_id}
    for node, path in sorted(paths.items()):
        if node == "image":
            continue
        if node in EDIT_NODES:
            m = metas.get(node, {})
            row[node] = {"image_path": [path], "description": m.get("description", m.get("instruction", "")),
                         "name": m.get("name", "")}
        elif node in STYLE_NODES:
            row[node] = {"image_path": [path], "style_path": list(metas.get(node, {}).get("style_path", []))}
        else:
            row["condition"][node] = path
    return row


def export_graph200k(params, store: NodeStore, root: Path, collection: str = "vicl") -> dict:
    from pipelines.stages.annotate import node_sources, online_nodes, plan, render_online

    quality = params.export.graph200k_quality
    index = store.node_index(node_sources(plan(params, store), store))
    online = online_nodes(params)
    where: dict[str, dict[str, str]] = defaultdict(dict)
    for image_id, node, path in zip(index["image_id"].to_pylist(), index["node_type"].to_pylist(),
                                    index["path"].to_pylist()):
        if node in NODE_TYPES and NODE_TYPES[node].stored_as != "json" or node == "caption":
            where[image_id][node] = path
    splits_path = store.samples_path.parent / "splits.parquet"
    split_of = {r["image_id"]: r["split"] for r in pq.read_table(splits_path).to_pylist()} \
        if splits_path.exists() else {}
    rows_out: dict[str, list[dict]] = defaultdict(list)
    ordered = sorted(i for i in where if "image" in where[i])
    position: dict[str, int] = {}
    counters: dict[str, int] = defaultdict(int)
    for image_id in ordered:  # i: the image's position in its split, by image id
        split = split_of.get(image_id, "train")
        position[image_id] = counters[split]
        counters[split] += 1
    by_image_part: dict[str, list[str]] = defaultdict(list)
    for image_id in ordered:
        by_image_part[where[image_id]["image"]].append(image_id)
    results: dict[str, dict] = {}
    for part_ids in by_image_part.values():  # one image part at a time: bounded memory
        wanted: dict[tuple[str, str], list[str]] = defaultdict(list)
        for image_id in part_ids:
            for node, path in where[image_id].items():
                wanted[(node, path)].append(image_id)
        loaded: dict[tuple[str, str], dict] = {}
        for (node, path), ids in sorted(wanted.items()):
            for image_id, row in read_rows(path, ids, node).items():
                loaded[(node, image_id)] = row
        for image_id in part_ids:
            split, i = split_of.get(image_id, "train"), position[image_id]
            metas, paths = {}, {}
            for (node, iid), row in sorted(loaded.items()):
                if iid != image_id:
                    continue
                metas[node] = json.loads(row["meta"] or "{}")
                if node != "caption":
                    paths[node] = _write_node(root, split, node, i, row["data"], quality)
            for node, (name, params_json) in sorted(online.items()):
                target = root / split / node / f"{i}_{node}.jpg"
                if not target.exists():
                    data = render_online(name, params_json, loaded[("image", image_id)]["data"], image_id, node,
                                         tuple(params.annotate.plugins))
                    write_bytes(jpeg_bytes(data, quality), target)
                paths[node] = str(target.relative_to(root))
            results[image_id] = graph200k_row(image_id, paths, metas, collection)
    for image_id in ordered:
        if results.get(image_id) is not None:
            rows_out[split_of.get(image_id, "train")].append(results[image_id])
    for split, rows in rows_out.items():
        write_json(rows, root / split / "data.json")
    return {"rows": sum(len(r) for r in rows_out.values()), "per_split": {k: len(v) for k, v in rows_out.items()}}


def _write_node(root: Path, split: str, node: str, i: int, data: bytes, quality: int) -> str:
    target = root / split / node / f"{i}_{node}.jpg"
    if not target.exists():
        write_bytes(jpeg_bytes(data, quality), target)
    return str(target.relative_to(root))
