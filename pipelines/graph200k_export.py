"""Graph200K-compatible export, in the form VisualCloze's own reader trains on (anchors.md §1.1, §1.4).

Layout under the export root (`data/out/graph200k/`), one folder per split:
  <split>/data.json                 rows in image-id order (below)
  <split>/visualcloze_tasks.json    the task paths this split serves, as VisualCloze's task dicts
  <split>/visualcloze.yaml          a data config for VisualCloze's MyDataset (META: this data.json)
  <split>/export.json               input digest, row and node counts, rows per task path
  <split>/<key>/<image_id>_<key>.jpg            one file per node of an image (named from content)
  <split>/<key>/<image_id>_<key>_image_<k>.jpg  FillEdit / style outputs k, `_ref_<k>` style references

Row (one per source image, the centre of its graph):
  {"image_id", "quality_assessment": {...}, "description": {"item", "description_0", ...},
   "collection", "condition": {"target": path, node: path, ...,
      "FillEdit": {"image_path": [..], "description", "name", "descriptions", "names"},
      "DepthEdit": path, "InstantStyle"/"ReduxStyle": {"image_path": [..], "style_path": [..]}}}
- `target` is the photo (node `image`); `foreground` is the binary mask (node `foreground_mask`):
  the reader makes foreground and background images from target x mask itself, so vicl's
  cut-outs (`foreground`, `background`) are not written. Every other image node of the image is
  written under its own name (Graph200K's degradations too, unless `export.graph200k_degradations`
  is false: the reader renders its own from target).
- Edits and styles: output k of a generative node is node `<base>_<k>` and a style's reference is
  `<base>_ref[_k]` (annotators/generative/nodes.py); the outputs present become the lists above,
  a style output only with its reference, so `image_path` and `style_path` have equal length.
- `description`: the source's own dict where it gives one (Subjects200K), else
  {"item": "", "description_0": caption text or ""}; `collection`: the source's, else "vicl".
  A Subjects200K view's row has `condition["reference"]` = the other view of its subject
  (pipelines/subjects.py) and its own description as `description_0`.
- `quality_assessment`: the source's scores (image or reference meta); a reference without an
  objectConsistency score gets `export.graph200k_unscored_object_consistency`. A row with a
  reference is checked against `export.graph200k_quality_filter` (default objectConsistency >= 3,
  Graph200K's rule); below it, `drop_reference` writes the row without its reference, `drop_row`
  leaves the row out. A row written without a reference has objectConsistency 0 (the source's value
  kept as `source_objectConsistency`), so the reader's check never sends a reference family to it.
- Paths: absolute by default (as VisualCloze's processing.py; its `root` option never rewrites
  paths under `condition`), or with `export.graph200k_paths: relative` relative to the reader's
  working directory: `<graph200k_relative_prefix>/<split>/...` (default `dataset/graph200k/...`:
  put the export folder at `<VisualCloze repo>/dataset/graph200k` and start the reader in the repo
  root, as its train.py runs). `python -m pipelines.graph200k_export absolute|relative DIR` rewrites
  the paths of an export that was moved.

A split is rewritten whole when its inputs change (image ids, node locations and annotator
records, online node params, export options, this module's code; the digest in export.json): it
is built in a new hidden folder and renamed into place, so no stale file survives and a killed
export leaves the previous split intact. Unchanged splits are skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

FORMAT = "vicl-graph200k/2"
TARGET = "target"
IMAGE_FORMATS = ("jpg", "jpeg", "png", "webp")
EDIT_BASES = ("FillEdit", "DepthEdit")
STYLE_BASES = ("InstantStyle", "ReduxStyle")
GENERATIVE_MAX = {"FillEdit": 5, "DepthEdit": 1, "InstantStyle": 3, "ReduxStyle": 3}
# the reader makes these two from target x mask; vicl's cut-outs would be read as masks
CUTOUTS = ("foreground", "background")
NODE_KEY = {"image": TARGET, "foreground_mask": "foreground"}
SKIPPED_GROUPS = ("text", "mined", "generative_variant", "synthetic_pair")
KEYED_BY_PAIR = ("analogous_",)  # nodes of generated edit pairs, not of a source image

# --- VisualCloze's stock task list (data/prefix_instruction.py: 12 families, 129 paths) ----------
# Built here from the families' rules (anchors.md §1.1); benchmarks/visualcloze_reader.py checks it
# against the fetched repository's own list.
CONDITIONS = ("canny", "depth", "hed", "normal", "mlsd", "openpose", "sam2_mask", "uniformer", "mask",
              "foreground", "background")
DEGRADATIONS = ("blur", "compression", "SRx2", "SRx4", "pixelate", "Defocus", "GaussianBlur", "oversharpen",
                "GaussianNoise", "PoissonNoise", "SPNoise", "mosaic", "contrast_strengthen", "contrast_weaken",
                "quantization", "JPEG", "brighten", "darken", "LowLight", "saturate_strengthen",
                "saturate_weaken", "gray", "ColorDistortion", "Inpainting", "rotate90", "rotate180",
                "rotate270", "Barrel", "Pincushion", "Elastic", "Rain", "Frost")
_NO_CUTOUTS = CONDITIONS[:9]  # the style families take neither foreground nor background
_DENSE = ("canny", "depth", "hed", "normal", "mlsd", "openpose", "sam2_mask", "uniformer")


def visualcloze_task_dicts() -> list[dict]:
    """VisualCloze's training task dicts: [{task_name, sample_weight, image_list: [[node, ...], ...]}]."""
    r, t = "reference", TARGET
    families = [
        ("conditional generation", [[c, t] for c in CONDITIONS]),
        ("conditional generation with reference", [[r, c, t] for c in CONDITIONS if c != "foreground"]),
        ("conditional generation with style", [[c, s] for s in STYLE_BASES for c in _NO_CUTOUTS]),
        ("image generation with reference", [[r, t]]),
        ("subject extraction", [[t, r]]),
        ("style transfer", [[t, "InstantStyle"], [t, "ReduxStyle"], [r, "InstantStyle"]]),
        ("style transfer with condition", [[r, c, "InstantStyle"] for c in _NO_CUTOUTS]),
        ("image editing", [["DepthEdit", t], ["FillEdit", t]]),
        ("image editing with reference", [[r, "DepthEdit", t], [r, "FillEdit", t]]),
        ("dense prediction", [[t, c] for c in _DENSE]),
        ("restoration", [[d, t] for d in DEGRADATIONS]),
        ("restoration with reference", [[r, d, t] for d in DEGRADATIONS]),
    ]
    return [{"task_name": name, "sample_weight": 1, "image_list": paths} for name, paths in families]


