"""Annotate: run every configured annotator over every image part, in dependency order.

Model annotators, per annotator, stream their pending parts (those whose output file does
not exist yet) through Ray Data:
  from_items(parts) -> flat_map(read inputs of a part: image + required nodes, joined)
                    -> map_batches(AnnotatorGroup: decode, annotate, encode; one model per actor)
                    -> driver: rows gathered per part, each part written atomically when whole.
Weight-free CPU operators that need only the image (degradations, edits, canny, ...) run
fused, one Ray task per part that reads, annotates and writes the part itself.
An annotator's folder name hashes its name, version, params and the ingest fingerprint,
so changing any of them recomputes exactly that annotator, and adding one computes
only the new one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.images import decode_rgb, encode_png
from pipelines.params import AnnotatorSpec, Params, ParamsError
from pipelines.node_types import MINED_EDIT, MINED_SOURCE
from pipelines.store import (NODE_SCHEMA, NodeStore, clean_temp_files, part_index, part_name, part_writer, remove_tree,
                             write_json, write_table)

OUT_SCHEMA = NODE_SCHEMA.append(pa.field("part", pa.int32()))


@dataclass
class AnnotatorRun:
    name: str
    params_json: str  # validated params, JSON (plain data: travels to any worker)
    version: str
    produces: tuple[str, ...]
    requires: tuple[str, ...]
    folder: Path
    folder_hash: str
    spec: AnnotatorSpec
    device: str
    num_gpus: float
    num_cpus: float
    batch_size: int
    concurrency: int
    weight_free: bool  # no model weights: a pure CPU operator (degradations, edits, canny, ...)


def _resolve_device(device: str, num_gpus: float) -> str:
    if device != "auto":
        return device
    if num_gpus == 0:  # a CPU annotator: no torch import (2 s) in a driver that may never need it
        return "cpu"
    import torch

    return "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"


def plan(params: Params, store: NodeStore) -> list[AnnotatorRun]:
    """Configured annotators in dependency order, each with its store folder and resources."""
    import annotators

    marker = store.images_dir / "ingest.json"
    ingest_fp = json.loads(marker.read_text())["fingerprint"] if marker.exists() else "none"
    runs: dict[str, AnnotatorRun] = {}
    producer: dict[str, str] = {}
    for name, spec in params.annotate.annotators.items():
        if spec.online:
            continue
        cls = annotators.get(name)
        model = cls.Params.model_validate(spec.params)
        folder_hash = hashlib.sha256(f"{cls.params_hash(model)}/{ingest_fp}".encode()).hexdigest()[:12]
        num_gpus = spec.num_gpus if spec.num_gpus is not None else cls.resources.num_gpus
        runs[name] = AnnotatorRun(
            name=name, params_json=model.model_dump_json(), version=cls.version, produces=tuple(cls.produces),
            requires=tuple(r.removesuffix(".meta") for r in cls.requires),
            folder=store.annotator_dir(name, folder_hash), folder_hash=folder_hash, spec=spec,
            device=_resolve_device(params.annotate.device, num_gpus), num_gpus=num_gpus,
            num_cpus=spec.num_cpus if spec.num_cpus is not None else cls.resources.num_cpus,
            batch_size=spec.batch_size or cls.resources.batch_size,
            concurrency=spec.concurrency or cls.resources.concurrency, weight_free=not cls.weights)
        for node in cls.produces:
            producer[node] = name
    order, state = [], {}

    def visit(name: str, trail: tuple[str, ...]):
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ParamsError(f"annotate.annotators: dependency cycle {' -> '.join(trail + (name,))}")
        state[name] = "visiting"
        for node in runs[name].requires:
            if node != "image":
                visit(producer[node], trail + (name,))
        state[name] = "done"
        order.append(runs[name])

    for name in sorted(runs):
        visit(name, ())
    return order


def node_sources(runs: list[AnnotatorRun], store: NodeStore) -> dict[str, Path]:
    """node type -> folder of the parts that hold it (materialised nodes only)."""
    out = {"image": store.images_dir}
    for run in runs:
        for node in run.produces:
            out[node] = run.folder
    mined = store.root / "mined"
    if (mined / part_name(0)).exists():  # written by the mine stage (pipelines/stages/mine.py)
        out[MINED_SOURCE] = out[MINED_EDIT] = mined
    return out


def online_nodes(params: Params) -> dict[str, tuple[str, str]]:
    """node type -> (annotator name, params JSON) for annotators configured `online: true`."""
    import annotators

    out = {}
    for name, spec in params.annotate.annotators.items():
        if spec.online:
            cls = annotators.get(name)
            params_json = cls.Params.model_validate(spec.params).model_dump_json()
            out.update({node: (name, params_json) for node in cls.produces})
    return out


_ONLINE_CACHE: dict[tuple[str, str], object] = {}


def render_online(name: str, params_json: str, image_bytes: bytes, image_id: str, node: str,
                  plugins: tuple[str, ...] = ()) -> bytes:
    """The online path: the same annotator class, called on one decoded image, encoded as stored."""
    import annotators
    from annotators import registry

    key = (name, params_json)
    if key not in _ONLINE_CACHE:
        registry.load_plugins(list(plugins))
        cls = annotators.get(name)
        annotator = cls(cls.Params.model_validate_json(params_json))
        annotator.load()
        _ONLINE_CACHE[key] = annotator
    out = _ONLINE_CACHE[key].annotate([{"image": decode_rgb(image_bytes), "image.meta": {}}], [image_id])[0]
    return _encode_output(out[node])["data"]


# --- workers ----------------------------------------------------------------------------------

def read_part_inputs(item: dict) -> list[dict]:
    """flat_map: one part -> rows of (image_id, data/meta of each required node), inner-joined on ok rows."""
    inputs: dict[str, str] = json.loads(item["inputs"])
    joined: dict[str, dict] | None = None
    for node, path in inputs.items():
        t = pq.read_table(path, columns=["image_id", "node_type", "data", "meta", "error"])
        rows = {}
        for r in t.to_pylist():
            if r["node_type"] == node and r["error"] is None and r["image_id"] not in rows:
                rows[r["image_id"]] = {f"data:{node}": r["data"], f"meta:{node}": r["meta"]}
        if joined is None:
            joined = rows
        else:
            joined = {k: {**v, **rows[k]} for k, v in joined.items() if k in rows}
    return [{"part": item["part"], "image_id": k, **v} for k, v in sorted((joined or {}).items())]


class AnnotatorGroup:
    """The annotators of one group, built and loaded once per process: Ray Data's actor pool
    calls it per batch (model annotators), a part task per part (weight-free CPU operators).

    Usually one annotator; CPU annotators that need only the image are fused into one group
    so a batch is read and decoded once for all of them."""

    def __init__(self, runs: list[dict]):
        import annotators
        from annotators import registry

        if runs[0].get("cpu_threads"):  # Ray sets OMP_NUM_THREADS (torch, numpy); OpenCV has its own pool
            import cv2

            cv2.setNumThreads(runs[0]["cpu_threads"])

        registry.load_plugins(runs[0]["plugins"])
        self.members = []
        for run in runs:
            cls = annotators.get(run["name"])
            annotator = cls(cls.Params.model_validate_json(run["params_json"]), device=run["device"],
                            models_dir=run["models_dir"])
            annotator.load()
            self.members.append((cls, annotator, run["folder_hash"]))
        self.png_level = runs[0]["png_compress_level"]
        self.requires = sorted({r.removesuffix(".meta") for cls, _, _ in self.members for r in cls.requires})

    def _decode(self, batch: dict) -> list[dict]:
        items = []
        for i in range(len(batch["image_id"])):
            item = {}
            for node in self.requires:
                data = batch[f"data:{node}"][i]
                if data:
                    item[node] = decode_rgb(data)
                item[f"{node}.meta"] = json.loads(batch[f"meta:{node}"][i] or "{}")
            items.append(item)
        return items

    @staticmethod
    def _annotate_isolated(annotator, items, ids):
        """Batch first; if the batch raises, image by image so one bad input fails alone."""
        try:
            return annotator.annotate(items, ids), [None] * len(ids)
        except Exception:  # noqa: BLE001 - isolated below, per image
            outs, errors = [], []
            for item, image_id in zip(items, ids):
                try:
                    outs.append(annotator.annotate([item], [image_id])[0])
                    errors.append(None)
                except Exception as e:  # noqa: BLE001 - recorded in the failures table
                    outs.append(None)
                    errors.append(f"{type(e).__name__}: {e}")
            return outs, errors

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist(self.annotate_rows(batch.to_pydict()), schema=OUT_SCHEMA)

    def annotate_rows(self, batch: dict[str, list]) -> list[dict]:
        """Columns of one batch (image_id, part, data:/meta: of each required node) -> output rows."""
        ids = batch["image_id"]
        try:
            items, decode_error = self._decode(batch), None
        except Exception as e:  # noqa: BLE001 - undecodable input: every image of the batch fails
            items, decode_error = None, f"{type(e).__name__}: {e}"
        rows = []
        for cls, annotator, folder_hash in self.members:
            start = time.perf_counter()
            if decode_error is None:
                outs, errors = self._annotate_isolated(annotator, items, ids)
            else:
                outs, errors = [None] * len(ids), [decode_error] * len(ids)
            seconds = (time.perf_counter() - start) / max(1, len(ids))
            for part, image_id, out, error in zip(batch["part"], ids, outs, errors):
                for node in cls.produces:
                    row = {"image_id": image_id, "node_type": node, "data": b"", "format": "none", "width": 0,
                           "height": 0, "meta": "{}", "annotator": cls.name, "annotator_version": cls.version,
                           "params_hash": folder_hash, "seconds": seconds, "error": error, "part": part}
                    if error is None:
                        try:
                            row.update(_encode_output(out[node], self.png_level))
                        except Exception as e:  # noqa: BLE001 - a malformed output is this image's failure
                            row["error"] = f"bad output for {node}: {type(e).__name__}: {e}"
                    rows.append(row)
        return rows


def _encode_output(out, png_level: int = 1) -> dict:
    meta = json.dumps(out.meta, sort_keys=True, default=_json_default)
    if out.array is None:
        return {"data": b"", "format": "json", "meta": meta}
    arr = np.asarray(out.array)
    if arr.dtype not in (np.uint8, np.uint16) or arr.ndim not in (2, 3):
        raise ValueError(f"expected HxW or HxWx3 uint8/uint16, got {arr.dtype} {arr.shape}")
    return {"data": encode_png(arr, png_level), "format": "png", "width": int(arr.shape[1]), "height": int(arr.shape[0]),
            "meta": meta}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# --- driver -----------------------------------------------------------------------------------

def _expected_rows(inputs: dict[str, str]) -> int:
    return len(read_ids_joined(inputs))


def read_ids_joined(inputs: dict[str, str]) -> set[str]:
    ids = None
    for node, path in inputs.items():
        t = pq.read_table(path, columns=["image_id", "node_type", "error"])
        ok = {r["image_id"] for r in t.to_pylist() if r["node_type"] == node and r["error"] is None}
        ids = ok if ids is None else ids & ok
    return ids or set()


def run_group(group: list[AnnotatorRun], sources: dict[str, Path], store: NodeStore, params: Params,
              progress=None) -> list[dict]:
    """Annotators with the same inputs, run together over their pending parts; each writes its own parts."""
    requires = group[0].requires
    parts = [part_index(p) for p in store.image_parts()]
    todo: dict[int, list[AnnotatorRun]] = {}
    for run in group:
        clean_temp_files(run.folder)
        write_json({"name": run.name, "version": run.version, "params": json.loads(run.params_json),
                    "produces": list(run.produces), "requires": list(run.requires)}, run.folder / "annotator.json")
        for k in parts:
            if not (run.folder / part_name(k)).exists():
                todo.setdefault(k, []).append(run)
    computed = {run.name: sum(run in runs for runs in todo.values()) for run in group}
    inputs = {}
    for k in todo:
        inputs[k] = {node: str(sources[node] / part_name(k)) for node in requires}
        missing = [p for p in inputs[k].values() if not Path(p).exists()]
        if missing:
            raise RuntimeError(f"{group[0].name}: input part missing: {missing[0]} (did its annotator fail?)")
    n_images = {k: _expected_rows(v) for k, v in inputs.items()}
    for k in [k for k, n in n_images.items() if n == 0]:  # nothing to annotate: an empty part is still done
        for run in todo.pop(k):
            write_table(OUT_SCHEMA.empty_table().drop_columns(["part"]), run.folder / part_name(k))
    if todo:
        # a part some members already finished is recomputed for all: rare (a crash between writes)
        group_args = worker_args(group, params)
        label = group[0].name if len(group) == 1 else f"{len(group)} CPU annotators"
        bar = (progress or _no_bar)(total=len(todo), desc=f"annotate {label}")
        if params.annotate.cpu_executor == "tasks" and all(r.num_gpus == 0 and r.weight_free for r in group):
            _run_part_tasks(group, sorted(todo), inputs, group_args, bar)
        else:
            _run_actor_pool(group, todo, inputs, n_images, group_args, bar)
        bar.close()
    return [{"annotator": run.name, "computed_parts": computed[run.name], "parts": len(parts)} for run in group]


def worker_args(group: list[AnnotatorRun], params: Params) -> list[dict]:
    """What a worker needs to build the group's annotators (plain data: travels to any node)."""
    return [{"name": run.name, "params_json": run.params_json, "device": run.device,
             "models_dir": str(Path(params.annotate.models_dir).absolute()), "plugins": params.annotate.plugins,
             "folder_hash": run.folder_hash, "png_compress_level": params.annotate.png_compress_level}
            for run in group]


