"""Export: samples table -> WebDataset shard sets, failures table, leakage report and manifest under `paths.out`.

Shard sets (uniform fields within each):
  shards/<split>/<split>-NNNNN.tar                 grid layout: json + grid.png (the trainer's)
  shards_seq/<split>/<R>x<C>/<split>-NNNNN.tar     sequence layout: json + r<i>c<j>.png, one set per shape
A first export lays each set out in key order, `shard_size` samples per shard; later exports keep
each sample in its shard and put new samples in new shards (pipelines/shard_layout.py), so a grown
corpus rewrites only the shards whose samples changed. Each shard is one task (Ray Data, or this
process for a shard or two) that reads only the row groups holding its cells (the driver locates
every cell through the catalog's compact index) and writes its tar atomically. Finished shards are
skipped on a re-run, so a killed export resumes and ends byte-identical to an uninterrupted one; a
shard whose plan digest changed (its samples, cells, export params, or the code that renders
shards) is rewritten, and one planned under another number is renamed. `export.graph200k` adds the Graph200K-compatible folder export.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import executor, shard_layout
from annotators.runtime import render_online
from pipelines.catalog import Catalog
from pipelines.stage import Stage, StageOrderError
from core.grid import shape_set
from pipelines.manifest import build_manifest
from pipelines.params import Params
from pipelines.sampling import SPLITS
from pipelines.sampling_params import ExportParams
from core.sample_schema import JSON_FIELD
from pipelines.shards import GATE_SCORES_KEY, CellCache, assemble, cell_refs, write_tar
from pipelines.store import NodeStore, clean_temp_files, folder_summary, read_cells, write_json, write_table
from pipelines.verify import write_sums
from pipelines.episode_shards import write_episode_shards  # issue 14
from pipelines.subjects import alias_reference_cells, apply_aliases  # issue 14

# The code that renders a shard: a change to it rewrites the shards it made.
_RENDER_CODE = ("pipelines/shards.py", "core/grid.py", "core/map_resize.py", "core/sample_schema.py", "core/images.py",
                "annotators/runtime.py", "core/node_types.py")  # relative to the repository root
QUALITY_SCHEMA = pa.schema([("annotator", pa.string()), ("node_type", pa.string()), ("image_id", pa.string()),
                            ("reason", pa.string()), ("part", pa.string())])


def shard_path(out: Path, split: str, index: int, layout: str = "grid", shape: str = "") -> Path:
    if layout == "grid":
        return out / "shards" / split / f"{split}-{index:05d}.tar"
    return out / "shards_seq" / split / shape / f"{split}-{index:05d}.tar"


def load_cells(samples: list[dict], cells: list, online: dict, plugins: tuple[str, ...], store_root: str) -> dict:
    """(node, image id) -> encoded bytes for every cell of the samples (online nodes rendered; their
    meta, which records the parameters they used, is put in each sample's `online_params`). A cell
    whose node meta holds the model's own scores (`confidence`: pose visibility, mask confidence, box
    scores) puts them in the sample's `gate_scores`, which the record carries."""
    by_part: dict[tuple[str, str], list[str]] = defaultdict(list)
    for node, image_id, part in cells:
        by_part[(part, node)].append(image_id)
    out, metas, gates = {}, {}, {}
    for (part, node), ids in sorted(by_part.items()):
        for image_id, row in read_cells(Path(store_root) / part, ids, node).items():
            out[(node, image_id)] = row["data"]
            scores = json.loads(row.get("meta") or "{}").get(GATE_SCORES_KEY)
            if scores:
                gates[(node, image_id)] = scores
    for s in samples:
        used = {}
        admitted = {f"{n}/{i}": gates[(n, i)] for n, i in cell_refs(s) if (n, i) in gates}
        if admitted:  # the detector scores that let each cell through its gates (re-threshold later)
            s["gate_scores"] = admitted
        for node, image_id in cell_refs(s):
            if node in online:
                if (node, image_id) not in out:
                    name, params_json = online[node]
                    out[(node, image_id)], metas[(node, image_id)] = render_online(
                        name, params_json, out[("image", image_id)], image_id, node, plugins)
                used[f"{node}/{image_id}"] = json.loads(metas[(node, image_id)])
        if used:
            s["online_params"] = used
    return out