def serves(row: dict, path: Sequence[str]) -> bool:
    """Whether a row can be one row of an item on `path`, by VisualCloze's documented rules:
    each node a key of `condition`; foreground/background need the mask; a reference needs
    objectConsistency >= 3 (and, for the file to open, to be there); degradations are made from target."""
    cond = row["condition"]
    for node in path:
        if node in DEGRADATIONS:
            ok = TARGET in cond
        elif node in CUTOUTS:
            ok = "foreground" in cond and TARGET in cond
        elif node == "reference":
            score = (row.get("quality_assessment") or {}).get("objectConsistency")
            ok = "reference" in cond and score is not None and score >= 3
        else:
            ok = node in cond
        if not ok:
            return False
    return True


def served_tasks(rows: list[dict], min_rows: int) -> tuple[list[dict], dict[str, int]]:
    """(the stock task dicts cut to the paths at least `min_rows` rows serve, rows per stock path)."""
    # rows with the same condition keys and reference score class serve the same paths
    kinds: dict[tuple, list] = {}
    for row in rows:
        score = (row.get("quality_assessment") or {}).get("objectConsistency")
        sig = (tuple(sorted(row["condition"])), score is not None and score >= 3)
        kinds.setdefault(sig, [row, 0])[1] += 1
    counts: dict[str, int] = {}
    tasks = []
    for family in visualcloze_task_dicts():
        kept = []
        for path in family["image_list"]:
            n = sum(count for row, count in kinds.values() if serves(row, path))
            counts[" > ".join(path)] = n
            if n >= min_rows:
                kept.append(path)
        if kept:
            tasks.append({**family, "image_list": kept})
    return tasks, counts