def _run_actor_pool(group: list[AnnotatorRun], todo: dict[int, list[AnnotatorRun]], inputs: dict[int, dict],
                    n_images: dict[int, int], group_args: list[dict], bar) -> None:
    """Ray Data: parts -> rows -> an actor pool (one model per actor) -> the driver writes each part when whole."""
    import ray.data

    expected = {(run.name, k): n_images[k] * len(run.produces) for k in todo for run in group}
    folders = {run.name: run.folder for run in group}
    items = [{"part": k, "inputs": json.dumps(inputs[k])} for k in sorted(todo)]
    size, num_cpus = _pool(group)
    if all(r.num_gpus == 0 for r in group):
        group_args[0]["cpu_threads"] = max(1, round(num_cpus))
    ds = (ray.data.from_items(items, override_num_blocks=len(items))
          .flat_map(read_part_inputs, num_cpus=READ_CPUS)
          .map_batches(AnnotatorGroup, fn_constructor_kwargs={"runs": group_args}, batch_format="pyarrow",
                       batch_size=min(r.batch_size for r in group), compute=ray.data.ActorPoolStrategy(size=size),
                       num_gpus=max(r.num_gpus for r in group), num_cpus=num_cpus))
    buffers: dict[tuple[str, int], list[pa.Table]] = {key: [] for key in expected}
    counts = dict.fromkeys(expected, 0)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for name, k in sorted(set(zip(batch["annotator"].to_pylist(), batch["part"].to_pylist()))):
            rows = batch.filter(pa.compute.and_(pa.compute.equal(batch["annotator"], name),
                                                pa.compute.equal(batch["part"], k)))
            buffers[(name, k)].append(rows)
            counts[(name, k)] += rows.num_rows
            if counts[(name, k)] == expected[(name, k)]:
                path = folders[name] / part_name(k)
                if not path.exists():
                    _write_part(pa.concat_tables(buffers[(name, k)]), path)
                del buffers[(name, k)]
                if not any(key[1] == k for key in buffers):
                    bar.update(1)
    if buffers:
        raise RuntimeError(f"parts {sorted(buffers)} did not receive all their rows")