def write_shard(item: dict) -> dict:
    """Ray Data map function: assemble and write one shard from plain data (paths, ids)."""
    samples = json.loads(item["samples"])
    export = ExportParams.model_validate_json(item["export"])
    cells = load_cells(samples, json.loads(item["cells"]), json.loads(item["online"]), tuple(item["plugins"]),
                       item["store"])
    cells = apply_aliases(cells, item.get("aliases"))  # issue 14: reference cells = the other view's image
    cache = CellCache(cells, export.png_compress_level)  # cells shared by samples of this shard: fitted once
    encoded = [assemble(s, cache, export, item["layout"]) for s in samples]
    size = write_tar(encoded, item["path"], mtime=export.mtime)
    cells = {}
    for s in encoded:  # each sample's cell size (its bucket, after the grid's pixel cap): the manifest counts them
        record = json.loads(s[JSON_FIELD])
        cells[s["__key__"]] = f"{record['cell_width']}x{record['cell_height']}"
    return {"path": item["path"], "set": item["set"], "samples": len(encoded), "bytes": size, "cells": cells}


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


def _render_digest() -> str:
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for name in _RENDER_CODE:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


# The export params a shard's bytes depend on: turning on the Graph200K export or changing the preview
# count must not re-render a single shard (the plan digest holds only these).
SHARD_FIELDS = ("shard_size", "cell_size", "mtime", "aspect", "max_aspect", "buckets", "max_grid_pixels",
                "png_compress_level")


def shard_params_json(export: ExportParams) -> str:
    return export.model_dump_json(include=set(SHARD_FIELDS))


def plan_shards(params: Params, store: NodeStore, cat: Catalog,
                previous: dict[str, dict[str, int]] | None = None) -> tuple[list[dict], dict[str, list[list[str]]]]:
    """(one item per shard, {set: shard number -> keys}): each set laid out by pipelines/shard_layout.py,
    keeping `previous` (the last export's layout) where its samples are still there."""
    samples = pq.read_table(store.samples_path).to_pylist()
    export = params.export
    online = {n: (o.annotator, o.params_json) for n, o in cat.online.items()}
    index = cat.node_index()
    out = Path(params.paths.out).absolute()
    render = _render_digest()
    items, sets = [], {}
    for layout, split, shape, set_samples in shard_sets(samples, export):
        size = export.shard_size
        set_name = f"{shard_path(out, split, 0, layout, shape).parent.relative_to(out)}@{size}"
        by_key = {s["key"]: s for s in set_samples}
        sets[set_name] = shard_layout.layout(list(by_key), (previous or {}).get(set_name, {}), size)
        for j, keys in enumerate(sets[set_name]):
            chunk = [by_key[k] for k in keys]
            needed = sorted({ref for s in chunk for ref in cell_refs(s) if ref[0] not in online}
                            | {("image", i) for s in chunk for n, i in cell_refs(s) if n in online})
            items.append({"path": str(shard_path(out, split, j, layout, shape)), "set": set_name, "shard": j,
                          "layout": layout,
                          "samples": json.dumps(chunk), "cells": needed, "online": json.dumps(online),
                          "plugins": list(cat.plugins), "export": shard_params_json(export), "render": render})
    alias_reference_cells(items, cat.references())  # issue 14: a reference cell reads the other view's image
    _locate(items, cat, index)
    return items, sets


def _locate(items: list[dict], cat: Catalog, index) -> None:
    """Each needed cell's part file (relative to the store), from the compact index in one pass."""
    image_cells = sorted({i for item in items for _, i in item["cells"]})
    pos = dict(zip(image_cells, index.positions(image_cells).tolist())) if image_cells else {}
    parts = index.parts
    for item in items:
        located = []
        for node, image_id in item["cells"]:  # every node folder has one part per image part, same id
            path = cat.nodes[node].folder / f"part-{parts[pos[image_id]].as_py()}.parquet"
            located.append([node, image_id, str(path.relative_to(cat.store.root))])
        item["cells"] = json.dumps(located)