# --- options ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    paths: str = "absolute"  # absolute | relative (to the reader's working directory)
    relative_prefix: str = "dataset/graph200k"  # relative mode: where the export lies under that directory
    jpeg_quality: int = 95
    quality_filter: dict = field(default_factory=lambda: {"objectConsistency": 3.0})
    quality_filter_action: str = "drop_reference"  # drop_reference | drop_row
    unscored_object_consistency: float = 0.0
    min_task_rows: int = 3
    collection: str = "vicl"
    batch_images: int = 32  # images whose cells are read at once (bounds memory)
    degradations: bool = True  # write Graph200K's degradation nodes (the reader renders its own from target)
    workers: int = 4  # threads that encode and write files (Pillow's codecs release the GIL)

    def output_fields(self) -> dict:
        """The options that decide the export's bytes (not how it is computed)."""
        return {k: v for k, v in asdict(self).items() if k not in ("batch_images", "workers")}

    @classmethod
    def from_export_params(cls, export) -> Options:
        return cls(paths=export.graph200k_paths, relative_prefix=export.graph200k_relative_prefix,
                   jpeg_quality=export.graph200k_quality,
                   quality_filter=dict(export.graph200k_quality_filter),
                   quality_filter_action=export.graph200k_quality_filter_action,
                   unscored_object_consistency=export.graph200k_unscored_object_consistency,
                   min_task_rows=export.graph200k_min_task_rows, degradations=export.graph200k_degradations)


# --- one row from the cells of one image (pure) ------------------------------------------------
def output_node(base: str, k: int) -> str:
    return base if k == 0 else f"{base}_{k}"


def style_reference_node(base: str, k: int) -> str:
    return f"{base}_ref" if k == 0 else f"{base}_ref_{k}"


def _generative_names() -> set[str]:
    names = set()
    for base, n in GENERATIVE_MAX.items():
        names.update(output_node(base, k) for k in range(n))
        if base in STYLE_BASES:
            names.update(style_reference_node(base, k) for k in range(n))
    return names


GENERATIVE_NAMES = frozenset(_generative_names())


def condition_key(node: str, cell: dict) -> str | None:
    """The `condition` key a plain image node is written under, or None when it is not written."""
    from core.node_types import NODE_TYPES

    if node in NODE_KEY:
        return NODE_KEY[node]
    if node in CUTOUTS or node in GENERATIVE_NAMES or node.startswith(KEYED_BY_PAIR) or not cell.get("data"):
        return None
    if str(cell.get("format", "")).lower() not in IMAGE_FORMATS:
        return None
    known = NODE_TYPES.get(node)
    if known is not None and (known.group in SKIPPED_GROUPS or known.stored_as == "json"):
        return None
    return node


def is_degradation(node: str) -> bool:
    from core.node_types import NODE_TYPES

    known = NODE_TYPES.get(node)
    return known is not None and known.group == "degradation"


def _meta(cell: dict | None) -> dict:
    if not cell or not cell.get("meta"):
        return {}
    meta = json.loads(cell["meta"]) if isinstance(cell["meta"], str) else cell["meta"]
    return meta if isinstance(meta, dict) else {}


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _edit_record(base: str, k: int, metas: dict[str, dict]) -> dict:
    """Name and description of output k: its own meta, else the record in output 0's `outputs`."""
    own = metas.get(output_node(base, k), {})
    listed = {r.get("node"): r for r in metas.get(base, {}).get("outputs", []) if isinstance(r, dict)}
    record = {**listed.get(output_node(base, k), {}), **own}
    return {"name": _text(record.get("name")),
            "description": _text(record.get("description") or record.get("prompt") or record.get("instruction"))}


