"""The catalog: where every node type of the store lives, written by `vicl annotate` and read by every later stage.

`catalog.json` maps each materialised node type to its annotator folder (relative to the
store) and each online node type to its annotator and params; the source images are
read from `images/`. Later stages ask the catalog, never the annotate stage:
  cat = Catalog.load(store)
  idx = cat.node_index()            compact: sorted live image ids (Arrow) + one bool mask per node type
  cat.read_cells([(node, id), ...])  the encoded cells, row groups read by image id (online nodes rendered)
`fingerprint()` changes exactly when what a later stage would read changes (parts are immutable
and named by content, so their names stand for their bytes).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stage import StageOrderError
from pipelines.store import NodeStore, folder_summary, part_name, read_cells, read_part, write_json
from pipelines.subjects import REFERENCE, load_subjects, reference_map, reference_mask  # issue 14

# Node types that judge the source image itself: an image whose row has a quality reason (a flat or
# near-constant crop) gives no node to any task.
SOURCE_GATES = ("image_quality",)


@dataclass(frozen=True)
class NodeLocation:
    annotator: str
    folder: Path


@dataclass(frozen=True)
class OnlineNode:
    annotator: str
    params_json: str


class NodeIndex:
    """Live images and which node types each holds, as compact columns (no per-row Python objects).

    `ids`: sorted Arrow string array of image ids; `parts`: each one's image part id;
    `has(node)`: a bool array aligned with ids: the photos that hold the node, what tasks draw from;
    `has_cell(node)`: the same, but an image cell of a non-photo record member (an edit pair's
    edited image) counts too: only its own record's pair may show it."""

    def __init__(self, ids: pa.Array, parts: pa.Array, masks: dict[str, np.ndarray],
                 members: np.ndarray | None = None):
        self.ids, self.parts, self._masks = ids, parts, masks
        self._members = members  # live non-photo record members (None: there are none)
        self._keys: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def nodes(self) -> list[str]:
        return sorted(n for n, m in self._masks.items() if m.any())

    def has(self, node: str) -> np.ndarray:
        mask = self._masks.get(node)
        return mask if mask is not None else np.zeros(len(self.ids), bool)

    def has_cell(self, node: str) -> np.ndarray:
        if node == "image" and self._members is not None:
            return self.has("image") | self._members
        return self.has(node)

    def positions(self, image_ids) -> np.ndarray:
        """Index of each id in `ids` (-1 when absent): a binary search in a byte-string copy of the
        sorted ids, built once (a hash lookup would rebuild its table of all N ids on every call)."""
        if self._keys is None:
            self._keys = np.asarray(self.ids.to_numpy(zero_copy_only=False), dtype="S")
        if isinstance(image_ids, (pa.Array, pa.ChunkedArray)):
            image_ids = image_ids.to_numpy(zero_copy_only=False)
        query = np.asarray(image_ids, dtype="S") if len(image_ids) else np.zeros(0, "S1")
        pos = np.searchsorted(self._keys, query)
        found = pos < len(self._keys)
        found[found] = self._keys[pos[found]] == query[found]
        return np.where(found, pos, -1).astype(np.int64)

    def as_sets(self) -> dict[str, set[str]]:
        """{node: image ids} (small stores, tests and reports)."""
        ids = np.asarray(self.ids.to_pylist(), dtype=object)
        return {n: set(ids[m].tolist()) for n, m in sorted(self._masks.items()) if m.any()}


