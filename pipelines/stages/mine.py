"""Mine: edit pairs (edit corpora ingested as records, the store's synthetic and generated edits) -> quadruplets.

Pairs come from three places:
  - edit corpora: ingest sources with `layout: edit_pairs`; both images are store images, and the
    transformation is known only through the instruction;
  - synthetic edits (`mine.from_store`, "auto": every synthetic edit family): the image and its
    edited node, with the instruction and the transform key (family and the params that change its
    meaning) its annotator wrote into the node's meta;
  - generated analogous pairs (annotators/generative): A and A' are two nodes of one slot, keyed by
    the instruction the editing model applied.
A pair whose transformation vicl knows is never paired by an estimate: it goes to
`labelled_pairs.parquet` and the sampler pairs it with others of the same transform key inside
one split (pipelines/edit_quadruplets.py). The rest are mined in `mining/` (embed, SemDeDup, task
vectors, K-Means, in-cluster neighbours, dual filter with the instruction-conflict check): the
cells are embedded in Ray workers that read them from the store (only ids and vectors come back).
Outputs, written as one set (staged, then swapped in):
  mined/quadruplets.parquet     one row per task-vector quadruplet: pair ids, instructions, scores,
                                and the cells of A, A', B, B' (source/edited node and image id of each pair)
  mined/labelled_pairs.parquet  one row per pair of known transformation, with its transform key
  mined/mined.json              counts, the mining stats and the instruction filter's held-out
                                precision (the manifest, the report and `vicl status` read it)
  mined/cache/                  embeddings and scores reused by re-runs (pipelines.mine_runner)
With `mine.enabled: false` the set is empty, so the next sample has no mined task; with no pairs
at all the stage says so in one line and writes an empty set.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.catalog import Catalog
from core.node_types import NODE_TYPES
from pipelines.params import Params, produced_nodes
from pipelines.stage import Stage
from pipelines.store import NodeStore, commit_folder, read_part, recover_folder, staging_folder, write_json, \
    write_table

PAIR_REF_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("source_id", pa.string()), ("edited_id", pa.string()),  # ids: embedding keys
    ("source_node", pa.string()), ("source_image", pa.string()),  # the cell of A
    ("edited_node", pa.string()), ("edited_image", pa.string()),  # the cell of A'
    ("instruction", pa.string()), ("origin", pa.string()),  # corpus | synthetic_edit | analogous
    ("transform_key", pa.string()),  # null: unknown (a corpus pair), mined by task vectors
])
CELL_COLUMNS = ("source_node", "source_image", "edited_node", "edited_image")


def cell_key(cat: Catalog, node: str, image_id: str) -> str:
    """The embedding key of a cell: an image's content id, or `<image id>/<node>@<annotator folder>` for a
    node of it (the folder is keyed by the annotator's params and code, so changed outputs get new keys)."""
    return image_id if node == "image" else f"{image_id}/{node}@{cat.nodes[node].folder.name}"


def edit_nodes(params: Params) -> list[str]:
    """Node types whose (image -> node) pairs feed mining: `mine.from_store`, or every synthetic edit."""
    if params.mine.from_store != "auto":
        return list(params.mine.from_store)
    return sorted(n for n in produced_nodes(params) if NODE_TYPES.get(n) and NODE_TYPES[n].group == "synthetic_edit")


def _pair_row(cat: Catalog, pair_id: str, source: tuple[str, str], edited: tuple[str, str], instruction: str,
              origin: str, transform_key: str | None = None) -> dict:
    """One pair: ids are the embedding keys of its cells, (node, image id) the cells themselves."""
    return {"pair_id": pair_id, "source_id": cell_key(cat, *source), "edited_id": cell_key(cat, *edited),
            "source_node": source[0], "source_image": source[1], "edited_node": edited[0],
            "edited_image": edited[1], "instruction": instruction, "origin": origin, "transform_key": transform_key}


def corpus_pairs(store: NodeStore, cat: Catalog) -> list[dict]:
    """Edit pairs of the ingested edit corpora whose two images are live store images."""
    records = {r: roles for r, roles in store.records().items() if set(roles) == {"source", "edited"}}
    if not records:
        return []
    index = cat.node_index()
    texts = {r: meta.get("text", "") for r, meta in store.member_meta("edited").items()}
    ids = sorted(records)
    live = index.has_cell("image")  # an edited image is a cell of its own pair, never a photo
    pos_src = index.positions([records[r]["source"] for r in ids])
    pos_edt = index.positions([records[r]["edited"] for r in ids])
    rows = []
    for r, ps, pe in zip(ids, pos_src.tolist(), pos_edt.tolist()):
        if ps >= 0 and pe >= 0 and live[ps] and live[pe] and texts.get(r):
            rows.append(_pair_row(cat, r, ("image", records[r]["source"]), ("image", records[r]["edited"]),
                                  texts[r], "corpus"))
    return rows


def _node_metas(cat: Catalog, node: str) -> list[tuple[str, dict, int]]:
    """(image id, meta, position in the node index) of the usable rows of one node type (meta only:
    no image bytes are read)."""
    index = cat.node_index()
    ok = index.has(node)
    out = []
    for part in sorted(cat.nodes[node].folder.glob("part-*.parquet")):
        t = read_part(part, columns=["image_id", "meta", "error", "quality"], filters=[("node_type", "=", node)])
        t = t.filter(pc.and_(pc.is_null(t["error"]), pc.is_null(t["quality"])))
        for image_id, meta, pos in zip(t["image_id"].to_pylist(), t["meta"].to_pylist(),
                                       index.positions(t["image_id"]).tolist()):
            if pos >= 0 and ok[pos]:
                out.append((image_id, json.loads(meta or "{}"), pos))
    return out


def store_pairs(params: Params, store: NodeStore, cat: Catalog) -> list[dict]:
    """Pairs made by annotators: (image, synthetic edit node) and the generated analogous pairs
    (A and A' are nodes of one image slot; A' names its A in `meta.source_node`)."""
    rows = []
    for node in edit_nodes(params):
        if node in cat.nodes:
            rows += [_pair_row(cat, f"{i}-{node}", ("image", i), (node, i), m["instruction"], "synthetic_edit",
                               m.get("transform_key")) for i, m, _ in _node_metas(cat, node) if m.get("instruction")]
    index = cat.node_index()
    for node in sorted(n for n in cat.nodes if NODE_TYPES.get(n) and NODE_TYPES[n].group == "synthetic_pair"):
        for i, m, pos in _node_metas(cat, node):
            source = m.get("source_node")
            if source and m.get("instruction") and index.has(source)[pos]:
                rows.append(_pair_row(cat, m.get("pair_id") or f"{i}-{node}", (source, i), (node, i),
                                      m["instruction"], "analogous", m.get("transform_key")))
    return rows


def gather_pairs(params: Params, store: NodeStore, cat: Catalog) -> pa.Table:
    """Every edit pair as cell references, sorted by pair id; a pair id given twice keeps its first copy."""
    rows = sorted(corpus_pairs(store, cat) + store_pairs(params, store, cat), key=lambda r: r["pair_id"])
    keep = [r for k, r in enumerate(rows) if k == 0 or r["pair_id"] != rows[k - 1]["pair_id"]]
    return pa.Table.from_pylist(keep, schema=PAIR_REF_SCHEMA)


class CellReader:
    """Reads cells' encoded bytes from the store (picklable: Ray workers read their own cells)."""

    def __init__(self, store_root: str):
        self.store_root = store_root
        self._catalog = None

    def __call__(self, refs: list[tuple[str, str]]) -> list[bytes]:
        if self._catalog is None:
            self._catalog = Catalog.load(NodeStore(self.store_root))
        cells = self._catalog.read_cells(refs)
        return [cells[(node, image_id)]["data"] for node, image_id in refs]


def _with_cells(quads: pa.Table, pairs: pa.Table) -> pa.Table:
    """The quadruplets with the cells (node, image id) of both pairs' A and A'."""
    by_id = {r["pair_id"]: r for r in pairs.select(["pair_id", *CELL_COLUMNS]).to_pylist()}
    for side in ("a", "b"):
        ids = quads[f"pair_id_{side}"].to_pylist()
        for col in CELL_COLUMNS:
            quads = quads.append_column(f"{col}_{side}", pa.array([by_id[i][col] for i in ids], pa.string()))
    return quads


def run_mine_stage(params: Params, store: NodeStore, log=print) -> dict:
    from pipelines.mine_runner import embed_and_mine, instruction_filter_heldout, kmeans_backends

    out = store.mined_dir
    recover_folder(out)
    staging = staging_folder(out)
    if not params.mine.enabled:  # an empty set: no stale quadruplets reach the next sample
        write_json({"enabled": False}, staging / store.mined_summary_path.name)
        commit_folder(staging, out)
        return {"enabled": False}
    pairs = gather_pairs(params, store, Catalog.load(store))
    labelled = pairs.filter(pc.is_valid(pairs["transform_key"]))
    unknown = pairs.filter(pc.is_null(pairs["transform_key"]))
    write_table(labelled, staging / store.labelled_pairs_path.name)
    if pairs.num_rows == 0:
        log("[mine] no edit pairs: no synthetic edit annotators, no generated pairs and no ingest source with "
            "`layout: edit_pairs`; the mined task is empty (set mine.enabled: false to skip this stage)")
    summary = {"pairs": pairs.num_rows, "pairs_by_origin": _counts(pairs["origin"]),
               "labelled_pairs": labelled.num_rows, "transform_keys": len(pc.unique(labelled["transform_key"])),
               "quadruplets": 0}
    if unknown.num_rows:
        result = embed_and_mine(unknown, params.mine, out / "cache", reader=CellReader(str(store.root)))
        quads = _with_cells(result.quadruplets, unknown)
        write_table(quads, staging / store.quadruplets_path.name)
        summary.update({"quadruplets": quads.num_rows, "kmeans_backend": kmeans_backends(params.mine),
                        "instruction_filter_heldout": instruction_filter_heldout(params.mine, out / "cache"),
                        **{k: (int(v) if isinstance(v, (int, float)) else v) for k, v in result.stats.items()}})
    write_json(summary, staging / store.mined_summary_path.name)
    if (out / "cache").exists():
        os.replace(out / "cache", staging / "cache")  # the embedding cache survives the swap
    commit_folder(staging, out)
    return summary


def _counts(values: pa.ChunkedArray) -> dict[str, int]:
    return {o["values"]: o["counts"] for o in sorted(pc.value_counts(values).to_pylist(), key=lambda o: o["values"])}


def mine_status(params: Params, store: NodeStore) -> list[str]:
    mined = store.mined_summary_path
    if not params.mine.enabled:
        return ["mine:     disabled"]
    if not (mined.exists() and json.loads(mined.read_text()).get("enabled", True)):
        return ["mine:     not run"]
    m = json.loads(mined.read_text())
    labelled = (f"{m['labelled_pairs']} of known transform ({m.get('transform_keys', 0)} keys, paired by label "
                "at sample), ") if m.get("labelled_pairs") else ""
    return [f"mine:     {m.get('pairs', 0)} pairs: {labelled}{m.get('quadruplets', 0)} mined quadruplets"]


STAGE = Stage(
    name="mine", help="mine open-domain edit quadruplets (task vectors, K-Means, neighbours, dual filter)",
    run=lambda params, store, progress=None: run_mine_stage(params, store), status=mine_status,
    reads=("{store}/images", "{store}/nodes"), writes=("{store}/mined",), persist=("{store}/mined",),
    done="store.mined_summary_path", params=("mine",),
    code=("mining", "pipelines/stages/mine.py", "pipelines/mine_runner.py"))
