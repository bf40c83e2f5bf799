"""Mine: edit pairs (from the store's synthetic edits and from pair corpora) -> quadruplets.

The mining itself lives in `mining/` (embed, SemDeDup, task vectors, K-Means, in-cluster
neighbours, dual filter). This stage gathers the pairs, runs it, and writes the result
into the store so the sampler exports it like any other task:
  mined/part-00000.parquet   node rows keyed by pair id: `mined_source` (A) and `mined_edit` (A')
  mined/quadruplets.parquet  one row per quadruplet (pair ids, image ids, instructions, scores)
  mined/cache/               embeddings and scores reused by re-runs (mining.stage)
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.node_types import MINED_EDIT, MINED_SOURCE, NODE_TYPES
from pipelines.params import Params, produced_nodes
from pipelines.store import NODE_SCHEMA, NodeStore, part_name, write_table



def mined_dir(store: NodeStore) -> Path:
    return store.root / "mined"


def edit_nodes(params: Params) -> list[str]:
    """Node types whose (image -> node) pairs feed mining: `mine.from_store`, or every synthetic edit."""
    if params.mine.from_store != "auto":
        return list(params.mine.from_store)
    return sorted(n for n in produced_nodes(params) if NODE_TYPES.get(n) and NODE_TYPES[n].group == "synthetic_edit")


def store_pairs(params: Params, store: NodeStore) -> pa.Table:
    """Pairs (image, edited node) with the instruction each edit annotator wrote into its meta."""
    from mining.pairs import PAIR_SCHEMA

    from pipelines.stages.annotate import node_sources, plan

    sources = node_sources(plan(params, store), store)
    rows = []
    for node in edit_nodes(params):
        for part in sorted(sources[node].glob("part-*.parquet")):
            images = {r["image_id"]: r["data"] for r in
                      pq.read_table(store.images_dir / part.name, columns=["image_id", "data", "error"]).to_pylist()
                      if r["error"] is None}
            for r in pq.read_table(part, columns=["image_id", "node_type", "data", "meta", "error"]).to_pylist():
                if r["node_type"] != node or r["error"] is not None or r["image_id"] not in images:
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
    pairs = pa.concat_tables([t.cast(tables[0].schema) for t in tables])
    return pairs.sort_by("pair_id")


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
                         "error": None})
    return pa.Table.from_pylist(rows, schema=NODE_SCHEMA)


def run_mine_stage(params: Params, store: NodeStore) -> dict:
    from mining.stage import embed_and_mine

    out = mined_dir(store)
    if not params.mine.enabled:
        return {"enabled": False}
    pairs = gather_pairs(params, store)
    result = embed_and_mine(pairs, params.mine, out / "cache")
    quads = result.quadruplets
    used = set(quads["pair_id_a"].to_pylist()) | set(quads["pair_id_b"].to_pylist())
    write_table(_node_rows(pairs, used), out / part_name(0))
    write_table(quads, out / "quadruplets.parquet")
    return {"pairs": pairs.num_rows, "quadruplets": quads.num_rows, **{k: int(v) for k, v in result.stats.items()}}