class Catalog:
    def __init__(self, store: NodeStore, data: dict):
        self.store = store
        self.data = data
        self.nodes = {n: NodeLocation(v["annotator"], store.root / v["folder"]) for n, v in data["nodes"].items()}
        self.nodes["image"] = NodeLocation("ingest", store.images_dir)
        self.online = {n: OnlineNode(v["annotator"], v["params_json"]) for n, v in data["online"].items()}
        self.plugins = tuple(data.get("plugins", ()))
        self._index: NodeIndex | None = None

    # --- writing (the annotate stage) ---------------------------------------------------------
    @staticmethod
    def write(store: NodeStore, folders: dict[str, tuple[str, Path]], online: dict[str, tuple[str, str]],
              plugins: list[str]) -> None:
        """folders: node -> (annotator, folder); online: node -> (annotator, params JSON)."""
        write_json({"schema": "vicl.catalog/1",
                    "nodes": {n: {"annotator": a, "folder": str(f.relative_to(store.root))}
                              for n, (a, f) in sorted(folders.items())},
                    "online": {n: {"annotator": a, "params_json": p} for n, (a, p) in sorted(online.items())},
                    "plugins": list(plugins)}, store.catalog_path)

    @classmethod
    def load(cls, store: NodeStore) -> Catalog:
        if not store.catalog_path.exists():
            raise StageOrderError(f"no catalog in {store.root}: run `vicl annotate` first (after `vicl ingest`)")
        return cls(store, json.loads(store.catalog_path.read_text()))

    # --- reading ------------------------------------------------------------------------------
    def annotator_folders(self) -> list[Path]:
        return sorted({loc.folder for n, loc in self.nodes.items() if loc.annotator != "ingest"})

    def node_index(self) -> NodeIndex:
        if self._index is None:
            images = self.store.image_summary()
            ok = images.filter(pc.is_null(images["error"]))
            first = ok.group_by("image_id", use_threads=False).aggregate([("part", "first")])
            first = first.sort_by("image_id")
            ids, parts = first["image_id"].combine_chunks(), first["part_first"].combine_chunks()
            masks = {"image": np.ones(len(ids), bool)}
            usable = np.ones(len(ids), bool)  # False: a source image flagged by its quality gate (flat_image)
            for node, loc in sorted(self.nodes.items()):
                if loc.annotator == "ingest":
                    continue
                s = folder_summary(loc.folder)
                s = s.filter(pc.and_(pc.equal(s["node_type"], node),
                                     pc.and_(pc.is_null(s["error"]), pc.is_null(s["quality"]))))
                if node in SOURCE_GATES:
                    flagged = folder_summary(loc.folder)
                    flagged = flagged.filter(pc.and_(pc.equal(flagged["node_type"], node),
                                                     pc.is_valid(flagged["quality"])))
                    usable[pc.index_in(flagged["image_id"], value_set=ids).drop_null().to_numpy()] = False
                pos = pc.index_in(s["image_id"], value_set=ids).drop_null().to_numpy()
                mask = np.zeros(len(ids), bool)
                mask[pos] = True
                masks[node] = mask
            for node in self.online:  # rendered at export time from the image itself
                masks[node] = masks["image"].copy()
            # --- issue 14: `reference`, a view of a complete subject record whose other view is live
            if self.references():
                masks[REFERENCE] = reference_mask(ids, usable, self.references(), NodeIndex(ids, parts, {}).positions)
            # --- end issue 14
            members = self._non_photo_members(images, ids) & usable
            for node in masks:  # nothing of a flagged source image is used, nor an edited image as a photo
                masks[node] &= usable & ~members
            self._index = NodeIndex(ids, parts, masks, members if members.any() else None)
        return self._index

    @staticmethod
    def _non_photo_members(images: pa.Table, ids: pa.Array) -> np.ndarray:
        """Images that some input gave in a non-photo role (source_layouts: an edit pair's `edited`),
        stored or a duplicate of a stored image: even when the same bytes also came as a plain photo,
        they stay the edited side of their pair."""
        from pipelines.records import non_photo_roles

        roles = non_photo_roles()
        mask = np.zeros(len(ids), bool)
        if roles and images.num_rows:
            member_ids = images.filter(pc.is_in(images["role"], value_set=pa.array(roles, pa.string())))["image_id"]
            mask[pc.index_in(member_ids, value_set=ids).drop_null().to_numpy()] = True
        return mask

    def vectors(self, node: str) -> tuple[np.ndarray, np.ndarray]:
        """(mask, matrix) of a vector node (embeddings "f32", hashes "u8") aligned with node_index().ids;
        rows of images without the node are zero and False in the mask."""
        index = self.node_index()
        folder = self.nodes[node].folder
        mask, matrix = np.zeros(len(index), bool), None
        for part in sorted(folder.glob("part-*.parquet")):
            t = read_part(part, columns=["image_id", "data", "format", "error", "quality"],
                              filters=[("node_type", "=", node)])
            t = t.filter(pc.and_(pc.is_null(t["error"]), pc.is_null(t["quality"])))
            if not t.num_rows:
                continue
            pos = index.positions(t["image_id"])
            keep = pos >= 0
            dtype = "<f4" if t["format"][0].as_py() == "f32" else np.uint8
            rows = np.frombuffer(b"".join(t["data"].to_pylist()), dtype=dtype).reshape(t.num_rows, -1)
            if matrix is None:
                matrix = np.zeros((len(index), rows.shape[1]), rows.dtype)
            matrix[pos[keep]] = rows[keep]
            mask[pos[keep]] = True
        return mask, (matrix if matrix is not None else np.zeros((len(index), 0), np.float32))

    def part_path(self, node: str, image_id: str) -> Path:
        loc = self.nodes[node]
        index = self.node_index()
        pos = int(index.positions([image_id])[0])
        if pos < 0:
            raise KeyError(f"image {image_id} is not in the store")
        return loc.folder / part_name(index.parts[pos].as_py())

    def read_cells(self, refs) -> dict[tuple[str, str], dict]:
        """(node, image id) -> {data, format, meta, width, height} for each ref; online nodes rendered
        from the image (their meta records the parameters they used)."""
        from annotators.runtime import render_online

        refs = sorted(set((n, i) for n, i in refs))
        if any(n == REFERENCE for n, _ in refs):  # issue 14: the other view's image cell
            return self._read_references(refs)
        wanted: dict[tuple[Path, str], list[str]] = defaultdict(list)
        for node, image_id in refs:
            source = "image" if node in self.online else node
            wanted[(self.part_path(source, image_id), source)].append(image_id)
        rows: dict[tuple[str, str], dict] = {}
        for (path, node), ids in sorted(wanted.items()):
            for image_id, row in read_cells(path, ids, node).items():
                rows[(node, image_id)] = row
        for node, image_id in refs:
            if node in self.online:
                online = self.online[node]
                image = rows[("image", image_id)]
                data, meta = render_online(online.annotator, online.params_json, image["data"], image_id, node,
                                           self.plugins)
                rows[(node, image_id)] = {"data": data, "format": "png", "meta": meta, "width": image["width"],
                                          "height": image["height"]}
        return {ref: rows[ref] for ref in refs if ref in rows}

    # --- issue 14: subject records (pipelines/subjects.py) -------------------------------------
    def references(self) -> dict[str, str]:
        """image id -> the other view of its subject record (every complete record; the sample stage
        applies `sample.subjects.quality_filter`)."""
        if getattr(self, "_references", None) is None:
            self._references = reference_map(load_subjects(self.store))
        return self._references

    def _read_references(self, refs: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        other = self.references()
        aliased = {(n, i): ("image", other[i]) for n, i in refs if n == REFERENCE and i in other}
        rows = self.read_cells([r for r in refs if r[0] != REFERENCE] + list(aliased.values()))
        out = {r: rows[r] for r in refs if r[0] != REFERENCE and r in rows}
        out.update({r: rows[a] for r, a in aliased.items() if a in rows})
        return {r: out[r] for r in refs if r in out}
    # --- end issue 14 -------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """Digest of what later stages read: the catalog, every node folder's part names, tombstones, mining."""
        digest = hashlib.sha256(json.dumps(self.data, sort_keys=True).encode())
        for folder in sorted({loc.folder for loc in self.nodes.values()}):
            names = sorted(p.name for p in folder.glob("part-*.parquet"))
            digest.update(f"{folder.relative_to(self.store.root)}\n{','.join(names)}\n".encode())
        for extra in (self.store.tombstones_path, self.store.quadruplets_path,
                      self.store.labelled_pairs_path):
            if extra.exists():
                digest.update(hashlib.sha256(extra.read_bytes()).digest())
        return digest.hexdigest()[:16]


def restrict_reference(index, references: dict[str, str]):
    """A NodeIndex like `index` whose `reference` mask keeps only the views in `references` (the
    quality filter applied by the stage that samples)."""
    masks = {node: index.has(node).copy() for node in index.nodes()}
    if REFERENCE in masks:
        masks[REFERENCE] &= reference_mask(index.ids, masks[REFERENCE], references, index.positions)
    return NodeIndex(index.ids, index.parts, masks)