def _read_unknown_cells(items: list[dict], sets: dict[str, list[list[str]]], cells: dict) -> int:
    """Fill in the cell size of samples whose shard was kept but whose size the index does not hold
    (an export killed after rendering it, before recording it): read from the shard's records."""
    from core.sample_reader import read_samples

    read = 0
    for item in items:
        name = item["set"]
        if all(cells.get((name, k)) for k in sets[name][item["shard"]]):
            continue
        for sample in read_samples([item["path"]]):
            cells[(name, sample.key)] = f"{sample.record['cell_width']}x{sample.record['cell_height']}"
        read += 1
    return read


def _keep_or_move(out: Path, old_plan: dict[str, str], new_plan: dict[str, str]) -> None:
    """Bring the shard files on disk to `new_plan` ({path: digest}) without rendering: keep a file
    whose digest is unchanged, rename one whose content is now planned under another number (through
    a temporary name: moves may form chains), delete every other one (it is rendered again)."""
    on_disk: set[str] = set()
    for folder, pattern in ((out / "shards", "*/*.tar"), (out / "shards_seq", "*/*/*.tar")):
        clean_temp_files(folder)  # a killed export's leftovers, half-moved shards among them
        on_disk |= {str(p.relative_to(out)) for p in folder.glob(pattern)}
    keep = {p for p in on_disk if old_plan.get(p) is not None and old_plan.get(p) == new_plan.get(p)}
    movable = defaultdict(list)
    for p in sorted(on_disk - keep):
        if old_plan.get(p):
            movable[old_plan[p]].append(p)
    moves = {}
    for p, digest in sorted(new_plan.items()):
        if p not in keep and movable.get(digest):
            moves[movable[digest].pop(0)] = p
    for p in sorted(on_disk - keep - set(moves)):
        (out / p).unlink()
    for src in sorted(moves):
        os.replace(out / src, (out / src).with_name(f".{Path(src).name}.move.tmp"))
    for src, dst in sorted(moves.items()):
        (out / dst).parent.mkdir(parents=True, exist_ok=True)
        os.replace((out / src).with_name(f".{Path(src).name}.move.tmp"), out / dst)


def item_digest(item: dict) -> str:
    """What a shard is made from, without where the build lives (two folders, one digest) or its number
    (a shard planned under another number is renamed, not rendered again)."""
    return hashlib.sha256(json.dumps({k: v for k, v in item.items() if k not in ("path", "store", "shard")},
                                     sort_keys=True).encode()).hexdigest()


def quality_table(store: NodeStore, cat: Catalog) -> pa.Table:
    """Every held-back (degenerate) output: annotator, node type, image, reason and its part."""
    tables = []
    for folder in cat.annotator_folders():
        s = folder_summary(folder)
        s = s.filter(pa.compute.is_valid(s["quality"]))
        if s.num_rows:
            rel = str(folder.relative_to(store.root))
            tables.append(pa.table({"annotator": [store.annotator_of(folder)] * s.num_rows, "node_type": s["node_type"],
                                    "image_id": s["image_id"], "reason": s["quality"],
                                    "part": [f"{rel}/part-{p}.parquet" for p in s["part"].to_pylist()]},
                                   schema=QUALITY_SCHEMA))
    table = pa.concat_tables(tables) if tables else QUALITY_SCHEMA.empty_table()
    return table.sort_by([("annotator", "ascending"), ("node_type", "ascending"), ("image_id", "ascending")])