def image_row(image_id: str, cells: dict[str, dict], opts: Options, split: str,
              base: str = "") -> tuple[dict | None, dict[str, dict]]:
    """One data.json row and the files it refers to, from the cells of one image.

    cells: {node: {"data", "format", "meta"}}. Returns (row or None when the filter or a missing
    photo leaves it out, {path relative to the split folder: cell to write there}). Paths in the
    row are `base/<split>/<rel>` (base: the export root's absolute path, or the relative prefix)."""
    if "image" not in cells or not cells["image"].get("data"):
        return None, {}
    metas = {node: _meta(cell) for node, cell in cells.items()}
    files: dict[str, dict] = {}

    def put(key: str, node: str, name: str | None = None) -> str:
        rel = f"{key}/{image_id}_{name or key}.jpg"
        files[rel] = cells[node]
        if key == "foreground":  # the reader multiplies the photo by it: same size, or it raises
            files[rel] = {**cells[node], "fit_to": (cells["image"].get("width"), cells["image"].get("height"))}
        return f"{base}/{split}/{rel}" if base else f"{split}/{rel}"

    cond: dict = {}
    for node in sorted(cells):
        key = condition_key(node, cells[node])
        if key is not None and key not in cond:
            cond[key] = put(key, node)
    fill = [k for k in range(GENERATIVE_MAX["FillEdit"]) if output_node("FillEdit", k) in cells]
    if fill:
        records = [_edit_record("FillEdit", k, metas) for k in fill]
        cond["FillEdit"] = {"image_path": [put("FillEdit", output_node("FillEdit", k), f"FillEdit_image_{k}")
                                           for k in fill],
                            "description": records[0]["description"], "name": records[0]["name"],
                            "descriptions": [r["description"] for r in records],
                            "names": [r["name"] for r in records]}
    if "DepthEdit" in cells:
        cond["DepthEdit"] = put("DepthEdit", "DepthEdit")
    for style in STYLE_BASES:
        pairs = [k for k in range(GENERATIVE_MAX[style])
                 if output_node(style, k) in cells and style_reference_node(style, k) in cells]
        if pairs:
            cond[style] = {"image_path": [put(style, output_node(style, k), f"{style}_image_{k}") for k in pairs],
                           "style_path": [put(style, style_reference_node(style, k), f"{style}_ref_{k}")
                                          for k in pairs]}

    quality = source_quality(metas)
    if "reference" in cond:
        if quality.get("objectConsistency") is None:
            quality["objectConsistency"] = opts.unscored_object_consistency
        if not passes_filter(quality, opts.quality_filter):
            if opts.quality_filter_action == "drop_row":
                return None, {}
            files.pop(f"reference/{image_id}_reference.jpg", None)
            del cond["reference"]
    if "reference" not in cond:
        if quality.get("objectConsistency") is not None:
            quality["source_objectConsistency"] = quality["objectConsistency"]
        quality["objectConsistency"] = 0
    image_meta = metas.get("image", {})
    row = {"image_id": image_id, "quality_assessment": quality,
           "description": description(image_meta, metas.get("caption", {})),
           "collection": _text(image_meta.get("collection")) or opts.collection,
           "condition": cond}
    return row, files


def source_quality(metas: dict[str, dict]) -> dict:
    """The source's quality scores (Subjects200K's quality_assessment), from the image or reference meta."""
    for node in ("image", "reference"):
        q = metas.get(node, {}).get("quality_assessment")
        if isinstance(q, dict):
            return dict(q)
    return {}


def passes_filter(quality: dict, minimum: dict) -> bool:
    """Every filtered score present and at least its minimum (a missing score fails, as in Graph200K)."""
    return all(isinstance(quality.get(k), (int, float)) and quality[k] >= v for k, v in sorted(minimum.items()))


def description(image_meta: dict, caption_meta: dict) -> dict:
    """Subjects200K's description dict ({"item", "description_0", ...}); VisualCloze's content prompt is
    item + " " + description_0, so a subject's second view (role view_1) has its own description_1 moved
    to description_0 (and description_0 to description_1). A source's dict is kept; else the caption fills
    description_0."""
    given = image_meta.get("description")
    out = {k: v for k, v in given.items()} if isinstance(given, dict) else {}
    out["item"] = _text(out.get("item"))
    if image_meta.get("role") == "view_1" and "description_1" in out:  # a subject's second view: its own
        out["description_0"], out["description_1"] = out["description_1"], out.get("description_0", "")  # first
    if not _text(out.get("description_0")):
        out["description_0"] = _text(given) or _text(caption_meta.get("text"))
    return out


