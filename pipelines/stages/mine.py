"""Mine: edit pairs (from the store's synthetic edits and from pair corpora) -> quadruplets.

The mining itself lives in `mining/` (embed, SemDeDup, task vectors, K-Means, in-cluster
neighbours, dual filter). This stage gathers the pairs, runs it, and writes the result
into the store so the sampler exports it like any other task:
  mined/part-<id>.parquet    node rows keyed by pair id: `mined_source` (A) and `mined_edit` (A')
  mined/quadruplets.parquet  one row per quadruplet (pair ids, image ids, instructions, scores)
  mined/mined.json           counts and the mining stats (the manifest and `vicl status` read it)
  mined/cache/               embeddings and scores reused by re-runs (mining.stage)
The outputs are written as one set (staged, then swapped in). With `mine.enabled: false` the
set is empty, so the next sample has no mined task; with no pairs at all the stage says so
in one line and writes an empty set.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.node_types import MINED_EDIT, MINED_SOURCE, NODE_TYPES
from pipelines.params import Params, produced_nodes
from pipelines.catalog import Catalog
from pipelines.store import (NODE_SCHEMA, NodeStore, commit_folder, folder_summary, part_name, recover_folder,
                             staging_folder, write_json, write_table)



def mined_dir(store: NodeStore) -> Path:
    return store.mined_dir


def edit_nodes(params: Params) -> list[str]:
    """Node types whose (image -> node) pairs feed mining: `mine.from_store`, or every synthetic edit."""
    if params.mine.from_store != "auto":
        return list(params.mine.from_store)
    return sorted(n for n in produced_nodes(params) if NODE_TYPES.get(n) and NODE_TYPES[n].group == "synthetic_edit")


def store_pairs(params: Params, store: NodeStore) -> pa.Table:
    """Pairs (image, edited node) with the instruction each edit annotator wrote into its meta."""
    from mining.pairs import PAIR_SCHEMA

    cat = Catalog.load(store)
    rows = []
    for node in edit_nodes(params):
        if node not in cat.nodes:
            continue
        for part in sorted(cat.nodes[node].folder.glob("part-*.parquet")):
            images = {r["image_id"]: r["data"] for r in
                      pq.read_table(store.images_dir / part.name, columns=["image_id", "data", "error"]).to_pylist()
                      if r["error"] is None}
            for r in pq.read_table(part, columns=["image_id", "node_type", "data", "meta", "error", "quality"]).to_pylist():
                if r["node_type"] != node or r["error"] is not None or r["image_id"] not in images \
                        or r.get("quality") is not None:
                    continue
                instruction = json.loads(r["meta"]).get("instruction")
                if not instruction:
                    continue
                rows.append({"pair_id": f"{r['image_id']}-{node}", "source_id": r["image_id"],
                             "edited_id": f"{r['image_id']}-{node}", "source_bytes": images[r["image_id"]],
                             "edited_bytes": r["data"], "instruction": instruction})
    return pa.Table.from_pylist(rows, schema=PAIR_SCHEMA)


def gather_pairs(params: Params, store: NodeStore) -> pa.Table:
    from mining.pairs import read_pairs

    tables = [store_pairs(params, store)] + [read_pairs(src) for src in params.mine.corpora]
    pairs = pa.concat_tables([t.cast(tables[0].schema) for t in tables]).sort_by("pair_id")
    # the same pair twice (same content id, or the same named id): the first copy is the pair
    ids = pairs["pair_id"].to_pylist()
    first = [k == 0 or ids[k] != ids[k - 1] for k in range(len(ids))]
    return pairs.filter(pa.array(first, pa.bool_())) if not all(first) else pairs


def _node_rows(pairs: pa.Table, pair_ids: set[str]) -> pa.Table:
    from pipelines.images import decode_rgb

    rows = []
    for r in pairs.to_pylist():
        if r["pair_id"] not in pair_ids:
            continue
        for node, data in ((MINED_SOURCE, r["source_bytes"]), (MINED_EDIT, r["edited_bytes"])):
            h, w = decode_rgb(data).shape[:2]
            fmt = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpg"
            rows.append({"image_id": r["pair_id"], "node_type": node, "data": data, "format": fmt,
                         "width": w, "height": h,
                         "meta": json.dumps({"source_id": r["source_id"], "edited_id": r["edited_id"],
                                             "instruction": r["instruction"]}, sort_keys=True),
                         "annotator": "mine", "annotator_version": "1", "params_hash": "", "seconds": 0.0,
                         "error": None, "quality": None})
    return pa.Table.from_pylist(rows, schema=NODE_SCHEMA)


def run_mine_stage(params: Params, store: NodeStore, log=print) -> dict:
    from mining.stage import embed_and_mine, kmeans_backends

    out = mined_dir(store)
    recover_folder(out)
    staging = staging_folder(out)
    if not params.mine.enabled:  # an empty set: no stale quadruplets reach the next sample
        write_json({"enabled": False}, staging / "mined.json")
        commit_folder(staging, out)
        return {"enabled": False}
    pairs = gather_pairs(params, store)
    if pairs.num_rows == 0:
        log("[mine] no edit pairs: no synthetic edit annotators and no mine.corpora; the mined task is empty "
            "(set mine.enabled: false to skip this stage)")
        summary = {"pairs": 0, "quadruplets": 0}
    else:
        result = embed_and_mine(pairs, params.mine, out / "cache")
        quads = result.quadruplets
        used = set(quads["pair_id_a"].to_pylist()) | set(quads["pair_id_b"].to_pylist())
        nodes = _node_rows(pairs, used)
        digest = hashlib.sha256("\n".join(sorted(used)).encode()).hexdigest()[:16]
        write_table(nodes, staging / part_name(digest))
        write_table(quads, staging / "quadruplets.parquet")
        summary = {"pairs": pairs.num_rows, "quadruplets": quads.num_rows,
                   "kmeans_backend": kmeans_backends(params.mine),
                   **{k: (int(v) if isinstance(v, (int, float)) else v) for k, v in result.stats.items()}}
    write_json(summary, staging / "mined.json")
    folder_summary(staging)  # written by its own stage: later stages only read it
    if (out / "cache").exists():
        os.replace(out / "cache", staging / "cache")  # the embedding cache survives the swap
    commit_folder(staging, out)
    return summary