def _run_part_tasks(group: list[AnnotatorRun], parts: list[int], inputs: dict[int, dict], group_args: list[dict],
                    bar) -> None:
    """Weight-free CPU operators: one Ray task per part reads, annotates and writes that part itself.

    Nothing to load per worker, so an actor pool buys nothing, and a task that writes its own
    files spares the hand-over of every output through the object store and the driver
    (benchmarks/degrade.py: this stage is where the CPU set spends its time)."""
    import ray

    num_cpus = max(r.num_cpus for r in group)
    group_args[0]["cpu_threads"] = max(1, round(num_cpus))
    task = ray.remote(num_cpus=num_cpus)(annotate_part)
    batch_size = min(r.batch_size for r in group)
    runs = ray.put(group_args)  # once, not once per part
    queue = iter(parts)

    def submit(count: int) -> list:
        return [task.remote(k, inputs[k], runs, {run.name: str(run.folder / part_name(k)) for run in group},
                            batch_size) for k in itertools.islice(queue, count)]

    # A bounded window keeps every CPU busy without one pending task per part of a large corpus.
    pending = submit(max(2, 2 * int(ray.cluster_resources().get("CPU", 1) / num_cpus)))
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)  # re-raises a task's error (an image's own failure is a row, not an error)
        bar.update(len(done))
        pending += submit(len(done))