# --- writing a split -----------------------------------------------------------------------------
def jpeg_bytes(cell: dict, quality: int) -> bytes:
    """The cell as JPEG: a stored JPEG as it is, anything else encoded at `quality`; a cell with
    `fit_to` (w, h) is first resized to it (nearest: a mask stays binary) when its size differs.
    An odd side loses its last row or column: VisualCloze's `mosaic` degradation (a Bayer CFA over
    2 x 2 blocks) fails on odd sides, and Graph200K's own images are 512 x 512."""
    fit = cell.get("fit_to")
    same_size = not fit or None in fit or (cell.get("width"), cell.get("height")) == tuple(fit)
    w, h = (tuple(fit) if fit and None not in fit else (cell.get("width") or 0, cell.get("height") or 0))
    even = not (w % 2 or h % 2)
    if str(cell.get("format", "")).lower() in ("jpg", "jpeg") and same_size and even:
        return cell["data"]
    from core.images import decode_rgb

    im = Image.fromarray(decode_rgb(cell["data"]))
    if not same_size and im.size != tuple(fit):
        im = im.resize(tuple(fit), Image.NEAREST)
    if im.width % 2 or im.height % 2:
        im = im.crop((0, 0, im.width - im.width % 2, im.height - im.height % 2))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


CellReader = Callable[[list[tuple[str, str]]], dict[tuple[str, str], dict]]


def split_digest(parts: dict) -> str:
    """SHA-256 over the split's inputs (JSON-able), this module's code and the reference node's
    (pipelines/subjects.py)."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(Path(__file__).with_name("subjects.py").read_bytes())
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return h.hexdigest()


def current_digest(split_dir: Path) -> str | None:
    try:
        return json.loads((split_dir / "export.json").read_text())["digest"]
    except (OSError, ValueError, KeyError):
        return None


def write_split(root: Path, split: str, ids: Sequence[str], nodes: dict[str, Sequence[bool]],
                read_cells: CellReader, opts: Options, digest: str) -> dict:
    """Write one split from scratch into a hidden folder and rename it into place.

    ids: the split's image ids (sorted); nodes: {node: present-flags aligned with ids};
    read_cells: [(node, image_id)] -> {(node, image_id): cell}, called per batch of images."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if not opts.degradations:
        nodes = {n: f for n, f in nodes.items() if not is_degradation(n)}
    base = str(root.resolve()) if opts.paths == "absolute" else opts.relative_prefix.strip("/")
    tmp = root / f".tmp-{split}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    rows: list[dict] = []
    made_dirs: set[str] = set()
    pool = ThreadPoolExecutor(max_workers=max(1, opts.workers))

    def write_file(item: tuple[str, dict]) -> None:
        rel, cell = item
        (tmp / rel).write_bytes(jpeg_bytes(cell, opts.jpeg_quality))

    pending: list = []  # the previous batch's writes run while the next batch is read
    try:
        for start in range(0, len(ids), opts.batch_images):
            batch_rows, files = _plan_batch(tmp, split, ids, range(start, min(start + opts.batch_images, len(ids))),
                                            nodes, read_cells, opts, base, made_dirs)
            for f in pending:
                f.result()  # raises the first failure
            pending = [pool.submit(write_file, item) for item in files]
            rows += batch_rows
        for f in pending:
            f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    summary = _finish_split(tmp, split, rows, opts, base, digest)
    swap_into_place(tmp, root / split)
    return summary