def run_export(params: Params, store: NodeStore, progress=None) -> dict:
    if not store.samples_path.exists():
        raise StageOrderError(f"no samples in {store.samples_dir}: run `vicl sample` first")
    cat = Catalog.load(store)
    out = Path(params.paths.out).absolute()
    export = params.export
    plan_file = out / "shards_plan.json"
    old_plan = json.loads(plan_file.read_text()) if plan_file.exists() else {}
    items, sets = plan_shards(params, store, cat, shard_layout.read_index(out) if old_plan else {})
    new_plan = {str(Path(item["path"]).relative_to(out)): item_digest(item) for item in items}
    # A finished shard is kept only if it was planned from the same inputs (its samples, their cells,
    # the export params, the rendering code); one planned under another number is renamed; the
    # rest is rewritten, and shards no longer planned are deleted.
    known_cells = shard_layout.read_cells(out) if old_plan else {}
    _keep_or_move(out, old_plan, new_plan)
    pending = [{**item, "store": str(store.root)} for item in items if not Path(item["path"]).exists()]
    rendered = {Path(item["path"]) for item in pending}
    # the cell size of every sample of a kept shard is known from the last export; the rest comes back
    cells = {(name, key): known_cells.get((name, key)) for name, shards in sets.items()
             for keys in shards for key in keys}
    shard_layout.write_index(out, sets, cells)  # before rendering: a killed export resumes the same layout
    write_json(new_plan, plan_file)
    for result in executor.map_tasks(write_shard, pending, progress, "export shards"):
        cells.update({(result["set"], key): cell for key, cell in result["cells"].items()})
    unknown = _read_unknown_cells(items, sets, cells)  # shards an interrupted export rendered
    if rendered or unknown:
        shard_layout.write_index(out, sets, cells)
    failures = store.failures(cat.annotator_folders())
    write_table(failures, out / "failures.parquet")
    write_table(quality_table(store, cat), out / "quality.parquet")
    leakage = store.leakage_path
    if leakage.exists():
        write_json(json.loads(leakage.read_text()), out / "leakage.json")
    graph200k = None
    if export.graph200k:
        from pipelines.graph200k_export import export_graph200k

        graph200k = export_graph200k(params, store, out / "graph200k")
    # issue 14: personalization episodes (samples/episodes.parquet) -> episodes/<split>/*.tar
    episodes = write_episode_shards(store, cat, out, export.shard_size, export.mtime)
    grid_sets = {name for name in sets if name.startswith("shards/")}
    cell_sizes = Counter(cell for (name, _), cell in cells.items() if name in grid_sets and cell)
    manifest = build_manifest(params, store, out, cat, failures, cell_sizes)
    write_json(manifest, out / "manifest.json")
    # sha256 of every shard beside them (`sha256sum -c SHA256SUMS`; `vicl verify` checks it too)
    write_sums(out, {rel: f["sha256"] for rel, f in manifest["files"].items() if rel.endswith(".tar")})
    return {"shards": len(items), "written": len(pending), "samples": manifest["counts"]["samples"],
            "failures": failures.num_rows, **({"graph200k_rows": graph200k["rows"]} if graph200k else {}),
            **({"episodes": episodes["episodes"]} if episodes["episodes"] else {})}  # issue 14


def export_status(params: Params, store: NodeStore) -> list[str]:
    out = Path(params.paths.out)
    grid = sorted((out / "shards").glob("*/*.tar"))
    seq = sorted((out / "shards_seq").glob("*/*/*.tar"))
    plan_file = out / "shards_plan.json"
    planned = len(json.loads(plan_file.read_text())) if plan_file.exists() else 0
    return [f"export:   {len(grid) + len(seq)}/{planned} shards ({len(grid)} grid, {len(seq)} sequence)"
            + (", manifest written" if (out / "manifest.json").exists() else ", no manifest")]


STAGE = Stage(
    name="export", help="write WebDataset shards, the failures table and the manifest",
    run=run_export, status=export_status,
    reads=("{store}/samples",),
    writes=tuple(f"{{out}}/{name}" for name in (
        "shards", "shards_seq", "graph200k", "episodes", "failures.parquet", "quality.parquet", "leakage.json",
        "shards_plan.json", shard_layout.INDEX_FILE, "manifest.json")),
    persist=("{out}/shards", "{out}/shards_seq", "{out}/shards_plan.json", f"{{out}}/{shard_layout.INDEX_FILE}"),
    done="{out}/manifest.json", params=("export",),
    code=("pipelines/shards.py", "core/grid.py", "pipelines/graph200k_export.py", "pipelines/episode_shards.py",
          "pipelines/stages/export.py", "pipelines/shard_layout.py", "pipelines/manifest.py", "pipelines/verify.py",
          "annotators/runtime.py", "core/node_types.py"))
