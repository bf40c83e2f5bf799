"""Annotate: run every configured annotator over every image part it has not done, in dependency order.

Each (annotator, image part) is one output file, `nodes/<name>/<key>/part-<part>.parquet`
(pipelines/annotation_plan.py: the key covers name, version, params and code digest), written
by the worker that computed it:
- weight-free CPU operators that need only the image (degradations, edits, canny, ...) are
  fused: one Ray task per part reads the part once and runs every member that lacks that
  part (changing one member's params computes only that member);
- model annotators run as a Ray Data actor pool (`map_batches` with a callable class: the
  model loads once per actor, `num_gpus` / `batch_size` / pool size from params), one part per
  call; the actor reads the part, annotates it batch by batch (the next batch decoded while the
  model runs) and streams the rows into the part file.
Failure policy: an exception on a batch is retried image by image; an image that still fails
is an `annotator_error` row; the same exception on every image of a batch is a code bug and
stops the stage; transient errors (CUDA out of memory, device lost, timeouts) are retried with
backoff on halved batches, and if they persist the part is left unfinished for a later run.
When the stage ends it prunes outputs of annotators or parts that are gone and writes the
catalog (pipelines/catalog.py) that every later stage reads.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pyarrow as pa

from pipelines import executor
from pipelines.annotation_plan import AnnotatorRun, online_nodes, plan
from annotators.runtime import build_annotator, encode_output
from pipelines.catalog import Catalog
from core.images import decode_rgb
from pipelines.params import Params
from pipelines.stage import Stage, StageOrderError
from pipelines.store import (IMPORT_ANNOTATOR, NODE_SCHEMA, NodeStore, clean_temp_files, folder_summary, part_id,
                             part_name, part_writer, read_part, remove_tree, write_json)

_TRANSIENT = re.compile(r"out of memory|CUDA error: (unspecified launch failure|an illegal memory access)|"
                        r"device (lost|not ready)|ECC error|NCCL|timed? ?out", re.IGNORECASE)


class TransientFailure(RuntimeError):
    """Retries did not get past a transient error: the part is left for a later run."""


class AnnotatorBug(RuntimeError):
    """The same exception on every image of a batch: a bug in the annotator, not bad data."""


def is_transient(e: BaseException) -> bool:
    return isinstance(e, TimeoutError) or type(e).__name__ in ("OutOfMemoryError", "AcceleratorError") \
        or bool(_TRANSIENT.search(str(e)))


# --- workers ----------------------------------------------------------------------------------

def read_part_inputs(inputs: dict[str, str]) -> list[dict]:
    """One part -> rows (image_id, data/meta of each required node), inner-joined on usable rows, by id."""
    joined: dict[str, dict] | None = None
    for node, path in sorted(inputs.items()):
        t = read_part(path, columns=["image_id", "node_type", "data", "meta", "error", "quality"],
                          filters=[("node_type", "=", node)])
        rows = {}
        for r in t.to_pylist():
            if r["error"] is None and r["quality"] is None and r["image_id"] not in rows:
                rows[r["image_id"]] = {f"data:{node}": r["data"], f"meta:{node}": r["meta"]}
        joined = rows if joined is None else {k: {**v, **rows[k]} for k, v in joined.items() if k in rows}
    return [{"image_id": k, **v} for k, v in sorted((joined or {}).items())]


class AnnotatorGroup:
    """The annotators of one group, built and loaded once per process (a Ray Data actor, or a part
    task's worker), then called once per part: read, decode, annotate, write each member's file."""

    def __init__(self, runs: list[dict]):
        if runs[0].get("cpu_threads"):  # Ray sets OMP_NUM_THREADS (torch, numpy); OpenCV has its own pool
            import cv2

            cv2.setNumThreads(runs[0]["cpu_threads"])
        self.members = {}
        for run in runs:
            cls, annotator = build_annotator(run["name"], run["params_json"], device=run["device"],
                                             models_dir=run["models_dir"], plugins=run["plugins"])
            self.members[run["name"]] = (cls, annotator, run["key"])
        self.png_level = runs[0]["png_compress_level"]
        self.max_retries, self.backoff = runs[0]["max_retries"], runs[0]["retry_backoff_s"]
        self.requires = sorted({r.removesuffix(".meta") for cls, a, _ in self.members.values()
                                for r in cls.requires_for(a.params)})

    def decode(self, batch: list[dict]) -> list[dict]:
        items = []
        for row in batch:
            item = {}
            for node in self.requires:
                data = row[f"data:{node}"]
                if data:
                    item[node] = decode_rgb(data)
                item[f"{node}.meta"] = json.loads(row[f"meta:{node}"] or "{}")
            items.append(item)
        return items

    def _call(self, annotator, items, ids):
        """The annotator on a batch; transient errors retried with backoff on halved batches."""
        for attempt in itertools.count():
            try:
                if attempt and len(ids) > 1:
                    half = len(ids) // 2
                    return self._call(annotator, items[:half], ids[:half]) + \
                        self._call(annotator, items[half:], ids[half:])
                return list(annotator.annotate(items, ids))
            except Exception as e:  # noqa: BLE001 - sorted into transient / per image below
                if not is_transient(e):
                    raise
                if attempt >= self.max_retries:
                    raise TransientFailure(f"{type(e).__name__}: {e} (after {attempt} retries)") from e
                time.sleep(self.backoff * 2 ** attempt)
                _free_accelerator_memory()

    def annotate_isolated(self, name: str, items: list[dict], ids: list[str]) -> tuple[list, list]:
        """Outputs and per-image errors of one member on one batch."""
        cls, annotator, _ = self.members[name]
        try:
            return self._call(annotator, items, ids), [None] * len(ids)
        except TransientFailure:
            raise
        except Exception:  # noqa: BLE001 - image by image, so one bad input fails alone
            outs, errors, kinds = [], [], set()
            for item, image_id in zip(items, ids):
                try:
                    outs.append(self._call(annotator, [item], [image_id])[0])
                    errors.append(None)
                except TransientFailure:
                    raise
                except Exception as e:  # noqa: BLE001 - recorded as this image's failure
                    outs.append(None)
                    errors.append(f"annotator_error: {type(e).__name__}: {e}")
                    kinds.add((type(e).__name__, str(e)))
            if len(ids) > 1 and all(errors) and len(kinds) == 1:
                raise AnnotatorBug(f"{name}: every image of a batch of {len(ids)} raised {errors[0]}; "
                                   f"a bug in the annotator, not bad data") from None
            return outs, errors

    def decode_batch(self, batch: list[dict]) -> tuple[list[dict] | None, str | None]:
        try:
            return self.decode(batch), None
        except Exception as e:  # noqa: BLE001 - an undecodable stored input: every image of the batch fails
            return None, f"annotator_error: undecodable input: {type(e).__name__}: {e}"

    def annotate_rows(self, batch: list[dict], names: list[str], decoded=None) -> dict[str, list[dict]]:
        """Rows of one batch of a part -> {member: its output rows}."""
        ids = [r["image_id"] for r in batch]
        items, decode_error = decoded or self.decode_batch(batch)
        out = {}
        for name in names:
            cls, annotator, key = self.members[name]
            nodes = sorted(cls.produces_for(annotator.params))  # what these params write, not all it can
            start = time.perf_counter()
            if decode_error is None:
                outs, errors = self.annotate_isolated(name, items, ids)
            else:
                outs, errors = [None] * len(ids), [decode_error] * len(ids)
            seconds = (time.perf_counter() - start) / max(1, len(ids))
            rows = []
            for image_id, result, error in zip(ids, outs, errors):
                for node in nodes:
                    row = {"image_id": image_id, "node_type": node, "data": b"", "format": "none", "width": 0,
                           "height": 0, "meta": "{}", "annotator": cls.name, "annotator_version": cls.version,
                           "params_hash": key, "seconds": seconds, "error": error, "quality": None}
                    if error is None:
                        try:
                            row.update(encode_output(result[node], self.png_level))
                        except Exception as e:  # noqa: BLE001 - a malformed output is this image's failure
                            row["error"] = f"annotator_error: bad output for {node}: {type(e).__name__}: {e}"
                    rows.append(row)
            out[name] = rows
        return out

    def annotate_part(self, inputs: dict[str, str], paths: dict[str, str], batch_size: int) -> dict:
        """One part through the members named in `paths` (member -> output file), each member's rows
        streamed into its file batch by batch; the next batch is decoded while this one runs."""
        rows = read_part_inputs(inputs)
        names = sorted(n for n, p in paths.items() if not Path(p).exists())
        batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        try:
            with ExitStack() as files, ThreadPoolExecutor(1) as reader:
                writers = {n: files.enter_context(part_writer(paths[n], NODE_SCHEMA)) for n in names}
                decoded = reader.submit(self.decode_batch, batches[0]) if batches else None
                for k, batch in enumerate(batches):
                    items = decoded.result()
                    if k + 1 < len(batches):
                        decoded = reader.submit(self.decode_batch, batches[k + 1])
                    for name, member_rows in self.annotate_rows(batch, names, items).items():
                        writers[name](pa.Table.from_pylist(member_rows, schema=NODE_SCHEMA))
        except TransientFailure as e:
            return {"status": "unfinished", "detail": str(e), "images": len(rows)}
        except AnnotatorBug:
            return {"status": "bug", "detail": traceback.format_exc(), "images": len(rows)}
        return {"status": "done", "images": len(rows), "members": names}

    def __call__(self, batch: dict) -> dict:
        """Ray Data: a batch of part items -> one status row each."""
        results = [self.annotate_part(json.loads(i), json.loads(p), int(b))
                   for i, p, b in zip(batch["inputs"], batch["paths"], batch["batch_size"])]
        return {"part": list(batch["part"]), "status": [r["status"] for r in results],
                "detail": [r.get("detail", "") for r in results]}


def _free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


_PART_GROUP: dict[str, AnnotatorGroup] = {}  # per worker process: the last group, built once


def annotate_part_task(runs: list[dict], item: tuple) -> dict:
    """A Ray task: one part (inputs, output paths, batch size) of a fused group of weight-free CPU operators."""
    inputs, paths, batch_size = item
    key = json.dumps(runs, sort_keys=True)
    if key not in _PART_GROUP:
        _PART_GROUP.clear()
        _PART_GROUP[key] = AnnotatorGroup(runs)
    return _PART_GROUP[key].annotate_part(inputs, paths, batch_size)


# --- driver -----------------------------------------------------------------------------------

def worker_args(group: list[AnnotatorRun], params: Params) -> list[dict]:
    """What a worker needs to build the group's annotators (plain data: travels to any node)."""
    a = params.annotate
    return [{"name": run.name, "params_json": run.params_json, "device": run.device,
             "models_dir": str(Path(a.models_dir).absolute()), "plugins": list(a.plugins), "key": run.key,
             "png_compress_level": a.png_compress_level, "max_retries": a.max_retries,
             "retry_backoff_s": a.retry_backoff_s} for run in group]


def _folders(runs: list[AnnotatorRun], store: NodeStore) -> dict[str, Path]:
    out = {"image": store.images_dir}
    for run in runs:
        out.update({node: run.folder for node in run.produces})
    return out


def run_group(group: list[AnnotatorRun], folders: dict[str, Path], store: NodeStore, params: Params,
              progress=None) -> list[dict]:
    """Annotators with the same inputs, over the parts some member lacks; each member writes its own files."""
    parts = [part_id(p) for p in store.image_parts()]
    todo: dict[str, list[AnnotatorRun]] = {}
    for run in group:
        clean_temp_files(run.folder)
        write_json({"name": run.name, "version": run.version, "params": json.loads(run.params_json),
                    "code_digest": run.code_digest, "produces": list(run.produces), "requires": list(run.requires)},
                   run.folder / "annotator.json")
        for k in parts:
            if not (run.folder / part_name(k)).exists():
                todo.setdefault(k, []).append(run)
    computed = {run.name: sum(run in runs for runs in todo.values()) for run in group}
    items = []
    for k in sorted(todo):
        inputs = {node: str(folders[node] / part_name(k)) for node in group[0].requires}
        missing = [p for p in inputs.values() if not Path(p).exists()]
        if missing:
            raise RuntimeError(f"{group[0].name}: input part missing: {missing[0]} (did its annotator fail?)")
        items.append({"part": k, "inputs": inputs, "paths": {r.name: str(r.folder / part_name(k)) for r in todo[k]}})
    unfinished = []
    if items:
        args = worker_args(group, params)
        label = group[0].name if len(group) == 1 else f"{len(group)} CPU annotators"
        bar = (progress or _NoBar)(total=len(items), desc=f"annotate {label}")
        batch_size = min(r.batch_size for r in group)
        if executor.inline(len(items)):
            results = _run_here(items, args, batch_size, bar)
        elif params.annotate.cpu_executor == "tasks" and all(r.num_gpus == 0 and r.weight_free for r in group):
            results = _run_part_tasks(group, items, args, batch_size, bar)
        else:
            results = _run_actor_pool(group, items, args, batch_size, bar)
        bar.close()
        for part, result in sorted(results.items()):
            if result["status"] == "bug":
                raise AnnotatorBug(f"annotate stopped on part {part}:\n{result['detail']}")
            if result["status"] == "unfinished":
                unfinished.append({"part": part, "detail": result["detail"]})
    return [{"annotator": run.name, "computed_parts": computed[run.name], "parts": len(parts),
             "unfinished_parts": len(unfinished)} for run in group] if group else []


def _run_here(items: list[dict], args: list[dict], batch_size: int, bar) -> dict:
    """A part or two of work: the group built in this process and run part by part (no Ray)."""
    members = AnnotatorGroup(args)
    results = {}
    for item in items:
        results[item["part"]] = members.annotate_part(item["inputs"], item["paths"], batch_size)
        bar.update(1)
    return results


def _run_part_tasks(group: list[AnnotatorRun], items: list[dict], args: list[dict], batch_size: int, bar) -> dict:
    """Weight-free CPU operators: one Ray task per part, each running only the members that part lacks.

    Nothing to load per worker, so an actor pool buys nothing, and a task that writes its own
    files spares the hand-over of every output through the object store and the driver."""
    num_cpus = max(r.num_cpus for r in group)
    args[0]["cpu_threads"] = max(1, round(num_cpus))
    results = executor.bounded_tasks(annotate_part_task, args, [(i["inputs"], i["paths"], batch_size) for i in items],
                                     num_cpus=num_cpus, on_done=bar.update)
    return {i["part"]: r for i, r in zip(items, results)}


def _run_actor_pool(group: list[AnnotatorRun], items: list[dict], args: list[dict], batch_size: int, bar) -> dict:
    """Parts -> an actor pool (one model per actor) that annotates and writes each part."""
    gpu = any(r.num_gpus > 0 for r in group)
    size, num_cpus = executor.pool_size(max(r.concurrency for r in group), max(r.num_cpus for r in group), gpu)
    if not gpu:
        args[0]["cpu_threads"] = max(1, round(num_cpus))
    rows = [{"part": i["part"], "inputs": json.dumps(i["inputs"]), "paths": json.dumps(i["paths"]),
             "batch_size": batch_size} for i in items]
    ds = executor.actor_pool(rows, AnnotatorGroup, size=size, num_cpus=num_cpus,
                             num_gpus=max(r.num_gpus for r in group), constructor_kwargs={"runs": args})
    results = {}
    for row in ds.iter_rows():
        results[str(row["part"])] = {"status": str(row["status"]), "detail": str(row["detail"])}
        bar.update(1)
    return results


class _NoBar:
    def __init__(self, **_):
        pass

    def update(self, n):
        pass

    def close(self):
        pass


def _prune(runs: list[AnnotatorRun], store: NodeStore, prune_folders: bool) -> None:
    """Remove outputs of image parts that are gone and, with prune_stale, folders no longer configured."""
    live = {p.name for p in store.image_parts()}
    keep = {run.folder for run in runs}
    for folder in sorted(store.nodes_dir.glob("*/*")):
        if not folder.is_dir():
            continue
        if folder not in keep:
            if prune_folders:
                remove_tree(folder)
            continue
        for part in folder.glob("part-*.parquet"):
            if part.name not in live:
                part.unlink()
    for folder in sorted(store.nodes_dir.glob("*")):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def run_annotate(params: Params, store: NodeStore, progress=None) -> list[dict]:
    if not store.image_parts() and not (store.listing_path).exists():
        raise StageOrderError(f"no ingested images in {store.root}: run `vicl ingest` first")
    runs = plan(params, store)
    folders = _folders(runs, store)
    # CPU annotators that read only the image share one pipeline (one read and decode per
    # part); the others run one by one in dependency order, after them.
    fused = [r for r in runs if r.num_gpus == 0 and r.requires == ("image",)] if params.annotate.fuse_cpu else []
    groups = ([fused] if fused else []) + [[r] for r in runs if r not in fused]
    results = [result for group in groups for result in run_group(group, folders, store, params, progress)]
    _prune(runs, store, params.annotate.prune_stale)
    for folder in sorted({r.folder for r in runs}):
        folder_summary(folder)  # brought up to date once here, so later stages only read it
    made = {node: (run.name, run.folder) for run in runs for node in run.produces}
    # nodes a source brought (pipelines/records.py: graph200k) serve the node types no
    # configured annotator makes; an annotator of the same node type takes its place everywhere
    imported = folder_summary(store.imported_dir)
    imported = imported.filter(pa.compute.is_null(imported["error"]))
    made.update({node: (IMPORT_ANNOTATOR, store.imported_dir) for node in sorted(set(imported["node_type"].to_pylist()))
                 if node not in made})
    Catalog.write(store, made, online_nodes(params), params.annotate.plugins)
    return results


def annotate_status(params: Params, store: NodeStore) -> list[str]:
    parts = store.image_parts()
    return [f"annotate: {run.name:<24} {sum((run.folder / p.name).exists() for p in parts)}/{len(parts)} parts"
            f"  -> {', '.join(run.produces)}" for run in plan(params, store)]


def _check_weights(params: Params, source: str) -> None:
    from pipelines.models_cli import require_weights

    require_weights(params)  # every missing weight listed at once, before Ray starts


STAGE = Stage(
    name="annotate", help="run every configured annotator over every image, in dependency order",
    run=run_annotate, check=_check_weights, status=annotate_status,
    reads=("{store}/images",), writes=("{store}/nodes",), persist=("{store}/nodes",),
    done="store.catalog_path", params=("annotate",),
    code=("annotators", "core", "pipelines/stages/annotate.py", "pipelines/annotation_plan.py", "pipelines/catalog.py"))