_PART_ANNOTATOR: dict[str, AnnotatorGroup] = {}  # per worker process: the last group, built once


def annotate_part(part: int, inputs: dict[str, str], runs: list[dict], paths: dict[str, str],
                  batch_size: int) -> int:
    """One part through every annotator of a group, each annotator's rows streamed into its part
    file batch by batch (a part of large images with dozens of outputs each need not fit in memory)."""
    key = json.dumps(runs, sort_keys=True)
    if key not in _PART_ANNOTATOR:
        _PART_ANNOTATOR.clear()
        _PART_ANNOTATOR[key] = AnnotatorGroup(runs)
    group = _PART_ANNOTATOR[key]
    rows = read_part_inputs({"part": part, "inputs": json.dumps(inputs)})  # sorted by image id
    schema = OUT_SCHEMA.remove(OUT_SCHEMA.get_field_index("part"))
    with ExitStack() as files:
        writers = {name: files.enter_context(part_writer(path, schema))
                   for name, path in paths.items() if not Path(path).exists()}
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            table = pa.Table.from_pylist(group.annotate_rows({column: [r[column] for r in chunk] for column in chunk[0]}),
                                         schema=OUT_SCHEMA)
            for name, write in writers.items():
                write(_part_rows(table.filter(pa.compute.equal(table["annotator"], name))))
    return len(rows)