def _plan_batch(tmp, split, ids, batch, nodes, read_cells, opts, base, made_dirs) -> tuple[list[dict], list]:
    """Read one batch of images' cells: their rows and the (path, cell) files to write (folders made)."""
    keys = [(node, ids[i]) for i in batch for node in sorted(nodes) if nodes[node][i]]
    per_image: dict[str, dict[str, dict]] = {}
    for (node, image_id), cell in read_cells(keys).items():
        per_image.setdefault(image_id, {})[node] = cell
    rows, files = [], []
    for i in batch:
        row, row_files = image_row(ids[i], per_image.get(ids[i], {}), opts, split, base)
        if row is None:
            continue
        for rel in sorted(row_files):
            folder = rel.rsplit("/", 1)[0]
            if folder not in made_dirs:
                (tmp / folder).mkdir(parents=True, exist_ok=True)
                made_dirs.add(folder)
            files.append((rel, row_files[rel]))
        rows.append(row)
    return rows, files


def _finish_split(tmp: Path, split: str, rows: list[dict], opts: Options, base: str, digest: str) -> dict:
    """data.json, the served task dicts, the reader's data config and the summary, into the new folder."""
    tasks, per_path = served_tasks(rows, opts.min_task_rows)
    node_counts: dict[str, int] = {}
    for row in rows:
        for key in row["condition"]:
            node_counts[key] = node_counts.get(key, 0) + 1
    summary = {"format": FORMAT, "digest": digest, "split": split, "rows": len(rows), "paths": opts.paths,
               "nodes": dict(sorted(node_counts.items())),
               "task_paths_served": sum(len(t["image_list"]) for t in tasks),
               "task_paths_stock": len(per_path), "rows_per_task_path": per_path, "options": opts.output_fields()}
    _dump(rows, tmp / "data.json")
    _dump(tasks, tmp / "visualcloze_tasks.json")
    data_json = f"{base}/{split}/data.json" if base else f"{split}/data.json"
    (tmp / "visualcloze.yaml").write_text(f"META:\n  - path: {json.dumps(data_json)}\n"
                                          f"    type: image_grid_graph200k\n")
    _dump(summary, tmp / "export.json")
    return summary


def _dump(obj, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def swap_into_place(new: Path, target: Path) -> None:
    """Rename `new` onto `target`; the old folder is renamed aside first and removed after."""
    old = target.parent / f".old-{target.name}-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def clean_leftovers(root: Path) -> None:
    """Hidden build folders of a killed export."""
    for p in sorted(Path(root).glob(".tmp-*")) + sorted(Path(root).glob(".old-*")):
        shutil.rmtree(p, ignore_errors=True)


def remove_stale_splits(root: Path, keep: set[str]) -> list[str]:
    """Split folders of an earlier export (they hold a data.json) whose split no longer exists."""
    removed = []
    for p in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if p.is_dir() and not p.name.startswith(".") and p.name not in keep and (p / "data.json").exists():
            shutil.rmtree(p)
            removed.append(p.name)
    return removed


# --- the stage entry point -----------------------------------------------------------------------
def export_graph200k(params, store, root: Path) -> dict:
    """Export every split of the store's images (splits.parquet; all in `train` without one)."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipelines.catalog import Catalog

    root = Path(root)
    opts = Options.from_export_params(params.export)
    cat = Catalog.load(store)
    idx = cat.node_index()
    ids = np.asarray(idx.ids.to_pylist(), dtype=object)
    nodes = set(cat.nodes) | set(cat.online)
    if idx.has("reference").any():  # the other view of a subject record (pipelines/subjects.py)
        nodes.add("reference")
    present = {node: np.asarray(idx.has(node), dtype=bool) for node in sorted(nodes)}
    splits_path = store.splits_path
    if splits_path.exists():
        t = pq.read_table(splits_path, columns=["image_id", "split"])
        split_of = dict(zip(t["image_id"].to_pylist(), t["split"].to_pylist()))
    else:
        split_of = {}
    labels = np.array([split_of.get(i, "train" if not split_of else "") for i in ids.tolist()], dtype=object)
    sources = _source_identity(store, cat)
    clean_leftovers(root)
    summary = {"rows": 0, "per_split": {}, "rewritten": [], "task_paths_served": {},
               "unsplit_images": int((labels == "").sum())}
    splits = sorted({s for s in labels.tolist() if s})
    for split in splits:
        pick = labels == split
        split_ids = ids[pick].tolist()
        split_nodes = {node: flags[pick] for node, flags in present.items()}
        digest = split_digest({"format": FORMAT, "split": split, "ids": split_ids, "options": opts.output_fields(),
                               "root": str(root.resolve()) if opts.paths == "absolute" else "",
                               "sources": sources, "catalog": cat.fingerprint(),
                               "present": {n: hashlib.sha256(np.packbits(f).tobytes()).hexdigest()
                                           for n, f in split_nodes.items()}})
        if current_digest(root / split) == digest:
            done = json.loads((root / split / "export.json").read_text())
        else:
            done = write_split(root, split, split_ids, split_nodes, cat.read_cells, opts, digest)
            summary["rewritten"].append(split)
        summary["per_split"][split] = done["rows"]
        summary["task_paths_served"][split] = done["task_paths_served"]
        summary["rows"] += done["rows"]
    summary["removed_splits"] = remove_stale_splits(root, set(splits))
    return summary


def _source_identity(store, cat) -> dict:
    """What each node's cells depend on: its folder and annotator record, or the online params."""
    out = {}
    for node, loc in sorted(cat.nodes.items()):
        folder = Path(loc.folder)
        records = [folder / "annotator.json", folder / "ingest.json", store.ingest_info_path]
        out[node] = {"annotator": loc.annotator, "folder": str(folder),
                     "records": [p.read_text() for p in records if p.is_file()]}
    for node, online in sorted(cat.online.items()):
        out[node] = {"annotator": online.annotator, "online": online.params_json}
    return out


# --- moving an export: rewrite its paths ---------------------------------------------------------
def rewrite_paths(rows: list[dict], fn: Callable[[str], str]) -> list[dict]:
    """Every path under `condition` (plain, or in an edit/style dict's lists) through `fn`."""
    def walk(value):
        if isinstance(value, str):
            return fn(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    out = []
    for row in rows:
        cond = {}
        for key, value in row["condition"].items():
            if isinstance(value, dict):
                cond[key] = {k: walk(v) if k in ("image_path", "style_path") else v for k, v in value.items()}
            else:
                cond[key] = walk(value)
        out.append({**row, "condition": cond})
    return out


def rebase_export(root: Path, mode: str, prefix: str = "dataset/graph200k") -> list[Path]:
    """Rewrite every split's data.json (and visualcloze.yaml) under `root` to absolute paths against
    the folder where it now lies, or to `prefix/<split>/...`. Returns the data.json files rewritten."""
    root = Path(root).resolve()
    base = str(root) if mode == "absolute" else prefix.strip("/")
    done = []
    for data_json in sorted(root.glob("*/data.json")):
        rows = json.loads(data_json.read_text())

        def fn(path: str, keep: int = 3) -> str:  # <split>/<key>/<file> is all that stays
            rel = "/".join(Path(path).parts[-keep:])
            return f"{base}/{rel}" if base else rel

        _dump(rewrite_paths(rows, fn), data_json.with_suffix(".json.tmp"))
        os.replace(data_json.with_suffix(".json.tmp"), data_json)
        meta_path = fn(f"{data_json.parent.name}/data.json", 2)
        (data_json.parent / "visualcloze.yaml").write_text(f"META:\n  - path: {json.dumps(meta_path)}\n"
                                                           f"    type: image_grid_graph200k\n")
        done.append(data_json)
    return done


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pipelines.graph200k_export",
                                 description="Rewrite a moved Graph200K export's paths.")
    ap.add_argument("mode", choices=["absolute", "relative"])
    ap.add_argument("root", type=Path, help="the export folder (holds <split>/data.json)")
    ap.add_argument("--prefix", default="dataset/graph200k",
                    help="relative mode: the export's folder under the reader's working directory")
    args = ap.parse_args(argv)
    done = rebase_export(args.root, args.mode, args.prefix)
    print(f"{len(done)} data.json rewritten to {args.mode} paths under {args.root.resolve()}")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