READ_CPUS = 0.25  # the part-reading tasks: light, and must never be starved by the actors


def _pool(group: list[AnnotatorRun]) -> tuple[int, float]:
    """(pool size, CPUs per actor). A CPU-only pool puts one actor per core of every node, each
    asking a little under a core, so every node keeps READ_CPUS for the part readers (a node
    whose actors took all its CPUs would starve them, and the pipeline would stall)."""
    import ray

    concurrency = max(r.concurrency for r in group)
    num_cpus = max(r.num_cpus for r in group)
    if any(r.num_gpus > 0 for r in group):
        return concurrency, num_cpus
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]]
    node_cpus = [c for c in node_cpus if c >= 1] or [1.0]
    per_actor = min([num_cpus] + [(c - READ_CPUS) / int(c) for c in node_cpus])
    return max(1, min(concurrency, sum(int(c) for c in node_cpus))), per_actor


def _part_rows(table: pa.Table) -> pa.Table:
    """A part's rows as stored: without the routing column, ordered by (image id, node type)."""
    table = table.drop_columns(["part"])
    return table.take(pa.compute.sort_indices(table, sort_keys=[("image_id", "ascending"), ("node_type", "ascending")]))


def _write_part(table: pa.Table, path: Path) -> None:
    write_table(_part_rows(table), path)


class _no_bar:
    def __init__(self, **_):
        pass

    def update(self, n):
        pass

    def close(self):
        pass


def run_annotate(params: Params, store: NodeStore, progress=None) -> list[dict]:
    runs = plan(params, store)
    sources = node_sources(runs, store)
    # CPU annotators that read only the image share one pipeline (one read and decode per
    # batch); the others run one by one in dependency order, after them.
    fused = [r for r in runs if r.num_gpus == 0 and r.requires == ("image",)] if params.annotate.fuse_cpu else []
    groups = ([fused] if fused else []) + [[r] for r in runs if r not in fused]
    results = [result for group in groups for result in run_group(group, sources, store, params, progress)]
    if params.annotate.prune_stale:
        keep = {run.folder for run in runs}
        for folder in sorted(store.nodes_dir.glob("*/*")):
            if folder.is_dir() and folder not in keep:
                remove_tree(folder)
        for folder in sorted(store.nodes_dir.glob("*")):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return results
